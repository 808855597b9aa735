"""Scale-out over Ray: index build, kNN graph and full-pool scoring over the shards of a pool.

Everything here runs on Ray (the ``[ray]`` extra), never on a home-made engine; Ray is imported
only when a function here is called, and without it :func:`require_ray` says what to install.

* :func:`build_index`: train the index once on a sample (the same sample a single-machine
  :meth:`SimilarityIndex.build` draws), add every shard in a parallel Ray task, and merge the
  shard indexes with faiss's own ``merge_from`` in shard order. For ``Flat``, ``IVF*`` and
  ``PQ`` / ``LSH`` factories the merged index is the one a single process would have built
  (byte for byte). HNSW graphs cannot be merged: build those in one process and hand the index
  to :func:`build_graph`.
* :func:`build_graph`: the kNN graph computed shard by shard (row blocks) in parallel Ray
  tasks, each writing its rows straight into the graph's ``.npy`` files; the result has the
  layout and positions of :meth:`datascout.seals.KNNGraph.build` and equals it up to ties.
* :func:`score_top_b`: a pure scoring function mapped over shards; each shard returns only the
  items that can still be in the global top b (its own b best plus everything tied with its
  b-th), and the driver merges them with :func:`datascout.strategies.top_b`. The merged
  selection is exactly the single-machine one, random tie-breaking included.

Tasks read shards through :class:`~datascout.shards.ShardedArray` (which pickles as its path):
on a multi-machine cluster the shard directory and the graph's output folder must be on
storage every worker sees (NFS, a mounted bucket).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from datascout.convert import as_float32
from datascout.exceptions import DatascoutError, MissingDependencyError, ValidationError
from datascout.index import SimilarityIndex, _faiss, check_factory, normalize_rows
from datascout.io import staged_dir
from datascout.pool import iter_row_chunks
from datascout.shards import ShardedArray

RAY_HINT = "pip install 'datascout[ray]'"


# --------------------------------------------------------------------------- Ray session


def require_ray():
    """The ``ray`` module, or a :class:`MissingDependencyError` saying what to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from exc
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address`` (``"auto"`` or ``"ray://host:10001"``), or start
    a local one with ``num_cpus`` CPUs. An existing session in this process is reused."""
    ray = require_ray()
    if address and address != "auto":
        _probe(address)
    if ray.is_initialized():
        return ray
    if num_cpus is not None and int(num_cpus) < 1:
        raise ValidationError(f"num_cpus must be >= 1 but is {num_cpus}")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatascoutError(f"cannot connect to {where}: {first}") from exc
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray itself waits minutes for a GCS)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValidationError(f"--ray-address must be 'auto', 'host:port' or 'ray://host:port' but is {address!r}")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DatascoutError(f"cannot connect to the Ray cluster at {address!r}: {exc.strerror or exc}") from exc


@functools.lru_cache(maxsize=None)
def _remote(fn_name: str):
    """The Ray remote version of a task function of this module (made once per process)."""
    ray = require_ray()
    return ray.remote(num_cpus=1)(globals()[fn_name])


def _as_view(pool) -> ShardedArray:
    if isinstance(pool, ShardedArray):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        return ShardedArray(pool)
    raise ValidationError(
        f"a distributed run needs a shard directory (or ShardedArray) but received {type(pool).__name__}")


def _row_blocks(view: ShardedArray, num_tasks: int | None) -> list[tuple[int, int]]:
    """(start, stop) row blocks: one per shard, each shard split further when ``num_tasks``
    asks for more blocks than there are shards (blocks never cross a shard boundary)."""
    n_sh = view.num_shards
    per = 1 if not num_tasks or num_tasks <= n_sh else -(-int(num_tasks) // n_sh)
    blocks = []
    for s in range(n_sh):
        lo, hi = view.shard_range(s)
        edges = np.linspace(lo, hi, min(per, max(1, hi - lo)) + 1).round().astype(np.int64)
        blocks += [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return blocks


# --------------------------------------------------------------------------- index


def _serialize(index) -> np.ndarray:
    return _faiss().serialize_index(index)


def _deserialize(blob):
    return _faiss().deserialize_index(np.asarray(blob, dtype=np.uint8))


def _task_add_rows(trained_blob, view: ShardedArray, start: int, stop: int, chunk_rows: int):
    """Ray task: add rows ``start..stop`` to a copy of the trained (empty) index."""
    index = _deserialize(trained_blob)
    for rows in iter_row_chunks(stop - start, chunk_rows):
        index.add(normalize_rows(view[start + rows.start: start + rows.stop]))
    return _serialize(index)


class _TrainOnly(SimilarityIndex):
    """A :class:`SimilarityIndex` whose ``build`` trains and adds nothing: the training (sample,
    normalisation, backend options) stays exactly the single-machine one."""

    def add(self, embeddings, *, chunk_rows: int = 65536, progress=None) -> np.ndarray:
        self.ntotal_ = 0
        return np.empty(0, dtype=np.int64)


def train_index(view, factory: str, *, train_size: int = 100_000, random_state=0,
                ef_construction: int = 80):
    """An empty, trained faiss index: trained as a single-machine build trains it."""
    return _TrainOnly(factory, train_size=train_size, random_state=random_state,
                      ef_construction=ef_construction).build(view).index_


def build_index(pool, factory: str = "IVF1024,Flat", *, train_size: int = 100_000,
                random_state=0, nprobe: int = 16, ef_search: int | None = None,
                num_tasks: int | None = None, chunk_rows: int = 65536,
                timings: dict | None = None) -> SimilarityIndex:
    """Build a :class:`SimilarityIndex` over a shard directory with Ray (see the module notes).

    ``num_tasks`` splits shards into more add tasks (default: one per shard); ``timings``, when
    given, receives the seconds spent in ``train``, ``add`` (parallel tasks) and ``merge``.
    """
    check_factory(factory)
    if factory.startswith("HNSW"):
        raise ValidationError(
            f"index {factory!r} cannot be built over shards (faiss cannot merge HNSW graphs): "
            "expected Flat, IVF*, PQ* or LSH; build HNSW in one process, then build the graph with Ray")
    view = _as_view(pool)
    ray = init_ray()
    t0 = time.perf_counter()
    trained = train_index(view, factory, train_size=train_size, random_state=random_state)
    blob = _serialize(trained)
    blob_ref = ray.put(blob)
    t1 = time.perf_counter()
    add = _remote("_task_add_rows")
    refs = [add.remote(blob_ref, view, lo, hi, chunk_rows) for lo, hi in _row_blocks(view, num_tasks)]
    parts = ray.get(refs)
    t2 = time.perf_counter()
    faiss = _faiss()
    merged = _deserialize(blob)  # the same concrete type as the parts (faiss merges only those)
    del trained
    is_ivf = faiss.try_extract_index_ivf(merged) is not None
    for ref, blob in zip(refs, parts):
        part = _deserialize(blob)
        try:
            merged.merge_from(part, int(merged.ntotal) if is_ivf else 0)
        except RuntimeError as exc:
            raise ValidationError(
                f"index {factory!r} cannot be merged across shards ({str(exc).splitlines()[0]}): "
                "expected Flat, IVF*, PQ* or LSH") from exc
        del part
    del parts, refs
    t3 = time.perf_counter()
    if merged.ntotal != view.shape[0]:  # a bug, not a user's mistake
        raise RuntimeError(f"merged index holds {merged.ntotal} items but the pool has {view.shape[0]}")
    out = SimilarityIndex(factory, ef_search=ef_search, nprobe=nprobe, train_size=train_size,
                          random_state=random_state)
    out.index_ = merged
    out.dim_ = view.shape[1]
    out.ntotal_ = int(merged.ntotal)
    if timings is not None:
        timings.update(train=t1 - t0, add=t2 - t1, merge=t3 - t2)
    return out


# --------------------------------------------------------------------------- kNN graph


def _index_state(index: SimilarityIndex) -> dict:
    return {"factory": index.factory, "ef_search": index.ef_search, "nprobe": index.nprobe,
            "dim": index.dim_}


def _restore_index(blob, state: dict) -> SimilarityIndex:
    idx = SimilarityIndex(state["factory"], ef_search=state["ef_search"], nprobe=state["nprobe"])
    idx.index_ = _deserialize(blob)
    idx.dim_ = state["dim"]
    idx.ntotal_ = int(idx.index_.ntotal)
    return idx


def _drop_self(sims, pos, self_pos, k):
    """Drop each query's own position from its row (the last column when it is absent)."""
    order = np.argsort(pos == self_pos[:, None], axis=1, kind="stable")
    return (np.take_along_axis(sims, order, axis=1)[:, :k],
            np.take_along_axis(pos, order, axis=1)[:, :k])


def _task_graph_rows(index_blob, state, view: ShardedArray, start: int, stop: int, k: int,
                     out_dir: str, batch_rows: int) -> int:
    """Ray task: the k nearest neighbours of rows ``start..stop``, written into the graph's
    memory-mapped ``.npy`` files at those rows."""
    index = _restore_index(index_blob, state)
    neighbors = np.load(Path(out_dir) / "neighbors.npy", mmap_mode="r+")
    sims = np.load(Path(out_dir) / "similarities.npy", mmap_mode="r+")
    for rows in iter_row_chunks(stop - start, batch_rows):
        lo, hi = start + rows.start, start + rows.stop
        s, p = index.search(view[lo:hi], k + 1, exact_embeddings=view)
        s, p = _drop_self(s, p, np.arange(lo, hi), k)
        neighbors[lo:hi] = p
        sims[lo:hi] = s
    neighbors.flush()
    sims.flush()
    return stop - start


def build_graph(pool, index: SimilarityIndex, k: int, out_dir, *, num_tasks: int | None = None,
                batch_rows: int = 4096, timings: dict | None = None):
    """Compute the kNN graph of a shard directory with Ray and save it in ``out_dir`` (the
    layout of :meth:`KNNGraph.save`); returns the memory-mapped :class:`KNNGraph`.

    The directory appears whole or not at all: tasks write into ``out_dir.tmp``, renamed at the end.
    """
    from datascout.seals import KNNGraph

    view = _as_view(pool)
    n, d = view.shape
    if not 1 <= k < n:
        raise ValidationError(f"k must be in 1..{n - 1} for a pool of {n} items but is {k}")
    if index.ntotal_ != n:
        raise ValidationError(f"the index holds {index.ntotal_} items but the pool has {n}")
    if index.dim_ != d:
        raise ValidationError(f"embeddings has {d} columns but the index was built with {index.dim_}")
    ray = init_ray()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    with staged_dir(out_dir) as tmp:
        dtype = np.int32 if n < 2**31 else np.int64
        for name, dt in (("neighbors.npy", dtype), ("similarities.npy", np.float32)):
            mm = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dt, shape=(n, k))
            del mm
        blob_ref = ray.put(_serialize(index.index_))
        task = _remote("_task_graph_rows")
        refs = [task.remote(blob_ref, _index_state(index), view, lo, hi, int(k), str(tmp), batch_rows)
                for lo, hi in _row_blocks(view, num_tasks)]
        done = sum(ray.get(refs))
        if done != n:  # a bug, not a user's mistake
            raise RuntimeError(f"graph tasks covered {done} rows of {n}")
        meta = {"version": 1, "index": index.factory, "k": int(k), "n": n, "dim": d,
                "graph_seconds": round(time.perf_counter() - t0, 3), "distributed": "ray",
                "tasks": len(refs)}
        from datascout.seals import fingerprint

        meta["fingerprint"] = fingerprint(view)
        (tmp / "graph.json").write_text(json.dumps(meta, indent=2))
    if timings is not None:
        timings.update(graph=time.perf_counter() - t0)
    return KNNGraph.load(out_dir, expect_n=n)


# --------------------------------------------------------------------------- scoring

SHARD_STRATEGIES = ("entropy", "margin", "least_confidence", "most_likely_positive",
                    "information_density")


class ShardScorer:
    """A picklable pure scoring function of embeddings: ``model.predict_proba`` then a score of
    :mod:`datascout.strategies` (higher = query first), in chunks.

    Parameters
    ----------
    model : fitted model with ``predict_proba`` (e.g. :class:`~datascout.models.FittedModel`)
    strategy : one of :data:`SHARD_STRATEGIES`
    beta : information density exponent
    positive : the positive class (most_likely_positive)
    direction : mean unit vector of the reference pool (information_density; see
        :func:`unit_mean`)
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
        if self.strategy not in SHARD_STRATEGIES:
            raise ValidationError(
                f"strategy {self.strategy!r} cannot be scored over shards: expected one of {SHARD_STRATEGIES}")
        if self.strategy == "information_density" and self.direction is None:
            raise ValidationError("information_density over shards needs direction= (see unit_mean)")
        return self

    def __call__(self, X) -> np.ndarray:
        from datascout import strategies as st

        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        for rows in iter_row_chunks(n, self.chunk_rows):
            x = as_float32(X[rows])
            p = self.model.predict_proba(x)
            if self.strategy == "entropy":
                s = st.entropy(p)
            elif self.strategy == "margin":
                s = st.margin(p)
            elif self.strategy == "least_confidence":
                s = st.least_confidence(p)
            elif self.strategy == "most_likely_positive":
                s = st.most_likely_positive(p, self.positive)
            else:
                sim = st.cosine_to_direction(x, self.direction)
                s = st.information_density(p, sim, self.beta)
            out[rows] = s
        return out


def shard_candidates(scores: np.ndarray, offset: int, b: int, exclude=None):
    """The items of one shard that can be in the global top ``b``: every score >= the shard's
    b-th best (ties included). Returns ``(global positions ascending, scores)``; NaN and
    excluded positions rank as in :func:`~datascout.strategies.top_b` (excluded: -inf)."""
    from datascout.strategies import rank_values

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
    from datascout.strategies import top_b

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
    ``exclude`` (pool positions, e.g. the labeled items) are never chosen unless b exceeds the rest.
    """
    scorer.check()
    view = _as_view(pool)
    n = view.shape[0]
    if not 0 < b <= n:
        raise ValidationError(f"batch size must be in 1..{n} but is {b}")
    ex = None if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
    ray = init_ray()
    t0 = time.perf_counter()
    scorer_ref = ray.put(scorer)
    ex_ref = ray.put(ex)
    task = _remote("_task_score_rows")
    refs = [task.remote(scorer_ref, view, lo, hi, int(b), ex_ref) for lo, hi in _row_blocks(view, num_tasks)]
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
    view = _as_view(pool)
    ex = None if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
    ray = init_ray()
    task = _remote("_task_unit_sum")
    ex_ref = ray.put(ex)
    parts = ray.get([task.remote(view, lo, hi, ex_ref) for lo, hi in _row_blocks(view, num_tasks)])
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
    view = _as_view(pool)
    ray = init_ray()
    fn_ref = ray.put(fn)
    task = _remote("_task_map_rows")
    parts = ray.get([task.remote(fn_ref, view, lo, hi) for lo, hi in _row_blocks(view, num_tasks)])
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
        from datascout.prune import el2n

        y = self.labels[positions]
        return sum(el2n(m.predict_proba(X), y) for m in self.models) / len(self.models)


# --------------------------------------------------------------------------- command line


def add_ray_arguments(parser, *, what: str) -> None:
    """The ``--ray`` flags shared by commands that can run over a Ray cluster."""
    g = parser.add_argument_group("scale-out over Ray (the [ray] extra)")
    g.add_argument("--ray", action="store_true", help=f"{what} with Ray, shard by shard")
    g.add_argument("--ray-address", default=None,
                   help="a running cluster ('auto', 'ray://host:10001'); default: start a local one")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    g.add_argument("--num-shards", type=int, default=None,
                   help="split a single .npy pool into this many shards first (written beside it as "
                        "NAME.shards/, reused); a shard directory is used as it is")
    g.add_argument("--num-tasks", type=int, default=None,
                   help="Ray tasks per step (default: one per shard; more splits shards into row blocks)")


def check_ray_arguments(args) -> bool:
    """True when the command should run on Ray; rejects Ray flags given without ``--ray``."""
    if not args.ray:
        for flag in ("ray_address", "num_cpus", "num_shards", "num_tasks"):
            if getattr(args, flag, None) is not None:
                raise ValidationError(f"--{flag.replace('_', '-')} needs --ray")
        return False
    require_ray()
    for flag in ("num_cpus", "num_shards", "num_tasks"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            raise ValidationError(f"--{flag.replace('_', '-')} must be >= 1 but is {v}")
    return True


def shards_for(path, num_shards: int | None) -> Path:
    """A shard directory for ``path``: itself if it is one, else ``path`` (a ``.npy`` file) split
    into ``num_shards`` shards beside it (``NAME.shards/``, reused when it matches)."""
    from datascout.io import load_embeddings
    from datascout.shards import is_shard_dir, write_shards

    path = Path(path)
    if is_shard_dir(path):
        return path
    if path.suffix.lower() != ".npy":
        raise ValidationError(
            f"--ray needs a shard directory or a .npy file to split with --num-shards but received {str(path)!r}")
    if num_shards is None:
        raise ValidationError(f"{str(path)!r} is a single file: pass --num-shards N to split it for Ray")
    out = path.with_suffix(".shards")
    X, _ = load_embeddings(path)
    if is_shard_dir(out):
        from datascout.seals import fingerprint

        view = ShardedArray(out)
        if (view.num_shards == num_shards and view.shape == X.shape and view.dtype == X.dtype
                and fingerprint(view) == fingerprint(X)):  # the shards of these very embeddings
            return out
    return write_shards(out, X, num_shards=num_shards, overwrite=True)


def run_index_build(args) -> int:
    """``datascout index build --ray``: the index (Ray tasks + faiss merge, or one process for
    HNSW) and the kNN graph (Ray tasks), saved where the single-machine build saves it."""
    from datascout.seals import graph_dir

    factory = check_factory(args.index)
    if args.k < 1:
        raise ValidationError(f"--k must be >= 1 but is {args.k}")
    init_ray(args.ray_address, args.num_cpus)
    shard_dir = shards_for(args.embeddings, args.num_shards)
    view = ShardedArray(shard_dir)
    if args.k >= view.shape[0]:
        raise ValidationError(f"--k must be below the pool size {view.shape[0]} but is {args.k}")
    out = graph_dir(args.embeddings, factory, args.k)
    t0 = time.perf_counter()
    if factory.startswith("HNSW"):
        index = SimilarityIndex(factory, ef_search=args.ef_search, ef_construction=args.ef_construction,
                                nprobe=args.nprobe).build(view)
        how = "one process (HNSW cannot be merged)"
    else:
        index = build_index(view, factory, nprobe=args.nprobe, ef_search=args.ef_search,
                            num_tasks=args.num_tasks)
        how = f"{view.num_shards} shards on Ray + faiss merge"
    t_index = time.perf_counter() - t0
    graph = build_graph(view, index, args.k, out, num_tasks=args.num_tasks, batch_rows=args.batch_rows)
    print(f"wrote {out} ({view.shape[0]} items x k={args.k}, {view.num_shards} shards)")
    print(f"index build {t_index:.2f} s ({how}), graph queries {graph.meta['graph_seconds']:.2f} s on Ray")
    return 0


# --------------------------------------------------------------------------- embedding


class TextEmbedActor:
    """Ray Data callable class: one loaded text embedder per actor, batch -> embeddings."""

    def __init__(self, model=None, backend: str = "torch", batch_size: int = 64, normalize: bool = True,
                 id_column: str = "id", text_column: str = "text"):
        from datascout.embed import TextEmbedder

        self.embedder = TextEmbedder(model=model, batch_size=batch_size, backend=backend).load()
        self.normalize, self.id_column, self.text_column = normalize, id_column, text_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column].tolist()]
        emb = self.embedder.encode(texts) if texts else np.zeros((0, self.embedder.dim_), np.float32)
        if self.normalize:
            emb = normalize_rows(emb)
        return {"id": np.asarray(batch[self.id_column]), "embedding": emb.astype(np.float32)}


def _read_dataset(ray, path: Path, fmt: str, id_column: str, text_column: str):
    """A Ray Dataset of (id, text) rows in file order."""
    if fmt == "csv":
        ds = ray.data.read_csv(str(path))
    elif fmt == "jsonl":
        ds = ray.data.read_json(str(path), lines=True) if _accepts_lines(ray) else ray.data.read_json(str(path))
    elif fmt == "parquet":
        ds = ray.data.read_parquet(str(path))
    else:
        raise ValidationError(
            f"embed --ray reads CSV, JSONL or Parquet files with an id and a text column but received "
            f"{str(path)!r} (format {fmt!r})")
    missing = [c for c in (id_column, text_column) if c not in ds.schema().names]
    if missing:
        raise ValidationError(f"{str(path)!r} has columns {ds.schema().names}: expected a column {missing[0]!r}")
    return ds.select_columns([id_column, text_column])


def _accepts_lines(ray) -> bool:
    import inspect

    return "lines" in inspect.signature(ray.data.read_json).parameters


def embed_text(input_path, out_dir, *, fmt: str | None = None, id_column: str = "id",
               text_column: str = "text", model=None, backend: str = "torch", batch_size: int = 64,
               concurrency: int = 1, shard_rows: int = 100_000, normalize: bool = True,
               progress=None) -> Path:
    """Embed a text file with Ray Data into a shard directory, resumably shard by shard.

    Ray Data reads ``input_path`` (CSV / JSONL / Parquet with id and text columns), the rows are cut into shards of ``shard_rows``, and each unfinished shard
    runs through ``map_batches`` with :class:`TextEmbedActor` as an actor pool of ``concurrency``
    actors; each shard is written atomically as soon as it is done, so a rerun after an
    interruption embeds only the missing shards. The manifest is written last.
    """
    from datascout.datasets import file_sha256
    from datascout.shards import shard_bounds, shard_name, write_manifest

    ray = init_ray()
    path = Path(input_path)
    if not path.is_file():
        raise ValidationError(f"expected a file at {str(path)!r} but none exists")
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                  ".pq": "parquet"}.get(path.suffix.lower(), "txt")
    for name, v in (("batch size", batch_size), ("concurrency", concurrency), ("shard rows", shard_rows)):
        if int(v) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {v}")
    out = Path(out_dir)
    settings = {"input_sha256": file_sha256(path), "format": fmt, "id_column": id_column,
                "text_column": text_column, "model": str(model), "backend": backend,
                "normalize": bool(normalize), "shard_rows": int(shard_rows)}
    if _prepare_out(out, settings):
        return out
    _quiet_ray_data(ray)
    ds = _read_dataset(ray, path, fmt, id_column, text_column)
    n = ds.count()
    if n == 0:
        raise ValidationError(f"{str(path)!r} holds no rows: expected at least 1 text")
    bounds = shard_bounds(n, shard_rows=shard_rows)
    n_shards = len(bounds) - 1
    # the ids in file order (Ray Data keeps it with preserve_order) give every row its position
    all_ids = np.concatenate([np.asarray(b[id_column]) for b in
                              ds.select_columns([id_column]).iter_batches(batch_format="numpy", batch_size=None)])
    if all_ids.dtype.kind == "O":
        all_ids = all_ids.astype(str)
    if len(np.unique(all_ids)) != n:
        raise ValidationError(f"column {id_column!r} of {str(path)!r} must hold unique ids but has repeats")
    done = [(out / f"{shard_name(i)}.npy").is_file() and (out / f"{shard_name(i)}.ids.npy").is_file()
            for i in range(n_shards)]
    entries: dict[int, dict] = {}
    dim = None
    for i in np.flatnonzero(done).tolist():
        dim = np.load(out / f"{shard_name(i)}.npy", mmap_mode="r").shape[1]
        entries[i] = {"file": f"{shard_name(i)}.npy", "ids": f"{shard_name(i)}.ids.npy",
                      "rows": int(bounds[i + 1] - bounds[i])}
    todo = [i for i in range(n_shards) if not done[i]]
    if todo:
        pending = ds
        if len(todo) < n_shards:  # only the rows of missing shards go to the embedder
            keep_ids = np.concatenate([all_ids[bounds[i]:bounds[i + 1]] for i in todo])
            col = id_column

            def keep_rows(b):
                mask = np.isin(np.asarray(b[col]).astype(keep_ids.dtype), keep_ids)
                return {k: np.asarray(v)[mask] for k, v in b.items()}

            pending = ds.map_batches(keep_rows, batch_format="numpy")
        got = pending.map_batches(TextEmbedActor, batch_size=int(batch_size), concurrency=int(concurrency),
                                  num_cpus=1, batch_format="numpy",
                                  fn_constructor_kwargs={"model": model, "backend": backend,
                                                         "batch_size": int(batch_size), "normalize": normalize,
                                                         "id_column": id_column, "text_column": text_column})
        dim = _collect_shards(got, all_ids, bounds, todo, out, entries, progress) or dim
    entries = [entries[i] for i in range(n_shards)]
    write_manifest(out, entries, dim=dim, dtype="float32")
    return out


def _prepare_out(out: Path, settings: dict) -> bool:
    """Check (or start) an embedding output folder made with ``settings``. True when it already
    holds the finished shard directory."""
    from datascout.io import atomic_write_text
    from datascout.shards import is_shard_dir

    state_path = out / "embed-settings.json"
    if out.exists():
        old = json.loads(state_path.read_text()) if state_path.is_file() else None
        if old != settings:
            raise ValidationError(
                f"{str(out)!r} exists and was not made by this command with these settings: expected a new "
                "or matching folder")
        if is_shard_dir(out):
            return True
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_path, json.dumps(settings, indent=1))
    return False


def _quiet_ray_data(ray) -> None:
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class ImageEmbedActor:
    """Ray Data callable class: one loaded image embedder per actor; a batch of (id, path) rows ->
    embeddings, with ``reason`` = why an image was skipped (unreadable, missing) or ``""``."""

    def __init__(self, model=None, image_size: int = 112, batch_size: int = 64, weights=None,
                 normalize: bool = True):
        from datascout.embed import ImageEmbedder

        self.embedder = ImageEmbedder(model=model or "efficientnet-lite0", image_size=image_size,
                                      batch_size=batch_size, weights=weights).load()
        self.size, self.normalize = int(image_size), normalize

    def __call__(self, batch: dict) -> dict:
        from datascout.embed.sources import _read_image

        paths = [str(p) for p in batch["path"].tolist()]
        got = [_read_image(Path(p), self.size) for p in paths]
        reasons = [g if isinstance(g, str) else "" for g in got]
        emb = np.zeros((len(paths), self.embedder.dim_), dtype=np.float32)
        good = [i for i, r in enumerate(reasons) if not r]
        if good:
            e = self.embedder.encode(np.stack([got[i] for i in good]))
            emb[good] = normalize_rows(e) if self.normalize else e
        return {"id": np.asarray(batch["id"]), "embedding": emb, "reason": np.asarray(reasons, dtype=object)}


def embed_images(input_path, out_dir, *, model=None, image_size: int = 112, batch_size: int = 64,
                 weights=None, concurrency: int = 1, shard_rows: int = 100_000, normalize: bool = True,
                 progress=None) -> Path:
    """Embed an image folder tree (ids = relative paths) or a list file with Ray Data into a shard
    directory, resumably shard by shard, as :func:`embed_text` does for texts. Images that cannot
    be read are left out of their shard and recorded, with the reason, in ``skipped.jsonl``."""
    from datascout.embed import ImageSource
    from datascout.io import atomic_write_text
    from datascout.shards import shard_bounds, shard_name, write_manifest

    ray = init_ray()
    for name, v in (("batch size", batch_size), ("concurrency", concurrency), ("shard rows", shard_rows)):
        if int(v) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {v}")
    src = ImageSource(input_path, image_size=image_size).open()
    out = Path(out_dir)
    settings = {"input_sha256": src.checksum_, "kind": "images", "model": str(model or "efficientnet-lite0"),
                "image_size": int(image_size), "weights": None if weights is None else str(weights),
                "normalize": bool(normalize), "shard_rows": int(shard_rows)}
    if _prepare_out(out, settings):
        return out
    _quiet_ray_data(ray)
    all_ids = np.asarray(src.ids_).astype(str)
    if len(np.unique(all_ids)) != len(all_ids):
        raise ValidationError(f"{str(input_path)!r} lists an image twice: ids must be unique")
    paths = [str(p if Path(p).is_absolute() else src.root_ / p) for p in src.files_]
    bounds = shard_bounds(len(all_ids), shard_rows=shard_rows)
    n_shards = len(bounds) - 1
    entries: dict[int, dict | None] = {}
    skipped: dict[int, list] = {}
    for i in range(n_shards):
        name = shard_name(i)
        if (out / f"{name}.skipped.json").is_file() and (
                (out / f"{name}.empty").is_file() or (out / f"{name}.ids.npy").is_file()):
            skipped[i] = json.loads((out / f"{name}.skipped.json").read_text())
            entries[i] = None if (out / f"{name}.empty").is_file() else {
                "file": f"{name}.npy", "ids": f"{name}.ids.npy",
                "rows": int(np.load(out / f"{name}.ids.npy", mmap_mode="r").shape[0])}
    todo = [i for i in range(n_shards) if i not in entries]
    dim = None
    if todo:
        rows = [{"id": all_ids[j], "path": paths[j]} for i in todo for j in range(bounds[i], bounds[i + 1])]
        got = ray.data.from_items(rows).map_batches(
            ImageEmbedActor, batch_size=int(batch_size), concurrency=int(concurrency), num_cpus=1,
            batch_format="numpy", fn_constructor_kwargs={"model": model, "image_size": int(image_size),
                                                         "batch_size": int(batch_size), "weights": weights,
                                                         "normalize": normalize})
        dim = _collect_shards(got, all_ids, bounds, todo, out, entries, progress, skipped)
    kept = [entries[i] for i in range(n_shards) if entries[i] is not None]
    records = sorted((r for i in range(n_shards) for r in skipped.get(i, [])), key=lambda r: r["position"])
    atomic_write_text(out / "skipped.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    if not kept:
        raise ValidationError(f"every one of the {len(all_ids)} images was skipped: see {str(out / 'skipped.jsonl')!r}")
    if dim is None:
        dim = np.load(out / kept[0]["file"], mmap_mode="r").shape[1]
    write_manifest(out, kept, dim=dim, dtype="float32")
    return out


def _collect_shards(got, all_ids, bounds, todo, out, entries: dict, progress, skipped: dict | None = None):
    """Drain the embedder's output batches (``id``, ``embedding`` and, for images, ``reason``:
    ``""`` or why the item was skipped) into per-shard buffers in input order; write each shard
    the moment its last row arrives (the unit of resumption), keeping only the rows that were
    embedded. ``skipped[i]`` collects shard i's skip records. Returns the dimension seen."""
    from datascout.io import atomic_write_text
    from datascout.shards import shard_name, write_shard

    sorter = np.argsort(all_ids, kind="stable")
    bufs: dict[int, np.ndarray] = {}
    ok: dict[int, np.ndarray] = {}
    filled = {i: 0 for i in todo}
    dim = None
    for batch in got.iter_batches(batch_size=None, batch_format="numpy"):
        b_ids = np.asarray(batch["id"])
        b_ids = b_ids.astype(all_ids.dtype) if b_ids.dtype != all_ids.dtype else b_ids
        emb = np.asarray(batch["embedding"], dtype=np.float32)
        reasons = np.asarray(batch["reason"]).astype(str) if "reason" in batch else None
        pos = sorter[np.searchsorted(all_ids, b_ids, sorter=sorter)]
        shard_of = np.searchsorted(bounds, pos, side="right") - 1
        for i in np.unique(shard_of).tolist():
            sel = shard_of == i
            rows = int(bounds[i + 1] - bounds[i])
            if i not in bufs:
                bufs[i] = np.empty((rows, emb.shape[1]), dtype=np.float32)
                ok[i] = np.ones(rows, dtype=bool)
            local = pos[sel] - bounds[i]
            bufs[i][local] = emb[sel]
            if reasons is not None:
                bad = reasons[sel] != ""
                ok[i][local[bad]] = False
                for p_, id_, why in zip(pos[sel][bad].tolist(), b_ids[sel][bad].tolist(), reasons[sel][bad].tolist()):
                    skipped.setdefault(i, []).append({"position": int(p_), "id": id_, "reason": why})
            filled[i] += int(sel.sum())
            if filled[i] == rows:  # shard complete: write it now
                dim = emb.shape[1]
                keep = ok.pop(i)
                if skipped is not None:
                    _write_skipped(out, i, skipped.get(i, []))
                if keep.any():
                    entries[i] = write_shard(out, i, bufs.pop(i)[keep], all_ids[bounds[i]:bounds[i + 1]][keep])
                else:  # every item of the shard was skipped: a marker, no empty array files
                    bufs.pop(i)
                    atomic_write_text(out / f"{shard_name(i)}.empty", "")
                    entries[i] = None
                if progress is not None:
                    progress(len(entries), len(bounds) - 1)
    if any(i not in entries for i in todo):  # a bug, not a user's mistake
        raise RuntimeError(f"embedded {len(entries)} of {len(bounds) - 1} shards")
    return dim


def _write_skipped(out: Path, i: int, records: list) -> None:
    from datascout.io import atomic_write_text
    from datascout.shards import shard_name

    atomic_write_text(out / f"{shard_name(i)}.skipped.json", json.dumps(sorted(records, key=lambda r: r["position"])))


def _embed_ray_setup(args) -> None:
    """Checks shared by ``datascout embed text|images --ray``; starts or joins Ray."""
    for flag in ("ray_address", "concurrency", "shard_rows"):
        if getattr(args, flag) is not None and not args.ray:
            raise ValidationError(f"--{flag.replace('_', '-')} needs --ray")
    require_ray()
    for flag in ("concurrency", "shard_rows", "batch_size"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValidationError(f"--{flag.replace('_', '-')} must be >= 1 but is {v}")
    if args.overwrite and Path(args.out).exists():
        shutil.rmtree(args.out)
    init_ray(args.ray_address)


def _shard_progress(args):
    return None if args.quiet else (lambda done, total: print(f"shard {done}/{total} written", flush=True))


def run_embed_images(args) -> int:
    """``datascout embed images --ray``: :func:`embed_images` from the command's arguments."""
    if args.labels_from_folders and args.ray:
        raise ValidationError("--labels-from-folders is not available with --ray (shards hold no labels): "
                              "embed without --ray, or label the items in a campaign")
    _embed_ray_setup(args)
    out = embed_images(args.input, args.out, model=args.model, image_size=args.image_size,
                       batch_size=args.batch_size, weights=args.weights,
                       concurrency=1 if args.concurrency is None else args.concurrency,
                       shard_rows=100_000 if args.shard_rows is None else args.shard_rows,
                       normalize=not args.no_normalize, progress=_shard_progress(args))
    view = ShardedArray(out)
    n_skipped = sum(1 for line in (out / "skipped.jsonl").read_text().splitlines() if line)
    print(f"wrote {view.shape[0]} x {view.shape[1]} float32 in {view.num_shards} shards to {out} "
          f"({n_skipped} skipped)")
    return 0


def run_embed_text(args) -> int:
    """``datascout embed text --ray``: :func:`embed_text` from the command's arguments."""
    _embed_ray_setup(args)
    out = embed_text(args.input, args.out, fmt=args.format, id_column=args.id_column,
                     text_column=args.text_column, model=args.model, backend=args.backend,
                     batch_size=args.batch_size, concurrency=1 if args.concurrency is None else args.concurrency,
                     shard_rows=100_000 if args.shard_rows is None else args.shard_rows,
                     normalize=not args.no_normalize, progress=_shard_progress(args))
    view = ShardedArray(out)
    print(f"wrote {view.shape[0]} x {view.shape[1]} float32 in {view.num_shards} shards to {out}")
    return 0
