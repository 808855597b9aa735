"""Evaluation of pruning: accuracy of a model trained on the kept subset vs fraction kept, and its plot."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.io import atomic_write_bytes
from datascout.models import MODEL_NAMES, MODELS, make_model
from datascout.prune.api import PruneConfig, check_labels, compute_scores, select, validate_config


def evaluate_pruning(X_train, y_train, X_test, y_test, configs: dict, fractions, *, seeds=(0,),
                     models=("scaled-logreg",)) -> list[dict]:
    """Accuracy on (X_test, y_test) of each model trained on the subset of the training data that
    each named config keeps, at each fraction, for each seed (the seed sets the config's
    ``random_state`` and the model's). Scores are computed once per (config, seed).
    ``models``: names of :data:`datascout.models.MODELS`; the default is the pruning
    literature's protocol (unweighted logistic regression on standardised features; with
    ``"scaled-mlp"``, one hidden layer of 128 units with early stopping).
    Returns records ``{name, fraction, seed, model, accuracy, kept}``."""
    for kind in models:
        if kind not in MODELS:
            raise ValidationError(f"unknown evaluation model {kind!r}: expected one of {', '.join(MODEL_NAMES)}")
    y_train = check_labels(y_train, X_train.shape[0])
    records = []
    for name, base in configs.items():
        for seed in seeds:
            cfg = PruneConfig(**{**asdict(base), "random_state": int(seed), "fraction": 1.0})
            validate_config(cfg, X_train.shape[0], y_train)
            scores, _ = compute_scores(X_train, y_train, cfg)
            for f in fractions:
                kept, _ = select(scores, y_train, PruneConfig(**{**asdict(cfg), "fraction": float(f)}))
                for kind in models:
                    model = make_model(kind, int(seed))
                    Xk, yk = X_train[kept], y_train[kept]
                    if len(np.unique(yk)) < 2:
                        acc = float(np.mean(y_test == yk[0]))
                    else:
                        model.fit(Xk, yk)
                        acc = float(np.mean(model.predict(X_test) == y_test))
                    records.append({"name": name, "fraction": float(f), "seed": int(seed),
                                    "model": kind, "accuracy": acc, "kept": int(kept.sum())})
    return records


def plot_accuracy_vs_fraction(records: list[dict], path, *, title: str = "") -> Path:
    """PNG: mean accuracy (± std over seeds) vs fraction kept, one line per method and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    keys = sorted({(r["name"], r["model"]) for r in records})
    for name, model in keys:
        rows = [r for r in records if r["name"] == name and r["model"] == model]
        fr = sorted({r["fraction"] for r in rows})
        acc = [[r["accuracy"] for r in rows if r["fraction"] == f] for f in fr]
        mean = np.array([np.mean(a) for a in acc])
        std = np.array([np.std(a) for a in acc])
        label = name if len({k[1] for k in keys}) == 1 else f"{name} ({model})"
        ax.plot(fr, mean, marker="o", lw=2, ls="--" if name == "random" else "-", label=label)
        ax.fill_between(fr, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("fraction of training data kept")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
