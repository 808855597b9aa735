"""Multi-label active learning: label sets, scores and strategies.

An item's label is a *set* of task labels, held as one row of an (N, L) 0/1 indicator. Files:

* ``.npy``: an (N, L) array of 0/1 (bool, int or float); a row of ``-1`` everywhere is unlabeled;
* ``.npz`` written by ``scipy.sparse.save_npz``: a sparse (N, L) 0/1 matrix (for large L), every
  row labeled;
* ``.csv`` with an id column and a label-set column (``id,labels``), names joined by ``;``
  (``a;c``); an empty field is the empty set, and an id the file does not name is unlabeled. A
  single ``labels`` column holds one row per item, in pool order.

Scores take ``probs`` of shape (n, L), ``P(y_l = 1 | x)`` per label (a multi-label model's output,
:mod:`datascout.multilabel_models`), and follow the one direction convention: **higher = query
first**. With probabilities instead of SVM outputs, a label's signed score is ``f_l = 2 p_l - 1``
and the label is predicted positive when ``p_l > threshold`` (0.5).

* ``mean_entropy`` / ``max_entropy``: the mean / max over labels of the binary entropy
  ``-p log p - (1-p) log(1-p)`` (the per-label uncertainty of binary relevance, averaged as in
  Esuli & Sebastiani 2009, or its worst label);
* ``min_margin``: ``-min_l |2 p_l - 1|``, the label closest to its decision boundary (Brinker
  2006, "BinMin");
* ``mmc``: Yang et al. 2009 (KDD, "Effective multi-label active learning for text
  classification"), maximum loss reduction with maximal confidence: the expected loss
  ``sum_l (1 - yhat_l f_l) / 2`` of the most confident label vector ``yhat`` (its ``m`` most
  probable labels positive). Yang et al. predict ``m`` with a logistic regression on the sorted
  probabilities; here ``m`` is the labeled set's mean label cardinality, rounded (at least 1);
* ``label_cardinality_inconsistency``: Li & Guo 2013 (IJCAI, "Active learning with multi-label
  SVM classification"): ``| #{l : p_l > t} - mean labeled cardinality |``;
* ``adaptive``: Li & Guo 2013's mix of the max-margin prediction uncertainty
  ``u = 1 / (min_{l in yhat+} f_l - max_{l in yhat-} f_l)`` (the separation between the predicted
  positive and negative labels, measured on ``p_l - threshold``, half of ``f_l``: a constant
  factor that leaves the ranking alone) and the cardinality inconsistency ``c``:
  ``u ** beta * c ** (1 - beta)``. The paper picks beta per round among ``0, 0.1, ..., 1`` by an approximate
  generalisation error that retrains the model once per beta; here beta is fixed (default 0.5,
  small-text's default), which keeps the score one vectorised pass;
* ``max_loss`` / ``mean_max_loss``: Li, Wang & Sung 2004 (ICIP, "Multilabel SVM active learning for
  image classification"): the hinge loss ``max(0, 1 - yhat_l f_l)`` of each label under the
  predicted label vector ``yhat`` (``f_l > 0``, the most probable label positive when none is),
  its maximum over labels (Max Loss) or its mean (Mean Max Loss).

Diversity on top: k-center greedy (:class:`datascout.strategies.KCenter`, label-agnostic) and a
hybrid of each score (top ``m * b``, then k-center; :class:`MultiLabelHybrid`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.io import open_text, read_npy
from datascout.pool import iter_row_chunks
from datascout.strategies import Hybrid, ScoreInputs, Strategy

_EPS = np.float32(1e-12)
THRESHOLD = 0.5
SCORE_ROWS = 4096  # rows per block of a score's (rows x labels) work


# --------------------------------------------------------------------------- label sets


def check_label_sets(Y, n_labels: int | None = None, *, name: str = "label sets",
                     allow_empty: bool = True) -> np.ndarray:
    """An (n, L) 0/1 indicator (dense or scipy sparse) as a dense bool array, checked: 2-D, the
    right number of columns, only 0 and 1, and no empty row unless ``allow_empty``."""
    if hasattr(Y, "toarray") and hasattr(Y, "nnz"):
        Y = Y.toarray()
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValidationError(f"{name} must be a 2-D (items x labels) 0/1 array but have shape {Y.shape}")
    if n_labels is not None and Y.shape[1] != n_labels:
        raise ValidationError(f"{name} have {Y.shape[1]} columns but the task has {n_labels} labels")
    if Y.dtype != bool:
        if Y.dtype.kind not in "iuf":
            raise ValidationError(f"{name} must be 0/1 but have dtype {Y.dtype}")
        bad = (Y != 0) & (Y != 1)
        if bad.any():
            r, c = map(int, np.argwhere(bad)[0])
            raise ValidationError(f"{name} must hold only 0 and 1 but row {r}, column {c} holds {Y[r, c].item()!r}")
        Y = Y == 1
    if not allow_empty and Y.shape[0]:
        empty = ~Y.any(axis=1)
        if empty.any():
            raise ValidationError(f"{name}: row {int(np.flatnonzero(empty)[0])} is the empty set, which this "
                                  "task does not allow (every item needs at least one label)")
    return Y


def sets_to_indicator(sets, classes, *, name: str = "label sets") -> np.ndarray:
    """A sequence of label sets (iterables of class names, or of class ids ``0..L-1``) as an
    (n, L) bool indicator. An unknown class is a one-line error naming it."""
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(sets), len(classes)), dtype=bool)
    for r, s in enumerate(sets):
        if isinstance(s, (str, bytes)):
            raise ValidationError(f"{name}: item {r} is the string {s!r}, expected a set of class names")
        for v in s:
            j = index.get(v)
            if j is None and isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(classes):
                j = int(v)
            if j is None:
                raise ValidationError(f"unknown class {v!r} in {name} (item {r}): expected one of {classes}")
            out[r, j] = True
    return out


def supported_labels(sets, *, min_support: int = 1, max_labels: int | None = None):
    """``(Y, names)`` from raw label sets (e.g. each package's debtags): the labels that at least
    ``min_support`` items carry, at most ``max_labels`` of them (the most frequent; ties by name),
    in name order; each item's set restricted to them (it may become empty)."""
    if min_support < 1:
        raise ValidationError(f"min_support must be >= 1 but is {min_support}")
    counts: dict = {}
    for s in sets:
        for v in set(s):
            counts[v] = counts.get(v, 0) + 1
    kept = sorted((v for v, c in counts.items() if c >= min_support), key=lambda v: (-counts[v], v))
    if max_labels is not None:
        kept = kept[:max_labels]
    if not kept:
        raise ValidationError(f"no label is carried by at least {min_support} items "
                              f"(the most frequent by {max(counts.values()) if counts else 0})")
    names = sorted(kept)
    col = {v: j for j, v in enumerate(names)}
    Y = np.zeros((len(sets), len(names)), dtype=bool)
    for r, s in enumerate(sets):
        for v in s:
            j = col.get(v)
            if j is not None:
                Y[r, j] = True
    return Y, names


def indicator_to_sets(Y, classes=None) -> list[list]:
    """Rows of an indicator as lists of class names (or ids), in class order."""
    Y = np.asarray(Y, dtype=bool)
    names = list(range(Y.shape[1])) if classes is None else list(classes)
    return [[names[j] for j in np.flatnonzero(row)] for row in Y]


def load_label_sets(path, *, ids=None, id_column: str = "id", label_column: str = "labels",
                    classes=None, separator: str = ";"):
    """Load label sets (see the module docstring for the formats).

    Returns ``(Y, labeled, classes)``: ``Y`` an (N, L) bool array (rows of unlabeled items are all
    False), ``labeled`` an (N,) bool mask, ``classes`` the class names (``None`` for an indicator
    file without names; ``classes`` given: their order, else sorted)."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected a file at {str(path)!r} but none exists")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        Y = read_npy(path)
        if Y.ndim != 2:
            raise ValidationError(f"label sets in {str(path)!r} must be an (items x labels) array but "
                                  f"have shape {Y.shape}")
        unlabeled = np.all(Y == -1, axis=1) if Y.dtype.kind in "if" and Y.shape[1] else np.zeros(len(Y), bool)
        Y = np.where(unlabeled[:, None], 0, Y)
        Y = check_label_sets(Y, None if classes is None else len(classes), name=f"label sets in {path.name}")
        return Y, ~unlabeled, (list(classes) if classes is not None else None)
    if suffix == ".npz":
        import scipy.sparse

        try:
            M = scipy.sparse.load_npz(path)
        except Exception as exc:
            raise ValidationError(f"cannot read {str(path)!r} as a scipy sparse matrix (.npz from "
                                  f"scipy.sparse.save_npz): {exc}") from exc
        Y = check_label_sets(M, None if classes is None else len(classes), name=f"label sets in {path.name}")
        return Y, np.ones(Y.shape[0], dtype=bool), (list(classes) if classes is not None else None)
    if suffix == ".csv":
        return _label_sets_csv(path, ids, id_column, label_column, classes, separator)
    raise ValidationError(f"unsupported label-sets file {path.name!r}: expected .npy, .npz or .csv")


def _label_sets_csv(path, ids, id_column, label_column, classes, separator):
    with open_text(path) as fh:
        rows = list(csv.reader(fh, skipinitialspace=True))
    if not rows:
        raise ValidationError(f"{str(path)!r} is empty: expected a header and label-set rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if label_column not in header:
        raise ValidationError(f"{str(path)!r} has columns {header}: expected a {label_column!r} column "
                              f"(and {id_column!r} to match rows to items by id)")
    li = header.index(label_column)
    if id_column in header:
        if ids is None:
            raise ValidationError(f"{str(path)!r} has an id column: pass the pool's ids to match label sets to items")
        ii = header.index(id_column)
        lookup = {str(v): i for i, v in enumerate(np.asarray(ids).tolist())}
        cells: list = [None] * len(lookup)
        for line, r in enumerate(body, start=2):
            if not any(cell.strip() for cell in r):
                continue  # a blank line
            if len(r) <= max(li, ii):
                raise ValidationError(f"line {line} of {str(path)!r} has {len(r)} field(s) but the header has {len(header)}")
            pos = lookup.get(r[ii])
            if pos is None:
                raise ValidationError(f"{str(path)!r} names id {r[ii]!r}, which is not in the pool")
            if cells[pos] is not None:
                raise ValidationError(f"{str(path)!r} names id {r[ii]!r} twice (line {line})")
            cells[pos] = r[li]
    else:
        if ids is not None and len(body) != len(ids):
            raise ValidationError(f"{str(path)!r} has {len(body)} label-set rows but the pool has {len(ids)} items")
        cells = [r[li] if len(r) > li else "" for r in body]
    sets = [None if c is None else [s.strip() for s in c.split(separator) if s.strip()] for c in cells]
    labeled = np.asarray([s is not None for s in sets], dtype=bool)
    names = list(classes) if classes is not None else sorted({v for s in sets if s for v in s})
    if not names:
        raise ValidationError(f"{str(path)!r} names no class: expected label sets such as 'a{separator}b'")
    Y = sets_to_indicator([s or [] for s in sets], names, name=f"label sets in {path.name}")
    return Y, labeled, names


# --------------------------------------------------------------------------- scores


def _float(probs) -> np.ndarray:
    p = np.asarray(probs)
    return p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)


def binary_entropy(probs: np.ndarray) -> np.ndarray:
    """``-p log p - (1-p) log(1-p)`` per entry (nats; ``0 log 0 = 0``), same shape as ``probs``."""
    p = _float(probs)
    eps = np.asarray(_EPS, dtype=p.dtype)
    q = 1.0 - p
    a = np.maximum(p, eps)
    np.log(a, out=a)
    a *= p
    b = np.maximum(q, eps)
    np.log(b, out=b)
    b *= q
    a += b
    return np.negative(a, out=a)


def _nearer_side(p: np.ndarray) -> np.ndarray:
    """``min(p, 1 - p)`` per entry: the probability of the less likely answer of each label."""
    return np.minimum(p, 1.0 - p)


def mean_entropy(probs: np.ndarray) -> np.ndarray:
    """Mean over labels of the binary entropy."""
    return binary_entropy(probs).mean(axis=1)


def max_entropy(probs: np.ndarray) -> np.ndarray:
    """Max over labels of the binary entropy: the item's most uncertain label. (The entropy grows
    with ``min(p, 1-p)``, so it is the entropy of the row's largest ``min(p, 1-p)``: one logarithm
    per item, not per label.)"""
    return binary_entropy(_nearer_side(_float(probs)).max(axis=1))


def min_margin(probs: np.ndarray) -> np.ndarray:
    """``-min_l |2 p_l - 1|``: the label closest to its boundary (Brinker 2006, BinMin); equal to
    ``2 max_l min(p_l, 1 - p_l) - 1``."""
    return 2.0 * _nearer_side(_float(probs)).max(axis=1) - 1.0


def predicted_sets(probs: np.ndarray, threshold: float = THRESHOLD, *, at_least_one: bool = False) -> np.ndarray:
    """``p_l > threshold`` per label; with ``at_least_one`` the most probable label of a row with
    none above the threshold is positive."""
    p = np.asarray(probs)
    pred = p > threshold
    if at_least_one and p.shape[1]:
        none = ~pred.any(axis=1)
        pred[np.flatnonzero(none), p[none].argmax(axis=1)] = True
    return pred


def label_cardinality_inconsistency(probs: np.ndarray, cardinality: float,
                                    threshold: float = THRESHOLD) -> np.ndarray:
    """``| #{l : p_l > threshold} - cardinality |`` (Li & Guo 2013), ``cardinality`` the mean
    number of labels of the labeled items."""
    return np.abs(np.count_nonzero(np.asarray(probs) > threshold, axis=1) - float(cardinality))


def separation_margin(probs: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """``min_{l in yhat+} f_l - max_{l in yhat-} f_l`` with ``f_l = p_l - threshold`` and yhat the
    labels above the threshold (Li & Guo 2013's max-margin separation). A side with no label
    measures from the threshold itself (``f = 0``); the margin is in ``[0, 1]``, 0 only when no
    label is above the threshold and the most probable one sits exactly on it."""
    f = _float(probs) - threshold  # in [-1, 1]: 2 stands for "no label on this side"
    pos = f > 0
    lo = np.where(pos, f, 2.0).min(axis=1)
    hi = np.where(pos, -2.0, f).max(axis=1)
    lo[lo == 2.0] = 0.0
    hi[hi == -2.0] = 0.0
    return lo - hi


def adaptive(probs: np.ndarray, cardinality: float, beta: float = 0.5, threshold: float = THRESHOLD,
             eps: float = 1e-6) -> np.ndarray:
    """``u ** beta * c ** (1 - beta)``: ``u = 1 / max(separation margin, eps)``, ``c`` the label
    cardinality inconsistency (Li & Guo 2013)."""
    u = 1.0 / np.maximum(separation_margin(probs, threshold).astype(np.float64), eps)
    c = label_cardinality_inconsistency(probs, cardinality, threshold)
    return np.power(u, beta) * np.power(c, 1.0 - beta)


def mmc(probs: np.ndarray, cardinality: float) -> np.ndarray:
    """Yang et al. 2009: ``sum_l (1 - yhat_l f_l) / 2`` with ``f_l = 2 p_l - 1`` and yhat (+1/-1)
    the ``m = max(1, round(cardinality))`` most probable labels (half rounds up); equals
    ``sum_{l in yhat+} (1 - p_l) + sum_{l in yhat-} p_l = sum_l p_l + m - 2 sum_{l in yhat+} p_l``."""
    p = _float(probs)
    L = p.shape[1]
    m = int(min(L, max(1, np.floor(float(cardinality) + 0.5))))  # half up, not to even
    top = p.max(axis=1) if m == 1 else np.partition(p, L - m, axis=1)[:, L - m:].sum(axis=1)
    return p.sum(axis=1, dtype=np.float64) + m - 2.0 * top


def max_loss(probs: np.ndarray) -> np.ndarray:
    """Li et al. 2004, Max Loss: ``max_l max(0, 1 - yhat_l f_l)`` with ``f_l = 2 p_l - 1`` and yhat
    the labels above 1/2 (the most probable one when none is). A label's loss is ``2 min(p, 1-p)``,
    except the label forced positive: ``2 (1 - p)``, which is then the row's maximum."""
    p = _float(probs)
    pmax = p.max(axis=1)
    return np.where(pmax > THRESHOLD, 2.0 * _nearer_side(p).max(axis=1), 2.0 * (1.0 - pmax))


def mean_max_loss(probs: np.ndarray) -> np.ndarray:
    """Li et al. 2004, Mean Max Loss: ``mean_l max(0, 1 - yhat_l f_l)`` (yhat as for
    :func:`max_loss`)."""
    p = _float(probs)
    pmax = p.max(axis=1)
    forced = np.where(pmax > THRESHOLD, 0.0, 2.0 - 4.0 * pmax)  # 2 (1 - p) instead of 2 p
    return (2.0 * _nearer_side(p).sum(axis=1, dtype=np.float64) + forced) / p.shape[1]


# --------------------------------------------------------------------------- strategies


@dataclass
class MultiLabelScoreInputs(ScoreInputs):
    """:class:`~datascout.strategies.ScoreInputs` plus the labeled set's mean label cardinality."""

    cardinality: float | None = None


class MultiLabelStrategy(Strategy):
    """A strategy that reads multi-label probabilities ((n, L), one ``P(y_l=1|x)`` per label).
    ``needs_cardinality``: its score reads the labeled set's mean label cardinality."""

    multi_label = True
    needs_probs = True
    needs_cardinality = False
    function = staticmethod(mean_entropy)

    def score(self, inputs):
        p = inputs.probs
        out = np.empty(len(p), dtype=np.float64)
        for rows in iter_row_chunks(len(p), SCORE_ROWS):  # (rows x labels) temporaries stay in cache
            out[rows] = self.score_probs(p[rows], inputs.cardinality)
        return out

    def score_probs(self, probs, cardinality):
        if self.needs_cardinality:
            return type(self).function(probs, cardinality)
        return type(self).function(probs)


def _scored(class_name: str, name: str, function, needs_cardinality: bool = False) -> type:
    """A :class:`MultiLabelStrategy` whose score is ``function`` (of the probabilities, and of the
    labeled set's mean cardinality when ``needs_cardinality``)."""
    return type(class_name, (MultiLabelStrategy,), {
        "name": name, "function": staticmethod(function), "needs_cardinality": needs_cardinality,
        "__doc__": f"Score: :func:`{function.__name__}`.", "__module__": __name__})


MeanEntropy = _scored("MeanEntropy", "mean-entropy", mean_entropy)
MaxEntropy = _scored("MaxEntropy", "max-entropy", max_entropy)
MinMargin = _scored("MinMargin", "min-margin", min_margin)
MMC = _scored("MMC", "mmc", mmc, needs_cardinality=True)
LabelCardinalityInconsistency = _scored("LabelCardinalityInconsistency", "lci", label_cardinality_inconsistency,
                                        needs_cardinality=True)
MaxLoss = _scored("MaxLoss", "max-loss", max_loss)
MeanMaxLoss = _scored("MeanMaxLoss", "mean-max-loss", mean_max_loss)


class Adaptive(MultiLabelStrategy):
    name = "adaptive"
    needs_cardinality = True

    def __init__(self, beta: float = 0.5):
        if not 0.0 <= beta <= 1.0:
            raise ValidationError(f"adaptive's beta must be in [0, 1] but is {beta}")
        self.beta = float(beta)

    def score_probs(self, probs, cardinality):
        return adaptive(probs, cardinality, self.beta)

    def __repr__(self):
        return f"Adaptive(beta={self.beta})"


class MultiLabelHybrid(Hybrid):
    """Top ``m * b`` by a multi-label score, then k-center greedy among them."""

    multi_label = True

    @property
    def needs_cardinality(self) -> bool:
        return self.base.needs_cardinality
