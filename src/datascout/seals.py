"""SEALS: restrict each round's candidates to the nearest neighbours of the labeled items.

* :class:`KNNGraph`: the k nearest neighbours (pool positions + cosine similarities) of every
  pool item, computed once in batches through a :class:`~datascout.index.SimilarityIndex`,
  saved next to the embeddings and loaded memory-mapped.
* :class:`CandidatePool`: ``C = union of kNN(labeled) - labeled``, grown by the learner's
  :class:`CandidateSet`. Adding newly labeled items costs O(new labels * k) (a graph lookup, or
  an index query when there is no graph); the candidates' embeddings live in a contiguous buffer
  that grows, so scoring C never touches the rest of the pool. Each round the learner takes one
  read-only :class:`~datascout.pool.CandidateView` of it.
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
from datascout.graph_build import BLOCKS, BlockPlan, build_block_graph, plan
from datascout.index import SimilarityIndex, check_factory, drop_self
from datascout.io import dir_lock, staged_dir
from datascout.progress import ProgressBar
from datascout.pool import UNLABELED, CandidateView, check_embeddings, iter_row_chunks, row_norms, unit_rows_sum

log = logging.getLogger("datascout")


class GraphCorruptError(ValidationError):
    """A saved kNN graph folder whose files do not match its ``graph.json`` (truncated, a
    partial write, another graph's arrays)."""


GRAPH_FILES = ("neighbors.npy", "similarities.npy", "graph.json")  # a graph folder holds all three


def check_graph_index(name: str) -> str:
    """A name a kNN graph can be built with: ``"blocks"`` (:mod:`datascout.graph_build`, blocks
    of nearby items multiplied with their nearest blocks) or any faiss factory string that
    :func:`~datascout.index.check_factory` accepts (an index built first, then queried)."""
    if name == BLOCKS:
        return name
    try:
        return check_factory(name)
    except ValidationError:
        raise ValidationError(f"unsupported index {name!r}: expected 'blocks' or a faiss factory string "
                              "such as 'Flat', 'HNSW32', 'IVF1024,Flat', 'IVF1024,PQ32' or 'LSH'") from None


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
              batch_rows: int = 4096, progress: bool = False, out_dir=None,
              fingerprint_: str | None = None, blocks: BlockPlan | None = None) -> "KNNGraph":
        """Build the index (if a factory string is given) and query every item's k+1 neighbours
        in batches of ``batch_rows``, dropping the item itself. ``index="blocks"``: no index;
        the graph is computed by :func:`datascout.graph_build.build_block_graph` (blocks of
        nearby items multiplied with their nearest blocks), with the settings ``blocks``
        (default :func:`datascout.graph_build.plan` for the pool's size).

        With ``out_dir`` the two arrays are written straight into ``.npy`` files there (memory
        stays bounded by one batch, not N x k) and the returned graph is memory-mapped from them.
        ``fingerprint_``: the embeddings' fingerprint when the caller already took it (their rows
        were checked then): recorded as it is, the rows not read again to check or hash them.
        """
        X = embeddings if fingerprint_ is not None else check_embeddings(embeddings)
        n = X.shape[0]
        if not 1 <= k < n:
            raise ValidationError(f"k must be in 1..{n - 1} for a pool of {n} items but is {k}")
        if batch_rows < 1:
            raise ValidationError(f"batch_rows must be >= 1 but is {batch_rows}")
        if isinstance(index, str) and index == BLOCKS:
            return cls._build_blocks(X, k, blocks or plan(n, k), progress=progress, out_dir=out_dir,
                                     fingerprint_=fingerprint_)
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

        def fill(neighbors, sims, _scratch) -> dict:
            bar = _progress(n, "kNN graph") if progress else None
            t1 = time.perf_counter()
            try:
                for rows in iter_row_chunks(n, batch_rows):
                    s, p = index.search(np.asarray(X[rows]), k + 1, exact_embeddings=X)
                    sims[rows], neighbors[rows] = drop_self(s, p, np.arange(rows.start, rows.stop), k)
                    if bar is not None:
                        bar(rows.stop - rows.start)
            finally:
                if bar is not None:
                    bar(0, done=True)
            return {"version": 1, "index": index.factory, "k": k, "n": n, "dim": X.shape[1],
                    "fingerprint": fingerprint_ or fingerprint(X), "index_seconds": round(t_index, 3),
                    "graph_seconds": round(time.perf_counter() - t1, 3)}

        return cls._filled(n, k, dtype, fill, out_dir)

    @classmethod
    def _filled(cls, n: int, k: int, dtype, fill, out_dir) -> "KNNGraph":
        """The graph ``fill(neighbors, similarities, folder)`` writes (returning its record):
        into arrays in memory, or with ``out_dir`` into ``.npy`` memory maps staged in a folder
        that is moved into place whole (``folder``: that staging folder, for scratch files)."""
        if out_dir is None:
            neighbors, sims = np.empty((n, k), dtype=dtype), np.empty((n, k), dtype=np.float32)
            return cls(neighbors, sims, fill(neighbors, sims, None))
        with staged_dir(Path(out_dir)) as tmp:  # the folder appears whole or not at all
            neighbors = np.lib.format.open_memmap(tmp / "neighbors.npy", mode="w+", dtype=dtype, shape=(n, k))
            sims = np.lib.format.open_memmap(tmp / "similarities.npy", mode="w+", dtype=np.float32, shape=(n, k))
            meta = fill(neighbors, sims, tmp)
            neighbors.flush()
            sims.flush()
            del neighbors, sims
            (tmp / "graph.json").write_text(json.dumps(meta, indent=2))
        return cls.load(out_dir)

    @classmethod
    def _build_blocks(cls, X, k: int, settings: BlockPlan, *, progress: bool, out_dir,
                      fingerprint_: str | None) -> "KNNGraph":
        n = X.shape[0]
        dtype = np.int32 if n < 2**31 else np.int64

        def fill(neighbors, sims, scratch_dir) -> dict:
            bar = _progress(n, "kNN graph (blocks)") if progress else None
            t0 = time.perf_counter()
            try:
                record = build_block_graph(X, k, neighbors, sims, settings=settings, scratch_dir=scratch_dir,
                                           progress=bar)
            finally:
                if bar is not None:
                    bar(0, done=True)
            return {"version": 1, "index": BLOCKS, "k": k, "n": n, "dim": X.shape[1],
                    "fingerprint": fingerprint_ or fingerprint(X), "index_seconds": 0.0,
                    "graph_seconds": round(time.perf_counter() - t0, 3), "blocks": record}

        return cls._filled(n, k, dtype, fill, out_dir)

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
        nb = arrays[0]
        for rows in iter_row_chunks(shape[0], max(1, (64 << 20) // max(nb.itemsize * shape[1], 1))):
            block = np.asarray(nb[rows])  # one pass, in 64 MiB blocks: neighbours are pool positions or -1
            if block.size and (block.min() < -1 or block.max() >= shape[0]):
                raise GraphCorruptError(f"{str(directory / 'neighbors.npy')!r} holds neighbour positions outside "
                                        f"-1..{shape[0] - 1} (rows {rows.start}-{rows.stop - 1})")
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


def _progress(total: int, label: str):
    """A :class:`~datascout.progress.ProgressBar`, as a callable ``advance(n, done=False)``."""
    bar = ProgressBar(total, label).start()

    def advance(n: int, done: bool = False):
        bar(n)
        if done:
            bar.close()

    return advance


class CandidatePool:
    """How to grow the SEALS candidate set ``C = union_{l in L} kNN(l) - L``: what to look
    neighbours up in, and how many. It only stores its arguments; :meth:`start` makes the growing
    set (:class:`CandidateSet`) for one learner, so one ``CandidatePool`` can serve several.

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
        self.embeddings = embeddings
        self.graph = graph
        self.index = index
        self.k = k
        self.explore = explore

    def check(self) -> None:
        """Raise when the arguments do not fit together (called by :meth:`start`)."""
        n, d = self.embeddings.shape
        if self.graph is None and self.index is None:
            raise ValidationError("a candidate pool needs a kNN graph or a similarity index")
        if self.graph is not None:
            if len(self.graph) != n:
                raise IndexMismatchError(f"the kNN graph has {len(self.graph)} rows but the pool has {n} items")
            if self.k > self.graph.k:
                raise ValidationError(f"k={self.k} is larger than the graph's k={self.graph.k}")
        if self.index is not None and self.index.dim_ != d:
            raise IndexMismatchError(f"embeddings has {d} columns but the index was built with {self.index.dim_}")
        if int(self.k) != self.k or self.k < 1:
            raise ValidationError(f"k must be an integer >= 1 but is {self.k!r}")
        if int(self.explore) != self.explore or self.explore < 0:
            raise ValidationError(f"explore must be an integer >= 0 but is {self.explore!r}")

    def start(self, labels, *, norms: bool = True, unit_sum: bool = True) -> "CandidateSet":
        """An empty candidate set over this pool. ``labels`` is the learner's own label array
        (``-1`` = unlabeled, anything else = labeled or held out): the set reads it, never
        writes it, and never keeps a copy, so the learner is the one holder of what is labeled.

        ``norms``: keep the buffer rows' norms (the views carry them; density scores divide by
        them); ``unit_sum``: keep the sum of the candidates' unit vectors (density measured
        against C). Each costs O(new candidates * d) per round; a learner asks only for what its
        strategy reads."""
        self.check()
        labels = np.asarray(labels)
        if labels.shape != (self.embeddings.shape[0],):
            raise ValidationError(
                f"labels has shape {labels.shape} but the pool has {self.embeddings.shape[0]} items")
        return CandidateSet(self, labels, norms=norms or unit_sum, unit_sum=unit_sum)


class CandidateSet:
    """The growing candidate set of one learner (made by :meth:`CandidatePool.start`).

    The candidates' embeddings and norms live in a contiguous buffer that grows, so scoring C never
    touches the rest of the pool; the sum of their unit vectors is kept up to date (density
    measured against C). Which items are labeled is read from the learner's label array.
    """

    def __init__(self, spec: CandidatePool, labels: np.ndarray, *, norms: bool, unit_sum: bool):
        self.spec = spec
        self.labels = labels
        self.norms = norms
        self.unit_sum = unit_sum
        n, d = spec.embeddings.shape
        self._member = np.zeros(n, dtype=bool)  # ever added to the buffer
        self._n_unseen = int(np.count_nonzero(labels == UNLABELED))  # neither member nor labeled
        self._unit_sum = np.zeros(d, dtype=np.float64)  # sum of the candidates' unit vectors
        self._pos = np.empty(1024, dtype=np.int64)
        self._emb = np.empty((1024, d), dtype=np.float32)
        self._nrm = np.empty(1024, dtype=np.float32)  # the buffer rows' L2 norms (>= 1e-12)
        self._size = 0  # rows used in the buffer (some may be labeled since: see compact)
        self._n_labeled_in_buffer = 0
        self.neighbor_seconds = 0.0

    # -- growth --------------------------------------------------------------------------

    def add_labeled(self, positions) -> int:
        """Newly labeled pool positions (already recorded in the learner's labels, sorted, unique):
        they leave C and their neighbours join it. Returns how many candidates were added."""
        t0 = time.perf_counter()
        spec = self.spec
        positions = np.asarray(positions, dtype=np.int64)
        was_member = self._member[positions]
        self._n_labeled_in_buffer += int(np.count_nonzero(was_member))
        if self.unit_sum:
            self._unit_sum -= unit_rows_sum(spec.embeddings, positions[was_member])
        self._n_unseen -= int(np.count_nonzero(~was_member))
        if len(positions) == 0:
            return 0
        if spec.graph is not None:
            nb = np.asarray(spec.graph.neighbors[positions][:, : spec.k], dtype=np.int64)
        else:
            s, nb = spec.index.search(np.asarray(spec.embeddings[positions]), spec.k + 1,
                                      exact_embeddings=spec.embeddings)
            _, nb = drop_self(s, nb, positions, spec.k)  # as in the graph: k neighbours, self excluded
        nb = np.unique(nb[nb >= 0])
        fresh = nb[~self._member[nb] & (self.labels[nb] == UNLABELED)]
        self._member[fresh] = True
        self._n_unseen -= len(fresh)
        self._append(fresh)
        self.neighbor_seconds += time.perf_counter() - t0
        if self._n_labeled_in_buffer > max(1024, self._size // 4):
            self._compact()
        return len(fresh)

    def _reserve(self, need: int) -> None:
        """Grow the buffer (doubling) to hold at least ``need`` rows."""
        if need > len(self._pos):
            cap = max(need, 2 * len(self._pos))
            self._pos = np.resize(self._pos, cap)
            self._nrm = np.resize(self._nrm, cap)
            grown = np.empty((cap, self._emb.shape[1]), dtype=np.float32)
            grown[: self._size] = self._emb[: self._size]
            self._emb = grown

    def _write_rows(self, start: int, positions: np.ndarray) -> int:
        """Copy the pool rows at sorted ``positions`` (and their norms) into the buffer at ``start``."""
        end = start + len(positions)
        self._reserve(end)
        self._pos[start:end] = positions
        src = self.spec.embeddings  # sorted positions: sequential reads of a memory map
        if type(src) is np.ndarray and src.dtype == np.float32:
            # straight into the buffer (mode="clip" writes without a temporary; positions are in range)
            np.take(src, positions, axis=0, out=self._emb[start:end], mode="clip")
        else:
            self._emb[start:end] = src[positions]
        if self.norms:
            self._nrm[start:end] = row_norms(self._emb[start:end])
        return end

    def _append(self, fresh: np.ndarray) -> None:
        end = self._write_rows(self._size, fresh)
        if self.unit_sum:
            rows = self._emb[self._size : end]
            self._unit_sum += (rows / self._nrm[self._size : end, None]).sum(axis=0, dtype=np.float64)
        self._size = end

    def _compact(self) -> None:
        """Drop buffer rows of items labeled since they became candidates."""
        keep = self.labels[self._pos[: self._size]] == UNLABELED
        m = int(keep.sum())
        self._pos[:m] = self._pos[: self._size][keep]
        self._emb[:m] = self._emb[: self._size][keep]
        self._nrm[:m] = self._nrm[: self._size][keep]
        self._size = m
        self._n_labeled_in_buffer = 0

    # -- views ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size - self._n_labeled_in_buffer

    def view(self, rng=None) -> CandidateView:
        """This round's :class:`~datascout.pool.CandidateView` of the buffer: its rows, their
        pool positions and norms (``None`` unless kept), and which rows are labeled since they
        were added (excluded).

        With ``explore > 0`` and a generator ``rng``, the view ends with ``explore`` fresh
        uniformly random unseen items (neither candidates nor labeled). They are written past
        the candidates in the same buffer, so nothing of C is copied, and they do not join C
        (the next round draws new ones into the same rows)."""
        explore = self.spec.explore
        m = self._draw_unseen(explore, rng) if (explore and rng is not None) else np.empty(0, np.int64)
        end = self._write_rows(self._size, m) if len(m) else self._size
        pos = self._pos[:end]
        excluded = self.labels[pos] != UNLABELED
        norms = self._nrm[:end] if self.norms else None
        return CandidateView.of(self._emb[:end], pos, excluded, norms, explored=len(m))

    def _draw_unseen(self, m: int, rng) -> np.ndarray:
        """Up to ``m`` distinct uniformly random unseen positions, sorted: rejection sampling,
        O(m) expected while most of the pool is unseen; a full scan only once it is not."""
        m = min(int(m), self._n_unseen)
        n = len(self._member)
        if m <= 0:
            return np.empty(0, dtype=np.int64)
        if self._n_unseen < n // 4:
            unseen = np.flatnonzero(~self._member & (self.labels == UNLABELED))
            return np.sort(rng.choice(unseen, size=m, replace=False))
        got = np.empty(0, dtype=np.int64)
        share = self._n_unseen / n
        while len(got) < m:
            want = m - len(got)
            draw = rng.integers(0, n, size=int(want / share * 1.05) + 16)
            got = np.sort(np.concatenate([got, draw[~self._member[draw] & (self.labels[draw] == UNLABELED)]]))
            got = got[np.r_[True, got[1:] != got[:-1]]]  # sorted, distinct (faster than np.unique here)
        if len(got) > m:  # drop a uniform few: the rest stays a uniform subset
            got = np.delete(got, rng.choice(len(got), size=len(got) - m, replace=False))
        return got

    @property
    def positions(self) -> np.ndarray:
        """The current candidates' pool positions, sorted."""
        pos = self._pos[: self._size]
        return np.sort(pos[self.labels[pos] == UNLABELED])

    def density_direction(self) -> np.ndarray:
        """Mean unit vector of the current candidates (for density measured against C), from a
        sum kept up to date as items join and leave C: O(changes * d) per round, no pass over C."""
        if not self.unit_sum:  # a bug, not a user's mistake
            raise RuntimeError("this candidate set was started without unit_sum=True")
        return (self._unit_sum / max(len(self), 1)).astype(np.float32)

    def neighbor_similarity(self, positions) -> np.ndarray:
        """Mean cosine of each position to its graph neighbours that are still unlabeled."""
        graph, k = self.spec.graph, self.spec.k
        if graph is None:
            raise ValidationError("neighbour density needs a kNN graph")
        positions = np.asarray(positions, dtype=np.int64)
        nb = np.asarray(graph.neighbors[positions][:, :k], dtype=np.int64)
        sims = np.asarray(graph.similarities[positions][:, :k], dtype=np.float32)
        ok = (nb >= 0) & (self.labels[np.maximum(nb, 0)] == UNLABELED)
        cnt = ok.sum(axis=1)
        return np.where(cnt > 0, (sims * ok).sum(axis=1) / np.maximum(cnt, 1), 0.0).astype(np.float32)


def find_graph(embeddings, embeddings_path, factory: str, k: int, *, fingerprint_=None,
               quiet: bool = False) -> Path | None:
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
            if meta is None and not quiet:
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
            if not quiet:
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
    check_graph_index(factory)
    X = embeddings if fingerprint_ is not None else check_embeddings(embeddings)
    found = find_graph(X, embeddings_path, factory, k, fingerprint_=fingerprint_)
    if found is not None:
        return KNNGraph.load(found, expect_n=X.shape[0])
    if not save or embeddings_path is None:
        return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows, fingerprint_=fingerprint_)
    target = graph_dir(embeddings_path, factory, k)
    if not os.access(target.parent, os.W_OK):
        log.warning("datascout: note: %s is not writable: the kNN graph is built in memory for this run only",
                    target.parent)
        return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows, fingerprint_=fingerprint_)
    try:
        with dir_lock(target):
            found = find_graph(X, embeddings_path, factory, k, fingerprint_=fingerprint_, quiet=True)  # built meanwhile?
            if found is not None:
                return KNNGraph.load(found, expect_n=X.shape[0])
            return KNNGraph.build(X, k, factory, progress=progress, batch_rows=batch_rows, out_dir=target,
                                  fingerprint_=fingerprint_)
    except OSError as exc:
        raise ValidationError(f"cannot write the kNN graph to {str(target)!r}: {exc.strerror or exc}") from exc
