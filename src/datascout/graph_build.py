"""The kNN graph of a whole pool as large matrix products over blocks of nearby items.

A kNN *graph* is an all-pairs problem: every item is a query and the queries are the database.
Searching an index one query at a time (HNSW, IVF) walks memory item by item; exact search
(``faiss.knn``) multiplies everything by everything. This builder does what the hardware is best
at, matrix products, but only between items that can be neighbours:

1. **Partition.** Spherical k-means (faiss) on a sample cuts the pool into ``n / block_rows``
   blocks of nearby items; every row is assigned to its nearest centroid in one streaming pass.
2. **Reorder.** The unit-normalised rows are written once, block by block, into a scratch
   memory map (sorted by block), so every block and every block it is compared with is one
   contiguous read. The embeddings themselves are read in order, chunk by chunk, never whole.
3. **Blocks against their nearest blocks.** Each block (the queries) is multiplied with the
   union of its rows' ``probe`` nearest blocks (default), or with ``probe=0`` with the blocks
   whose centroids are most similar to its own until ``search_rows`` candidate rows are
   gathered; the exact top-k of each query is taken from that product.
4. **Refinement by reverse edges.** The similarity of a pair is symmetric, so each edge
   ``i -> j`` found in step 3 is also offered to ``j``: an item on the border of its block
   learns of neighbours that only the block on the other side compared it with. This reads only
   the graph (no embeddings, no new products) and keeps only offers better than an item's
   current k-th neighbour.
5. **Neighbours of neighbours** (``refine_rounds``, optional): each item is compared with the
   nearest neighbours of its nearest neighbours, exactly, and the better ones kept.

Memory is bounded by the scratch buffers: one block's query rows, its ``search_rows`` candidate
rows and their product (chunked to :data:`PRODUCT_BYTES`); the graph itself is written into the
arrays the caller passes (memory maps when it is saved). Similarities are exact cosines; what
the partition may miss is only which items are found, measured as recall against exact search
(``benchmarks/bench_graph.py``).

Measured there: the fastest builder at recall@100 >= 0.95 on Fashion-MNIST pixel PCA-64, but
at its default settings short of that recall on MiniLM text embeddings (0.82) and on synthetic
pools whose clusters outnumber the blocks (0.20): an option, not the default, until the block
count follows the data and a sampled recall check tunes ``probe``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.index import _faiss, drop_self
from datascout.pool import iter_row_chunks, normalize_rows

BLOCKS = "blocks"  # the name this builder goes by where a faiss factory string is accepted
PRODUCT_BYTES = 64 << 20  # the largest query x candidate similarity block held at once
IN_MEMORY_BYTES = 256 << 20  # a reordered copy up to this size stays in memory; larger: a scratch file


@dataclass(frozen=True)
class BlockPlan:
    """The settings of one build (what :func:`plan` chose for a pool of ``n`` rows)."""

    n_blocks: int
    search_rows: int
    probe: int
    refine_rounds: int
    refine_neighbors: int
    train_rows: int


def plan(n: int, k: int, *, block_rows: int = 256, search_blocks: int = 12, probe: int = 4, refine_rounds: int = 0,
         refine_neighbors: int = 10, train_rows_per_block: int = 32, max_train_rows: int = 262144) -> BlockPlan:
    """Block settings for ``n`` rows: ``n / block_rows`` blocks (at least 1). With ``probe`` > 0
    (the default) a block is compared with the union of its rows' ``probe`` nearest blocks; with
    ``probe=0``, with its nearest blocks until about ``search_blocks`` blocks' worth of rows
    (at least ``k + 1`` rows either way, at most the pool). k-means
    trained on ``train_rows_per_block`` rows per block, at most ``max_train_rows``."""
    for name, value in (("block_rows", block_rows), ("search_blocks", search_blocks),
                        ("refine_neighbors", refine_neighbors), ("train_rows_per_block", train_rows_per_block),
                        ("max_train_rows", max_train_rows)):
        if int(value) != value or value < 1:
            raise ValidationError(f"{name} must be an integer >= 1 but is {value!r}")
    for name, value in (("refine_rounds", refine_rounds), ("probe", probe)):
        if int(value) != value or value < 0:
            raise ValidationError(f"{name} must be an integer >= 0 but is {value!r}")
    n_blocks = max(1, min(n // block_rows, n // max(k + 1, 1)))
    search_rows = int(min(n, max(k + 1, search_blocks * max(n // n_blocks, 1))))
    return BlockPlan(n_blocks, search_rows, int(probe), int(refine_rounds), int(refine_neighbors),
                     min(n, n_blocks * int(train_rows_per_block), int(max_train_rows)))


def build_block_graph(X, k: int, neighbors: np.ndarray, similarities: np.ndarray, *,
                      settings: BlockPlan | None = None, random_state=0, scratch_dir=None,
                      progress=None, chunk_rows: int = 65536) -> dict:
    """Fill ``neighbors`` / ``similarities`` ((n, k) arrays or memory maps) with every row's
    k nearest neighbours by cosine, self excluded, best first (-1 / -inf where a row has fewer
    than k others). ``X``: the (n, d) embeddings (array or memory map, any float dtype), read
    in order in chunks of ``chunk_rows``. ``scratch_dir``: where the reordered unit rows go when
    they do not fit in :data:`IN_MEMORY_BYTES` (default: the system's temporary folder); the
    file is removed afterwards. ``progress``: a callable advanced by rows done.

    Returns a record of the settings used (for the graph's ``graph.json``).
    """
    n, d = X.shape
    s = settings or plan(n, k)
    faiss = _faiss()
    rng = np.random.default_rng(random_state)
    seconds = {}
    t0 = time.perf_counter()

    # 1. partition: spherical k-means on a sample, then every row to its nearest centroid
    if s.n_blocks > 1:
        sample = np.sort(rng.choice(n, size=s.train_rows, replace=False))
        km = faiss.Kmeans(d, s.n_blocks, niter=10, spherical=True, seed=int(rng.integers(2**31 - 1)),
                          max_points_per_centroid=10**9, min_points_per_centroid=1)
        km.train(normalize_rows(X[sample]))
        centroids = km.centroids
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(centroids)
        assign = np.empty(n, dtype=np.int64)
        for rows in iter_row_chunks(n, chunk_rows):
            assign[rows] = quantizer.search(normalize_rows(X[rows]), 1)[1][:, 0]
        block_sim = centroids @ centroids.T
    else:
        assign = np.zeros(n, dtype=np.int64)
        centroids = np.zeros((1, d), dtype=np.float32)
        block_sim = np.ones((1, 1), dtype=np.float32)
    order = np.argsort(assign, kind="stable")  # reordered row -> pool position
    counts = np.bincount(assign, minlength=s.n_blocks)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    assign = assign.astype(np.int32)
    pairs = 0  # query x candidate products computed
    covered = []  # per block b: b * n_blocks + c for every block c it searched (sorted keys, in b order)
    seconds["partition"] = time.perf_counter() - t0

    scratch = None
    try:
        # 2. the unit rows, reordered by block: read X in order, write each chunk where it belongs
        if n * d * 4 <= IN_MEMORY_BYTES:
            T = np.empty((n, d), dtype=np.float32)
        else:
            folder = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
            fd, name = tempfile.mkstemp(prefix="datascout-blocks-", suffix=".npy", dir=folder)
            os.close(fd)
            scratch = Path(name)
            T = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(n, d))
        where = np.empty(n, dtype=np.int64)  # pool position -> reordered row
        where[order] = np.arange(n)
        for rows in iter_row_chunks(n, chunk_rows):
            dest = where[rows]
            sort = np.argsort(dest)
            T[dest[sort]] = normalize_rows(X[rows])[sort]

        seconds["reorder"] = time.perf_counter() - t0 - seconds["partition"]
        t1 = time.perf_counter()
        # 3. each block against its nearest blocks, exact top-k inside
        ranked = np.argsort(-block_sim, axis=1, kind="stable")
        for b in range(s.n_blocks):
            lo, hi = int(offsets[b]), int(offsets[b + 1])
            if hi == lo:
                continue
            if s.probe:
                chosen = _probed_blocks(T[lo:hi], centroids, ranked[b], counts, s.probe, k + 1)
            else:
                chosen, total = [], 0
                for c in ranked[b]:
                    if counts[c]:
                        chosen.append(int(c))
                        total += int(counts[c])
                    if total >= s.search_rows:
                        break
                chosen.sort()  # ascending: the candidate rows are read in file order
            covered.append(b * s.n_blocks + np.asarray(chosen, dtype=np.int64))
            DB = np.concatenate([T[offsets[c]: offsets[c + 1]] for c in chosen])  # contiguous reads
            cand_pos = np.concatenate([order[offsets[c]: offsets[c + 1]] for c in chosen])
            pairs += (hi - lo) * len(DB)
            q_rows = max(1, PRODUCT_BYTES // (4 * len(DB)))
            for q in iter_row_chunks(hi - lo, q_rows):
                Q = np.asarray(T[lo + q.start: lo + q.stop])
                me = order[lo + q.start: lo + q.stop]
                sims, pos = _top(Q, DB, k + 1)
                pos = np.where(pos >= 0, cand_pos[np.maximum(pos, 0)], -1)
                sims, pos = drop_self(sims, pos, me, k)
                neighbors[me] = pos
                similarities[me] = sims
            if progress is not None:
                progress(hi - lo)

        seconds["blocks"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        # 4. every edge offered to its other end
        covered = np.concatenate(covered) if covered else np.empty(0, np.int64)
        reverse_added = _reverse_edges(neighbors, similarities, k, assign, covered, s.n_blocks, chunk_rows)
        seconds["reverse"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        # 5. neighbours of neighbours, exactly
        nn_added = [_neighbors_of_neighbors(T, where, neighbors, similarities, k, s.refine_neighbors, chunk_rows)
                    for _ in range(s.refine_rounds)]
        seconds["refine"] = time.perf_counter() - t1
    finally:
        if scratch is not None:
            del T
            scratch.unlink(missing_ok=True)
    return {"blocks": s.n_blocks, "search_rows": s.search_rows, "probe": s.probe, "refine_rounds": s.refine_rounds,
            "refine_neighbors": s.refine_neighbors, "largest_block": int(counts.max()),
            "pairs_fraction": round(pairs / float(n) ** 2, 4),
            "reverse_edges_added": int(reverse_added), "neighbor_edges_added": [int(a) for a in nn_added],
            "seconds": {key: round(v, 3) for key, v in seconds.items()}}


def _top(Q: np.ndarray, DB: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest inner products of each row of ``Q`` with the rows of ``DB``, best first
    (-inf / -1 pads when DB has fewer rows): one matrix product and a partial sort."""
    S = Q @ DB.T
    if S.shape[1] > m:
        top = np.argpartition(S, S.shape[1] - m, axis=1)[:, -m:]
    else:
        top = np.broadcast_to(np.arange(S.shape[1]), (S.shape[0], S.shape[1]))
    sims = np.take_along_axis(S, top, axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")
    sims = np.take_along_axis(sims, order, axis=1)
    pos = np.take_along_axis(top, order, axis=1).astype(np.int64)
    if sims.shape[1] < m:
        pad = m - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
    return sims.astype(np.float32), pos


def merge_offers(neighbors, similarities, rows: np.ndarray, offer_pos: np.ndarray,
                 offer_sim: np.ndarray, k: int, *, width: int = 32) -> int:
    """Merge offered neighbours into the graph rows ``rows`` (offers aligned: ``rows[i]`` is
    offered ``offer_pos[i]`` at ``offer_sim[i]``; a row may repeat). Each row keeps its best
    ``k`` distinct neighbours. Returns how many offers entered a row.

    Offers a row already holds, and repeated offers, are dropped first; the rest are placed
    beside their row's k neighbours (``width`` offers per row at a time) and each row re-ranked."""
    rows = np.asarray(rows, dtype=np.int64)
    offer_pos = np.asarray(offer_pos, dtype=np.int64)
    offer_sim = np.asarray(offer_sim, dtype=np.float32)
    if not len(rows):
        return 0
    n = max(int(neighbors.shape[0]), int(offer_pos.max()) + 1, 1)
    key, first = np.unique(rows * n + offer_pos, return_index=True)  # sorted by row, then neighbour
    rows, offer_pos, offer_sim = rows[first], offer_pos[first], offer_sim[first]
    added = 0
    while len(rows):
        targets, start, per = np.unique(rows, return_index=True, return_counts=True)
        rank = np.arange(len(rows)) - np.repeat(start, per)
        now = rank < width
        r, p, v, rank = rows[now], offer_pos[now], offer_sim[now], rank[now]
        rows, offer_pos, offer_sim = rows[~now], offer_pos[~now], offer_sim[~now]
        t = np.searchsorted(targets, r)
        cur_pos = np.asarray(neighbors[targets], dtype=np.int64)
        cur_sim = np.asarray(similarities[targets], dtype=np.float32)
        held = (cur_pos[t] == p[:, None]).any(axis=1)
        r, p, v, rank, t = r[~held], p[~held], v[~held], rank[~held], t[~held]
        if not len(r):
            continue
        m = min(width, int(per.max()))
        all_pos = np.concatenate([cur_pos, np.full((len(targets), m), -1, np.int64)], axis=1)
        all_sim = np.concatenate([cur_sim, np.full((len(targets), m), -np.inf, np.float32)], axis=1)
        all_pos[t, k + rank] = p
        all_sim[t, k + rank] = v
        order = np.argsort(-all_sim, axis=1, kind="stable")[:, :k]  # on ties the row's own entries first
        new_pos = np.take_along_axis(all_pos, order, axis=1)
        neighbors[targets] = new_pos
        similarities[targets] = np.take_along_axis(all_sim, order, axis=1)
        added += int(np.count_nonzero(order >= k))
    return added


def _kth(similarities, k: int, chunk_rows: int) -> np.ndarray:
    """Each row's k-th similarity (-inf where it has fewer than k neighbours), read in chunks."""
    n = similarities.shape[0]
    out = np.empty(n, dtype=np.float32)
    for rows in iter_row_chunks(n, chunk_rows):
        out[rows] = similarities[rows][:, k - 1]
    return out


def _probed_blocks(Q, centroids, ranked, counts, probe: int, least_rows: int) -> list:
    """The blocks a group of queries ``Q`` (one block's rows) is compared with: the union of
    each query's ``probe`` nearest centroids among the ``4 * probe`` nearest to the group's own,
    extended in that order until at least ``least_rows`` rows; sorted (read in file order)."""
    near = ranked[: 4 * probe]
    S = Q @ centroids[near].T
    m = min(probe, len(near))
    top = np.argpartition(S, S.shape[1] - m, axis=1)[:, -m:] if S.shape[1] > m else np.arange(S.shape[1])
    chosen = set(near[np.unique(top)].tolist())
    chosen = {c for c in chosen if counts[c]}
    total = int(counts[list(chosen)].sum()) if chosen else 0
    for c in ranked:
        if total >= least_rows:
            break
        if counts[c] and int(c) not in chosen:
            chosen.add(int(c))
            total += int(counts[c])
    return sorted(chosen)


def _reverse_edges(neighbors, similarities, k: int, assign, covered, n_blocks: int, chunk_rows: int) -> int:
    """Offer every edge i -> j (similarity s) to j, where j's own block never searched i's
    block (elsewhere j has already compared itself with i and kept what beat its k-th); j takes
    it when s beats its current k-th neighbour."""
    n = neighbors.shape[0]
    kth = _kth(similarities, k, chunk_rows)
    added = 0
    rows_per = max(1, chunk_rows // max(k // 16, 1))
    for rows in iter_row_chunks(n, rows_per):
        nb = np.asarray(neighbors[rows], dtype=np.int64)
        sm = np.asarray(similarities[rows], dtype=np.float32)
        src = np.broadcast_to(np.arange(rows.start, rows.stop)[:, None], nb.shape)
        ok = nb >= 0
        key = assign[nb[ok]].astype(np.int64) * n_blocks + assign[src[ok]]
        at = np.minimum(np.searchsorted(covered, key), len(covered) - 1)
        ok[ok] = covered[at] != key  # j's block never searched i's block
        ok[ok] = sm[ok] > kth[nb[ok]]
        if not ok.any():
            continue
        j, i, v = nb[ok], src[ok], sm[ok]
        added += merge_offers(neighbors, similarities, j, i, v, k)
        touched = np.unique(j)
        kth[touched] = np.asarray(similarities[touched])[:, k - 1]
    return added


def _neighbors_of_neighbors(T, where, neighbors, similarities, k: int, m: int, chunk_rows: int) -> int:
    """Compare each row with the first ``m`` neighbours of its first ``m`` neighbours (exact
    cosines from the reordered unit rows ``T``) and keep the better ones."""
    n, d = T.shape
    added = 0
    rows_per = max(1, (PRODUCT_BYTES // 2) // (4 * d * m * m))
    for rows in iter_row_chunks(n, rows_per):
        first = np.asarray(neighbors[rows][:, :m], dtype=np.int64)
        two = np.asarray(neighbors[np.maximum(first, 0).ravel()][:, :m], dtype=np.int64).reshape(len(first), m * m)
        two[np.repeat(first < 0, m, axis=1)] = -1
        me = np.arange(rows.start, rows.stop)
        two[two == me[:, None]] = -1
        ok = two >= 0
        if not ok.any():
            continue
        q = np.broadcast_to(me[:, None], two.shape)[ok]
        c = two[ok]
        sims = np.einsum("ij,ij->i", T[where[q]], T[where[c]])
        kth = np.asarray(similarities[rows])[:, k - 1]
        better = sims > kth[q - rows.start]
        added += merge_offers(neighbors, similarities, q[better], c[better], sims[better], k)
    return added
