"""Which labels are likely wrong: confident learning (cleanlab) on out-of-fold probabilities,
plus what the kNN graph sees and probabilities miss.

* :func:`out_of_fold_probs`: cross-validated ``P(y | x)`` for every labeled item, any
  scikit-learn classifier on the embeddings (default: the library's balanced logistic regression).
* :func:`audit_labels`: ranks the labeled items by how likely their label is wrong (``score``,
  higher = more suspect: one minus cleanlab's self-confidence label quality) and suggests the
  likely class. An item is flagged when confident learning finds an issue
  (``low-self-confidence``), when a near-duplicate (cosine at or above ``duplicate_similarity``
  in the kNN graph) carries another label (``near-duplicate-conflict``: the less self-confident
  of the pair), or when it is an outlier (its mean similarity to its k neighbours is in the
  lowest ``outlier_quantile`` of the labeled items: ``outlier``). The per-class noise rate is
  estimated from cleanlab's confident joint.

Needs the ``labels`` extra (``pip install 'datascout[labels]'``, i.e. cleanlab).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.pool import check_embeddings

REASONS = ("low-self-confidence", "near-duplicate-conflict", "outlier")


def _cleanlab():
    try:
        import cleanlab.count
        import cleanlab.filter
        import cleanlab.rank
    except ImportError as exc:
        raise MissingDependencyError("auditing labels needs cleanlab: pip install 'datascout[labels]'") from exc
    return cleanlab


def out_of_fold_probs(X, y, n_classes: int, *, model=None, folds: int = 5, random_state: int = 0) -> np.ndarray:
    """(n, n_classes) probabilities of each item from a model that never saw its label
    (stratified ``folds``-fold cross-validation; fewer folds when a class has fewer items)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from datascout.models import FittedModel, default_model

    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    n_folds = int(min(folds, present.min()))
    if n_folds < 2:
        raise ValidationError(f"cross-validation needs at least 2 labels of every labeled class but class "
                              f"{int(np.flatnonzero(counts == 1)[0])} has 1")
    base = default_model(random_state) if model is None else model
    proba = np.zeros((len(y), n_classes), dtype=np.float64)
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y):
        fitted = FittedModel(clone(base), n_classes).fit(np.asarray(X[train], dtype=np.float32), y[train])
        proba[test] = fitted.predict_proba(np.asarray(X[test], dtype=np.float32))
    return proba


def calibrated_positive_probs(X_labeled, y_labeled, probs, *, model=None, folds: int = 5,
                              random_state: int = 0):
    """``probs`` (the model's probabilities of the positive class, for any items) recalibrated by
    Platt scaling: a logistic map of their logit fitted on the labeled items' out-of-fold
    probabilities (:func:`out_of_fold_probs`, the same model) against their labels.

    A balanced model, or one fitted on items an active learner chose, does not give the positive
    rate of the pool; the map does, as long as the items were chosen by their score (then, among
    items of one score, the chosen and the others are alike). ``None`` when a class has fewer
    than 2 labels (nothing to cross-validate)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y_labeled, dtype=np.int64)
    if np.bincount(y, minlength=2).min() < 2:
        return None
    oof = out_of_fold_probs(X_labeled, y, 2, model=model, folds=folds, random_state=random_state)[:, 1]

    def logit(p):
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
        return (np.log(p) - np.log1p(-p)).reshape(-1, 1)

    platt = LogisticRegression(C=1e4).fit(logit(oof), y)
    return platt.predict_proba(logit(probs))[:, 1]


@dataclass
class LabelAudit:
    """The result of :func:`audit_labels`, for the labeled items, by pool position.

    ``positions`` (flagged items, most suspect first), ``given``, ``suggested``, ``score``
    (higher = more likely wrong) and ``reasons`` (a tuple of :data:`REASONS` each) align with it;
    ``quality`` is every checked item's label quality (``checked`` positions), ``noise_rate``
    the estimated share of wrong labels per given class."""

    positions: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    reasons: list
    checked: np.ndarray
    quality: np.ndarray
    noise_rate: np.ndarray
    folds: int

    def summary(self, classes=None) -> str:
        names = classes or [str(c) for c in range(len(self.noise_rate))]
        rates = ", ".join(f"{names[c]} {r:.3f}" for c, r in enumerate(self.noise_rate) if np.isfinite(r))
        n = len(self.checked)
        return (f"checked {n} labeled items, flagged {len(self.positions)} "
                f"({100 * len(self.positions) / max(n, 1):.1f}%); estimated noise rate per class: {rates}")


def audit_labels(embeddings, labels, *, n_classes: int | None = None, model=None, folds: int = 5,
                 graph=None, duplicate_similarity: float = 0.98, outlier_quantile: float = 0.01,
                 random_state: int = 0, probs=None) -> LabelAudit:
    """Audit the labeled items (``labels`` >= 0; -1 = unlabeled, ignored) of ``embeddings``.

    ``graph``: a :class:`~datascout.seals.KNNGraph` of the whole pool (its neighbours are pool
    positions); without it, the near-duplicate and outlier checks are skipped. ``probs``:
    out-of-fold probabilities of the labeled items if already computed (else cross-validated
    here with ``model`` and ``folds``)."""
    cl = _cleanlab()
    X = embeddings if probs is not None else check_embeddings(embeddings)  # with probs: only the shape is read
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != X.shape[0]:
        raise ValidationError(f"labels has {labels.shape} entries but embeddings has {X.shape[0]} rows")
    if labels.dtype.kind not in "iu":
        raise ValidationError(f"labels must be integer class ids (-1 = unlabeled) but have dtype {labels.dtype}")
    if not 0 < duplicate_similarity <= 1:
        raise ValidationError(f"duplicate_similarity must be in (0, 1] but is {duplicate_similarity}")
    if not 0 <= outlier_quantile < 1:
        raise ValidationError(f"outlier_quantile must be in [0, 1) but is {outlier_quantile}")
    pos = np.flatnonzero(labels >= 0)
    y = labels[pos].astype(np.int64)
    K = int(n_classes if n_classes is not None else (y.max() + 1 if len(y) else 0))
    if len(np.unique(y)) < 2:
        raise ValidationError(f"auditing labels needs labels of at least 2 classes but got {len(np.unique(y))}")
    if y.max() >= K:
        raise ValidationError(f"labels hold class {int(y.max())} but there are {K} classes")
    if probs is None:
        probs = out_of_fold_probs(X[pos], y, K,
                                  model=model, folds=folds, random_state=random_state)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(pos), K):
        raise ValidationError(f"probs must have shape {(len(pos), K)} but has {probs.shape}")
    n_folds = int(min(folds, np.bincount(y)[np.bincount(y) > 0].min()))
    present = np.unique(y)
    # cleanlab counts classes 0..max: give it the classes present, renumbered, so that a class
    # with no label (possible in a task's class list) does not break its confident joint
    remap = np.full(K, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    yp, pp = remap[y], probs[:, present]
    pp = pp / np.maximum(pp.sum(axis=1, keepdims=True), 1e-12)
    quality = cl.rank.get_label_quality_scores(yp, pp, method="self_confidence")
    issue = cl.filter.find_label_issues(yp, pp, filter_by="prune_by_noise_rate", n_jobs=1)  # no child processes
    joint = cl.count.estimate_joint(yp, pp)
    noise = np.full(K, np.nan)
    row = joint.sum(axis=1)
    noise[present] = np.where(row > 0, 1 - np.diag(joint) / np.maximum(row, 1e-12), np.nan)
    flags = {r: np.zeros(len(pos), dtype=bool) for r in REASONS}
    flags["low-self-confidence"] = np.asarray(issue, dtype=bool)
    if graph is not None:
        if len(graph) != X.shape[0]:
            raise ValidationError(f"the kNN graph has {len(graph)} rows but embeddings has {X.shape[0]}")
        nb = np.asarray(graph.neighbors[pos], dtype=np.int64)
        sim = np.asarray(graph.similarities[pos], dtype=np.float64)
        valid = nb >= 0
        sim = np.where(valid, sim, 0.0)  # a missing neighbour may carry any value
        nb_label = np.where(valid, labels[np.maximum(nb, 0)], -1)
        conflict = valid & (sim >= duplicate_similarity) & (nb_label >= 0) & (nb_label != y[:, None])
        rows, cols = np.nonzero(conflict)
        if len(rows):
            index_of = np.full(X.shape[0], -1, dtype=np.int64)
            index_of[pos] = np.arange(len(pos))
            other = index_of[nb[rows, cols]]
            # of each conflicting pair, the member whose label the model believes less
            worse = np.where(quality[rows] <= quality[other], rows, other)
            flags["near-duplicate-conflict"][worse] = True
        if outlier_quantile > 0:
            mean_sim = np.where(valid.any(axis=1), sim.sum(axis=1) / np.maximum(valid.sum(axis=1), 1), -1.0)
            flags["outlier"] = mean_sim <= np.quantile(mean_sim, outlier_quantile)
    flagged = np.zeros(len(pos), dtype=bool)
    for f in flags.values():
        flagged |= f
    score = 1.0 - quality
    idx = np.flatnonzero(flagged)
    order = idx[np.lexsort((pos[idx], -score[idx]))]  # most suspect first, ties by position
    suggested = probs.argmax(axis=1)
    return LabelAudit(positions=pos[order], given=y[order], suggested=suggested[order], score=score[order],
                      reasons=[tuple(r for r in REASONS if flags[r][i]) for i in order],
                      checked=pos, quality=quality, noise_rate=noise, folds=n_folds)


# -- simulated annotators and consensus ----------------------------------------------------

NOISE_KINDS = ("uniform", "confusion")


def confusable_classes(X, y, n_classes: int) -> np.ndarray:
    """For each class, the class whose centroid (mean unit embedding) is nearest in cosine: the
    one an annotator is likeliest to confuse it with (a class with no item maps to the next id)."""
    Xn = np.asarray(X, dtype=np.float64)
    Xn = Xn / np.maximum(np.linalg.norm(Xn, axis=1, keepdims=True), 1e-12)
    y = np.asarray(y, dtype=np.int64)
    cent = np.zeros((n_classes, Xn.shape[1]))
    np.add.at(cent, y, Xn)
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    sim = cent @ cent.T
    np.fill_diagonal(sim, -np.inf)
    empty = np.bincount(y, minlength=n_classes) == 0
    sim[:, empty] = -np.inf
    out = sim.argmax(axis=1)
    stuck = ~np.isfinite(sim.max(axis=1))
    out[stuck] = (np.flatnonzero(stuck) + 1) % n_classes
    return out.astype(np.int64)


class NoisyOracle:
    """An annotator who answers wrongly at ``rate`` (a number, or one per true class), the same
    way every time for the same ``(item, attempt)``: attempt ``a`` of an item is an independent
    draw (a different annotator, or the same one asked again blind). A wrong answer is a uniformly
    random other class (``kind="uniform"``) or the class most confusable with the true one
    (``kind="confusion"``: ``confusion_to[true class]``, see :func:`confusable_classes`).

    ``truth`` holds every pool item's true class id (by position); ``answer(positions, attempt)``
    returns the answers."""

    def __init__(self, truth, n_classes: int, rate, *, kind: str = "uniform", confusion_to=None,
                 random_state: int = 0):
        self.truth = truth
        self.n_classes = n_classes
        self.rate = rate
        self.kind = kind
        self.confusion_to = confusion_to
        self.random_state = random_state

    def _check(self):
        rate = np.broadcast_to(np.asarray(self.rate, dtype=np.float64), (self.n_classes,))
        if not ((rate >= 0) & (rate <= 1)).all():
            raise ValidationError(f"the label noise rate must be in [0, 1] but is {self.rate}")
        if self.kind not in NOISE_KINDS:
            raise ValidationError(f"unknown noise kind {self.kind!r}: expected one of {', '.join(NOISE_KINDS)}")
        if self.kind == "confusion" and self.confusion_to is None:
            raise ValidationError("class-confusion noise needs confusion_to (the class each class is confused with)")
        if self.n_classes < 2:
            raise ValidationError(f"label noise needs at least 2 classes but there are {self.n_classes}")
        return rate

    def answer(self, positions, attempt: int = 0) -> np.ndarray:
        rate = self._check()
        positions = np.asarray(positions, dtype=np.int64)
        truth = np.asarray(self.truth, dtype=np.int64)
        rng = np.random.default_rng([self.random_state, 0x6E6F6973, attempt])  # one stream per attempt
        u = rng.random((len(truth), 2))[positions]  # drawn for the whole pool: order-free
        t = truth[positions]
        wrong = u[:, 0] < rate[t]
        if self.kind == "uniform":
            other = (t + 1 + (u[:, 1] * (self.n_classes - 1)).astype(np.int64)) % self.n_classes
        else:
            other = np.asarray(self.confusion_to, dtype=np.int64)[t]
        return np.where(wrong, other, t)


def majority_vote(answers) -> np.ndarray:
    """Each row's most frequent answer of ``answers`` ((n, m) class ids, -1 = no answer); a tie
    goes to the answer given last (rightmost) among the tied classes; -1 for a row with none."""
    A = np.asarray(answers, dtype=np.int64)
    n, m = A.shape
    K = int(A.max()) + 1 if A.size and A.max() >= 0 else 1
    votes = np.zeros((n, K), dtype=np.int64)
    last = np.full((n, K), -1, dtype=np.int64)
    for j in range(m):
        ok = A[:, j] >= 0
        votes[ok, A[ok, j]] += 1
        last[ok, A[ok, j]] = j
    best = votes == votes.max(axis=1, keepdims=True)
    out = np.argmax(np.where(best, last, -2), axis=1)
    out[votes.sum(axis=1) == 0] = -1
    return out


def crowdlab_consensus(answers, probs, annotators=None) -> tuple:
    """CROWDLAB (cleanlab.multiannotator): the consensus label of each row of ``answers``
    ((n, m) class ids, -1 = no answer) weighed by each annotator's estimated quality and by the
    model's ``probs`` ((n, K), out of fold where the model saw the item). Returns
    ``(labels, {annotator: quality})``."""
    import warnings

    import pandas as pd

    try:
        from cleanlab.multiannotator import get_label_quality_multiannotator
    except ImportError as exc:
        raise MissingDependencyError("annotator consensus needs cleanlab: pip install 'datascout[labels]'") from exc
    A = np.asarray(answers, dtype=np.int64)
    P = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, None)
    P /= P.sum(axis=1, keepdims=True)
    if A.ndim != 2 or P.shape[0] != A.shape[0]:
        raise ValidationError(f"answers has {A.shape[0]} rows but probs has {P.shape[0]}")
    names = [str(a) for a in (annotators if annotators is not None else range(A.shape[1]))]
    table = pd.DataFrame(np.where(A >= 0, A, np.nan).astype(float), columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = get_label_quality_multiannotator(table, P, verbose=False)
    labels = np.asarray(got["label_quality"]["consensus_label"], dtype=np.int64)
    quality = {str(a): float(q) for a, q in got["annotator_stats"]["annotator_quality"].items()}
    return labels, quality
