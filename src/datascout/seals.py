"""SEALS: restrict each round's candidates to the nearest neighbours of the labeled items.

* :class:`KNNGraph`: the k nearest neighbours (pool positions + cosine similarities) of every
  pool item, computed once in batches through a :class:`~datascout.index.SimilarityIndex`,
  saved next to the embeddings and loaded memory-mapped.
* :class:`CandidatePool`: ``C = union of kNN(labeled) - labeled``. Adding newly labeled items
  costs O(new labels * k) (a graph lookup, or an index query when there is no graph); the
  candidates' embeddings live in a contiguous buffer that grows, so scoring C never touches the
  rest of the pool.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from datascout.exceptions import DatascoutError, IndexMismatchError, ValidationError
from datascout.index import SimilarityIndex, check_factory, exact_cosine, normalize_rows
from datascout.io import dir_lock, staged_dir
from datascout.pool import check_embeddings, iter_row_chunks

log = logging.getLogger("datascout")


class GraphCorruptError(ValidationError):
    """A saved kNN graph folder whose files do not match its ``graph.json`` (truncated, a
    partial write, another graph's arrays)."""


GRAPH_FILES = ("neighbors.npy", "similarities.npy", "graph.json")  # a graph folder holds all three


def graph_dir(embeddings_path, factory: str, k: int) -> Path:
    """Where the graph of ``embeddings_path`` for ``factory`` and ``k`` is stored."""
    p = Path(embeddings_path)
    slug = factory.replace(",", "-")
    return p.with_name(f"{p.stem}.knn-{slug}-k{k}")


class KNNGraph:
    """k nearest neighbours of every pool item (self excluded): ``neighbors`` (N, k) int32/int64
    pool positions (-1 = none) and ``similarities`` (N, k) float32 cosine, best first."""

    def __init__(self, neighbors: np.ndarray, similarities: np.ndarray, meta: dict | None = None):
        if neighbors.shape != similarities.shape or neighbors.ndim != 2:
            raise ValidationError(
                f"neighbors {neighbors.shape} and similarities {similarities.shape} must be equal 2-D shapes"
            )
        self.neighbors = neighbors
        self.similarities = similarities
        self.meta = dict(meta or {})

    @property
    def k(self) -> int:
        return self.neighbors.shape[1]

    def __len__(self) -> int:
        return self.neighbors.shape[0]

    @classmethod
    def build(cls, embeddings, k: int = 100, index: SimilarityIndex | str = "HNSW32", *,
              batch_rows: int = 4096, progress: bool = False, out_dir=None) -> "KNNGraph":
        """Build the index (if a factory string is given) and query every item's k+1 neighbours
        in batches of ``batch_rows``, dropping the item itself.

        With ``out_dir`` the two arrays are written straight into ``.npy`` files there (memory
        stays bounded by one batch, not N x k) and the returned graph is memory-mapped from them.
        """
        X = check_embeddings(embeddings)
        n = X.shape[0]
        if not 1 <= k < n:
            raise ValidationError(f"k must be in 1..{n - 1} for a pool of {n} items but is {k}")
        if batch_rows < 1:
            raise ValidationError(f"batch_rows must be >= 1 but is {batch_rows}")
        t0 = time.perf_counter()
        if isinstance(index, str):
            bar = _progress(n, "index  ") if progress else None
            index = SimilarityIndex(check_factory(index)).build(X, progress=bar)
            if bar is not None:
                bar(0, done=True)
        if index.ntotal_ != n:
            raise IndexMismatchError(f"the index holds {index.ntotal_} items but the pool has {n}")
        if index.dim_ != X.shape[1]:
            raise IndexMismatchError(
                f"embeddings has {X.shape[1]} columns but the index was built with {index.dim_}")
        t_index = time.perf_counter() - t0
        dtype = np.int32 if n < 2**31 else np.int64
        if not index.exact_scores:  # exact re-ranking reads refine*(k+1) rows per query: bound it
            per_query = (k + 1) * max(int(index.refine), 1) * X.shape[1] * 4 * 2
            batch_rows = max(16, min(batch_rows, (256 << 20) // per_query))

        def fill(neighbors, sims) -> dict:
            bar = _progress(n, "kNN graph") if progress else None
            t1 = time.perf_counter()
            try:
                for rows in iter_row_chunks(n, batch_rows):
                    s, p = index.search(np.asarray(X[rows]), k + 1, exact_embeddings=X)
                    sims[rows], neighbors[rows] = _drop_self(s, p, np.arange(rows.start, rows.stop), k)
                    if bar is not None:
                        bar(rows.stop - rows.start)
            finally:
                if bar is not None:
                    bar(0, done=True)
            return {"version": 1, "index": index.factory, "k": k, "n": n, "dim": X.shape[1],
                    "fingerprint": fingerprint(X), "index_seconds": round(t_index, 3),
                    "graph_seconds": round(time.perf_counter() - t1, 3)}

        if out_dir is None:
            neighbors, sims = np.empty((n, k), dtype=dtype), np.empty((n, k), dtype=np.float32)
            return cls(neighbors, sims, fill(neighbors, sims))
        with staged_dir(Path(out_dir)) as tmp:  # the folder appears whole or not at all
            neighbors = np.lib.format.open_memmap(tmp / "neighbors.npy", mode="w+", dtype=dtype, shape=(n, k))
            sims = np.lib.format.open_memmap(tmp / "similarities.npy", mode="w+", dtype=np.float32, shape=(n, k))
            meta = fill(neighbors, sims)
            neighbors.flush()
            sims.flush()
            del neighbors, sims
            (tmp / "graph.json").write_text(json.dumps(meta, indent=2))
        return cls.load(out_dir)

    def save(self, directory) -> Path:
        """Write ``neighbors.npy``, ``similarities.npy`` and ``graph.json``; atomic per directory."""
        directory = Path(directory)
        with staged_dir(directory) as tmp:
            np.save(tmp / "neighbors.npy", self.neighbors)
            np.save(tmp / "similarities.npy", self.similarities)
            (tmp / "graph.json").write_text(json.dumps(self.meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory, *, mmap: bool = True, expect_n: int | None = None) -> "KNNGraph":
        """Read a saved graph, checked against its ``graph.json``: both arrays must have the
        recorded (n, k) shape and dtype and their files the size that implies. A truncated or
        inconsistent folder raises :class:`GraphCorruptError`, never loads."""
        directory = Path(directory)
        missing = [f for f in GRAPH_FILES if not (directory / f).is_file()]
        if missing:
            raise GraphCorruptError(f"expected a kNN graph in {str(directory)!r} but it lacks {', '.join(missing)}")
        try:
            meta = json.loads((directory / "graph.json").read_text())
            shape = (int(meta["n"]), int(meta["k"]))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise GraphCorruptError(f"{str(directory / 'graph.json')!r} is not a kNN graph's record: "
                                    f"{type(exc).__name__}: {exc}") from None
        mode = "r" if mmap else None
        arrays = []
        for name, kinds in (("neighbors.npy", "i"), ("similarities.npy", "f")):
            path = directory / name
            try:
                arr = np.load(path, mmap_mode=mode, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise GraphCorruptError(f"cannot read {str(path)!r}: {exc}") from None
            if arr.shape != shape or arr.dtype.kind != kinds:
                raise GraphCorruptError(f"{str(path)!r} holds a {arr.dtype} array of shape {arr.shape} but "
                                        f"graph.json records {shape}")
            if mmap and path.stat().st_size != arr.offset + arr.nbytes:
                raise GraphCorruptError(f"{str(path)!r} has {path.stat().st_size} bytes but an array of shape "
                                        f"{shape} needs {arr.offset + arr.nbytes}")
            arrays.append(arr)
        g = cls(arrays[0], arrays[1], meta)
        if expect_n is not None and len(g) != expect_n:
            raise IndexMismatchError(f"the kNN graph has {len(g)} rows but the pool has {expect_n} items")
        return g


def fingerprint(X, chunk_rows: int = 65536) -> str:
    """A content hash of an (N, d) array: its shape, dtype and every byte, read in row chunks (a
    memory map or a shard view is never copied whole). A graph is reused only for the very
    embeddings it was built on; any edit, of any row, makes a new one. About 1.4 s per GiB
    (sha256 over a memory map, 2-core machine), far below the cost of the graph it guards."""
    import hashlib

    h = hashlib.sha256(f"{tuple(X.shape)}|{np.dtype(X.dtype).str}".encode())
    for rows in iter_row_chunks(X.shape[0], chunk_rows):
        h.update(np.ascontiguousarray(np.asarray(X[rows])).tobytes())
    return h.hexdigest()[:16]


def _drop_self(sims, pos, self_pos, k):
    """Remove each query's own position from its row (or the last column if absent)."""
    is_self = pos == self_pos[:, None]
    # push self to the end, keep the order of the rest
    order = np.argsort(is_self, axis=1, kind="stable")
    pos = np.take_along_axis(pos, order, axis=1)[:, :k]
    sims = np.take_along_axis(sims, order, axis=1)[:, :k]
    return sims, pos


def _progress(total: int, label: str):
    """A small rich progress bar, as a callable ``advance(n, done=False)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=False)
    prog.start()
    task = prog.add_task(label, total=total)

    def advance(n: int, done: bool = False):
        prog.advance(task, n)
        if done:
            prog.stop()

    return advance


def _unit_rows_sum(X, rows) -> np.ndarray:
    """Sum (float64) of the unit-normalised rows ``X[rows]``."""
    R = np.asarray(X[rows], dtype=np.float32)
    if R.shape[0] == 0:
        return np.zeros(X.shape[1], dtype=np.float64)
    return normalize_rows(R).sum(axis=0, dtype=np.float64)


class CandidatePool:
    """The SEALS candidate set ``C = union_{l in L} kNN(l) - L``, grown incrementally.

    Parameters
    ----------
    embeddings : (N, d) array or memory map — the pool.
    graph : KNNGraph, optional — neighbour lookups (O(k) per labeled item).
    index : SimilarityIndex, optional — on-the-fly queries when there is no graph.
    k : int — neighbours per labeled item (at most ``graph.k`` with a graph).
    explore : int — each round, also score this many uniformly random pool items that are
        neither candidates nor labeled, redrawn every round (default 0: the candidate set alone,
        as in the SEALS paper). C only ever holds the labeled items' neighbours, so a strategy
        that looks for global uncertainty (MaxEnt, margin) cannot reach regions of the pool no
        label is near yet; a few thousand random items per round give it a view of those at
        O(explore * d) per round, still independent of N. Once such an item is labeled, its
        neighbours join C as usual.
    """

    def __init__(self, embeddings, *, graph: KNNGraph | None = None,
                 index: SimilarityIndex | None = None, k: int = 100, explore: int = 0):
        if graph is None and index is None:
            raise ValidationError("a candidate pool needs a kNN graph or a similarity index")
        self.embeddings = embeddings
        n, d = embeddings.shape
        if graph is not None:
            if len(graph) != n:
                raise IndexMismatchError(f"the kNN graph has {len(graph)} rows but the pool has {n} items")
            if k > graph.k:
                raise ValidationError(f"k={k} is larger than the graph's k={graph.k}")
        if index is not None and index.dim_ != d:
            raise IndexMismatchError(f"embeddings has {d} columns but the index was built with {index.dim_}")
        if k < 1:
            raise ValidationError(f"k must be >= 1 but is {k}")
        if int(explore) != explore or explore < 0:
            raise ValidationError(f"explore must be an integer >= 0 but is {explore!r}")
        self.graph, self.index, self.k, self.explore = graph, index, int(k), int(explore)
        self._state = np.zeros(n, dtype=np.int8)  # 0 unseen, 1 candidate, 2 labeled
        self._n_unseen = n
        self.last_explored = 0  # random items in the last view
        self._unit_sum = np.zeros(d, dtype=np.float64)  # sum of the candidates' unit vectors
        self._norms_on = False  # _nrm maintained (from the first density score on)
        self._sum_on = False  # _unit_sum maintained (from the first density_direction on)
        self._pos = np.empty(1024, dtype=np.int64)
        self._emb = np.empty((1024, d), dtype=np.float32)
        self._nrm = np.empty(1024, dtype=np.float32)  # the buffer rows' L2 norms (>= 1e-12)
        self._size = 0  # rows used in the buffer (some may be labeled since: see compact)
        self._n_labeled_in_buffer = 0
        self.neighbor_seconds = 0.0

    # -- growth --------------------------------------------------------------------------

    def add_labeled(self, positions) -> int:
        """Record newly labeled pool positions: drop them from C and add their neighbours.
        Returns how many new candidates were added."""
        t0 = time.perf_counter()
        positions = self._check_positions(positions)
        newly = positions[self._state[positions] != 2]
        was_candidate = self._state[newly] == 1
        self._n_labeled_in_buffer += int(was_candidate.sum())
        if self._sum_on:
            self._unit_sum -= _unit_rows_sum(self.embeddings, newly[was_candidate])
        self._n_unseen -= int((self._state[newly] == 0).sum())
        self._state[newly] = 2
        if len(newly) == 0:
            return 0
        if self.graph is not None:
            nb = np.asarray(self.graph.neighbors[newly][:, : self.k], dtype=np.int64)
        else:
            s, nb = self.index.search(np.asarray(self.embeddings[newly]), self.k + 1,
                                      exact_embeddings=self.embeddings)
            _, nb = _drop_self(s, nb, newly, self.k)  # as in the graph: k neighbours, self excluded
        nb = nb[nb >= 0]
        nb = np.unique(nb)
        fresh = nb[self._state[nb] == 0]
        self._state[fresh] = 1
        self._n_unseen -= len(fresh)
        self._append(fresh)
        self.neighbor_seconds += time.perf_counter() - t0
        if self._n_labeled_in_buffer > max(1024, self._size // 4):
            self.compact()
        return len(fresh)

    def block(self, positions) -> None:
        """Positions that may never become candidates (held-out items); no neighbours added."""
        positions = self._check_positions(positions)
        was_candidate = self._state[positions] == 1
        self._n_labeled_in_buffer += int(was_candidate.sum())
        if self._sum_on:
            self._unit_sum -= _unit_rows_sum(self.embeddings, positions[was_candidate])
        self._n_unseen -= int((self._state[positions] == 0).sum())
        self._state[positions] = 2

    def _check_positions(self, positions) -> np.ndarray:
        """Sorted unique int64 pool positions; raises on one outside 0..N-1."""
        positions = np.unique(np.asarray(positions, dtype=np.int64).reshape(-1))
        n = len(self._state)
        if len(positions) and (positions[0] < 0 or positions[-1] >= n):
            bad = positions[0] if positions[0] < 0 else positions[-1]
            raise ValidationError(f"pool position {int(bad)} is out of range: expected 0..{n - 1}")
        return positions

    def _reserve(self, need: int) -> None:
        """Grow the buffer (doubling) to hold at least ``need`` rows."""
        if need > len(self._pos):
            cap = max(need, 2 * len(self._pos))
            self._pos = np.resize(self._pos, cap)
            self._nrm = np.resize(self._nrm, cap)
            grown = np.empty((cap, self._emb.shape[1]), dtype=np.float32)
            grown[: self._size] = self._emb[: self._size]
            self._emb = grown

    def _append(self, fresh: np.ndarray) -> None:
        need = self._size + len(fresh)
        self._reserve(need)
        self._pos[self._size : need] = fresh
        self._emb[self._size : need] = self.embeddings[fresh]  # fresh is sorted: sequential reads
        if self._norms_on:
            self._fill_norms(self._size, need)
        if self._sum_on:
            rows = self._emb[self._size : need]
            self._unit_sum += (rows / self._nrm[self._size : need, None]).sum(axis=0, dtype=np.float64)
        self._size = need

    def _track_norms(self) -> None:
        """From the first density score on, keep the buffer rows' norms (one pass over C now,
        O(new candidates * d) per round after); other strategies never pay for them."""
        if not self._norms_on:
            self._fill_norms(0, self._size)
            self._norms_on = True

    def _track_sum(self) -> None:
        """From the first ``density_direction`` on, keep the sum of the candidates' unit vectors
        up to date (one pass over C now, O(changes * d) per round after)."""
        if not self._sum_on:
            self._track_norms()
            live = self._state[self._pos[: self._size]] == 1
            rows = self._emb[: self._size][live]
            self._unit_sum = (rows / self._nrm[: self._size][live, None]).sum(axis=0, dtype=np.float64)
            self._sum_on = True

    def _fill_norms(self, start: int, stop: int) -> None:
        rows = self._emb[start:stop]
        self._nrm[start:stop] = np.maximum(np.sqrt(np.einsum("ij,ij->i", rows, rows)), 1e-12)

    def compact(self) -> None:
        """Drop buffer rows of items labeled since they became candidates."""
        keep = self._state[self._pos[: self._size]] == 1
        m = int(keep.sum())
        self._pos[:m] = self._pos[: self._size][keep]
        self._emb[:m] = self._emb[: self._size][keep]
        self._nrm[:m] = self._nrm[: self._size][keep]
        self._size = m
        self._n_labeled_in_buffer = 0

    # -- views ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size - self._n_labeled_in_buffer

    def view(self, rng=None):
        """``(embeddings, positions, exclude)`` of the buffer: rows to score, their pool
        positions, and a mask of rows labeled since they were added (not to be chosen).

        With ``explore > 0`` and a generator ``rng``, the view ends with ``explore`` fresh
        uniformly random unseen items (neither candidates nor labeled). They are written past
        the candidates in the same buffer, so nothing of C is copied, and they do not join C."""
        m = self._draw_unseen(self.explore, rng) if (self.explore and rng is not None) else None
        self.last_explored = 0 if m is None else len(m)
        if not self.last_explored:
            pos = self._pos[: self._size]
            return self._emb[: self._size], pos, self._state[pos] != 1
        end = self._size + len(m)
        self._reserve(end)
        self._pos[self._size : end] = m
        src = self.embeddings  # sorted positions: sequential reads of a memory map
        if isinstance(src, np.ndarray) and src.dtype == np.float32:
            # straight into the buffer (mode="clip" writes without a temporary; m is in range)
            np.take(src, m, axis=0, out=self._emb[self._size : end], mode="clip")
        else:
            self._emb[self._size : end] = src[m]
        pos = self._pos[:end]
        exclude = self._state[pos] != 1
        exclude[self._size :] = False
        return self._emb[:end], pos, exclude

    def _draw_unseen(self, m: int, rng) -> np.ndarray:
        """Up to ``m`` distinct uniformly random unseen positions, sorted: rejection sampling,
        O(m) expected while most of the pool is unseen; a full scan only once it is not."""
        m = min(int(m), self._n_unseen)
        n = len(self._state)
        if m <= 0:
            return np.empty(0, dtype=np.int64)
        if self._n_unseen < n // 4:
            return np.sort(rng.choice(np.flatnonzero(self._state == 0), size=m, replace=False))
        got = np.empty(0, dtype=np.int64)
        share = self._n_unseen / n
        while len(got) < m:
            want = m - len(got)
            draw = rng.integers(0, n, size=int(want / share * 1.05) + 16)
            got = np.sort(np.concatenate([got, draw[self._state[draw] == 0]]))
            got = got[np.r_[True, got[1:] != got[:-1]]]  # sorted, distinct (faster than np.unique here)
        if len(got) > m:  # drop a uniform few: the rest stays a uniform subset
            got = np.delete(got, rng.choice(len(got), size=len(got) - m, replace=False))
        return got

    def view_norms(self) -> np.ndarray:
        """L2 norms (at least 1e-12) of the rows of the last ``view()``, computed once per row
        (the density scores divide by them)."""
        self._track_norms()
        end = self._size + self.last_explored
        if self.last_explored:  # the random rows' norms, only when a density score asks
            self._fill_norms(self._size, end)
        return self._nrm[:end]

    @property
    def positions(self) -> np.ndarray:
        emb, pos, exclude = self.view()
        return np.sort(pos[~exclude])

    def is_labeled(self, positions) -> np.ndarray:
        return self._state[np.asarray(positions, dtype=np.int64)] == 2

    def density_direction(self) -> np.ndarray:
        """Mean unit vector of the current candidates (for density measured against C), from a
        sum kept up to date as items join and leave C: O(changes * d) per round, no pass over C."""
        self._track_sum()
        return (self._unit_sum / max(len(self), 1)).astype(np.float32)

    def neighbor_similarity(self, positions) -> np.ndarray:
        """Mean cosine of each position to its graph neighbours that are still unlabeled."""
        if self.graph is None:
            raise ValidationError("neighbour density needs a kNN graph")
        positions = np.asarray(positions, dtype=np.int64)
        nb = np.asarray(self.graph.neighbors[positions][:, : self.k], dtype=np.int64)
        sims = np.asarray(self.graph.similarities[positions][:, : self.k], dtype=np.float32)
        ok = (nb >= 0) & (self._state[np.maximum(nb, 0)] != 2)
        cnt = ok.sum(axis=1)
        return np.where(cnt > 0, (sims * ok).sum(axis=1) / np.maximum(cnt, 1), 0.0).astype(np.float32)


def find_graph(embeddings, embeddings_path, factory: str, k: int, *, fingerprint_=None) -> Path | None:
    """A saved graph beside ``embeddings_path`` for ``factory`` with at least ``k`` neighbours
    whose size, dimension and fingerprint match ``embeddings`` (the smallest such k). A folder
    that fails :meth:`KNNGraph.load`'s checks is passed over with a one-line note (it will be
    rebuilt). ``fingerprint_``: the embeddings' fingerprint when the caller already knows it
    (a campaign records it once), so the rows are not read again."""
    if embeddings_path is None:
        return None
    X = embeddings
    want = graph_dir(embeddings_path, factory, 0).name[:-1]  # "STEM.knn-SLUG-k"
    found = []
    fp = fingerprint_
    for d in Path(embeddings_path).parent.glob(glob.escape(want) + "*"):
        tail = d.name[len(want):]
        if not (tail.isdigit() and d.is_dir()):
            continue  # a staging folder, a lock file or another name: not a graph
        try:
            meta = json.loads((d / "graph.json").read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("index") != factory or meta.get("k", 0) < k:
            if meta is None:
                log.warning("datascout: note: %s is an incomplete kNN graph; building anew", d)
            continue
        if meta.get("n") != X.shape[0] or meta.get("dim") != X.shape[1]:
            continue
        fp = fp or fingerprint(X)
        if meta.get("fingerprint") != fp:
            continue
        try:
            KNNGraph.load(d, expect_n=X.shape[0])
        except DatascoutError as exc:
            log.warning("datascout: note: ignoring a damaged kNN graph (%s); building anew", exc)
            continue
        found.append((meta["k"], d))
    return min(found)[1] if found else None


def build_or_load_graph(embeddings, embeddings_path, factory: str, k: int, *,
                        progress: bool = False, save: bool = True,
                        batch_rows: int = 4096, fingerprint_: str | None = None) -> KNNGraph:
    """Load the graph saved next to ``embeddings_path`` for (factory, k), or build and save it
    (memory-mapped while it is written). A saved graph with a larger k is reused. One writer at
    a time builds a graph folder (a lock); a second one waits and then reuses its graph. Where
    the embeddings' folder is read-only the graph is built in memory for this run (with a
    note); any other failure to write it (a full disk) is an error, not a silent second build.
    ``fingerprint_``: see :func:`find_graph` (the caller vouches for the rows' content)."""
    check_factory(factory)
    X = embeddings if fingerprint_ is not None else check_embeddings(embeddings)
    found = find_graph(X, embeddings_path, factory, k, fingerprint_=fingerprint_)
    if found is not None:
        return KNNGraph.load(found, expect_n=X.shape[0])
    if not save or embeddings_path is None:
        return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows)
    target = graph_dir(embeddings_path, factory, k)
    if not os.access(target.parent, os.W_OK):
        log.warning("datascout: note: %s is not writable: the kNN graph is built in memory for this run only",
                    target.parent)
        return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows)
    try:
        with dir_lock(target):
            found = find_graph(X, embeddings_path, factory, k, fingerprint_=fingerprint_)  # built meanwhile?
            if found is not None:
                return KNNGraph.load(found, expect_n=X.shape[0])
            return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows, out_dir=target)
    except OSError as exc:
        raise ValidationError(f"cannot write the kNN graph to {str(target)!r}: {exc.strerror or exc}") from exc
