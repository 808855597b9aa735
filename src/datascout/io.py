"""Loaders for embeddings, ids and labels: ``.npy`` (memory-mapped), ``.npz``, Parquet, CSV."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
# the file primitives live one layer down (shards use them too); they stay importable from here
from datascout.files import atomic_write_bytes, atomic_write_text, dir_lock, read_parquet_vectors, staged_dir
from datascout.shards import is_shard_dir, open_shards

__all__ = ["atomic_write_bytes", "atomic_write_text", "dir_lock", "iter_jsonl", "load_embeddings", "load_labels",
           "open_text", "raster_media_type", "read_npy", "staged_dir"]


RASTER_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))  # WebP: RIFF....WEBP


def raster_media_type(head: bytes) -> str | None:
    """The media type of a PNG, JPEG, GIF or WebP file from its first 12+ bytes, else ``None``
    (SVG, HTML, anything that could be active content when served)."""
    for magic, media in RASTER_MAGIC:
        if head.startswith(magic):
            return media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _require_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected a file at {str(path)!r} but none exists")
    return path


def load_embeddings(path, *, mmap: bool = True, id_column: str = "id",
                    vector_column: str = "embedding", require_ids: bool = False):
    """Load embeddings and (where the file holds them) ids.

    * ``.npy``: memory-mapped read-only when ``mmap`` (never copied whole into memory).
    * ``.npz``: the array ``embeddings`` (or the only array), and ``ids`` when present.
    * ``.parquet``: an id column (required with ``require_ids``) and a vector column (a list of
      floats per row).

    * a shard directory (``manifest.json`` + shards, see :mod:`datascout.shards`): a read-only
      view over the shards, as if they were one array (memory-mapped, never copied whole).

    Returns ``(embeddings, ids)``; ``ids`` is ``None`` when the file has none.
    """
    if is_shard_dir(path):
        return open_shards(path)
    path = _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as exc:
            raise ValidationError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc
        return arr, None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "embeddings" in keys:
                    emb = z["embeddings"]
                elif len([k for k in keys if k != "ids"]) == 1:
                    emb = z[[k for k in keys if k != "ids"][0]]
                else:
                    raise ValidationError(
                        f"{str(path)!r} holds arrays {keys}: expected one named 'embeddings'"
                    )
                ids = z["ids"] if "ids" in keys else None
        except ValidationError:
            raise
        except Exception as exc:
            raise ValidationError(f"cannot read {str(path)!r} as a .npz archive: {exc}") from exc
        return emb, ids
    if suffix in (".parquet", ".pq"):
        return read_parquet_vectors(path, id_column=id_column, vector_column=vector_column,
                                    require_ids=require_ids)
    raise ValidationError(
        f"unsupported embeddings file {path.name!r}: expected .npy, .npz or .parquet"
    )


def load_labels(path, *, ids=None, id_column: str = "id", label_column: str = "label",
                classes=None):
    """Load labels from ``.npy`` (integer class ids, -1 = unlabeled) or CSV.

    A CSV holds either one column of labels (one row per item, in pool order) or an id column and
    a label column, matched to ``ids``. Labels may be class names; they are mapped to class ids in
    the order of ``classes`` (or sorted order). Returns ``(labels, classes)`` where ``classes`` is
    ``None`` for integer labels from ``.npy``.
    """
    path = _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        labels = read_npy(path)
        if labels.ndim != 1:
            raise ValidationError(f"labels in {str(path)!r} must be 1-D but have shape {labels.shape}")
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
                raise ValidationError(f"labels in {str(path)!r} must be integer class ids")
            labels = labels.astype(np.int64)
        if labels.dtype.kind in "US":
            return _names_to_ids(labels.astype(str), classes)
        if labels.dtype.kind not in "iu":
            raise ValidationError(f"labels in {str(path)!r} must be integers but have dtype {labels.dtype}")
        return labels.astype(np.int64), (list(classes) if classes is not None else None)
    if suffix == ".csv":
        with open_text(path) as fh:
            rows = list(csv.reader(fh, skipinitialspace=True))  # "id, label" reads as "id,label"
        if not rows:
            raise ValidationError(f"{str(path)!r} is empty: expected a header and label rows")
        header, body = [h.strip() for h in rows[0]], rows[1:]
        if label_column in header and id_column in header:
            li, ii = header.index(label_column), header.index(id_column)
            if ids is None:
                raise ValidationError(
                    f"{str(path)!r} has an id column: pass the pool's ids to match labels to items"
                )
            lookup = {str(v): i for i, v in enumerate(np.asarray(ids).tolist())}
            names = np.full(len(lookup), "", dtype=object)
            for line, r in enumerate(body, start=2):
                if not any(cell.strip() for cell in r):
                    continue  # a blank line
                if len(r) <= max(li, ii):
                    raise ValidationError(
                        f"line {line} of {str(path)!r} has {len(r)} field(s) but the header has {len(header)}"
                    )
                pos = lookup.get(r[ii])
                if pos is None:
                    raise ValidationError(f"{str(path)!r} names id {r[ii]!r}, which is not in the pool")
                names[pos] = r[li]
            raw = names.astype(str)
        else:
            if label_column not in header and len(header) > 1:
                raise ValidationError(f"{str(path)!r} has columns {header}: expected a {label_column!r} "
                                      f"column (with {id_column!r} to match rows to items by id)")
            col = header.index(label_column) if label_column in header else 0
            raw = np.asarray([r[col] if len(r) > col else "" for r in body], dtype=str)  # blank = unlabeled
        return _names_to_ids(raw, classes)
    raise ValidationError(f"unsupported labels file {path.name!r}: expected .npy or .csv")


def read_npy(path) -> np.ndarray:
    """A ``.npy`` file read whole (no pickles); one clear error when it is missing or unreadable."""
    path = _require_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValidationError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc


def _names_to_ids(raw: np.ndarray, classes):
    """Map label strings to class ids; '' and '-1' mean unlabeled. Integers stay integers."""
    unlabeled = (raw == "") | (raw == "-1")
    present = raw[~unlabeled]
    if classes is None and present.size and all(s.lstrip("-").isdigit() for s in np.unique(present)):
        out = np.full(len(raw), -1, dtype=np.int64)
        out[~unlabeled] = present.astype(np.int64)
        return out, None
    names = list(classes) if classes is not None else sorted(set(present.tolist()))
    index = {n: i for i, n in enumerate(names)}
    out = np.full(len(raw), -1, dtype=np.int64)
    for i in np.flatnonzero(~unlabeled):
        c = index.get(raw[i])
        if c is None:
            raise ValidationError(f"unknown class {str(raw[i])!r}: expected one of {names}")
        out[i] = c
    return out, names


@contextlib.contextmanager
def open_text(path):
    """A user's text file, opened for reading as UTF-8 (``newline=""``, as :mod:`csv` wants).

    A byte-order mark, which Excel writes at the start of "CSV UTF-8", is dropped rather than
    glued to the first column's name; a file that is not UTF-8 is a one-line error.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            yield fh
    except UnicodeDecodeError:
        raise ValidationError(f"{path.name} must be UTF-8 text but holds bytes that are not UTF-8: "
                              "save it as UTF-8") from None


def iter_jsonl(path):
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file; a line that is
    not valid JSON raises a one-line :class:`ValidationError` naming the file and line."""
    import json

    path = Path(path)
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path.name} line {lineno}: expected JSON: {exc.msg}") from None


