"""Query strategies: pure, vectorised scores on arrays, and batch selection.

Direction convention, everywhere: **higher score = query first**. Scores take arrays
(probabilities, committee probabilities, embeddings), never models or files, so they run
unchanged over a whole pool, a SEALS candidate set, or a shard of a distributed pool.

Scores
------
* ``least_confidence``: ``1 - max_y P(y|z)``
* ``margin``: ``-(P(y1|z) - P(y2|z))`` with y1, y2 the two most probable classes
* ``entropy`` (MaxEnt): ``-sum_y P(y|z) log P(y|z)`` (natural log, ``0 log 0 = 0``)
* ``information_density``: ``entropy(z) * max(0, mean_{p in P} cos(z, p)) ** beta``; with unit
  vectors the mean cosine to a set P is ``z_unit . mean(P_unit)``, exact in O(N d)
* ``most_likely_positive`` (active search): ``P(y=positive|z)``
* ``bald``: ``H(mean_m P_m) - mean_m H(P_m)`` over a committee (mutual information)
* ``vote_entropy``: entropy of the committee's hard votes
* random: a constant score; :func:`top_b` breaks ties uniformly at random

Selection
---------
* :func:`top_b`: the b best scores, ties broken at random, reproducibly (``np.partition``, no full
  sort of the pool)
* :func:`kcenter_greedy`: core-set diversity, chunked so a pool-sized array is never copied
* hybrid: top ``m * b`` by a base score (``hybrid``: entropy; ``hybrid-margin``, ``hybrid-bald``,
  ``hybrid-committee``: that score), then k-center greedy among them

Every strategy is a :class:`Strategy` in one registry, :data:`datascout.registry.STRATEGIES` (one
name each, with the batch-selecting strategies of :mod:`datascout.coverage` and
:mod:`datascout.auto`, which build on this module); the CLI, the Ray scorer, the campaign and the
docs read it. A strategy says what its score needs and
chooses its batch itself (:meth:`Strategy.select`): the top b of its score by default, k-center
greedy for :class:`KCenter` and :class:`Hybrid`, so the loop has no special cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datascout.convert import as_float32
from datascout.exceptions import ValidationError
from datascout.pool import CandidateView, iter_row_chunks, row_max

_EPS = np.float32(1e-12)


# --------------------------------------------------------------------------- scores


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs``; ``0 log 0 = 0``."""
    p = np.asarray(probs)
    logp = np.log(np.maximum(p, _EPS))
    return -np.einsum("ij,ij->i", p, logp)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_y P(y|z)``."""
    return 1.0 - row_max(np.asarray(probs))


def margin(probs: np.ndarray) -> np.ndarray:
    """``-(P(y1|z) - P(y2|z))``: the smaller the gap between the two best classes, the higher."""
    p = np.asarray(probs)
    if p.shape[1] < 2:
        return np.full(p.shape[0], -1.0, dtype=p.dtype)
    if p.shape[1] > 32:
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        return top2[:, 0] - top2[:, 1]
    # running best and second best over the columns (few classes: faster than a row partition)
    first = np.maximum(p[:, 0], p[:, 1])
    second = np.minimum(p[:, 0], p[:, 1])
    for j in range(2, p.shape[1]):
        col = p[:, j]
        np.maximum(second, np.minimum(first, col), out=second)
        np.maximum(first, col, out=first)
    return second - first


def most_likely_positive(probs: np.ndarray, positive: int = 1) -> np.ndarray:
    """``P(y=positive|z)``: active search for a rare concept. ``positive`` must be a column of
    ``probs`` (``0..n_classes-1``; a negative index is refused, not read from the end)."""
    p = np.asarray(probs)
    check_positive_class(positive, p.shape[1])
    return p[:, positive]


def check_positive_class(positive, n_classes: int) -> int:
    """``positive`` as an int, when it is a class id in ``0..n_classes-1``."""
    if isinstance(positive, bool) or not isinstance(positive, (int, np.integer)):
        raise ValidationError(f"the positive class must be an integer class id but is {positive!r}")
    if not 0 <= positive < n_classes:
        raise ValidationError(f"the positive class must be in 0..{n_classes - 1} but is {positive}")
    return int(positive)


def cosine_to_direction(embeddings: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``(z / ||z||) . direction`` per row; with ``direction`` = mean of a set's unit vectors this
    is the mean cosine similarity of each z to that set."""
    X = np.asarray(embeddings, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    return (X @ np.asarray(direction, dtype=np.float32)) / np.maximum(norms, _EPS)


def information_density(probs: np.ndarray, similarity: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """``entropy(z) * max(0, similarity(z)) ** beta`` (Settles & Craven 2008).

    ``similarity`` is the mean cosine similarity of each item to the unlabeled pool (see
    :func:`cosine_to_direction`); negative means are clipped to 0 so non-integer ``beta`` is
    defined.
    """
    return entropy(probs) * np.power(np.maximum(similarity, 0.0), beta)


def bald(member_probs: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and model over a committee: shape (M, n, C) -> (n,)."""
    mp = np.asarray(member_probs)
    return entropy(mp.mean(axis=0)) - np.mean([entropy(m) for m in mp], axis=0)


def vote_entropy(member_probs: np.ndarray) -> np.ndarray:
    """Entropy of the distribution of the committee members' hard votes."""
    mp = np.asarray(member_probs)
    votes = mp.argmax(axis=2)  # (M, n)
    n_classes = mp.shape[2]
    counts = np.stack([(votes == c).sum(axis=0) for c in range(n_classes)], axis=1)
    return entropy(counts / mp.shape[0])


# --------------------------------------------------------------------------- selection


NAN_RANK = np.finfo(np.float64).min  # where a NaN score ranks: below every real score, above -inf


def rank_values(scores) -> np.ndarray:
    """``scores`` as float64 with NaN moved to :data:`NAN_RANK`.

    Callers mark items that must never be chosen (labeled, held out) with ``-inf``; a NaN score
    (a model's degenerate probabilities) ranks last among the items that may be chosen but never
    ties with those, so a batch cannot contain an excluded item.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), NAN_RANK, scores)


def top_b(scores: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``b`` highest scores, best first; ties broken uniformly at random.

    Uses ``np.partition`` (O(n)) to find the b-th best value, then draws random keys only for the
    items tied with it. NaN scores rank below every number and above ``-inf`` (see
    :func:`rank_values`).
    """
    s = rank_values(scores)
    n = s.shape[0]
    if not 0 < b <= n:
        raise ValidationError(f"batch size must be in 1..{n} but is {b}")
    threshold = np.partition(s, n - b)[n - b]
    strict = np.flatnonzero(s > threshold)
    tied = np.flatnonzero(s == threshold)
    need = b - len(strict)
    keys = rng.random(len(tied))
    if need < len(tied):
        pick = np.argpartition(-keys, need - 1)[:need] if need > 0 else np.empty(0, dtype=np.int64)
        tied, keys = tied[pick], keys[pick]
    chosen = np.concatenate([strict, tied])
    all_keys = np.concatenate([rng.random(len(strict)), keys])
    order = np.lexsort((-all_keys, -s[chosen]))
    return chosen[order]


def _sq_norms(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return np.einsum("ij,ij->i", X, X)


def _origin(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """A point near the data to measure from: distances do not change with it, but
    ``|x|^2 - 2 x.c + |c|^2`` in float32 cancels badly when the rows sit far from the origin
    (raw tabular features: every value near 3000 lost distances of 0..81 to errors of ~50)."""
    C = np.asarray(centers)
    ref = C if C.shape[0] else np.asarray(X[: min(X.shape[0], 4096)])
    return ref.mean(axis=0, dtype=np.float64).astype(np.float32)


def min_sq_distances(X: np.ndarray, centers: np.ndarray, chunk_rows: int = 16384,
                     origin: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distance of each row of ``X`` to its nearest row of ``centers``.

    Chunked over ``X`` (which may be a memory map) and over ``centers``; rows and centers are
    measured from ``origin`` (default: the centers' mean), which keeps float32 exact enough.
    """
    n = X.shape[0]
    out = np.full(n, np.inf, dtype=np.float32)
    C = np.asarray(centers, dtype=np.float32)
    if C.shape[0] == 0:
        return out
    mu = _origin(X, C) if origin is None else origin
    C = C - mu
    cn = _sq_norms(C)
    for rows in iter_row_chunks(n, chunk_rows):
        xc = as_float32(X[rows]) - mu
        xn = _sq_norms(xc)
        best = out[rows]
        for cs in iter_row_chunks(C.shape[0], 2048):
            d = xc @ C[cs].T
            d *= -2.0
            d += cn[cs]
            np.minimum(best, d.min(axis=1) + xn, out=best)
        out[rows] = best
    np.maximum(out, 0.0, out=out)
    return out


def kcenter_greedy(X: np.ndarray, centers: np.ndarray, b: int, rng: np.random.Generator,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """Core-set selection (Sener & Savarese 2018): repeatedly take the row of ``X`` farthest from
    every center (initially ``centers``, e.g. the labeled items) and make it a center.

    ``exclude`` masks rows that may not be chosen. With no centers the first pick is random.
    Returns row indices of ``X`` in pick order.
    """
    n = X.shape[0]
    valid = n if exclude is None else int((~exclude).sum())
    if not 0 < b <= valid:
        raise ValidationError(f"batch size must be in 1..{valid} but is {b}")
    mu = _origin(X, centers)
    dist = min_sq_distances(X, centers, origin=mu)
    # |x - mu|^2 of every row, once: each pick then costs one matrix-vector product per chunk
    xn = np.empty(n, dtype=np.float32)
    for rows in iter_row_chunks(n, 65536):
        xn[rows] = _sq_norms(as_float32(X[rows]) - mu)
    if exclude is not None:
        dist[exclude] = -1.0
    picks = np.empty(b, dtype=np.int64)
    for i in range(b):
        if np.isinf(dist).all() or (i == 0 and np.asarray(centers).shape[0] == 0):
            cand = np.flatnonzero(dist >= 0) if exclude is not None else np.arange(n)
            j = int(rng.choice(cand))
        else:
            j = int(np.argmax(dist))
        picks[i] = j
        c = np.asarray(X[j], dtype=np.float32) - mu
        cn, shift = float(c @ c), float(mu @ c)
        for rows in iter_row_chunks(n, 65536):
            # (x - mu).c = x.c - mu.c: no shifted copy of the chunk
            d = xn[rows] - 2.0 * (as_float32(X[rows]) @ c - shift) + cn
            sub = dist[rows]
            keep = sub >= 0  # excluded / already picked rows stay at -1
            np.minimum(sub, np.maximum(d, 0.0), out=sub, where=keep)
            dist[rows] = sub
        dist[j] = -1.0
    return picks


# --------------------------------------------------------------------------- strategy objects


@dataclass
class ScoreInputs:
    """What a strategy may read for a chunk of candidates (``None`` when not computed)."""

    probs: np.ndarray | None = None
    member_probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    similarity: np.ndarray | None = None  # mean cosine to the density reference set


class Strategy:
    """A stateless query strategy.

    ``needs_probs`` / ``needs_committee`` (of ``n_members`` models) / ``needs_similarity`` say what
    :meth:`score` reads from :class:`ScoreInputs`. :meth:`select` chooses a batch from one round's
    :class:`~datascout.pool.CandidateView`; ``selects_by_score`` is true when that batch is just
    the top b of the score (such a strategy can be scored shard by shard, see ``datascout.ray``).
    ``needs_inputs``: :meth:`select` also takes ``inputs``, a :class:`datascout.coverage.SelectInputs`
    (the labeled items and their classes, the kNN graph, the model's probabilities on demand, the
    learner's cache), which the loop builds only for such a strategy.
    """

    name = "strategy"
    needs_probs = False
    needs_committee = False
    needs_similarity = False
    many_passes = False
    needs_inputs = False
    n_members = 0
    selects_by_score = True

    def check(self, n_classes: int) -> None:
        """Raise when the strategy does not fit a task of ``n_classes`` classes (the learner asks
        once, at its construction)."""

    def score(self, inputs: ScoreInputs) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} selects by diversity and has no score")

    def select(self, view: CandidateView, b: int, rng: np.random.Generator, *, scores, centers) -> np.ndarray:
        """Rows of ``view`` to label, best first (never an excluded row). ``scores()`` returns the
        scores of the view's rows and ``centers()`` the labeled items' embeddings; each is
        computed only when called."""
        s = np.asarray(scores(), dtype=np.float64)
        s[view.excluded] = -np.inf
        return top_b(s, b, rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSampling(Strategy):
    """Uniformly random selection: every candidate scores 0 and ties are broken at random."""

    name = "random"

    def score(self, inputs: ScoreInputs) -> np.ndarray:
        n = len(next(a for a in (inputs.probs, inputs.embeddings) if a is not None))
        return np.zeros(n, dtype=np.float32)


class Entropy(Strategy):
    name = "entropy"
    needs_probs = True

    def score(self, inputs):
        return entropy(inputs.probs)


class Margin(Strategy):
    name = "margin"
    needs_probs = True

    def score(self, inputs):
        return margin(inputs.probs)


class LeastConfidence(Strategy):
    name = "least-confidence"
    needs_probs = True

    def score(self, inputs):
        return least_confidence(inputs.probs)


class InformationDensity(Strategy):
    name = "density"
    needs_probs = True
    needs_similarity = True

    def __init__(self, beta: float = 1.0):
        if not np.isfinite(beta) or beta < 0:
            raise ValidationError(f"beta must be a finite number >= 0 but is {beta}")
        self.beta = float(beta)

    def score(self, inputs):
        return information_density(inputs.probs, inputs.similarity, self.beta)

    def __repr__(self):
        return f"InformationDensity(beta={self.beta})"


class MostLikelyPositive(Strategy):
    """``P(y=positive|z)``; the positive class is checked against the task's classes when scored."""

    name = "most-likely-positive"
    needs_probs = True

    def __init__(self, positive: int = 1):
        if isinstance(positive, bool) or not isinstance(positive, (int, np.integer)) or positive < 0:
            raise ValidationError(f"the positive class must be a class id >= 0 but is {positive!r}")
        self.positive = int(positive)

    def check(self, n_classes):
        check_positive_class(self.positive, n_classes)

    def score(self, inputs):
        return most_likely_positive(inputs.probs, self.positive)

    def __repr__(self):
        return f"MostLikelyPositive(positive={self.positive})"


class BALD(Strategy):
    name = "bald"
    needs_committee = True

    def __init__(self, n_members: int = 5):
        if n_members < 2:
            raise ValidationError(f"a committee needs at least 2 members, got {n_members}")
        self.n_members = int(n_members)

    def score(self, inputs):
        return bald(inputs.member_probs)

    def __repr__(self):
        return f"{type(self).__name__}(n_members={self.n_members})"


class VoteEntropy(BALD):
    name = "committee"

    def score(self, inputs):
        return vote_entropy(inputs.member_probs)


class KCenter(Strategy):
    """Core-set diversity: k-center greedy over the candidates, labeled items as initial centers."""

    name = "kcenter"
    selects_by_score = False
    many_passes = True  # one pass over the rows per pick: reads the pool's float32 copy when one is held

    def select(self, view, b, rng, *, scores, centers):
        return kcenter_greedy(view.embeddings, centers(), b, rng, exclude=view.excluded)


class Hybrid(Strategy):
    """Top ``m * b`` candidates by ``base`` score, then k-center greedy among them."""

    selects_by_score = False

    def __init__(self, base: Strategy | None = None, m: int = 10):
        self.base = base if base is not None else Entropy()
        if not self.base.selects_by_score:
            raise ValidationError(f"hybrid needs a scoring base strategy, got {self.base.name!r}")
        if m < 1:
            raise ValidationError(f"m must be >= 1 but is {m}")
        self.m = int(m)

    @property
    def name(self) -> str:
        return "hybrid" if type(self.base) is Entropy else f"hybrid-{self.base.name}"

    @property
    def needs_probs(self) -> bool:
        return self.base.needs_probs

    @property
    def needs_committee(self) -> bool:
        return self.base.needs_committee

    @property
    def needs_similarity(self) -> bool:
        return self.base.needs_similarity

    @property
    def n_members(self) -> int:
        return self.base.n_members

    def check(self, n_classes):
        self.base.check(n_classes)

    def score(self, inputs):
        return self.base.score(inputs)

    def select(self, view, b, rng, *, scores, centers):
        s = np.asarray(scores(), dtype=np.float64)
        s[view.excluded] = -np.inf
        top = np.sort(top_b(s, min(b * self.m, view.n_eligible), rng))
        sub = np.asarray(view.embeddings[top], dtype=np.float32)
        return top[kcenter_greedy(sub, centers(), b, rng)]

    def __repr__(self):
        return f"Hybrid(base={self.base!r}, m={self.m})"
