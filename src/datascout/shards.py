"""Sharded pools: a directory of shards with a manifest, read as if it were one pool.

Layout of a shard directory::

    pool.shards/
        manifest.json                 {"format": "datascout-shards", "version": 1, "n", "dim",
                                       "dtype", "shards": [{"file", "ids", "rows"}, ...]}
        shard-00000.npy               (rows_0, dim) embeddings     or  shard-00000.parquet
        shard-00000.ids.npy           (rows_0,) ids (optional)         (id + embedding columns)
        ...

Shard i holds pool positions ``offsets[i] .. offsets[i+1]-1``; positions are global across
shards, so an index, a kNN graph or a candidate pool built over a :class:`ShardedArray` stores
the same positions as one built over the concatenated array.

:class:`ShardedArray` is a read-only (N, d) view: ``.npy`` shards are memory-mapped lazily and
only the rows asked for are read (a slice or an integer array is served shard by shard); the
whole pool is never copied unless ``np.asarray(view)`` is called on it. A ``ShardedArray``
pickles as its directory path, so it travels cheaply to Ray tasks on machines that share the
storage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.files import atomic_write_text, read_parquet_vectors, staged_dir
from datascout.pool import iter_row_chunks

MANIFEST = "manifest.json"
FORMAT = "datascout-shards"
VERSION = 1
_FLOAT_DTYPES = ("float16", "float32", "float64")


def is_shard_dir(path) -> bool:
    """True when ``path`` is a directory holding a shard manifest (not, say, an embed pool
    folder, whose ``manifest.json`` has another format)."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def shard_bounds(n: int, num_shards: int | None = None, shard_rows: int | None = None) -> np.ndarray:
    """Offsets ``[0, ..., n]`` splitting ``n`` rows into ``num_shards`` near-equal shards (or
    shards of ``shard_rows`` rows, the last one shorter)."""
    if (num_shards is None) == (shard_rows is None):
        raise ValidationError("give exactly one of num_shards and shard_rows")
    if num_shards is not None:
        if not 1 <= int(num_shards) <= n:
            raise ValidationError(f"num_shards must be in 1..{n} for {n} rows but is {num_shards}")
        return np.linspace(0, n, int(num_shards) + 1).round().astype(np.int64)
    if int(shard_rows) < 1:
        raise ValidationError(f"shard_rows must be >= 1 but is {shard_rows}")
    return np.append(np.arange(0, n, int(shard_rows), dtype=np.int64), n)


def write_shards(directory, embeddings, ids=None, *, num_shards: int | None = None,
                 shard_rows: int | None = None, fmt: str = "npy", chunk_rows: int = 65536,
                 overwrite: bool = False) -> Path:
    """Write ``embeddings`` (an array or memory map, read in chunks) and optional ``ids`` as a
    shard directory. The directory appears whole or not at all (written beside it, then renamed).
    """
    from datascout.pool import check_embeddings, check_ids

    directory = Path(directory)
    if fmt not in ("npy", "parquet"):
        raise ValidationError(f"shard format must be 'npy' or 'parquet' but is {fmt!r}")
    if directory.exists() and not overwrite:
        raise ValidationError(f"{str(directory)!r} already exists: pass overwrite=True to replace it")
    X = check_embeddings(embeddings)
    n, d = X.shape
    ids = check_ids(ids, n)
    if fmt == "parquet" and ids is None:
        ids = np.arange(n, dtype=np.int64)
    bounds = shard_bounds(n, num_shards, shard_rows)
    with staged_dir(directory, directory.with_name(f".{directory.name}.tmp-{os.getpid()}")) as tmp:
        entries = []
        for i, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            entries.append(write_shard(tmp, i, X[lo:hi] if fmt == "parquet" else _Slice(X, lo, hi),
                                       None if ids is None else ids[lo:hi], fmt=fmt,
                                       chunk_rows=chunk_rows))
        # Parquet pools are read back as float32 (datascout.io), whatever was written
        dtype = "float32" if fmt == "parquet" and X.dtype == np.float64 else str(X.dtype)
        write_manifest(tmp, entries, dim=d, dtype=dtype)
    return directory


class _Slice:
    """Rows lo..hi of an array, read lazily (so a memory map is copied chunk by chunk)."""

    def __init__(self, X, lo, hi):
        self.X, self.lo, self.hi = X, lo, hi
        self.shape = (hi - lo, X.shape[1])
        self.dtype = X.dtype

    def __getitem__(self, rows: slice):
        return self.X[self.lo + rows.start: self.lo + rows.stop]


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def write_shard(directory, i: int, embeddings, ids=None, *, fmt: str = "npy",
                chunk_rows: int = 65536) -> dict:
    """Write shard ``i`` into ``directory`` atomically; returns its manifest entry."""
    directory = Path(directory)
    rows, d = embeddings.shape
    name = shard_name(i)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arr = np.ascontiguousarray(np.asarray(embeddings[0:rows]))
        # a list<float> column, as datascout.io.load_embeddings reads Parquet pools
        offsets = pa.array(np.arange(0, rows * d + 1, d, dtype=np.int64))
        vec = pa.LargeListArray.from_arrays(offsets, pa.array(arr.reshape(-1)))
        table = pa.table({"id": pa.array(np.asarray(ids)), "embedding": vec})
        final = directory / f"{name}.parquet"
        tmp = directory / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(final)
        return {"file": final.name, "ids": None, "rows": int(rows)}
    final = directory / f"{name}.npy"
    tmp = directory / f".{name}.npy.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=embeddings.dtype, shape=(rows, d))
    for sl in iter_row_chunks(rows, chunk_rows):
        out[sl] = embeddings[sl]
    out.flush()
    del out
    tmp.replace(final)
    entry = {"file": final.name, "ids": None, "rows": int(rows)}
    if ids is not None:
        ids_path = directory / f"{name}.ids.npy"
        tmp_ids = directory / f".{name}.ids.npy.tmp"
        with open(tmp_ids, "wb") as fh:
            np.save(fh, np.asarray(ids), allow_pickle=False)
        tmp_ids.replace(ids_path)
        entry["ids"] = ids_path.name
    return entry


def write_manifest(directory, entries: list[dict], *, dim: int, dtype: str) -> Path:
    """Write ``manifest.json`` (atomically) for shard ``entries`` in position order."""
    manifest = {"format": FORMAT, "version": VERSION, "n": int(sum(e["rows"] for e in entries)),
                "dim": int(dim), "dtype": str(dtype), "shards": entries}
    path = Path(directory) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1))
    return path


def read_manifest(directory) -> dict:
    """Read and check a shard directory's manifest (not the shards' contents)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ValidationError(f"expected a shard manifest at {str(path)!r} but none exists")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if m.get("format") != FORMAT:
        raise ValidationError(f"{str(path)!r} has format {m.get('format')!r}: expected {FORMAT!r}")
    if m.get("version") != VERSION:
        raise ValidationError(f"{str(path)!r} has version {m.get('version')!r}: expected {VERSION}")
    if m.get("dtype") not in _FLOAT_DTYPES:
        raise ValidationError(f"{str(path)!r} has dtype {m.get('dtype')!r}: expected one of {_FLOAT_DTYPES}")
    shards = m.get("shards")
    if not shards:
        raise ValidationError(f"{str(path)!r} lists no shards: expected at least 1")
    total = sum(int(s["rows"]) for s in shards)
    if total != m.get("n"):
        raise ValidationError(f"{str(path)!r} says n={m.get('n')} but its shards hold {total} rows")
    return m


class ShardedArray:
    """A read-only (N, d) view over the shards of a shard directory.

    Supports what the library asks of a pool's embeddings: ``shape``, ``dtype``, ``ndim``,
    ``len``, and indexing by an integer, a slice, an integer array or a boolean mask (optionally
    with a column index). Rows are gathered shard by shard from lazily opened memory maps.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.manifest_ = read_manifest(self.directory)
        rows = np.array([int(s["rows"]) for s in self.manifest_["shards"]], dtype=np.int64)
        self.offsets_ = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.shape = (int(self.manifest_["n"]), int(self.manifest_["dim"]))
        self.dtype = np.dtype(self.manifest_["dtype"])
        self._cache: dict[int, np.ndarray] = {}
        for i, s in enumerate(self.manifest_["shards"]):
            f = self.directory / s["file"]
            if not f.is_file():
                raise ValidationError(f"shard {i} of {str(self.directory)!r} is missing: expected {s['file']!r}")
            if f.suffix == ".npy":
                self._check_shard(i, self._open(i))

    # -- pickling: travel as a path -------------------------------------------------------

    def __getstate__(self):
        return {"directory": str(self.directory)}

    def __setstate__(self, state):
        self.__init__(state["directory"])

    # -- shape ----------------------------------------------------------------------------

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def num_shards(self) -> int:
        return len(self.offsets_) - 1

    def __repr__(self) -> str:
        return (f"ShardedArray({str(self.directory)!r}, shape={self.shape}, dtype={self.dtype}, "
                f"shards={self.num_shards})")

    # -- shards ---------------------------------------------------------------------------

    def shard_range(self, i: int) -> tuple[int, int]:
        """Global positions ``(start, stop)`` of shard ``i``."""
        return int(self.offsets_[i]), int(self.offsets_[i + 1])

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i``'s embeddings (a read-only memory map for ``.npy`` shards)."""
        if not 0 <= i < self.num_shards:
            raise ValidationError(f"shard must be in 0..{self.num_shards - 1} but is {i}")
        return self._open(i)

    def _open(self, i: int) -> np.ndarray:
        arr = self._cache.get(i)
        if arr is not None:
            return arr
        entry = self.manifest_["shards"][i]
        path = self.directory / entry["file"]
        if path.suffix == ".npy":
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise ValidationError(f"cannot read shard {str(path)!r}: {exc}") from exc
        else:
            arr, _ = read_parquet_vectors(path)
            arr = arr.astype(self.dtype, copy=False)
            self._check_shard(i, arr)
            # a Parquet shard is decoded into memory: keep only the latest one
            for k in [k for k in self._cache if not isinstance(self._cache[k], np.memmap)]:
                del self._cache[k]
        self._cache[i] = arr
        return arr

    def _check_shard(self, i: int, arr) -> None:
        entry = self.manifest_["shards"][i]
        want = (int(entry["rows"]), self.shape[1])
        if tuple(arr.shape) != want:
            raise ValidationError(
                f"shard {entry['file']!r} has shape {tuple(arr.shape)} but the manifest says {want}")
        if arr.dtype != self.dtype:
            raise ValidationError(
                f"shard {entry['file']!r} has dtype {arr.dtype} but the manifest says {self.dtype}")

    def ids(self) -> np.ndarray | None:
        """All item ids, concatenated in position order, or ``None`` when the shards have none."""
        shards = self.manifest_["shards"]
        parts = []
        for i, s in enumerate(shards):
            if s.get("ids"):
                parts.append(np.load(self.directory / s["ids"], allow_pickle=False))
            elif s["file"].endswith((".parquet", ".pq")):
                parts.append(read_parquet_vectors(self.directory / s["file"])[1])
            else:
                parts.append(None)
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise ValidationError(
                f"some shards of {str(self.directory)!r} have ids and some do not: expected all or none")
        for s, p in zip(shards, parts):
            if len(p) != int(s["rows"]):
                raise ValidationError(f"shard {s['file']!r} has {s['rows']} rows but {len(p)} ids")
        return np.concatenate(parts)

    # -- indexing -------------------------------------------------------------------------

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) == 1:
                return self[key[0]]
            if len(key) != 2:
                raise IndexError(f"too many indices for a 2-D array: {len(key)}")
            rows = self[key[0]]
            return rows[..., key[1]] if np.ndim(rows) == 1 else rows[:, key[1]]
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for a pool of {n} rows")
            i %= n
            s = int(np.searchsorted(self.offsets_, i, side="right")) - 1
            return np.asarray(self._open(s)[i - self.offsets_[s]])
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self._take(np.arange(start, stop, step, dtype=np.int64))
            return self._contiguous(start, max(start, stop))
        if key is Ellipsis:
            return self._contiguous(0, n)
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index has shape {idx.shape} but the pool has {n} rows")
            return self._take(np.flatnonzero(idx))
        if idx.dtype.kind not in "iu":
            raise IndexError(f"rows must be indexed by integers, slices or booleans, not {idx.dtype}")
        return self._take(idx)

    def _contiguous(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        if stop <= start:
            return out
        first = int(np.searchsorted(self.offsets_, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets_, stop - 1, side="right")) - 1
        for s in range(first, last + 1):
            lo = max(start, int(self.offsets_[s]))
            hi = min(stop, int(self.offsets_[s + 1]))
            out[lo - start: hi - start] = self._open(s)[lo - self.offsets_[s]: hi - self.offsets_[s]]
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        shape = idx.shape
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -n or flat.max() >= n):
            bad = flat[(flat < -n) | (flat >= n)][0]
            raise IndexError(f"index {int(bad)} is out of bounds for a pool of {n} rows")
        flat = np.where(flat < 0, flat + n, flat)
        out = np.empty((flat.size, self.shape[1]), dtype=self.dtype)
        which = np.searchsorted(self.offsets_, flat, side="right") - 1
        for s in np.unique(which).tolist():
            sel = np.flatnonzero(which == s)
            local = flat[sel] - self.offsets_[s]
            out[sel] = self._open(s)[local]
        return out.reshape(shape + (self.shape[1],))

    def __array__(self, dtype=None, copy=None):
        """The whole pool as one in-memory array (a full copy: avoid on large pools)."""
        arr = self._contiguous(0, self.shape[0])
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __iter__(self):
        for sl in iter_row_chunks(self.shape[0]):
            yield from self._contiguous(sl.start, sl.stop)


def open_shards(directory) -> tuple[ShardedArray, np.ndarray | None]:
    """Open a shard directory as one pool: ``(embeddings view, ids or None)``."""
    view = ShardedArray(directory)
    return view, view.ids()
