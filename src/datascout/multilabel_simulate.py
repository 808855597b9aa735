"""Simulation harness for label sets: an oracle answers from ground-truth sets, a held-out test
split (iteratively stratified, so every label keeps its share) measures the model each round.

Round 0 is the seed set. Every round reports, on the test split, with the predicted set
``P(y_l = 1 | x) > 0.5``: ``micro_f1``, ``macro_f1`` (over the labels present in the test split),
``samples_f1`` (an item with no label, predicted with none, scores 1), ``hamming_loss``, ``subset_accuracy``, ``average_precision`` (the mean over labels
of each label's AP of its probability, over the labels with a test positive) and
``label_ranking_ap`` (scikit-learn's label ranking average precision). A metric that does not
apply is ``null``. ``aulc`` is the normalised area under the micro-F1 learning curve.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
)

from datascout.exceptions import ValidationError
from datascout.multilabel import check_label_sets
from datascout.multilabel_loop import MultiLabelLearner
from datascout.multilabel_models import MULTILABEL_MODEL_NAMES, make_multilabel_model
from datascout.pool import check_embeddings
from datascout.registry import MULTILABEL_STRATEGY_NAMES, make_multilabel_strategy
from datascout.simulate import aulc, build_candidates, check_budget, check_run_settings
from datascout.seeds import iterative_stratification_seed, label_positives_seed, random_seed

MULTILABEL_ROUND_KEYS = ("round", "labeled", "label_cardinality", "candidates", "select_seconds", "fit_seconds",
                         "micro_f1", "macro_f1", "samples_f1", "hamming_loss", "subset_accuracy",
                         "average_precision", "label_ranking_ap")
SEED_KINDS = ("random", "stratified")


@dataclass
class MultiLabelSimulationConfig:
    strategy: str = "mean-entropy"
    model: str = "logreg"  # a name of datascout.multilabel_models.MULTILABEL_MODEL_NAMES
    seals: bool = False
    k: int = 100
    index: str = "HNSW32"
    graph: bool = True
    explore: int = 0
    initial: int | None = None  # seed size (default 100), drawn by ``seed_kind``
    seed_kind: str = "random"  # or "stratified" (iterative stratification)
    seed_label: int | None = None  # with initial_positives/negatives: p positives of this label
    initial_positives: int | None = None
    initial_negatives: int | None = None
    batch_size: int = 100
    rounds: int = 20
    test_size: float = 0.2
    seed: int = 0
    hybrid_m: int = 10
    extra: dict = field(default_factory=dict)


def validate_multilabel_config(cfg: MultiLabelSimulationConfig, Y: np.ndarray) -> int:
    """Check ``cfg`` against the label sets ``Y`` of the labeled items; returns the seed size."""
    if cfg.strategy not in MULTILABEL_STRATEGY_NAMES:
        raise ValidationError(f"unknown multi-label strategy {cfg.strategy!r}: expected one of "
                              f"{', '.join(MULTILABEL_STRATEGY_NAMES)}")
    if cfg.model not in MULTILABEL_MODEL_NAMES:
        raise ValidationError(f"unknown multi-label model {cfg.model!r}: expected one of "
                              f"{', '.join(MULTILABEL_MODEL_NAMES)}")
    check_run_settings(cfg)
    if cfg.seed_kind not in SEED_KINDS:
        raise ValidationError(f"seed_kind must be one of {', '.join(SEED_KINDS)} but is {cfg.seed_kind!r}")
    if (cfg.initial_positives is None) != (cfg.initial_negatives is None):
        raise ValidationError("initial_positives and initial_negatives go together")
    if (cfg.initial_positives is None) != (cfg.seed_label is None):
        raise ValidationError("a seed of p positives of one label needs seed_label, initial_positives "
                              "and initial_negatives together")
    if cfg.initial_positives is not None and (cfg.initial is not None or cfg.seed_kind != "random"):
        raise ValidationError("give either initial (random or stratified) or seed_label with "
                              "initial_positives/initial_negatives, not both")
    n, L = Y.shape
    if n == 0:
        raise ValidationError("the label sets hold no labeled item")
    if L < 2:
        raise ValidationError(f"a multi-label task needs at least 2 labels but has {L}")
    if cfg.seed_label is not None and not 0 <= cfg.seed_label < L:
        raise ValidationError(f"seed_label must be a label id in 0..{L - 1} but is {cfg.seed_label}")
    n_test = int(np.ceil(n * cfg.test_size))
    seed_size = cfg.initial if cfg.initial is not None else (
        (cfg.initial_positives or 0) + (cfg.initial_negatives or 0) or 100)
    if seed_size <= 0:
        raise ValidationError(f"the seed set must hold at least 1 item but holds {seed_size}")
    check_budget(cfg, n - n_test, seed_size)
    return seed_size


def label_ranking_ap(Y_true: np.ndarray, scores: np.ndarray, chunk_elements: int = 1 << 22) -> float:
    """scikit-learn's ``label_ranking_average_precision_score`` (ties ranked at their worst, a row
    with no relevant label or with every label relevant scores 1), vectorised over rows: for each
    relevant label j of a row, the fraction of the labels scored >= s_j that are relevant. (The
    scikit-learn function loops over rows in Python: 2 s for 2,400 x 20 on this machine.)"""
    Y = np.asarray(Y_true, dtype=bool)
    S = np.asarray(scores, dtype=np.float64)
    n, L = Y.shape
    total = 0.0
    step = max(1, chunk_elements // max(L * L, 1))
    for start in range(0, n, step):
        y, s = Y[start:start + step], S[start:start + step]
        geq = s[:, None, :] >= s[:, :, None]  # [i, j, k]: label k scores >= label j
        rank = geq.sum(axis=2)
        hits = (geq & y[:, None, :]).sum(axis=2)
        k = y.sum(axis=1)
        trivial = (k == 0) | (k == L)
        per = np.where(y, hits / rank, 0.0).sum(axis=1) / np.maximum(k, 1)
        total += float(np.where(trivial, 1.0, per).sum())
    return total / n


def evaluate_sets(Y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """The round metrics of the module docstring, on one test split."""
    pred = probs > threshold
    present = np.flatnonzero(Y_true.any(axis=0))
    aps = average_precision_score(Y_true[:, present], probs[:, present], average=None) if len(present) else []
    return {
        "micro_f1": float(f1_score(Y_true, pred, average="micro", zero_division=0)),
        "macro_f1": (float(f1_score(Y_true, pred, average="macro", labels=present, zero_division=0))
                     if len(present) else None),
        # an item with no true and no predicted label is predicted right: 1, not 0
        "samples_f1": float(f1_score(Y_true, pred, average="samples", zero_division=1.0)),
        "hamming_loss": float(hamming_loss(Y_true, pred)),
        "subset_accuracy": float(accuracy_score(Y_true, pred)),
        "average_precision": float(np.mean(aps)) if len(present) else None,
        "label_ranking_ap": label_ranking_ap(Y_true, probs) if Y_true.any() else None,
    }


def _run_round(learner, r: int, batch_size: int, oracle):
    """Round ``r`` of a simulation: (from round 1) query a batch and teach the ``oracle``'s answers
    for its ids, then refit. Returns ``(select_seconds, candidates, fit_seconds)``; the first two
    are ``None`` in round 0 (the seed set)."""
    sel_s = cand = None
    if r > 0:
        t0 = time.perf_counter()
        ids = learner.query(batch_size)
        sel_s = time.perf_counter() - t0
        cand = learner.last_query_["candidates"]
        learner.teach(ids, oracle(ids))
    t0 = time.perf_counter()
    learner.fit()
    return sel_s, cand, time.perf_counter() - t0


def simulate_multilabel(embeddings, label_sets, config: MultiLabelSimulationConfig, *, labeled=None,
                        classes=None, embeddings_path=None, graph=None, model=None, progress=None) -> dict:
    """Run one simulated multi-label campaign; returns ``{"config", "rounds", "aulc", ...}``.

    ``label_sets``: (N, L) 0/1 (dense or scipy sparse); ``labeled``: which rows hold a ground
    truth (default all; the rest are never in the pool nor the test split)."""
    cfg = config
    X = check_embeddings(embeddings)
    Y_all = check_label_sets(label_sets)
    if Y_all.shape[0] != X.shape[0]:
        raise ValidationError(f"label sets have {Y_all.shape[0]} rows but embeddings has {X.shape[0]}")
    valid = np.arange(X.shape[0]) if labeled is None else np.flatnonzero(np.asarray(labeled, dtype=bool))
    seed_size = validate_multilabel_config(cfg, Y_all[valid])
    L = Y_all.shape[1]
    if classes is not None and len(classes) != L:
        raise ValidationError(f"{len(classes)} class names for {L} labels")

    rng = np.random.default_rng(cfg.seed)
    split_rng = np.random.default_rng([cfg.seed, 1])
    test_rel = iterative_stratification_seed(Y_all[valid], int(np.ceil(len(valid) * cfg.test_size)), split_rng)
    test_pos = valid[test_rel]
    pool_pos = np.setdiff1d(valid, test_pos, assume_unique=True)
    holdout = np.setdiff1d(np.arange(X.shape[0]), pool_pos, assume_unique=True)
    X_test = np.asarray(X[test_pos], dtype=np.float32)
    Y_test = Y_all[test_pos]

    candidates, graph_info = build_candidates(X, cfg, graph, embeddings_path)
    model_name = cfg.model if model is None else repr(model)
    if model is None:
        model = make_multilabel_model(cfg.model, cfg.seed)
    strategy = make_multilabel_strategy(cfg.strategy, hybrid_m=cfg.hybrid_m)
    learner = MultiLabelLearner(X, list(classes) if classes is not None else L, strategy, model=model,
                                candidates=candidates, holdout=holdout, random_state=cfg.seed)

    in_pool = Y_all[pool_pos]
    if cfg.seed_label is not None:
        seed_rel = label_positives_seed(in_pool, cfg.seed_label, cfg.initial_positives, cfg.initial_negatives, rng)
    elif cfg.seed_kind == "stratified":
        seed_rel = iterative_stratification_seed(in_pool, seed_size, rng)
    else:
        seed_rel = random_seed(len(pool_pos), seed_size, rng)
    seed = pool_pos[seed_rel]
    learner.teach(seed, Y_all[seed])

    rounds = []
    for r in range(cfg.rounds + 1):
        sel_s, cand, fit_s = _run_round(learner, r, cfg.batch_size, lambda ids: Y_all[ids])  # the oracle
        rec = {"round": r, "labeled": learner.n_labeled_,
               "label_cardinality": round(learner.label_cardinality, 6), "candidates": cand,
               "select_seconds": None if sel_s is None else round(sel_s, 6), "fit_seconds": round(fit_s, 6),
               **evaluate_sets(Y_test, learner.model_.predict_proba(X_test))}
        rounds.append(rec)
        if progress is not None:
            progress(rec)

    pos, sets = learner.label_sets()
    return {
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "extra"}, **cfg.extra, "model": model_name},
        "task": "multi-label",
        "n_items": int(X.shape[0]), "n_pool": int(len(pool_pos)), "n_test": int(len(test_pos)),
        "n_labels": L, "classes": list(classes) if classes is not None else None,
        "metric": "micro_f1",
        "round_keys": list(MULTILABEL_ROUND_KEYS),
        "rounds": rounds,
        # positives per label among the labeled items at the end (seed set included)
        "labeled_per_label": sets.sum(axis=0).astype(int).tolist(),
        "aulc": aulc([r["labeled"] for r in rounds], [r["micro_f1"] for r in rounds]),
        "graph": graph_info,
    }
