"""Dataset pruning: score labeled data, keep the part that trains as well as the whole.

Scores (one per item; ``higher = more worth keeping`` unless a function says otherwise):

* :func:`prototype_scores` (Sorscher et al. 2022, "Beyond neural scaling laws"): k-means (faiss)
  in embedding space, the score is the distance to the nearest centroid: far = hard = high.
  Keep-hard or keep-easy follows :func:`prototype_keep_hard` (hard when data is plentiful, easy
  when it is scarce).
* :func:`el2n_scores` (Paul et al. 2021, "Deep learning on a data diet"): the L2 norm of
  ``softmax(f(x)) - onehot(y)``, averaged over several proxy models trained briefly.
* :func:`forgetting_scores` (Toneva et al. 2019): how often an item goes from correctly to
  incorrectly classified between two presentations while a proxy model trains.
* :func:`semdedup` (Abbas et al. 2023): k-means clusters, then within each cluster an item whose
  cosine similarity to an item before it exceeds ``1 - eps`` is a near-duplicate.
* :func:`random_scores`: the baseline every method must beat.

Samplers turn scores into a keep mask: :func:`keep_top` (top or bottom fraction),
:func:`keep_class_balanced` and :func:`keep_ccs` (coverage-centric stratified sampling, Zheng et
al. 2023). :func:`prune` runs one score and one sampler and returns a :class:`PruneResult`
(a keep/drop table, a summary). :func:`evaluate_pruning` measures accuracy vs fraction kept.

The proxy model for EL2N and forgetting is :class:`SoftmaxRegression`, a numpy mini-batch
softmax regression on standardised embeddings (a linear probe, as for frozen embeddings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from datascout.convert import as_float32
from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.io import atomic_write_bytes, atomic_write_text
from datascout.pool import check_embeddings, check_ids, iter_row_chunks

METHODS = ("prototypes", "el2n", "forgetting", "semdedup", "random")
SAMPLERS = ("auto", "top", "bottom", "class-balanced", "ccs")
LABEL_METHODS = ("el2n", "forgetting")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def check_fraction(fraction, name: str = "fraction") -> float:
    """A fraction kept must lie in (0, 1]."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number in (0, 1] but is {fraction!r}") from None
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise ValidationError(f"{name} must be in (0, 1] but is {fraction}")
    return f


def check_labels(labels, n: int, *, required: bool = True) -> np.ndarray | None:
    """Integer class ids, one per item, none missing (``-1``)."""
    if labels is None:
        if required:
            raise ValidationError(f"labels are missing: expected one class id for each of the {n} items")
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValidationError(f"labels has shape {labels.shape} but expected ({n},): one per item")
    if labels.dtype.kind not in "iu":
        raise ValidationError(f"labels must be integer class ids but have dtype {labels.dtype}")
    missing = int((labels < 0).sum())
    if missing:
        raise ValidationError(
            f"labels are missing for {missing} of {n} items (label -1): pruning needs every item labeled"
        )
    return labels.astype(np.int64)


def n_to_keep(fraction: float, n: int) -> int:
    """``round(fraction * n)``, at least 1, at most ``n``."""
    return int(min(n, max(1, math.floor(fraction * n + 0.5))))


def _as_float32(X) -> np.ndarray:
    """Contiguous float32 copy (or view) of X; memory maps are read chunk by chunk."""
    if isinstance(X, np.ndarray) and X.dtype == np.float32 and X.flags.c_contiguous and not isinstance(X, np.memmap):
        return X
    out = np.empty(X.shape, dtype=np.float32)
    for rows in iter_row_chunks(X.shape[0]):
        as_float32(X[rows], out=out[rows])
    return out


def _normalize_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


# --------------------------------------------------------------------------------------------
# k-means (faiss)
# --------------------------------------------------------------------------------------------

def kmeans(X, n_clusters: int, *, spherical: bool = False, n_iter: int = 20, random_state: int = 0,
           max_points_per_centroid: int = 256):
    """faiss k-means. Returns ``(centroids, assignment, distance)``: the nearest centroid of each
    row and the Euclidean distance to it. faiss trains on at most ``max_points_per_centroid``
    points per centroid (a random sample), then every row is assigned."""
    import faiss

    X = _as_float32(X)
    n, d = X.shape
    if n_clusters < 1:
        raise ValidationError(f"n_clusters must be >= 1 but is {n_clusters}")
    if n < n_clusters:
        raise ValidationError(f"there are {n} items but {n_clusters} clusters were asked for: "
                              "expected at least as many items as clusters")
    km = faiss.Kmeans(d, int(n_clusters), niter=int(n_iter), seed=int(random_state) + 1,
                      spherical=spherical, verbose=False,
                      max_points_per_centroid=int(max_points_per_centroid), min_points_per_centroid=1)
    km.train(X)
    assign = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for rows in iter_row_chunks(n):
        D, I = km.index.search(X[rows], 1)
        assign[rows] = I[:, 0]
        dist[rows] = np.sqrt(np.maximum(D[:, 0], 0))
    return km.centroids.copy(), assign, dist


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def random_scores(n: int, random_state: int = 0) -> np.ndarray:
    """Uniform random scores in [0, 1): the baseline."""
    return np.random.default_rng(random_state).random(n)


def prototype_scores(X, n_clusters: int = 100, *, normalize: bool = True, n_iter: int = 20,
                     random_state: int = 0):
    """Self-supervised prototype metric (Sorscher et al. 2022).

    k-means with ``n_clusters`` on the embeddings (L2-normalised first when ``normalize``, as
    the paper does with self-supervised embeddings); the score of an item is the Euclidean
    distance to its nearest centroid. Higher = farther from the prototype = harder.
    Returns ``(scores, cluster)``.
    """
    X = _as_float32(X)
    if normalize:
        X = _normalize_rows(X)
    _, assign, dist = kmeans(X, n_clusters, n_iter=n_iter, random_state=random_state)
    return dist.astype(np.float64), assign


def prototype_keep_hard(fraction: float, hard_above: float = 0.5) -> bool:
    """The paper's rule of thumb: keep the hard items when data is plentiful, the easy ones when
    it is scarce. "Plentiful" is read here as keeping at least ``hard_above`` of the data
    (default half): at a small fraction kept the kept set is scarce, so keep easy."""
    return fraction >= hard_above


def el2n(probs, labels) -> np.ndarray:
    """EL2N of given predictions: ``|| probs - onehot(labels) ||_2`` per row (higher = harder)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    err = probs.copy()
    err[np.arange(len(labels)), labels] -= 1.0
    return np.sqrt((err * err).sum(axis=1))


def forgetting_events(correct) -> np.ndarray:
    """Forgetting events per item from a (T presentations, N items) boolean history of
    "classified correctly when presented".

    An event is a presentation where the item is wrong after having been right at the
    presentation before (Toneva et al. 2019). Items never classified correctly are the hardest:
    they get ``T`` (more than the ``T // 2`` events any learned item can have).
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValidationError(f"correct must be a (T, N) history but has shape {correct.shape}")
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    never = ~correct.any(axis=0)
    events[never] = correct.shape[0]
    return events


class SoftmaxRegression:
    """Multinomial logistic regression trained by mini-batch SGD (numpy), the proxy model for
    EL2N and forgetting events. Features are standardised with the training mean and std.

    Parameters
    ----------
    n_classes : int
    epochs : int
        Passes over the data.
    batch_size : int
    lr : float
        SGD step size (on the mean cross-entropy of a batch).
    l2 : float
        Weight decay.
    random_state : int
        Seeds the initial weights (small normal) and the order of the batches.
    """

    def __init__(self, n_classes: int, epochs: int = 5, batch_size: int = 128, lr: float = 0.1,
                 l2: float = 1e-4, random_state: int = 0):
        self.n_classes = n_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.l2 = l2
        self.random_state = random_state

    def _standardize(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_

    def fit(self, X, y):
        """Train; ``correct_`` (epochs, N) records whether each item was classified correctly
        when it was presented (before the step on its batch), for forgetting events."""
        X = _as_float32(X)
        y = np.asarray(y, dtype=np.int64)
        n, d = X.shape
        rng = np.random.default_rng(self.random_state)
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        self.scale_ = scale.astype(np.float32)
        Z = self._standardize(X)
        W = (rng.standard_normal((d, self.n_classes)) * 0.01).astype(np.float32)
        b = np.zeros(self.n_classes, dtype=np.float32)
        correct = np.zeros((self.epochs, n), dtype=bool)
        for epoch in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                zb, yb = Z[idx], y[idx]
                logits = zb @ W + b
                correct[epoch, idx] = logits.argmax(axis=1) == yb
                p = _softmax(logits)
                p[np.arange(len(idx)), yb] -= 1.0
                p /= len(idx)
                W -= self.lr * (zb.T @ p + self.l2 * W)
                b -= self.lr * p.sum(axis=0)
        self.coef_, self.intercept_, self.correct_ = W, b, correct
        return self

    def predict_proba(self, X) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_classes), dtype=np.float64)
        for rows in iter_row_chunks(X.shape[0]):
            out[rows] = _softmax(self._standardize(X[rows]) @ self.coef_ + self.intercept_)
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def el2n_scores(X, labels, n_classes: int | None = None, *, n_models: int = 5, epochs: int = 2,
                batch_size: int = 128, lr: float = 0.1, random_state: int = 0) -> np.ndarray:
    """EL2N (Paul et al. 2021): mean over ``n_models`` proxy :class:`SoftmaxRegression` models,
    each trained ``epochs`` epochs with its own seed (``random_state + m``), of
    ``|| softmax(f(x)) - onehot(y) ||_2``. Higher = harder."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    total = np.zeros(len(labels))
    for m in range(n_models):
        model = SoftmaxRegression(n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                                  random_state=random_state + m).fit(X, labels)
        total += el2n(model.predict_proba(X), labels)
    return total / n_models


def forgetting_scores(X, labels, n_classes: int | None = None, *, epochs: int = 10,
                      batch_size: int = 128, lr: float = 0.1, random_state: int = 0) -> np.ndarray:
    """Forgetting events (Toneva et al. 2019) while a proxy :class:`SoftmaxRegression` trains
    for ``epochs`` epochs; see :func:`forgetting_events`. Higher = forgotten more = harder."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    model = SoftmaxRegression(n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                              random_state=random_state).fit(X, labels)
    return forgetting_events(model.correct_)


@dataclass
class SemDeDupResult:
    """``score``: 1 - the highest cosine similarity to an item earlier in the same cluster
    (2 for the first item of a cluster); an item is a near-duplicate at ``eps`` when
    ``score < eps``. ``duplicate_of``: that most similar earlier item (pool position; -1 for the
    first of a cluster). ``cluster``: the k-means cluster."""

    score: np.ndarray
    duplicate_of: np.ndarray
    cluster: np.ndarray
    seconds: dict = field(default_factory=dict)

    def keep(self, eps: float) -> np.ndarray:
        return self.score >= eps


def semdedup(X, n_clusters: int = 100, *, n_iter: int = 20, random_state: int = 0,
             block_elems: int = 1 << 24) -> SemDeDupResult:
    """SemDeDup (Abbas et al. 2023) on L2-normalised embeddings.

    1. Spherical k-means (faiss) into ``n_clusters`` clusters.
    2. Within a cluster, order the items by cosine similarity to the centroid, lowest first
       (ties by position): the paper keeps the least prototypical item of a group.
    3. An item is a near-duplicate when its cosine similarity to some item *earlier in that
       order* exceeds ``1 - eps``; it is dropped, the earlier one is kept. So from every group of
       near-duplicates the first in the order is kept (a chain a~b~c with a, c not similar
       keeps a only, as in the paper). The score ``1 - max earlier similarity`` does not depend
       on ``eps``: thresholding it at any ``eps`` gives that ``eps``'s result.

    Cost: one (m x m) similarity per cluster of m items, computed in row blocks of at most
    ``block_elems`` entries.
    """
    t0 = time.perf_counter()
    Xn = _normalize_rows(_as_float32(X)).astype(np.float32)
    n = Xn.shape[0]
    centroids, assign, _ = kmeans(Xn, n_clusters, spherical=True, n_iter=n_iter,
                                  random_state=random_state)
    cnorm = _normalize_rows(centroids)
    sim_c = np.einsum("ij,ij->i", Xn, cnorm[assign])
    t1 = time.perf_counter()
    order = np.lexsort((np.arange(n), sim_c, assign))  # by cluster, then similarity ascending
    bounds = np.searchsorted(assign[order], np.arange(n_clusters + 1))
    max_sim = np.full(n, -1.0, dtype=np.float64)
    dup_of = np.full(n, -1, dtype=np.int64)
    for c in range(n_clusters):
        members = order[bounds[c]:bounds[c + 1]]
        m = len(members)
        if m < 2:
            continue
        E = Xn[members]
        step = max(1, block_elems // m)
        for a in range(1, m, step):
            b = min(m, a + step)
            S = E[a:b] @ E[:b].T  # rows a..b-1 against items 0..b-1
            S[np.arange(b - a)[:, None] <= (np.arange(b)[None, :] - a)] = -np.inf  # only earlier items
            j = S.argmax(axis=1)
            max_sim[members[a:b]] = S[np.arange(b - a), j]
            dup_of[members[a:b]] = members[j]
    seconds = {"kmeans": t1 - t0, "within_clusters": time.perf_counter() - t1}
    return SemDeDupResult(score=1.0 - max_sim, duplicate_of=dup_of, cluster=assign, seconds=seconds)


# --------------------------------------------------------------------------------------------
# samplers: scores -> boolean keep mask
# --------------------------------------------------------------------------------------------

def _rank(scores: np.ndarray, largest: bool, rng) -> np.ndarray:
    """Positions by score (largest first when ``largest``), ties in random order."""
    key = -scores if largest else scores
    return np.lexsort((rng.random(len(scores)), key))


def keep_top(scores, fraction: float, *, largest: bool = True, random_state: int = 0) -> np.ndarray:
    """Keep the ``round(fraction * N)`` highest scores (lowest with ``largest=False``); ties
    broken at random, reproducibly."""
    scores = np.asarray(scores, dtype=np.float64)
    fraction = check_fraction(fraction)
    k = n_to_keep(fraction, len(scores))
    keep = np.zeros(len(scores), dtype=bool)
    keep[_rank(scores, largest, np.random.default_rng(random_state))[:k]] = True
    return keep


def class_quotas(counts, n_keep: int, balance: str = "proportional") -> np.ndarray:
    """Split ``n_keep`` over classes of sizes ``counts``.

    * ``"proportional"``: each class keeps its share ``n_keep * n_c / N``; the rounding is
      settled by largest remainder (ties to the lower class id), so the quotas sum to ``n_keep``.
      A class whose share rounds to 0 still keeps 1 item, taken from the largest quota, as long
      as ``n_keep`` covers one item per class.
    * ``"equal"``: the same number per class (water-filling): a class smaller than its share
      keeps all its items and the rest is spread over the others; leftover units go to the
      largest classes first.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if balance == "proportional":
        exact = n_keep * counts / n
        q = np.floor(exact).astype(np.int64)
        rest = n_keep - int(q.sum())
        if rest:
            q[np.lexsort((np.arange(len(counts)), -(exact - q)))[:rest]] += 1
        if n_keep >= int((counts > 0).sum()):
            for c in np.flatnonzero((counts > 0) & (q == 0)):  # a rare class is not pruned away
                donor = int(np.lexsort((np.arange(len(q)), -(q - exact), -q))[0])
                q[donor] -= 1
                q[c] = 1
        return q
    if balance == "equal":
        q = np.zeros(len(counts), dtype=np.int64)
        open_ = counts > 0
        budget = n_keep
        while budget > 0 and open_.any():
            share = budget // int(open_.sum())
            if share == 0:
                cand = np.flatnonzero(open_ & (q < counts))
                cand = cand[np.lexsort((cand, -(counts[cand] - q[cand])))][:budget]
                q[cand] += 1
                break
            add = np.minimum(share, counts - q) * open_
            q += add
            budget -= int(add.sum())
            open_ &= q < counts
        return q
    raise ValidationError(f"unknown balance {balance!r}: expected 'proportional' or 'equal'")


def keep_class_balanced(scores, labels, fraction: float, *, largest: bool = True,
                        balance: str = "proportional", random_state: int = 0) -> np.ndarray:
    """Keep the top (or bottom) scores within each class, each class keeping its quota from
    :func:`class_quotas` so that pruning cannot empty a class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fraction = check_fraction(fraction)
    n = len(scores)
    counts = np.bincount(labels)
    quota = class_quotas(counts, n_to_keep(fraction, n), balance)
    order = _rank(scores, largest, np.random.default_rng(random_state))
    # stable sort of the ranked order by class: within each class, best first
    by_class = order[np.argsort(labels[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class = np.arange(n) - starts[labels[by_class]]
    keep = np.zeros(n, dtype=bool)
    keep[by_class[rank_in_class < quota[labels[by_class]]]] = True
    return keep


def ccs_strata(scores, n_strata: int) -> np.ndarray:
    """Stratum of each score: the range [min, max] split into ``n_strata`` equal-width bins
    (the maximum falls in the last)."""
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = scores.min(), scores.max()
    if hi == lo:
        return np.zeros(len(scores), dtype=np.int64)
    return np.minimum(((scores - lo) / (hi - lo) * n_strata).astype(np.int64), n_strata - 1)


def ccs_budget(stratum_sizes, budget: int) -> np.ndarray:
    """Zheng et al. 2023, Algorithm 1: visit strata from the smallest; each takes
    ``min(size, floor(remaining budget / strata left))``."""
    sizes = np.asarray(stratum_sizes, dtype=np.int64)
    take = np.zeros(len(sizes), dtype=np.int64)
    left = budget
    visit = [s for s in np.lexsort((np.arange(len(sizes)), sizes)) if sizes[s] > 0]
    for i, s in enumerate(visit):
        take[s] = min(sizes[s], left // (len(visit) - i))
        left -= take[s]
    return take


def keep_ccs(scores, fraction: float, *, beta: float = 0.1, n_strata: int = 50,
             random_state: int = 0) -> np.ndarray:
    """Coverage-centric coreset selection (Zheng et al. 2023) on difficulty scores (higher =
    harder): drop the hardest ``beta`` of the items (likely mislabeled), split the remaining
    score range into ``n_strata`` equal-width strata, spread the budget evenly over them with
    :func:`ccs_budget`, and sample uniformly within each stratum. ``beta`` is lowered to
    ``1 - fraction`` when it would leave fewer items than the budget."""
    scores = np.asarray(scores, dtype=np.float64)
    fraction = check_fraction(fraction)
    if not 0.0 <= beta < 1.0:
        raise ValidationError(f"CCS beta must be in [0, 1) but is {beta}")
    if n_strata < 1:
        raise ValidationError(f"CCS n_strata must be >= 1 but is {n_strata}")
    n = len(scores)
    rng = np.random.default_rng(random_state)
    k = n_to_keep(fraction, n)
    n_drop = min(int(math.floor(beta * n)), n - k)
    ranked = _rank(scores, True, rng)  # hardest first
    rest = ranked[n_drop:]
    stratum = ccs_strata(scores[rest], n_strata)
    take = ccs_budget(np.bincount(stratum, minlength=n_strata), k)
    # uniform sample within each stratum: random keys, then the first `take` of each stratum
    order = np.lexsort((rng.random(len(rest)), stratum))
    sizes = np.bincount(stratum, minlength=n_strata)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos_in = np.arange(len(rest)) - starts[stratum[order]]
    keep = np.zeros(n, dtype=bool)
    keep[rest[order[pos_in < take[stratum[order]]]]] = True
    return keep


# --------------------------------------------------------------------------------------------
# the one entry point
# --------------------------------------------------------------------------------------------

@dataclass
class PruneConfig:
    """What :func:`prune` does.

    method : one of :data:`METHODS`.
    fraction : fraction kept in (0, 1]; ``None`` only for ``semdedup``, which then keeps every
        item that is not a near-duplicate at ``eps``.
    sampler : ``auto`` (prototypes: :func:`prototype_keep_hard`; semdedup: least redundant;
        others: top), ``top`` (highest scores), ``bottom``, ``class-balanced`` (top within each
        class, proportional quotas), ``ccs``.
    """

    method: str = "el2n"
    fraction: float | None = 0.5
    sampler: str = "auto"
    n_clusters: int = 100
    eps: float = 0.05
    n_models: int = 5
    el2n_epochs: int = 2
    forgetting_epochs: int = 10
    ccs_beta: float = 0.1
    ccs_strata: int = 50
    balance: str = "proportional"
    random_state: int = 0


@dataclass
class PruneResult:
    """Keep/drop table (``ids``, ``scores``, ``kept``) and how it was made."""

    ids: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    config: PruneConfig
    direction: str  # "higher kept" or "lower kept" or "stratified" or "threshold"
    labels: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        n, k = len(self.kept), int(self.kept.sum())
        out = {
            "method": self.config.method, "sampler": self.config.sampler, "direction": self.direction,
            "items": n, "kept": k, "dropped": n - k, "fraction_kept": k / n,
            "score_min": float(self.scores.min()), "score_max": float(self.scores.max()),
            "score_mean": float(self.scores.mean()),
            "seconds": round(self.seconds, 3), "config": asdict(self.config),
        }
        if self.labels is not None:
            before = np.bincount(self.labels)
            after = np.bincount(self.labels[self.kept], minlength=len(before))
            out["per_class"] = [{"class": c, "items": int(before[c]), "kept": int(after[c])}
                                for c in range(len(before))]
        out.update(self.extra)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "score", "kept"])
        w.writerows(zip(self.ids.tolist(), [repr(float(s)) for s in self.scores],
                        self.kept.astype(int).tolist()))
        return buf.getvalue()

    def write(self, path) -> Path:
        """Write the table as ``.csv`` or ``.parquet`` (atomically)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            atomic_write_text(path, self.to_csv())
        elif suffix in (".parquet", ".pq"):
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise MissingDependencyError("writing Parquet needs pyarrow: pip install 'datascout[parquet]'") from exc
            table = pa.table({"id": self.ids, "score": self.scores.astype(np.float64), "kept": self.kept})
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            atomic_write_bytes(path, buf.getvalue().to_pybytes())
        else:
            raise ValidationError(f"the keep/drop table must be .csv or .parquet but is {path.name!r}")
        return path

    def write_summary(self, path) -> Path:
        atomic_write_text(path, json.dumps(self.summary(), indent=2))
        return Path(path)


def validate_config(cfg: PruneConfig, n: int, labels) -> None:
    if cfg.method not in METHODS:
        raise ValidationError(f"unknown pruning method {cfg.method!r}: expected one of {', '.join(METHODS)}")
    if cfg.sampler not in SAMPLERS:
        raise ValidationError(f"unknown sampler {cfg.sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if cfg.fraction is None:
        if cfg.method != "semdedup":
            raise ValidationError(f"a fraction kept in (0, 1] is needed for method {cfg.method!r}")
    else:
        check_fraction(cfg.fraction)
    if cfg.method in ("prototypes", "semdedup"):
        if cfg.n_clusters < 1:
            raise ValidationError(f"n_clusters must be >= 1 but is {cfg.n_clusters}")
        if n < cfg.n_clusters:
            raise ValidationError(f"there are {n} items but {cfg.n_clusters} clusters were asked for: "
                                  "expected at least as many items as clusters")
    if cfg.method == "semdedup" and not 0.0 < cfg.eps < 2.0:
        raise ValidationError(f"eps must be in (0, 2) but is {cfg.eps}")
    if labels is None and (cfg.method in LABEL_METHODS or cfg.sampler == "class-balanced"):
        what = f"method {cfg.method!r}" if cfg.method in LABEL_METHODS else "the class-balanced sampler"
        raise ValidationError(f"labels are missing: {what} needs one class id for each of the {n} items")
    for name in ("n_models", "el2n_epochs", "forgetting_epochs", "ccs_strata"):
        if getattr(cfg, name) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {getattr(cfg, name)}")


def compute_scores(X, labels, cfg: PruneConfig):
    """The score of ``cfg.method`` for every item (validated input). Returns ``(scores, extra)``."""
    rs = cfg.random_state
    if cfg.method == "random":
        return random_scores(X.shape[0], rs), {}
    if cfg.method == "prototypes":
        s, cluster = prototype_scores(X, cfg.n_clusters, random_state=rs)
        return s, {"cluster": cluster}
    if cfg.method == "el2n":
        return el2n_scores(X, labels, int(labels.max()) + 1, n_models=cfg.n_models,
                           epochs=cfg.el2n_epochs, random_state=rs), {}
    if cfg.method == "forgetting":
        return forgetting_scores(X, labels, int(labels.max()) + 1, epochs=cfg.forgetting_epochs,
                                 random_state=rs), {}
    res = semdedup(X, cfg.n_clusters, random_state=rs)
    return res.score, {"duplicate_of": res.duplicate_of, "cluster": res.cluster}


def select(scores, labels, cfg: PruneConfig):
    """Apply the sampler of ``cfg`` to scores. Returns ``(kept, direction)``."""
    sampler, rs = cfg.sampler, cfg.random_state
    if cfg.method == "semdedup" and cfg.fraction is None:
        return scores >= cfg.eps, f"threshold: kept when 1 - max similarity >= eps={cfg.eps}"
    if sampler == "auto":
        if cfg.method == "prototypes":
            sampler = "top" if prototype_keep_hard(cfg.fraction) else "bottom"
        else:
            sampler = "top"
    if sampler == "top":
        return keep_top(scores, cfg.fraction, largest=True, random_state=rs), "higher kept"
    if sampler == "bottom":
        return keep_top(scores, cfg.fraction, largest=False, random_state=rs), "lower kept"
    if sampler == "class-balanced":
        return (keep_class_balanced(scores, labels, cfg.fraction, balance=cfg.balance, random_state=rs),
                f"higher kept within each class ({cfg.balance})")
    return (keep_ccs(scores, cfg.fraction, beta=cfg.ccs_beta, n_strata=cfg.ccs_strata, random_state=rs),
            f"stratified (CCS, beta={cfg.ccs_beta}, strata={cfg.ccs_strata})")


def prune(embeddings, labels=None, config: PruneConfig | None = None, *, ids=None) -> PruneResult:
    """Score every item with ``config.method`` and keep a fraction with ``config.sampler``.

    ``labels``: integer class ids, none missing; needed by EL2N, forgetting and the
    class-balanced sampler (optional otherwise). ``ids``: item ids for the table (default 0..N-1).
    """
    cfg = config or PruneConfig()
    X = check_embeddings(embeddings)
    n = X.shape[0]
    labels = check_labels(labels, n, required=False)
    ids = check_ids(ids, n)
    validate_config(cfg, n, labels)
    t0 = time.perf_counter()
    scores, extra = compute_scores(X, labels, cfg)
    kept, direction = select(scores, labels, cfg)
    seconds = time.perf_counter() - t0
    summary_extra = {}
    if cfg.method == "semdedup":
        summary_extra["near_duplicates_at_eps"] = int((scores < cfg.eps).sum())
    return PruneResult(ids=np.arange(n) if ids is None else ids, scores=np.asarray(scores, dtype=np.float64),
                       kept=kept, config=cfg, direction=direction, labels=labels, seconds=seconds,
                       extra=summary_extra)


# --------------------------------------------------------------------------------------------
# evaluation: accuracy of a model trained on the kept subset
# --------------------------------------------------------------------------------------------

def default_eval_model(kind: str = "logreg", random_state: int = 0):
    """``logreg``: scikit-learn logistic regression on standardised features; ``mlp``: one
    hidden layer of 128 ReLU units (Adam, early stopping)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=60,
                                                             early_stopping=True, random_state=random_state))
    raise ValidationError(f"unknown evaluation model {kind!r}: expected 'logreg' or 'mlp'")


def evaluate_pruning(X_train, y_train, X_test, y_test, configs: dict, fractions, *, seeds=(0,),
                     models=("logreg",)) -> list[dict]:
    """Accuracy on (X_test, y_test) of each model trained on the subset of the training data that
    each named config keeps, at each fraction, for each seed (the seed sets the config's
    ``random_state`` and the model's). Scores are computed once per (config, seed).
    Returns records ``{name, fraction, seed, model, accuracy, kept}``."""
    from sklearn.base import clone

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
                    model = clone(default_eval_model(kind, int(seed)))
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
