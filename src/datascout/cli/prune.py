"""``datascout prune``: score a labeled pool and keep a fraction of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.io import load_embeddings, load_labels
from datascout.prune import (METHODS, SAMPLER_NAMES, PruneConfig, check_fraction, check_labels,
                             evaluate_pruning, plot_accuracy_vs_fraction, prune, validate_config)

EXAMPLE = ("datascout prune --embeddings E.npy --labels Y.npy --method el2n --fraction 0.5 "
           "--sampler ccs --out keep.csv")
CURVE_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def register(sub) -> None:
    p = command(sub, "prune", "Score labeled data and keep the part worth training on "
                "(writes a keep/drop table, a summary and a plot of accuracy vs fraction kept).",
                EXAMPLE, run)
    p.add_argument("--embeddings", required=True, help=".npy (memory-mapped), .npz or .parquet")
    p.add_argument("--labels", default=None,
                   help=".npy of class ids or .csv; needed by el2n, forgetting, class-balanced and the plot")
    p.add_argument("--method", choices=METHODS, default="el2n")
    p.add_argument("--fraction", type=float, default=None,
                   help="fraction kept, in (0, 1]; semdedup without it drops the near-duplicates at --eps")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default="auto",
                   help="auto: prototypes follow the keep-hard/keep-easy rule of thumb, others keep the top")
    p.add_argument("--clusters", type=int, default=100, help="k-means clusters (prototypes, semdedup)")
    p.add_argument("--eps", type=float, default=0.05, help="semdedup: near-duplicate when cosine > 1 - eps")
    p.add_argument("--models", type=int, default=5, help="el2n: proxy models averaged")
    p.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: el2n 2, forgetting 10)")
    p.add_argument("--ccs-beta", type=float, default=0.1, help="ccs: hardest fraction dropped first")
    p.add_argument("--ccs-strata", type=int, default=50)
    p.add_argument("--balance", choices=("proportional", "equal"), default="proportional",
                   help="class-balanced: per-class quotas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="keep/drop table, .csv or .parquet "
                   "(OUT.summary.json and OUT.png are written beside it)")
    p.add_argument("--no-plot", action="store_true", help="skip the accuracy-vs-fraction plot")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out share for the plot")


def run(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValidationError(f"--out must name a .csv or .parquet file but is {args.out!r}")
    if not out.parent.exists():
        raise ValidationError(f"the folder of --out does not exist: {str(out.parent)!r}")
    if args.fraction is not None:
        check_fraction(args.fraction, "--fraction")
    X, ids = load_embeddings(args.embeddings)
    y = None
    if args.labels is not None:
        y, _ = load_labels(args.labels, ids=ids)
        if len(y) != X.shape[0]:
            raise ValidationError(f"labels has {len(y)} entries but embeddings has {X.shape[0]} rows")
        y = check_labels(y, X.shape[0])
    epochs = {} if args.epochs is None else {"el2n_epochs": args.epochs, "forgetting_epochs": args.epochs}
    cfg = PruneConfig(method=args.method, fraction=args.fraction, sampler=args.sampler,
                      n_clusters=args.clusters, eps=args.eps, n_models=args.models,
                      ccs_beta=args.ccs_beta, ccs_strata=args.ccs_strata, balance=args.balance,
                      random_state=args.seed, **epochs)
    validate_config(cfg, X.shape[0], y)
    plot = not args.no_plot
    if plot and y is None:
        raise ValidationError("the accuracy-vs-fraction plot needs --labels (or pass --no-plot)")
    if plot and not 0.0 < args.test_size < 1.0:
        raise ValidationError(f"--test-size must be in (0, 1) but is {args.test_size}")
    result = prune(X, y, cfg, ids=ids)
    summary_path = out.with_name(out.name + ".summary.json")
    png = out.with_suffix(".png")
    written = []
    if plot:
        records = _curve(np.asarray(X, dtype=np.float32), y, cfg, args.test_size, args.seed)
        result.extra["accuracy_vs_fraction"] = records
        plot_accuracy_vs_fraction(records, png, title=f"{cfg.method} vs random ({Path(args.embeddings).name})")
        written.append(png)
    # the table last: a failed plot leaves no table behind
    result.write_summary(summary_path)
    result.write(out)
    written = [out, summary_path] + written
    s = result.summary()
    print(f"{cfg.method}: kept {s['kept']} of {s['items']} ({s['fraction_kept']:.1%}), {s['direction']}; "
          f"{s['seconds']:.2f} s")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _curve(X, y, cfg: PruneConfig, test_size: float, seed: int) -> list[dict]:
    """Accuracy of logistic regression on the kept part of a training split, method vs random."""
    from sklearn.model_selection import train_test_split

    n_test = int(np.ceil(len(y) * test_size))  # as train_test_split rounds
    n_train = len(y) - n_test
    if n_train < 2 or n_test < 1:
        raise ValidationError(f"--test-size {test_size} splits {len(y)} items into {n_train} to train the plot's "
                              f"models and {n_test} to test them: expected at least 2 and 1 (or pass --no-plot)")
    counts = np.bincount(y)
    n_classes = int((counts > 0).sum())
    # stratify where every class can have a row on both sides; else a plain random split
    strat = y if counts[counts > 0].min() >= 2 and min(n_train, n_test) >= n_classes else None
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=strat)
    configs = {cfg.method: PruneConfig(**{**cfg.__dict__, "fraction": 1.0})}
    if cfg.method != "random":
        configs["random"] = PruneConfig(method="random", sampler="top")
    validate_config(configs[cfg.method], len(tr), y[tr])
    return evaluate_pruning(X[tr], y[tr], X[te], y[te], configs, CURVE_FRACTIONS, seeds=(seed,))
