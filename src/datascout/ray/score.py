"""Full-pool scoring over shards, in Ray tasks, and per-row maps (pruning scores).

* :class:`ShardScorer`: a picklable pure scoring function of embeddings (``predict_proba``, then a
  score of :mod:`datascout.strategies`), named by the strategy registry.
* :func:`score_top_b`: the scorer mapped over row blocks; each block returns only the items that
  can still be in the global top b (its own b best plus everything tied with its b-th), and the
  driver merges them with :func:`datascout.strategies.top_b`. The merged selection is exactly
  the single-machine one, random tie-breaking included. ``b`` may not exceed the items left
  after ``exclude``, as in :meth:`datascout.loop.ActiveLearner.query`.
* :func:`unit_mean`, :func:`map_rows`, :class:`PrototypeDistance`, :class:`EL2NScore`.

Tasks read shards through :class:`~datascout.shards.ShardedArray` (which pickles as its path):
on a multi-machine cluster the shard directory must be on storage every worker sees.
"""

from __future__ import annotations

import time

import numpy as np

from datascout.convert import as_float32

from datascout.exceptions import ValidationError
from datascout.pool import iter_row_chunks, normalize_rows
from datascout.ray.session import as_view, init_ray, remote, row_blocks
from datascout.registry import STRATEGY_NAMES, make_strategy
from datascout.shards import ShardedArray
from datascout.strategies import ScoreInputs, cosine_to_direction, rank_values, top_b


def _shardable(strategy) -> bool:
    """Whether a strategy's batch is the top b of a score of one model's probabilities (and the
    pool's density direction): such a score is a pure function of each shard's rows."""
    return strategy.selects_by_score and not strategy.needs_committee


# the registry's strategies that can be scored shard by shard (read from the one table)
SHARD_STRATEGIES = tuple(name for name in STRATEGY_NAMES if _shardable(make_strategy(name)))


class ShardScorer:
    """A picklable pure scoring function of embeddings: ``model.predict_proba`` then the score of
    a registry strategy (:data:`datascout.strategies.STRATEGIES`; higher = query first), in chunks.

    Parameters
    ----------
    model : fitted model with ``predict_proba`` (e.g. :class:`~datascout.models.FittedModel`)
    strategy : one of :data:`SHARD_STRATEGIES`
    beta : information density exponent (``density``)
    positive : the positive class (``most-likely-positive``)
    direction : mean unit vector of the reference pool (``density``; see :func:`unit_mean`)
    """

    def __init__(self, model, strategy: str = "entropy", *, beta: float = 1.0, positive: int = 1,
                 direction=None, chunk_rows: int = 65536):
        self.model = model
        self.strategy = strategy
        self.beta = beta
        self.positive = positive
        self.direction = direction
        self.chunk_rows = chunk_rows

    def check(self) -> "ShardScorer":
        """Build the strategy (``strategy_``) and check that it can be scored over shards."""
        strategy = make_strategy(self.strategy, beta=self.beta, positive=self.positive)
        if not _shardable(strategy):
            raise ValidationError(
                f"strategy {self.strategy!r} cannot be scored over shards: expected one of {', '.join(SHARD_STRATEGIES)}")
        if strategy.needs_similarity and self.direction is None:
            raise ValidationError(f"strategy {self.strategy!r} over shards needs direction= (see unit_mean)")
        self.strategy_ = strategy
        return self

    def __call__(self, X) -> np.ndarray:
        strategy = self.strategy_ if hasattr(self, "strategy_") else self.check().strategy_
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        for rows in iter_row_chunks(n, self.chunk_rows):
            x = as_float32(X[rows])
            inputs = ScoreInputs(embeddings=x)
            if strategy.needs_probs:
                inputs.probs = self.model.predict_proba(x)
            if strategy.needs_similarity:
                inputs.similarity = cosine_to_direction(x, self.direction)
            out[rows] = strategy.score(inputs)
        return out


def shard_candidates(scores: np.ndarray, offset: int, b: int, exclude=None):
    """The items of one shard that can be in the global top ``b``: every score >= the shard's
    b-th best (ties included). Returns ``(global positions ascending, scores)``; NaN and
    excluded positions rank as in :func:`~datascout.strategies.top_b` (excluded: -inf)."""
    s = rank_values(scores)
    if exclude is not None and len(exclude):
        local = np.asarray(exclude, dtype=np.int64) - offset
        local = local[(local >= 0) & (local < len(s))]
        s[local] = -np.inf
    if len(s) <= b:
        keep = np.arange(len(s))
    else:
        t = np.partition(s, len(s) - b)[len(s) - b]
        keep = np.flatnonzero(s >= t)
    return keep.astype(np.int64) + offset, s[keep]


def merge_candidates(parts, b: int, rng: np.random.Generator):
    """Merge shard candidates (in shard order) into the global top ``b``: ``(positions, scores)``
    best first, identical to :func:`top_b` over the whole pool with the same ``rng`` state."""
    pos = np.concatenate([p for p, _ in parts])
    sc = np.concatenate([s for _, s in parts])
    order = np.argsort(pos, kind="stable")  # position order, as top_b over the pool sees them
    pos, sc = pos[order], sc[order]
    pick = top_b(sc, b, rng)
    return pos[pick], sc[pick]


def _task_score_rows(scorer: ShardScorer, view: ShardedArray, start: int, stop: int, b: int, exclude):
    """Ray task: score rows ``start..stop`` (read chunk by chunk) and keep the shard's candidates."""
    return shard_candidates(scorer(_RowRange(view, start, stop)), start, b, exclude)


class _RowRange:
    """Rows start..stop of a view, read lazily chunk by chunk (for a scorer)."""

    def __init__(self, view, start, stop):
        self.view, self.start, self.stop = view, start, stop
        self.shape = (stop - start, view.shape[1])

    def __getitem__(self, rows: slice):
        return self.view[self.start + rows.start: self.start + rows.stop]


def score_top_b(pool, scorer: ShardScorer, b: int, *, random_state=None, exclude=None,
                num_tasks: int | None = None, timings: dict | None = None):
    """Score every item of a shard directory with Ray and return the global top ``b``:
    ``(positions, scores)`` best first, ties broken at random exactly as
    ``top_b(scorer(whole pool), b, np.random.default_rng(random_state))`` would.
    ``exclude`` (pool positions, e.g. the labeled items) are never chosen: like
    :meth:`datascout.loop.ActiveLearner.query`, a ``b`` above the items left is refused.
    """
    scorer.check()
    view = as_view(pool)
    n = view.shape[0]
    ex = None if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
    if ex is not None and len(ex) and (ex[0] < 0 or ex[-1] >= n):
        bad = int(ex[0] if ex[0] < 0 else ex[-1])
        raise ValidationError(f"exclude holds position {bad}, outside the pool's 0..{n - 1}")
    left = n - (0 if ex is None else len(ex))
    if b <= 0:
        raise ValidationError(f"batch size must be > 0 but is {b}")
    if b > left:
        raise ValidationError(f"batch size {b} is larger than the {left} items left after exclude")
    ray = init_ray()
    t0 = time.perf_counter()
    scorer_ref = ray.put(scorer)
    ex_ref = ray.put(ex)
    task = remote(_task_score_rows)
    refs = [task.remote(scorer_ref, view, lo, hi, int(b), ex_ref) for lo, hi in row_blocks(view, num_tasks)]
    parts = ray.get(refs)
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    out = merge_candidates(parts, b, rng)
    if timings is not None:
        timings.update(score=time.perf_counter() - t0,
                       candidates=int(sum(len(p) for p, _ in parts)))
    return out


def _task_unit_sum(view: ShardedArray, start: int, stop: int, exclude):
    total = np.zeros(view.shape[1], dtype=np.float64)
    count = 0
    ex = None if exclude is None else exclude[(exclude >= start) & (exclude < stop)]
    for rows in iter_row_chunks(stop - start):
        lo, hi = start + rows.start, start + rows.stop
        u = normalize_rows(view[lo:hi])
        if ex is not None and len(ex):
            e = ex[(ex >= lo) & (ex < hi)] - lo
            u[e] = 0.0
            count -= len(e)
        total += u.sum(axis=0, dtype=np.float64)
        count += hi - lo
    return total, count


def unit_mean(pool, *, exclude=None, num_tasks: int | None = None) -> np.ndarray:
    """Mean unit vector of the pool (minus ``exclude``), summed per shard with Ray: the
    ``direction`` of information density (mean cosine to a set = ``z_unit . unit_mean``)."""
    view = as_view(pool)
    ex = None if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
    ray = init_ray()
    task = remote(_task_unit_sum)
    ex_ref = ray.put(ex)
    parts = ray.get([task.remote(view, lo, hi, ex_ref) for lo, hi in row_blocks(view, num_tasks)])
    total = sum(p[0] for p in parts)
    count = sum(p[1] for p in parts)
    if count == 0:
        raise ValidationError("every item is excluded: no pool left to average")
    return (total / count).astype(np.float32)


# --------------------------------------------------------------------------- per-row maps (pruning scores)


def _task_map_rows(fn, view: ShardedArray, start: int, stop: int):
    parts = [np.asarray(fn(view[start + r.start: start + r.stop], np.arange(start + r.start, start + r.stop)))
             for r in iter_row_chunks(stop - start)]
    return np.concatenate(parts) if parts else np.zeros(0)


def map_rows(pool, fn, *, num_tasks: int | None = None) -> np.ndarray:
    """``fn(rows, positions)`` (a picklable function of a float32 block of rows and their pool
    positions, returning one value per row) over every row of a shard directory, in Ray tasks
    (row blocks in order, each read chunk by chunk); returns the values in pool order, exactly
    what ``fn`` gives over the whole pool."""
    view = as_view(pool)
    ray = init_ray()
    fn_ref = ray.put(fn)
    task = remote(_task_map_rows)
    parts = ray.get([task.remote(fn_ref, view, lo, hi) for lo, hi in row_blocks(view, num_tasks)])
    return np.concatenate(parts)


class PrototypeDistance:
    """Pruning score over shards: the prototype metric (distance of each, optionally
    L2-normalised, row to its nearest k-means centroid) for centroids fitted beforehand, e.g.
    with :func:`datascout.prune.kmeans` on a sample."""

    def __init__(self, centroids, normalize: bool = True):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.normalize = normalize

    def __call__(self, X, positions=None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.normalize:
            X = normalize_rows(X)
        c = self.centroids
        d2 = (np.einsum("ij,ij->i", X, X)[:, None] - 2.0 * (X @ c.T)
              + np.einsum("ij,ij->i", c, c)[None, :])
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0)).astype(np.float64)


class EL2NScore:
    """Pruning score over shards: EL2N (mean over proxy models of ||p(x) - onehot(y)||) for
    proxies trained beforehand (e.g. :class:`datascout.prune.SoftmaxRegression`); ``labels`` are
    the whole pool's, looked up by position."""

    def __init__(self, models, labels):
        self.models = list(models)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __call__(self, X, positions) -> np.ndarray:
        from datascout.prune.scores import el2n

        y = self.labels[positions]
        return sum(el2n(m.predict_proba(X), y) for m in self.models) / len(self.models)
