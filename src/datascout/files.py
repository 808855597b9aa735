"""Files, the lowest layer: writes that appear whole or not at all, checksums, Parquet vectors.

Both :mod:`datascout.io` (loaders) and :mod:`datascout.shards` (sharded pools) build on these,
so neither needs the other's internals.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from datascout.exceptions import MissingDependencyError, ValidationError


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError(
            "reading Parquet needs pyarrow: pip install 'datascout[parquet]'"
        ) from exc
    try:
        return pq.read_table(path)
    except Exception as exc:
        raise ValidationError(f"cannot read Parquet file {str(path)!r}: {exc}") from exc


def read_parquet_vectors(path, *, id_column: str = "id", vector_column: str = "embedding",
                         require_ids: bool = False):
    """``(embeddings, ids or None)`` from a Parquet file with a vector column (a list of floats
    per row) and an id column (optional unless ``require_ids``); float64 vectors are read as
    float32."""
    path = Path(path)
    table = _read_parquet(path)
    names = table.column_names
    if vector_column not in names:
        raise ValidationError(f"{str(path)!r} has columns {names}: expected a vector column {vector_column!r}")
    if require_ids and id_column not in names:
        raise ValidationError(f"{str(path)!r} has columns {names}: expected an id column {id_column!r}")
    col = table.column(vector_column).combine_chunks()
    try:
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False))
        if hasattr(col.type, "list_size"):  # fixed_size_list<float>[d]: one length by its type
            lengths = np.full(len(col), col.type.list_size, dtype=np.int64)
        else:
            lengths = np.diff(np.asarray(col.offsets))
    except Exception as exc:
        raise ValidationError(
            f"column {vector_column!r} of {str(path)!r} must hold lists of floats: {exc}"
        ) from exc
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValidationError(
            f"column {vector_column!r} must hold vectors of one length but has lengths "
            f"{int(lengths.min())} to {int(lengths.max())}"
        )
    d = int(lengths[0]) if len(lengths) else 0
    emb = flat.reshape(len(lengths), d)
    if emb.dtype == np.float64:
        emb = emb.astype(np.float32)
    ids = np.asarray(table.column(id_column).to_numpy(zero_copy_only=False)) if id_column in names else None
    return emb, ids


_held = threading.local()  # the folder locks this thread holds (dir_lock is re-entrant)


@contextlib.contextmanager
def dir_lock(final):
    """Hold an exclusive lock on the folder ``final`` (flock on a hidden, empty ``.NAME.lock``
    file beside it, which stays): one writer at a time across processes and threads.
    Re-entrant within a thread, so a caller may take it to check-then-build while the builder
    takes it again."""
    import fcntl

    final = Path(final)
    key = os.path.abspath(final)
    held = getattr(_held, "paths", None)
    if held is None:
        held = _held.paths = set()
    if key in held:
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_dir(final, tmp=None):
    """Build a folder beside ``final`` and move it into place only when the block succeeds: the
    folder appears whole or not at all, and a failed block leaves ``final`` as it was and no
    staging folder behind. Each writer stages in a folder of its own (``final.tmp-PID-RANDOM``,
    or ``tmp``) under :func:`dir_lock`, so two writers of one folder never share files; staging
    folders that killed writers left behind are removed."""
    final = Path(final)
    with dir_lock(final):
        for stale in final.parent.glob(glob.escape(final.name) + ".tmp*"):
            shutil.rmtree(stale, ignore_errors=True)  # under the lock: no live writer owns them
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}") if tmp is None else Path(tmp)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
