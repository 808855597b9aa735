"""Inputs to embed, read in chunks.

Every source is opened once to list its ids (small: one per item) and validate them (a missing
id or text column, a missing or duplicate id: :class:`~datascout.exceptions.ValidationError`
before any work starts); the items themselves are then streamed chunk by chunk with
``chunks(start, size)``, so a whole data set is never in memory. A chunk is
``(items, reasons)``: ``items`` a list (``None`` where the item is skipped) and ``reasons`` a
dict position-in-chunk -> reason.

* :class:`TextSource`: CSV, JSONL, Parquet (an id column and a text column) or a plain text file
  (one item a line, ids = line numbers counted from 1).
* :class:`ImageSource`: a folder tree (ids = paths relative to it, posix; classes = first-level
  sub-folder names when ``labels_from_folders``) or a list file (one path a line, relative to the
  list file's folder; ids = the lines as written).
* :class:`ArraySource`: in-memory items (used by ``datascout datasets embed``).
"""

from __future__ import annotations

import csv
import hashlib
from itertools import islice
from pathlib import Path

import numpy as np

from datascout.files import file_sha256
from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.io import open_text
from datascout.pool import int64_ids

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _require_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected an input file at {str(path)!r} but none exists")
    return path


def _id_array(values: list, what: str) -> np.ndarray:
    """ids as int64 when every id is an integer (or its canonical decimal string), else str;
    duplicates raise."""
    ids = int64_ids(values, digit_strings=True)  # beyond int64 (e.g. 20-digit ids): kept as text
    if ids is None:
        ids = np.asarray([str(v) for v in values], dtype=str)
    if len(ids) == 0:
        raise ValidationError(f"{what} holds no items: expected at least 1")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = uniq[counts > 1]
        raise ValidationError(
            f"ids must be unique but {what} has {int((counts - 1).sum())} duplicate(s), "
            f"e.g. {dup[0].item()!r} occurs {int(counts[counts > 1][0])} times"
        )
    return ids


def _text_reason(value):
    if value is None or (isinstance(value, float) and value != value):
        return "missing text"
    if not isinstance(value, str):
        return f"text is not a string but {type(value).__name__}"
    if not value.strip():
        return "empty text"
    return None


def _text_chunk(values) -> tuple[list, dict]:
    items, reasons = [], {}
    for i, v in enumerate(values):
        r = _text_reason(v)
        if r is None:
            items.append(v)
        else:
            items.append(None)
            reasons[i] = r
    return items, reasons


class TextSource:
    """Texts from CSV / JSONL / Parquet (``id_column``, ``text_column``) or a plain text file."""

    kind = "text"
    FORMATS = ("csv", "jsonl", "parquet", "txt")

    def __init__(self, path, id_column: str = "id", text_column: str = "text", format: str | None = None):
        self.path = path
        self.id_column = id_column
        self.text_column = text_column
        self.format = format

    def open(self) -> "TextSource":
        path = _require_file(self.path)
        fmt = self.format
        if fmt is None:
            suffix = path.suffix.lower()
            fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".pq": "parquet"}.get(suffix, "txt")
        if fmt not in self.FORMATS:
            raise ValidationError(f"text format must be one of {self.FORMATS} but is {fmt!r}")
        self.path_, self.format_ = path, fmt
        self.ids_ = _id_array(getattr(self, f"_ids_{fmt}")(), repr(str(path)))
        self.checksum_ = file_sha256(path)
        self.labels_ = self.classes_ = None
        return self

    def __len__(self) -> int:
        return len(self.ids_)

    def describe(self) -> dict:
        return {"path": str(self.path_.resolve()), "kind": "text", "format": self.format_,
                "sha256": self.checksum_, "id_column": self.id_column if self.format_ != "txt" else None,
                "text_column": self.text_column if self.format_ != "txt" else None}

    # --- ids (first pass) ------------------------------------------------------------------
    def _ids_txt(self):
        with open(self.path_, encoding="utf-8", errors="replace") as fh:
            n = sum(1 for _ in fh)
        return list(range(1, n + 1))

    def _csv_reader(self, fh):
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValidationError(f"{str(self.path_)!r} is empty: expected a header row")
        for col in (self.id_column, self.text_column):
            if col not in header:
                raise ValidationError(
                    f"{str(self.path_)!r} has columns {header}: expected a column {col!r}"
                )
        return reader, header.index(self.id_column), header.index(self.text_column)

    def _ids_csv(self):
        with open_text(self.path_) as fh:
            reader, ii, _ = self._csv_reader(fh)
            ids = []
            for row in reader:
                if ii >= len(row) or row[ii] == "":
                    raise ValidationError(
                        f"row {reader.line_num} of {str(self.path_)!r} has no {self.id_column!r}"
                    )
                ids.append(row[ii])
        return ids

    def _json_rows(self):
        from datascout.io import iter_jsonl

        for lineno, obj in iter_jsonl(self.path_):
            if not isinstance(obj, dict):
                raise ValidationError(f"line {lineno} of {str(self.path_)!r} must be a JSON object")
            yield lineno, obj

    def _ids_jsonl(self):
        ids, seen_text = [], False
        for lineno, obj in self._json_rows():
            if self.id_column not in obj or obj[self.id_column] is None:
                raise ValidationError(
                    f"line {lineno} of {str(self.path_)!r} has no {self.id_column!r}: "
                    f"expected keys {self.id_column!r} and {self.text_column!r}, got {sorted(obj)}"
                )
            seen_text = seen_text or self.text_column in obj
            ids.append(obj[self.id_column])
        if ids and not seen_text:
            raise ValidationError(
                f"{str(self.path_)!r} has no key {self.text_column!r} on any line: expected a text column"
            )
        return ids

    def _parquet(self):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingDependencyError("reading Parquet needs pyarrow: pip install 'datascout[parquet]'") from exc
        try:
            return pq.ParquetFile(self.path_)
        except Exception as exc:
            raise ValidationError(f"cannot read Parquet file {str(self.path_)!r}: {exc}") from exc

    def _ids_parquet(self):
        pf = self._parquet()
        names = pf.schema_arrow.names
        for col in (self.id_column, self.text_column):
            if col not in names:
                raise ValidationError(f"{str(self.path_)!r} has columns {names}: expected a column {col!r}")
        ids = pf.read(columns=[self.id_column]).column(0).to_pylist()
        if any(v is None for v in ids):
            raise ValidationError(f"{str(self.path_)!r} has rows without {self.id_column!r}")
        return ids

    # --- items (streamed) -----------------------------------------------------------------
    def chunks(self, start: int, size: int):
        """Yield ``(items, reasons)`` chunks of ``size`` texts from position ``start`` on."""
        it = islice(self._iter_texts(), start, None)
        while True:
            block = list(islice(it, size))
            if not block:
                return
            yield _text_chunk(block)

    def _iter_texts(self):
        if self.format_ == "txt":
            with open(self.path_, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    yield line.rstrip("\r\n")
        elif self.format_ == "csv":
            with open_text(self.path_) as fh:
                reader, _, ti = self._csv_reader(fh)
                for row in reader:
                    yield row[ti] if ti < len(row) else None
        elif self.format_ == "jsonl":
            for _, obj in self._json_rows():
                yield obj.get(self.text_column)
        else:
            pf = self._parquet()
            for batch in pf.iter_batches(batch_size=4096, columns=[self.text_column]):
                yield from batch.column(0).to_pylist()


def _folder_checksum(root: Path, rel_paths: list[str]) -> str:
    """sha256 over (relative path, sha256 of the file) of every listed file, in order."""
    h = hashlib.sha256()
    for rel in rel_paths:
        p = root / rel
        digest = file_sha256(p) if p.is_file() else "missing"
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def _read_image(path: Path, size: int):
    """(S, S, 3) uint8 or a reason string."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return "missing file"
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return f"unreadable image: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


class ImageSource:
    """Images from a folder tree or a list file, decoded with Pillow at ``image_size``."""

    kind = "images"

    def __init__(self, path, labels_from_folders: bool = False, image_size: int = 112):
        self.path = path
        self.labels_from_folders = labels_from_folders
        self.image_size = image_size

    def open(self) -> "ImageSource":
        try:
            import PIL  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("reading images needs Pillow: pip install 'datascout[image]'") from exc
        path = Path(self.path)
        self.labels_ = self.classes_ = None
        if path.is_dir():
            rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                          if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not rels:
                raise ValidationError(
                    f"folder {str(path)!r} holds no images: expected files ending in "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))}"
                )
            self.root_, self.ids_, self.format_ = path, np.asarray(rels, dtype=str), "folder"
            self.files_ = rels
            self.checksum_ = _folder_checksum(path, rels)
            if self.labels_from_folders:
                top = [r.split("/", 1)[0] if "/" in r else "" for r in rels]
                if "" in top:
                    bad = rels[top.index("")]
                    raise ValidationError(
                        f"labels from folders expect every image in a class sub-folder but "
                        f"{bad!r} lies directly in {str(path)!r}"
                    )
                self.classes_ = sorted(set(top))
                index = {c: i for i, c in enumerate(self.classes_)}
                self.labels_ = np.asarray([index[t] for t in top], dtype=np.int64)
        elif path.is_file():
            if self.labels_from_folders:
                raise ValidationError("labels from folders need a folder but got the list file "
                                      f"{str(path)!r}")
            try:
                with open(path, encoding="utf-8") as fh:
                    lines = [ln.strip() for ln in fh if ln.strip()]
            except UnicodeDecodeError as exc:
                raise ValidationError(
                    f"expected a list file of image paths (UTF-8 text, one a line) but "
                    f"{str(path)!r} is not text"
                ) from exc
            self.root_, self.format_ = path.parent, "list"
            self.ids_ = _id_array(lines, repr(str(path)))
            self.ids_ = self.ids_.astype(str)
            self.files_ = lines
            self.checksum_ = file_sha256(path)
        else:
            raise ValidationError(f"expected an image folder or a list file at {str(path)!r} but none exists")
        return self

    def __len__(self) -> int:
        return len(self.ids_)

    def describe(self) -> dict:
        return {"path": str(Path(self.path).resolve()), "kind": "images", "format": self.format_,
                "sha256": self.checksum_, "labels_from_folders": bool(self.labels_from_folders)}

    def chunks(self, start: int, size: int):
        s = int(self.image_size)
        for a in range(start, len(self.files_), size):
            items, reasons = [], {}
            for i, rel in enumerate(self.files_[a:a + size]):
                p = Path(rel)
                got = _read_image(p if p.is_absolute() else self.root_ / p, s)
                if isinstance(got, str):
                    items.append(None)
                    reasons[i] = got
                else:
                    items.append(got)
            yield items, reasons


class ArraySource:
    """Items already in memory: a list of texts, an (N, H, W[, 3]) uint8 image array or an
    (N, d) vector array; ``ids`` default to positions."""

    def __init__(self, data, kind: str, ids=None, labels=None, classes=None, describe: dict | None = None):
        self.data = data
        self.kind = kind
        self.ids = ids
        self.labels = labels
        self.classes = classes
        self.description = describe

    def open(self) -> "ArraySource":
        n = len(self.data)
        ids = list(range(n)) if self.ids is None else np.asarray(self.ids).tolist()
        self.ids_ = _id_array(ids, "the data set")
        if len(self.ids_) != n:
            raise ValidationError(f"ids has {len(self.ids_)} entries but the data has {n} items")
        self.labels_ = None if self.labels is None else np.asarray(self.labels, dtype=np.int64)
        self.classes_ = None if self.classes is None else list(self.classes)
        self.checksum_ = (self.description or {}).get("sha256")
        return self

    def __len__(self) -> int:
        return len(self.ids_)

    def describe(self) -> dict:
        return dict(self.description or {"kind": self.kind, "sha256": self.checksum_})

    def chunks(self, start: int, size: int):
        n = len(self.data)
        for a in range(start, n, size):
            block = self.data[a:a + size]
            if self.kind == "text":
                yield _text_chunk(block)
            else:
                yield block, {}


class VectorSource:
    """Precomputed vectors (``.npy`` memory-mapped, ``.npz`` or Parquet), validated and passed
    through; ids from the file (``.npz`` / Parquet) or positions 0..N-1 (see :meth:`open`)."""

    kind = "vectors"

    def __init__(self, path, id_column: str | None = None, vector_column: str = "embedding"):
        self.path = path
        self.id_column = id_column
        self.vector_column = vector_column

    def open(self) -> "VectorSource":
        """Read and check the vectors. A Parquet file's ids come from ``id_column``, which must
        then exist; with ``id_column=None`` from an ``id`` column when there is one, else they
        are the row numbers."""
        from datascout.io import load_embeddings
        from datascout.pool import check_embeddings

        path = _require_file(self.path)
        if self.id_column is not None and path.suffix.lower() not in (".parquet", ".pq"):
            raise ValidationError(f"an id column applies to Parquet files, not to {path.name!r} "
                                  "(a .npz archive holds its ids as the array 'ids')")
        emb, ids = load_embeddings(path, id_column=self.id_column or "id", vector_column=self.vector_column,
                                   require_ids=self.id_column is not None)
        self.data_ = check_embeddings(emb, name=f"vectors in {path.name!r}")
        self.dim_ = int(self.data_.shape[1])
        ids = list(range(len(self.data_))) if ids is None else np.asarray(ids).tolist()
        if len(ids) != len(self.data_):
            raise ValidationError(f"{str(path)!r} has {len(ids)} ids but {len(self.data_)} vectors")
        self.ids_ = _id_array(ids, repr(str(path)))
        self.checksum_ = file_sha256(path)
        self.labels_ = self.classes_ = None
        return self

    def __len__(self) -> int:
        return len(self.ids_)

    def describe(self) -> dict:
        return {"path": str(Path(self.path).resolve()), "kind": "vectors", "sha256": self.checksum_}

    def chunks(self, start: int, size: int):
        for a in range(start, len(self.data_), size):
            yield np.asarray(self.data_[a:a + size], dtype=np.float32), {}
