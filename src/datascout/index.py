"""Similarity search over pool embeddings: one narrow interface over faiss.

Backends are named by faiss factory strings: ``"Flat"`` (exact), ``"HNSW32"`` (any M),
``"IVF1024,Flat"``, ``"IVF1024,PQ32"`` (compressed, for pools that do not fit in memory as
float32), ``"IVF65536_HNSW32,PQ32"`` (an HNSW coarse quantizer: a large nlist stays cheap to
assign), ``"LSHrt"`` / ``"LSH"`` (sign-bit hashing, as SEALS was first described: ``rt`` adds
a random rotation and per-bit thresholds trained on the data, which plain ``LSH`` lacks; on
vectors that are not centred, such as non-negative features, plain ``LSH`` recalls far less).

Similarity is cosine: vectors are L2-normalised (in chunks, never the whole pool at once) before
they reach faiss. What :meth:`SimilarityIndex.search` returns as similarities:

* backends that store the unit vectors (``Flat``, ``HNSW*``, ``IVF*,Flat``): exact cosines;
* lossy backends (``PQ``, ``SQ``) searched with ``exact_embeddings`` (the pool): ``refine * k``
  items re-ranked by their exact cosine, so the ranking of the returned set is exact and what the
  backend may miss is only which items are returned; without ``exact_embeddings``: the backend's
  approximate inner product of the unit vectors (an approximate cosine);
* ``LSH*`` ranks by Hamming distance, which is no cosine: it is searched only with
  ``exact_embeddings`` (and then re-ranked as above); without them the search is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from datascout.exceptions import IndexMismatchError, MissingDependencyError, ValidationError
from datascout.files import atomic_write_bytes, file_sha256
from datascout.pool import check_embeddings, iter_row_chunks, normalize_rows

_FACTORY = re.compile(
    r"^(Flat|HNSW\d+(,Flat)?|IVF\d+(_HNSW\d+)?,(Flat|PQ\d+(x\d+)?|SQ8|SQfp16)|LSH(r|t|rt)?|PQ\d+"
    r"|OPQ\d+,IVF\d+(_HNSW\d+)?,PQ\d+)$"
)


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise MissingDependencyError("similarity search needs faiss: pip install faiss-cpu") from exc
    return faiss


def check_factory(factory: str) -> str:
    if not isinstance(factory, str) or not _FACTORY.match(factory):
        raise ValidationError(
            f"unsupported index {factory!r}: expected a faiss factory string such as 'Flat', "
            "'HNSW32', 'IVF1024,Flat', 'IVF1024,PQ32', 'IVF65536_HNSW32,PQ32' or 'LSH'"
        )
    for name, value in re.findall(r"(HNSW|IVF|PQ|x)(\d+)", factory):
        least = 2 if name == "HNSW" else 1  # an HNSW graph with M < 2 links nothing
        if int(value) < least:
            raise ValidationError(f"index {factory!r}: {name}{value} must have {name} >= {least}")
    return factory


def _faiss_message(exc: Exception) -> str:
    """faiss's own reason, on one line, without its C++ source location."""
    text = " ".join(str(exc).split())
    return text.split("failed: ", 1)[-1] if "failed: " in text else text.split("Error: ", 1)[-1]


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValidationError(f"{name} must be an integer >= 1 but is {value!r}")


class SimilarityIndex:
    """A cosine-similarity index over pool positions.

    Parameters
    ----------
    factory : str
        faiss factory string (see the module docstring).
    ef_search : int, optional
        HNSW search depth (default ``max(2 k, 64)`` at search time).
    ef_construction : int
        HNSW build depth.
    nprobe : int
        IVF lists probed per query.
    train_size : int
        Rows sampled to train IVF / PQ / LSH thresholds.
    refine : int
        For lossy backends (PQ, SQ, LSH) searched with ``exact_embeddings``: fetch
        ``refine * k`` candidates, re-rank them by exact cosine and keep the best ``k``.
    random_state : int, optional
    """

    def __init__(self, factory: str = "HNSW32", *, ef_search: int | None = None,
                 ef_construction: int = 80, nprobe: int = 16, train_size: int = 100_000,
                 refine: int = 4, random_state=0):
        _check_positive(ef_search=ef_search, ef_construction=ef_construction, nprobe=nprobe,
                        train_size=train_size, refine=refine)
        self.factory = factory
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.nprobe = nprobe
        self.train_size = train_size
        self.refine = refine
        self.random_state = random_state

    # -- building ------------------------------------------------------------------------

    def build(self, embeddings, *, chunk_rows: int = 65536, progress=None) -> "SimilarityIndex":
        """Train (where the backend needs it) and add every row of ``embeddings``, in chunks."""
        X = check_embeddings(embeddings)
        self._train(X)
        self.add(X, chunk_rows=chunk_rows, progress=progress)
        return self

    def train(self, embeddings) -> "SimilarityIndex":
        """Make the empty index and train it (IVF lists, PQ codebooks, LSH thresholds) on a sample
        of ``train_size`` rows drawn with ``random_state``; nothing is added. An index built over
        shards is trained this way once, then filled by :meth:`add` or merged from parts."""
        return self._train(check_embeddings(embeddings))

    def _train(self, X) -> "SimilarityIndex":
        check_factory(self.factory)
        faiss = _faiss()
        n, d = X.shape
        metric = faiss.METRIC_L2 if self.factory.startswith("LSH") else faiss.METRIC_INNER_PRODUCT
        try:
            index = faiss.index_factory(d, self.factory, metric)
        except RuntimeError as exc:  # e.g. PQ7 on 64 dimensions
            raise ValidationError(f"index {self.factory!r} cannot index {d}-dimensional vectors: "
                                  f"{_faiss_message(exc)}") from None
        if hasattr(index, "hnsw"):
            index.hnsw.efConstruction = self.ef_construction
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False  # slow to train, and the codes are re-ranked exactly
        if not index.is_trained:
            rng = np.random.default_rng(self.random_state)
            m = min(n, self.train_size)
            sample = np.sort(rng.choice(n, size=m, replace=False))
            nlist = getattr(faiss.extract_index_ivf(index), "nlist", 0) if "IVF" in self.factory else 0
            if nlist and m < nlist:
                raise ValidationError(
                    f"index {self.factory!r} needs at least {nlist} training rows but the pool has {n}"
                )
            try:
                index.train(normalize_rows(X[sample]))
            except RuntimeError as exc:  # e.g. PQ's 256 centroids per sub-space need 256 rows
                raise ValidationError(f"index {self.factory!r} cannot be trained on {m} rows: "
                                      f"{_faiss_message(exc)}") from None
        return self._adopt(index)

    def from_faiss(self, index) -> "SimilarityIndex":
        """Use an existing faiss index built by this class's rules (unit vectors, the metric of
        :attr:`factory`), e.g. one merged from shard indexes. Returns ``self``."""
        return self._adopt(index)

    def _adopt(self, index) -> "SimilarityIndex":
        self.index_ = index
        self.dim_ = int(index.d)
        self.ntotal_ = int(index.ntotal)
        return self

    def __getstate__(self):
        """Pickles with its faiss index serialised (a Ray task receives the whole index)."""
        state = dict(self.__dict__)
        if "index_" in state:
            state["index_"] = _faiss().serialize_index(state["index_"])
        return state

    def __setstate__(self, state):
        if "index_" in state:
            state = {**state, "index_": _faiss().deserialize_index(np.asarray(state["index_"], dtype=np.uint8))}
        self.__dict__.update(state)

    def add(self, embeddings, *, chunk_rows: int = 65536, progress=None) -> np.ndarray:
        """Add rows; they get the next positions. Returns the positions they were given."""
        self._check_built()
        X = check_embeddings(embeddings)
        if X.shape[1] != self.dim_:
            raise IndexMismatchError(
                f"embeddings has {X.shape[1]} columns but the index was built with {self.dim_}"
            )
        start = self.ntotal_
        for rows in iter_row_chunks(X.shape[0], chunk_rows):
            self.index_.add(normalize_rows(X[rows]))
            if progress is not None:
                progress(rows.stop - rows.start)
        self.ntotal_ = int(self.index_.ntotal)
        return np.arange(start, self.ntotal_, dtype=np.int64)

    # -- searching -----------------------------------------------------------------------

    @property
    def exact_scores(self) -> bool:
        """Whether the backend's own scores are exact cosines (it stores the unit vectors)."""
        f = self.factory
        return f == "Flat" or bool(re.match(r"^HNSW\d+(,Flat)?$", f)) or bool(re.match(r"^IVF\d+(_HNSW\d+)?,Flat$", f))

    def _set_search_params(self, k: int) -> None:
        index = self.index_
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = int(self.ef_search or max(2 * k, 64))
        if "IVF" in self.factory:
            ivf = _faiss().extract_index_ivf(index)
            ivf.nprobe = int(self.nprobe)
            if "_HNSW" in self.factory:  # the coarse quantizer must return nprobe good lists
                _faiss().downcast_index(ivf.quantizer).hnsw.efSearch = max(2 * int(self.nprobe), 64)

    def search(self, queries, k: int, *, exact_embeddings=None):
        """The ``k`` nearest pool positions of each query: ``(similarities, positions)``, both
        (n_queries, k), best first; -1 / -inf pads rows where fewer than k were found.

        With ``exact_embeddings`` (the pool), a lossy backend (PQ, SQ, LSH) returns ``refine * k``
        items that are re-ranked by exact cosine, keeping the best ``k``; backends
        that store the unit vectors already return exact cosines and skip that read.
        """
        self._check_built()
        Q = np.asarray(queries)
        if Q.ndim == 1:
            Q = Q[None, :]
        if Q.ndim != 2 or Q.shape[1] != self.dim_:
            raise IndexMismatchError(
                f"queries have {Q.shape[-1]} columns but the index was built with {self.dim_}"
            )
        if k < 1:
            raise ValidationError(f"k must be >= 1 but is {k}")
        if self.factory.startswith("LSH") and exact_embeddings is None:
            raise ValidationError(
                f"index {self.factory!r} ranks by Hamming distance, not cosine: search it with "
                "exact_embeddings (the pool) to get cosine similarities")
        k_eff = min(k, self.ntotal_)
        rerank = exact_embeddings is not None and not self.exact_scores
        k_search = min(k_eff * max(int(self.refine), 1), self.ntotal_) if rerank else k_eff
        self._set_search_params(k_search)
        Qn = normalize_rows(Q)
        dist, pos = self.index_.search(Qn, k_search)
        pos = pos.astype(np.int64)
        if rerank:
            sims = exact_cosine(Qn, exact_embeddings, pos)
        else:
            sims = np.where(pos >= 0, dist.astype(np.float32), -np.inf)
        if k_search > k_eff:
            top = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
            sims = np.take_along_axis(sims, top, axis=1)
            pos = np.take_along_axis(pos, top, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        sims = np.take_along_axis(sims, order, axis=1)
        pos = np.take_along_axis(pos, order, axis=1)
        if k_eff < k:
            pad = k - k_eff
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        return sims, pos

    # -- persistence ---------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the faiss index to ``path`` and its description to ``path.json``, as one change:
        the new index is staged beside ``path`` (``path.pending``), then the description, which
        records its size and SHA-256, is moved into place (the commit), then the staged index.
        A save interrupted at any step leaves the previous pair or the new one: :meth:`load`
        finishes a committed save whose last rename did not happen, and ignores an uncommitted
        staged index."""
        self._check_built()
        path = Path(path)
        data = np.asarray(_faiss().serialize_index(self.index_), dtype=np.uint8).tobytes()
        pending = _pending_path(path)
        atomic_write_bytes(pending, data)
        meta = {"version": 1, "factory": self.factory, "dim": self.dim_, "ntotal": self.ntotal_,
                "ef_search": self.ef_search, "ef_construction": self.ef_construction,
                "nprobe": self.nprobe, "train_size": self.train_size, "refine": self.refine,
                "random_state": self.random_state, "index_bytes": len(data),
                "index_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(_meta_path(path), json.dumps(meta).encode())  # the commit point
        os.replace(pending, path)

    @classmethod
    def load(cls, path) -> "SimilarityIndex":
        """Read an index written by :meth:`save`; a missing, corrupt or mismatched description or
        index file is a :class:`ValidationError` naming it."""
        path = Path(path)
        meta_path = _meta_path(path)
        meta = _read_meta(meta_path) if meta_path.is_file() else None
        if meta is not None:
            path = _finish_save(path, meta)
        if not path.is_file():
            raise ValidationError(f"expected an index file at {str(path)!r} but none exists")
        if meta is None:
            raise ValidationError(f"expected the index description {str(meta_path)!r} beside the index but none exists")
        size = path.stat().st_size
        if size != meta["index_bytes"] or file_sha256(path) != meta["index_sha256"]:
            raise ValidationError(
                f"{str(path)!r} holds {size} bytes that do not match its description "
                f"({meta['index_bytes']} bytes and a checksum): a damaged file? build the index again")
        self = cls(meta["factory"], ef_search=meta["ef_search"], nprobe=meta["nprobe"],
                   ef_construction=meta["ef_construction"], train_size=meta["train_size"],
                   refine=meta["refine"], random_state=meta["random_state"])
        try:
            index = _faiss().read_index(str(path))
        except RuntimeError as exc:
            raise ValidationError(f"cannot read the index file {str(path)!r}: {_faiss_message(exc)}") from None
        if index.d != meta["dim"]:
            raise IndexMismatchError(f"the index file has {index.d} dimensions but its description says {meta['dim']}")
        return self._adopt(index)

    def _check_built(self) -> None:
        if not hasattr(self, "index_"):
            raise ValidationError("the index is not built yet: call build(embeddings) first")


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _pending_path(path: Path) -> Path:
    return path.with_name(path.name + ".pending")


def _finish_save(path: Path, meta: dict) -> Path:
    """Complete a save interrupted after its commit (the description is new, the staged index
    matches it, its last rename did not happen) and drop a staged index the description does not
    name (a save interrupted before its commit). Returns the file that holds the index the
    description names (the staged one, where the folder is read-only)."""
    pending = _pending_path(path)
    if not pending.is_file():
        return path
    matches = pending.stat().st_size == meta["index_bytes"] and file_sha256(pending) == meta["index_sha256"]
    try:
        if matches:
            os.replace(pending, path)
        else:
            pending.unlink()
    except FileNotFoundError:  # another reader finished it first
        pass
    except OSError:  # a read-only folder: read the committed index where it lies
        return pending if matches else path
    return path


# what an index description holds: name -> (accepted types, may be None)
_META_FIELDS = {"version": ((int,), False), "factory": ((str,), False), "dim": ((int,), False),
                "ntotal": ((int,), False), "ef_search": ((int,), True), "ef_construction": ((int,), False),
                "nprobe": ((int,), False), "train_size": ((int,), False), "refine": ((int,), False),
                "random_state": ((int,), True), "index_bytes": ((int,), False),
                "index_sha256": ((str,), False)}


def _read_meta(meta_path: Path) -> dict:
    """The index description, checked field by field (one line naming what is wrong)."""
    where = str(meta_path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"the index description {where!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValidationError(f"the index description {where!r} must be a JSON object but is a {type(meta).__name__}")
    for name, (types, nullable) in _META_FIELDS.items():
        if name not in meta:
            raise ValidationError(f"the index description {where!r} lacks the field {name!r}")
        v = meta[name]
        if (v is None and not nullable) or (v is not None and (isinstance(v, bool) or not isinstance(v, types))):
            raise ValidationError(
                f"the index description {where!r} has {name}={v!r}: expected {'/'.join(t.__name__ for t in types)}")
    if meta["version"] != 1:
        raise ValidationError(f"the index description {where!r} has version {meta['version']}: expected 1")
    try:
        check_factory(meta["factory"])
        _check_positive(ef_search=meta["ef_search"], ef_construction=meta["ef_construction"],
                        nprobe=meta["nprobe"], train_size=meta["train_size"], refine=meta["refine"])
    except ValidationError as exc:
        raise ValidationError(f"the index description {where!r} is invalid: {exc}") from None
    return meta


def drop_self(sims, pos, self_pos, k):
    """Remove each query's own position from its row of search results (the last column when it
    is absent), keeping the order of the rest: ``(sims, pos)`` with ``k`` columns."""
    order = np.argsort(pos == np.asarray(self_pos)[:, None], axis=1, kind="stable")  # self to the end
    return (np.take_along_axis(sims, order, axis=1)[:, :k],
            np.take_along_axis(pos, order, axis=1)[:, :k])


def exact_cosine(unit_queries: np.ndarray, embeddings, positions: np.ndarray) -> np.ndarray:
    """Exact cosine of each unit query to the pool rows at ``positions`` (n_q, k); -inf for -1."""
    nq, k = positions.shape
    flat = positions.reshape(-1)
    ok = flat >= 0
    rows = np.zeros((len(flat), unit_queries.shape[1]), dtype=np.float32)
    if ok.any():
        take = flat[ok]
        order = np.argsort(take, kind="stable")  # sorted reads are kinder to a memory map
        got = np.empty((len(take), unit_queries.shape[1]), dtype=np.float32)
        got[order] = normalize_rows(np.asarray(embeddings[take[order]]))
        rows[ok] = got
    sims = np.einsum("qkd,qd->qk", rows.reshape(nq, k, -1), unit_queries)
    return np.where(positions >= 0, sims, -np.inf).astype(np.float32)


def recall_at_k(approx_positions: np.ndarray, exact_positions: np.ndarray) -> float:
    """Mean fraction of each query's exact k nearest neighbours that the approximate search found."""
    a = np.asarray(approx_positions)
    e = np.asarray(exact_positions)
    if a.shape != e.shape:
        raise ValidationError(f"approximate results have shape {a.shape} but exact ones {e.shape}")
    if a.ndim != 2:
        raise ValidationError(f"positions must be 2-D (queries x k) but have shape {a.shape}")
    # per row: an exact neighbour is found when it also occurs among the approximate ones; with
    # both rows free of duplicates, that is an adjacent equal pair in the sorted concatenation
    both = np.concatenate([np.where(a >= 0, a, -1), np.where(e >= 0, e, -2)], axis=1).astype(np.int64)
    both.sort(axis=1)
    hits = int(((both[:, 1:] == both[:, :-1]) & (both[:, 1:] >= 0)).sum())
    total = int((e >= 0).sum())
    return hits / total if total else 1.0
