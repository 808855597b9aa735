"""Simulation harness: an oracle answers from ground-truth labels, a held-out test split
measures the model after every round.

Round 0 is the seed set. Round r >= 1 selects a batch (``select_seconds``, out of
``candidates`` items), the oracle labels it, the model is refitted (``fit_seconds``) and
evaluated on the test split: accuracy and macro-F1 always, average precision when the task is
binary (``positive_class`` vs the rest). ``positives_found`` counts labeled pool positives
(binary tasks); ``aulc`` is the area under the learning curve of the main metric (AP for binary,
accuracy for multiclass) over the labeled count, normalised by its span (a mean metric value).

Label quality and stopping (:mod:`datascout.oracle`): with ``label_noise`` the oracle answers
wrongly at that rate (``noise_kind``), ``review_fraction`` re-asks the label audit's suspects
every round, and ``noise`` in the result measures the audit against the truth; every round also
records the stopping rules' measurements (:mod:`datascout.stopping`) and the result says at which
round each rule fires (``stopping``, ``stopping_detail``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score
from sklearn.model_selection import train_test_split

from datascout.exceptions import ValidationError
from datascout.index import SimilarityIndex
from datascout.io import atomic_write_bytes
from datascout.loop import ActiveLearner
from datascout.models import MODEL_NAMES, make_model
from datascout.oracle import SimulatedOracle, StoppingWatch, check_quality_config
from datascout.pool import check_embeddings
from datascout.registry import STRATEGY_NAMES, make_strategy
from datascout.seals import CandidatePool, KNNGraph, build_or_load_graph
from datascout.seeds import positives_negatives_seed, random_seed

ROUND_KEYS = ("round", "labeled", "positives_found", "pool_positives", "candidates",
              "select_seconds", "fit_seconds", "accuracy", "macro_f1", "average_precision")


@dataclass
class SimulationConfig:
    strategy: str = "auto"  # binary tasks: entropy after the seed (datascout.auto)
    positive_class: int | None = None
    beta: float = 1.0
    seals: bool = False
    k: int = 100
    index: str = "HNSW32"
    graph: bool = True  # with SEALS: precomputed kNN graph (True) or on-the-fly index queries
    explore: int = 0  # with SEALS: random unseen items scored with C each round
    density_reference: str = "pool"
    initial_positives: int | None = None
    initial_negatives: int | None = None
    initial: int | None = None
    batch_size: int = 100
    rounds: int = 20
    test_size: float = 0.2
    seed: int = 0
    n_members: int = 5
    model: str = "logreg"  # a name of datascout.models.MODEL_NAMES (simulate(model=...) overrides it)
    # label quality and stopping (datascout.labels, datascout.stopping)
    label_noise: float = 0.0  # the oracle answers wrongly at this rate
    noise_kind: str = "uniform"  # a wrong answer: a random other class, or the most confusable class
    review_fraction: float = 0.0  # each round, re-ask this share of a batch of the audit's suspects
    stop_set: int = 2000  # pool items (drawn once) on which successive models are compared
    label_budget: int | None = None
    extra: dict = field(default_factory=dict)


def validate_config(cfg: SimulationConfig, n_items: int, labels: np.ndarray) -> None:
    if cfg.strategy not in STRATEGY_NAMES:
        raise ValidationError(f"unknown strategy {cfg.strategy!r}: expected one of {', '.join(STRATEGY_NAMES)}")
    if cfg.model not in MODEL_NAMES:
        raise ValidationError(f"unknown model {cfg.model!r}: expected one of {', '.join(MODEL_NAMES)}")
    check_run_settings(cfg)
    if cfg.positive_class is not None and not (labels == cfg.positive_class).any():
        present = np.unique(labels)
        raise ValidationError(
            f"positive class {cfg.positive_class} does not occur in the labels (classes present: "
            f"{', '.join(map(str, present[:20]))}{' ...' if len(present) > 20 else ''})"
        )
    if (cfg.initial_positives is None) != (cfg.initial_negatives is None):
        raise ValidationError("initial_positives and initial_negatives go together")
    if cfg.initial_positives is not None and cfg.initial is not None:
        raise ValidationError("give either initial or initial_positives/initial_negatives, not both")
    if cfg.initial_positives is not None and cfg.positive_class is None:
        raise ValidationError("initial_positives/initial_negatives need positive_class")
    check_quality_config(cfg)
    if n_items == 0:
        raise ValidationError("the labels hold no labeled item: expected class ids >= 0, got only -1")
    n_test = int(np.ceil(n_items * cfg.test_size))  # as train_test_split rounds
    n_pool = n_items - n_test
    task = labels == cfg.positive_class if cfg.positive_class is not None else labels
    counts = np.unique(task, return_counts=True)[1]
    if counts.min() >= 2 and min(n_test, n_pool) < len(counts):  # simulate's split is stratified then
        raise ValidationError(
            f"test_size {cfg.test_size} splits {n_items} items into {n_pool} for the pool and {n_test} "
            f"for the test, but a stratified split needs at least {len(counts)} (one per class) in each")
    seed_size = cfg.initial if cfg.initial is not None else (
        (cfg.initial_positives or 0) + (cfg.initial_negatives or 0) or 100)
    if seed_size <= 0:
        raise ValidationError(f"the seed set must hold at least 1 item but holds {seed_size}")
    check_budget(cfg, n_pool, seed_size)


def check_run_settings(cfg) -> None:
    """The settings every simulation shares (single- or multi-label): batch, rounds, test split,
    SEALS neighbours and exploration, seed."""
    if cfg.batch_size <= 0:
        raise ValidationError(f"batch_size must be > 0 but is {cfg.batch_size}")
    if cfg.rounds < 0:
        raise ValidationError(f"rounds must be >= 0 but is {cfg.rounds}")
    if not 0.0 < cfg.test_size < 1.0:
        raise ValidationError(f"test_size must be in (0, 1) but is {cfg.test_size}")
    if cfg.k < 1:
        raise ValidationError(f"k must be >= 1 but is {cfg.k}")
    if cfg.explore < 0:
        raise ValidationError(f"explore must be >= 0 but is {cfg.explore}")
    if cfg.explore and not cfg.seals:
        raise ValidationError("explore adds random items to the SEALS candidate set: it needs seals=True")
    if not 0 <= cfg.seed < 2**32:
        raise ValidationError(f"seed must be in 0..{2**32 - 1} but is {cfg.seed}")


def check_budget(cfg, n_pool: int, seed_size: int) -> None:
    """The seed set and every round's batch fit in the pool."""
    if cfg.rounds > 0 and cfg.batch_size > n_pool - seed_size:  # with 0 rounds no batch is drawn
        raise ValidationError(
            f"batch_size {cfg.batch_size} is larger than the {n_pool - seed_size} unlabeled pool items "
            f"left after the seed set of {seed_size}"
        )
    if seed_size + cfg.batch_size * cfg.rounds > n_pool:
        raise ValidationError(
            f"seed {seed_size} + {cfg.rounds} rounds x batch {cfg.batch_size} = "
            f"{seed_size + cfg.batch_size * cfg.rounds} labels, more than the pool's {n_pool} items"
        )


def build_candidates(X, cfg, graph=None, embeddings_path=None):
    """With ``cfg.seals``: the SEALS candidate pool (a precomputed kNN graph, built or loaded
    beside ``embeddings_path``, or an index queried on the fly) and what building it took;
    without: ``(None, None)``."""
    if not cfg.seals:
        return None, None
    t0 = time.perf_counter()
    if cfg.graph:
        if graph is None:
            graph = build_or_load_graph(X, embeddings_path, cfg.index, cfg.k)
        candidates = CandidatePool(X, graph=graph, k=cfg.k, explore=cfg.explore)
    else:
        candidates = CandidatePool(X, index=SimilarityIndex(cfg.index).build(X), k=cfg.k, explore=cfg.explore)
    return candidates, {"seconds": round(time.perf_counter() - t0, 3),
                        **({"meta": graph.meta} if graph is not None else {})}


def simulate(embeddings, labels, config: SimulationConfig, *, embeddings_path=None,
             graph: KNNGraph | None = None, model=None, progress=None) -> dict:
    """Run one simulated campaign and return ``{"config", "rounds", "aulc", ...}``.

    ``model``: any scikit-learn classifier with ``predict_proba`` (unfitted; cloned at every fit);
    without it, the one ``config.model`` names. The result's config says which ran.
    """
    cfg = config
    X = check_embeddings(embeddings)
    y_all = np.asarray(labels)
    if y_all.ndim != 1 or len(y_all) != X.shape[0]:
        raise ValidationError(f"labels has {len(y_all)} entries but embeddings has {X.shape[0]} rows")
    if y_all.dtype.kind not in "iu":
        raise ValidationError(f"labels must be integer class ids but have dtype {y_all.dtype}")
    valid = np.flatnonzero(y_all >= 0)
    validate_config(cfg, len(valid), y_all[valid])
    binary = cfg.positive_class is not None
    y_task = (y_all == cfg.positive_class).astype(np.int64) if binary else y_all.astype(np.int64)
    n_classes = 2 if binary else int(y_all[valid].max()) + 1
    task_classes = np.unique(y_task[valid])  # macro-F1 averages these: an unused class id is no class
    if n_classes < 2:
        raise ValidationError("the labels hold a single class: active learning needs at least 2")

    rng = np.random.default_rng(cfg.seed)
    strat = y_task[valid] if np.unique(y_task[valid], return_counts=True)[1].min() >= 2 else None
    pool_pos, test_pos = train_test_split(valid, test_size=cfg.test_size, random_state=cfg.seed,
                                          stratify=strat)
    pool_pos, test_pos = np.sort(pool_pos), np.sort(test_pos)
    holdout = np.setdiff1d(np.arange(X.shape[0]), pool_pos, assume_unique=True)
    X_test = np.asarray(X[test_pos], dtype=np.float32)
    y_test = y_task[test_pos]

    candidates, graph_info = build_candidates(X, cfg, graph, embeddings_path)

    strategy = make_strategy(cfg.strategy, beta=cfg.beta, positive=1, n_members=cfg.n_members)
    model_name = cfg.model if model is None else repr(model)
    if model is None:
        model = make_model(cfg.model, cfg.seed)
    learner = ActiveLearner(X, n_classes, strategy, model=model, candidates=candidates,
                            density_reference=cfg.density_reference, holdout=holdout,
                            random_state=cfg.seed)

    t0 = time.perf_counter()
    learner.prepare()  # a one-time pass over the pool (density), reported apart from the rounds
    prepare_s = time.perf_counter() - t0
    in_pool_y = y_task[pool_pos]
    if cfg.initial_positives is not None:
        seed_rel = positives_negatives_seed(in_pool_y, cfg.initial_positives, cfg.initial_negatives, rng)
    else:
        seed_rel = random_seed(len(pool_pos), cfg.initial if cfg.initial is not None else 100, rng)
    seed = pool_pos[seed_rel]
    oracle = SimulatedOracle(cfg, X, y_task, n_classes, pool_pos)
    watch = StoppingWatch(cfg, X, pool_pos, n_classes, binary, model, y_task)
    learner.teach(seed, oracle.answer(seed))
    pool_positives = int(in_pool_y.sum()) if binary else None

    rounds = []
    for r in range(cfg.rounds + 1):
        sel_s = cand = None
        if r > 0:
            t0 = time.perf_counter()
            ids = learner.query(cfg.batch_size)
            sel_s = time.perf_counter() - t0
            cand = learner.last_query_["candidates"]
            answers = oracle.answer(ids)
            watch.selected(learner, ids, answers)  # what the previous model said of the batch
            learner.teach(ids, answers)  # the oracle
        reviewed = oracle.review(learner, cfg.batch_size, r)
        t0 = time.perf_counter()
        learner.fit()
        fit_s = time.perf_counter() - t0
        probs = learner.model_.predict_proba(X_test)
        pred = probs.argmax(axis=1)
        rec = {
            "round": r,
            "labeled": learner.n_labeled_,
            "positives_found": int((learner.labels_ == 1).sum()) if binary else None,
            "pool_positives": pool_positives,
            "candidates": cand,
            "select_seconds": None if sel_s is None else round(sel_s, 6),
            "fit_seconds": round(fit_s, 6),
            "accuracy": float(accuracy_score(y_test, pred)),
            "macro_f1": float(f1_score(y_test, pred, average="macro", labels=task_classes, zero_division=0)),
            "average_precision": float(average_precision_score(y_test, probs[:, 1])) if binary else None,
            **oracle.round_figures(learner, reviewed),
            **watch.after_fit(learner, y_test),
        }
        if r > 0 and "auto" in learner.last_query_:  # which phase auto's query was in, and why
            rec["auto"] = {k: learner.last_query_.get(k) for k in ("auto", "agreement", "confidence")}
        rounds.append(rec)
        if progress is not None:
            progress(rec)

    metric = "average_precision" if binary else "accuracy"
    stopping, stopping_detail = watch.report(rounds, metric)
    return {
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "extra"}, **cfg.extra,
                   "model": model_name},
        "task": "binary" if binary else "multiclass",
        "n_items": int(X.shape[0]), "n_pool": int(len(pool_pos)), "n_test": int(len(test_pos)),
        "n_classes": n_classes,
        "metric": metric,
        "rounds": rounds,
        # the labels the campaign holds at the end, per task class (seed set included)
        "labeled_per_class": np.bincount(y_task[learner.labeled_positions], minlength=n_classes).tolist(),
        "aulc": aulc([r["labeled"] for r in rounds], [r[metric] for r in rounds]),
        "graph": graph_info,
        "prepare_seconds": round(prepare_s, 6),
        "stopping": stopping,
        "stopping_detail": stopping_detail,
        **({"noise": oracle.report(learner, X_test, y_test)} if oracle.noisy else {}),
    }


def aulc(labeled, values) -> float | None:
    """Normalised area under a learning curve: trapezoid area / labeled span (a mean value)."""
    x = np.asarray(labeled, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(x) < 2 or x[-1] == x[0]:
        return float(v[0]) if len(v) else None
    return float(np.trapezoid(v, x) / (x[-1] - x[0]))


STOPPING_KEYS = ("answers", "wrong_labels", "reviewed", "review_changed", "kappa", "changed", "uncertainty",
                 "max_uncertainty", "selected_accuracy", "gain", "recall_estimate", "recall_lower", "recall_scores_lower", "recall_true")


def stopping_lines(result: dict) -> list:
    """What a user reads of a run's stopping rules and label noise, one line each."""
    metric, last = result["metric"], result["rounds"][-1]
    lines = []
    for name, d in result.get("stopping_detail", {}).items():
        if d["round"] is None:
            lines.append(f"stopping: {name} did not fire ({d['signal']} never passed {d['threshold']})")
        else:
            lines.append(f"stopping: {name} fired at round {d['round']} ({d['labeled']} labels, "
                         f"{100 * d['labels_saved']:.0f}% fewer): {metric} {d['metric']:.4f} then, "
                         f"{d['final_metric']:.4f} at the end ({last['labeled']} labels)")
    noise = result.get("noise")
    if noise:
        a = noise.get("audit")
        text = (f"label noise {noise['rate']:g} ({noise['kind']}): {noise['wrong_labels']} of {noise['labeled']} "
                f"labels wrong at the end, {noise['review']['fixed']} fixed by review")
        if a:
            text += (f"; the audit flagged {a['flagged']} (precision {a['precision'] or 0:.2f}, recall "
                     f"{a['recall'] or 0:.2f}; precision at the {a['at_true_flips']} true flips "
                     f"{a['precision_at_true_flips'] or 0:.2f})")
        lines.append(text)
        rel = noise.get("relabel")
        if rel and "flagged" in rel:
            lines.append(f"re-asking the {rel['n']} flagged labels: accuracy {rel['accuracy_before']:.4f} -> "
                         f"{rel['flagged']['accuracy']:.4f}; as many random labels: {rel['random']['accuracy']:.4f}")
    return lines


def rounds_csv(result: dict) -> str:
    keys = result.get("round_keys", ROUND_KEYS)  # a multi-label run names its own
    buf = io.StringIO()
    extra = [k for k in STOPPING_KEYS if any(k in r for r in result["rounds"])]
    w = csv.DictWriter(buf, fieldnames=list(keys) + extra, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["rounds"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in (*keys, *extra)})
    return buf.getvalue()


def plot_learning_curves(runs: dict[str, list[dict]], path, *, title: str = "") -> None:
    """PNG of mean +- std learning curves; ``runs`` maps a label to a list of results (seeds)."""
    atomic_write_bytes(path, learning_curves_png(runs, title=title))


def learning_curves_png(runs: dict[str, list[dict]], *, title: str = "") -> bytes:
    """The PNG of :func:`plot_learning_curves`, as bytes."""
    return learning_curve_panels_png([(title, runs, None)])


def learning_curve_panels_png(panels, *, ncols: int | None = None, styles: dict | None = None,
                              title: str = "") -> bytes:
    """A PNG of several learning-curve panels: ``panels`` lists ``(title, runs, metric)``, with
    ``runs`` as for :func:`plot_learning_curves` and ``metric`` a round key (``None``: the
    results' main metric). Mean +- std over seeds; ``styles`` maps a run label to matplotlib line
    keywords (``color``, ``ls``); panels fill ``ncols`` columns (default: all in one row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = len(panels) if ncols is None else max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    size = (7.0, 4.5) if len(panels) == 1 else (5.2 * ncols, 3.8 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=110, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (panel_title, runs, metric) in zip(axes.flat, panels):
        shown = metric
        for label, results in runs.items():
            shown = metric or results[0]["metric"]
            x = np.asarray([r["labeled"] for r in results[0]["rounds"]])
            v = np.asarray([[r[shown] for r in res["rounds"]] for res in results], dtype=float)
            mean, std = v.mean(axis=0), v.std(axis=0)
            line, = ax.plot(x, mean, label=label, lw=2, **(styles or {}).get(label, {}))
            if len(results) > 1:
                ax.fill_between(x, mean - std, mean + std, alpha=0.18, color=line.get_color())
        if len(runs) == 1 and len(next(iter(runs.values()))) == 1:  # one run: mark where each stopping rule fired
            res = next(iter(runs.values()))[0]
            by_round = {r["round"]: r["labeled"] for r in res["rounds"]}
            fired = sorted((rnd, name) for name, rnd in (res.get("stopping") or {}).items() if rnd is not None)
            for i, (rnd, name) in enumerate(fired):
                ax.axvline(by_round[rnd], color=f"C{(i + 1) % 10}", ls="--", lw=1, label=f"stop: {name} (round {rnd})")
        ax.set_xlabel("labeled items")
        ax.set_ylabel((shown or "").replace("_", " "))
        ax.set_title(panel_title)
        ax.grid(alpha=0.3)
        if len(panels) == 1:
            ax.legend(frameon=False)
    if title:
        fig.suptitle(title)
    if len(panels) == 1:
        fig.tight_layout()
    else:  # one legend for every panel, below them
        handles, labels = axes.flat[0].get_legend_handles_labels()
        ncol = min(len(labels), 4)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
        legend_inches = 0.25 * -(-len(labels) // ncol) + 0.15
        fig.tight_layout(rect=(0, legend_inches / size[1], 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def check_result_paths(out_json, *, plot: bool = True) -> None:
    """Refuse, before any work, an ``out_json`` whose files could not be written: a folder of
    the same name as one of them (nothing is written then)."""
    from pathlib import Path

    out_json = Path(out_json)
    for path in (out_json, out_json.with_suffix(".csv"), *([out_json.with_suffix(".png")] if plot else [])):
        if path.is_dir():
            raise ValidationError(f"the results would be written to {str(path)!r} but that is a folder")


def write_result(result: dict, out_json, *, plot: bool = True) -> list:
    """Write ``run.json`` and, beside it, ``run.csv`` and ``run.png``. Returns the paths.

    Every file is rendered in memory first and each is written atomically, so an error while
    rendering leaves no file behind; ``run.json`` is written last."""
    from pathlib import Path

    out_json = Path(out_json)
    check_result_paths(out_json, plot=plot)
    files = {out_json.with_suffix(".csv"): rounds_csv(result).encode("utf-8")}
    if plot:
        label = result["config"]["strategy"] + (" (SEALS)" if result["config"]["seals"] else "")
        files[out_json.with_suffix(".png")] = learning_curves_png({label: [result]})
    files[out_json] = json.dumps(result, indent=2).encode("utf-8")
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return [out_json, *[p for p in files if p != out_json]]
