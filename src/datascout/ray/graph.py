"""Index build and kNN graph over the shards of a pool, in Ray tasks.

* :func:`build_index`: train the index once on a sample (:meth:`SimilarityIndex.train`, the
  sample a single-machine build draws), add every row block in a parallel Ray task, and merge
  the parts with faiss's own ``merge_from`` in shard order. For ``Flat``, ``IVF*`` and ``PQ`` /
  ``LSH`` factories the merged index is the one a single process would have built (byte for
  byte). HNSW graphs cannot be merged: build those in one process and hand the index to
  :func:`build_graph`.
* :func:`build_graph`: the kNN graph computed in row blocks by parallel Ray tasks, each writing
  its rows straight into the graph's ``.npy`` files; the result has the layout and positions of
  :meth:`datascout.seals.KNNGraph.build` and equals it up to ties. Each task searches with the
  whole :class:`SimilarityIndex` (it pickles with its faiss index), so ``refine``, ``nprobe`` and
  ``ef_search`` are those of the index passed in, as on one machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from datascout.exceptions import IndexMismatchError, ValidationError
from datascout.index import SimilarityIndex, _faiss, check_factory, drop_self
from datascout.io import staged_dir
from datascout.pool import iter_row_chunks, normalize_rows
from datascout.ray.session import as_view, init_ray, remote, row_blocks
from datascout.shards import ShardedArray


def _task_add_rows(trained: SimilarityIndex, view: ShardedArray, start: int, stop: int, chunk_rows: int):
    """Ray task: add rows ``start..stop`` to the trained (empty) index; returns the part, serialised."""
    index = trained.index_
    for rows in iter_row_chunks(stop - start, chunk_rows):
        index.add(normalize_rows(view[start + rows.start: start + rows.stop]))
    return _faiss().serialize_index(index)


def build_index(pool, factory: str = "IVF1024,Flat", *, train_size: int = 100_000,
                random_state=0, nprobe: int = 16, ef_search: int | None = None, refine: int = 4,
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
    view = as_view(pool)
    ray = init_ray()
    t0 = time.perf_counter()
    out = SimilarityIndex(factory, ef_search=ef_search, nprobe=nprobe, train_size=train_size,
                          refine=refine, random_state=random_state).train(view)
    trained_ref = ray.put(out)
    t1 = time.perf_counter()
    add = remote(_task_add_rows)
    refs = [add.remote(trained_ref, view, lo, hi, chunk_rows) for lo, hi in row_blocks(view, num_tasks)]
    parts = ray.get(refs)
    t2 = time.perf_counter()
    faiss = _faiss()
    # the trained, empty index read back as the parts are, so it has their concrete type
    # (faiss merges only indexes of one C++ type, and a factory-made index may differ)
    merged = faiss.deserialize_index(faiss.serialize_index(out.index_))
    is_ivf = faiss.try_extract_index_ivf(merged) is not None
    for blob in parts:
        part = faiss.deserialize_index(np.asarray(blob, dtype=np.uint8))
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
    if timings is not None:
        timings.update(train=t1 - t0, add=t2 - t1, merge=t3 - t2)
    return out.from_faiss(merged)


def _task_graph_rows(index: SimilarityIndex, view: ShardedArray, start: int, stop: int, k: int,
                     out_dir: str, batch_rows: int) -> int:
    """Ray task: the k nearest neighbours of rows ``start..stop``, written into the graph's
    memory-mapped ``.npy`` files at those rows."""
    neighbors = np.load(Path(out_dir) / "neighbors.npy", mmap_mode="r+")
    sims = np.load(Path(out_dir) / "similarities.npy", mmap_mode="r+")
    for rows in iter_row_chunks(stop - start, batch_rows):
        lo, hi = start + rows.start, start + rows.stop
        s, p = index.search(view[lo:hi], k + 1, exact_embeddings=view)
        sims[lo:hi], neighbors[lo:hi] = drop_self(s, p, np.arange(lo, hi), k)
    neighbors.flush()
    sims.flush()
    return stop - start


def build_graph(pool, index: SimilarityIndex, k: int, out_dir, *, num_tasks: int | None = None,
                batch_rows: int = 4096, timings: dict | None = None):
    """Compute the kNN graph of a shard directory with Ray and save it in ``out_dir`` (the
    layout of :meth:`KNNGraph.save`); returns the memory-mapped :class:`KNNGraph`.

    The directory appears whole or not at all: tasks write into a staged folder, renamed at the end.
    """
    from datascout.seals import KNNGraph, fingerprint

    view = as_view(pool)
    n, d = view.shape
    if not 1 <= k < n:
        raise ValidationError(f"k must be in 1..{n - 1} for a pool of {n} items but is {k}")
    if index.ntotal_ != n:
        raise IndexMismatchError(f"the index holds {index.ntotal_} items but the pool has {n}")
    if index.dim_ != d:
        raise IndexMismatchError(f"embeddings has {d} columns but the index was built with {index.dim_}")
    if batch_rows < 1:
        raise ValidationError(f"batch_rows must be >= 1 but is {batch_rows}")
    ray = init_ray()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    with staged_dir(out_dir) as tmp:
        dtype = np.int32 if n < 2**31 else np.int64
        for name, dt in (("neighbors.npy", dtype), ("similarities.npy", np.float32)):
            mm = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dt, shape=(n, k))
            del mm
        index_ref = ray.put(index)
        task = remote(_task_graph_rows)
        refs = [task.remote(index_ref, view, lo, hi, int(k), str(tmp), batch_rows)
                for lo, hi in row_blocks(view, num_tasks)]
        done = sum(ray.get(refs))
        if done != n:  # a bug, not a user's mistake
            raise RuntimeError(f"graph tasks covered {done} rows of {n}")
        meta = {"version": 1, "index": index.factory, "k": int(k), "n": n, "dim": d,
                "graph_seconds": round(time.perf_counter() - t0, 3), "distributed": "ray",
                "tasks": len(refs), "refine": int(index.refine), "fingerprint": fingerprint(view)}
        (tmp / "graph.json").write_text(json.dumps(meta, indent=2))
    if timings is not None:
        timings.update(graph=time.perf_counter() - t0)
    return KNNGraph.load(out_dir, expect_n=n)
