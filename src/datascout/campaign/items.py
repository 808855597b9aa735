"""A campaign's inputs: the embeddings with their ids, and the items (texts or image files)
matched to them **by id**, never by line order.

Where the embeddings come with ids (a pool folder written by ``datascout embed``, an ``.npz`` or
Parquet file holding ids, a shard directory, or ``ids.npy`` beside a ``.npy``), every item is
matched to the row of its id; an item whose id is not in the pool, or a pool row without an
item, is an error that names the count and the first few ids. Only a bare ``.npy`` with no ids
pairs the n-th item with the n-th row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datascout.exceptions import ValidationError
from datascout.io import iter_jsonl, load_embeddings, raster_media_type
from datascout.pool import check_embeddings

def check_raster(path: Path, where: str) -> str:
    """The resolved path of an image file that is a raster image; else a one-line error."""
    real = path.resolve()
    if not real.is_file():
        raise ValidationError(f"{where}: image {str(path)!r} does not exist")
    with open(real, "rb") as fh:
        head = fh.read(16)
    if raster_media_type(head) is None:
        raise ValidationError(f"{where}: image {str(path)!r} is not a PNG, JPEG, GIF or WebP file "
                              "(other types, SVG among them, are not served)")
    return str(real)


def _short(ids, n: int = 3) -> str:
    ids = list(ids)
    return ", ".join(repr(i) for i in ids[:n]) + (", ..." if len(ids) > n else "")


def read_items(path, *, id_column: str = "id", text_column: str = "text") -> list[dict]:
    """Items from JSONL (``{"id", "text"}`` or ``{"id", "image"}``, image paths relative to the
    file), or texts from CSV / Parquet with the readers and column names of ``datascout embed
    text``. Returns ``[{"id", "kind", "payload"}]`` (payload: the text, or the image's path)."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected an items file at {str(path)!r} but none exists")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        return _read_text_table(path, id_column, text_column)
    out, seen = [], set()
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or id_column not in obj or not ((text_column in obj) ^ ("image" in obj)):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ValidationError(f"{path.name} line {lineno}: expected {{{id_column!r}, {text_column!r}}} or "
                                  f"{{{id_column!r}, 'image'}} but got keys {got}")
        item_id = str(obj[id_column])
        if item_id in seen:
            raise ValidationError(f"{path.name} line {lineno}: id {item_id!r} occurs twice")
        seen.add(item_id)
        if text_column in obj:
            out.append({"id": item_id, "kind": "text", "payload": str(obj[text_column])})
        else:
            img = check_raster(path.parent / str(obj["image"]), f"{path.name} line {lineno}")
            out.append({"id": item_id, "kind": "image", "payload": img})
    if not out:
        raise ValidationError(f"{path.name} holds no items: expected one JSON object per line")
    return out


def _read_text_table(path: Path, id_column: str, text_column: str, fmt: str | None = None) -> list[dict]:
    from datascout.embed.sources import TextSource

    src = TextSource(path, id_column=id_column, text_column=text_column, format=fmt).open()
    return _text_items(src, path.name)


def _text_items(src, name: str) -> list[dict]:
    ids = [str(i) for i in src.ids_.tolist()]
    texts = [t for chunk, _ in src.chunks(0, 4096) for t in chunk]
    dup = _first_duplicate(ids)
    if dup is not None:
        raise ValidationError(f"{name}: id {dup!r} occurs twice")
    return [{"id": i, "kind": "text", "payload": "" if t is None else str(t)} for i, t in zip(ids, texts)]


def _first_duplicate(values):
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


class PoolInputs(NamedTuple):
    path: Path           # what the campaign records and reopens (a .npy, .npz, ... or a shard directory)
    embeddings: np.ndarray
    ids: list | None     # the row ids as text, or None for a bare array (line order)
    skipped: set         # ids the embedding run left out (``skipped.jsonl``)
    pool_dir: Path | None  # a pool folder written by ``datascout embed``


def is_pool_dir(path) -> bool:
    p = Path(path)
    if not (p / "manifest.json").is_file():
        return False
    try:
        return str(json.loads((p / "manifest.json").read_text()).get("format", "")).startswith("datascout-pool/")
    except (OSError, ValueError, AttributeError):
        return False


def open_pool(embeddings=None, pool=None) -> PoolInputs:
    """The embeddings (a file, a shard directory, or a pool folder of ``datascout embed``) and
    their ids, checked (2-D, finite, one id per row, no id twice)."""
    if (embeddings is None) == (pool is None):
        raise ValidationError("give either embeddings (a file) or a pool folder, not both or neither")
    where = Path(pool if pool is not None else embeddings)
    skipped: set = set()
    pool_dir = None
    if is_pool_dir(where):
        from datascout.embed.pipeline import load_pool_dir

        files = load_pool_dir(where)
        pool_dir, path, X, ids = where.resolve(), (where / "embeddings.npy").resolve(), files.embeddings, files.ids
        skipped_file = where / "skipped.jsonl"
        if skipped_file.is_file() and skipped_file.stat().st_size:
            skipped = {str(obj.get("id")) for _, obj in iter_jsonl(skipped_file) if isinstance(obj, dict)}
    elif pool is not None:
        raise ValidationError(f"expected a pool folder written by 'datascout embed' (with manifest.json) "
                              f"at {str(where)!r} but found none")
    else:
        path = where.resolve()
        X, ids = load_embeddings(path)
        beside = path.parent / "ids.npy"
        if ids is None and path.suffix.lower() == ".npy" and beside.is_file() and beside != path:
            try:
                ids = np.load(beside, allow_pickle=False)
            except Exception as exc:
                raise ValidationError(f"cannot read {str(beside)!r} as a .npy array of ids: {exc}") from None
            if ids.ndim != 1 or X.ndim < 1 or len(ids) != X.shape[0]:
                raise ValidationError(f"{str(beside)!r} holds {ids.shape} ids but {path.name} has "
                                      f"{X.shape[0] if X.ndim else 0} rows: expected one id per row")
    X = check_embeddings(X)
    if ids is not None:
        ids = [str(i) for i in np.asarray(ids).tolist()]
        dup = _first_duplicate(ids)
        if dup is not None:
            raise ValidationError(f"the embeddings' ids hold {dup!r} twice: expected one row per id")
    return PoolInputs(path, X, ids, skipped, pool_dir)


def items_from_pool(pool_dir: Path) -> list[dict]:
    """The items of a pool folder, read again from the source its manifest records (texts from
    the CSV / JSONL / Parquet / text file, images as files of the folder or list), after checking
    that the source is the one that was embedded (its sha256)."""
    manifest = json.loads((pool_dir / "manifest.json").read_text())
    src = manifest.get("source") or {}
    name = str(pool_dir)
    if "dataset" in src:
        from datascout import datasets

        d = datasets.load(src["dataset"])
        if d.kind != "text":
            raise ValidationError(f"the pool {name!r} of data set {src['dataset']!r} holds {d.kind} kept in "
                                  "memory, not files: pass --items")
        ids = d.ids if d.ids is not None else np.arange(len(d.data))
        texts = d.data
        sub = src.get("subset")
        if sub:  # embedded with --limit: the same seeded draw of the data set's items
            from datascout.embed.dataset_pools import subset_positions

            pos = subset_positions(len(d.data), int(sub["limit"]), int(sub.get("seed", 0)))
            ids, texts = ids[pos], [d.data[i] for i in pos.tolist()]
        return [{"id": str(i), "kind": "text", "payload": str(t)} for i, t in zip(ids.tolist(), texts)]
    path = Path(src.get("path", ""))
    if not path.exists():
        raise ValidationError(f"the pool {name!r} was embedded from {str(path)!r}, which no longer exists: "
                              "pass --items")
    if src.get("kind") == "text":
        from datascout.embed.sources import TextSource

        s = TextSource(path, id_column=src.get("id_column") or "id", text_column=src.get("text_column") or "text",
                       format=src.get("format")).open()
        if s.checksum_ != src.get("sha256"):
            raise ValidationError(f"{str(path)!r} changed since the pool {name!r} was embedded from it "
                                  "(its sha256 differs): embed it again, or pass --items")
        return _text_items(s, path.name)
    if src.get("kind") == "images":
        from datascout.embed.sources import ImageSource

        s = ImageSource(path).open()
        if s.checksum_ != src.get("sha256"):
            raise ValidationError(f"{str(path)!r} changed since the pool {name!r} was embedded from it "
                                  "(its checksum differs): embed it again, or pass --items")
        out = []
        for i, rel in zip(s.ids_.tolist(), s.files_):
            p = Path(rel)
            out.append({"id": str(i), "kind": "image",
                        "payload": check_raster(p if p.is_absolute() else s.root_ / p, name)})
        return out
    raise ValidationError(f"the pool {name!r} records no source items (kind {src.get('kind')!r}): pass --items")


def match_items(items: list[dict], pool_ids: "list | int", skipped=frozenset(), what: str = "the items") -> list[dict]:
    """``items`` in pool row order, matched by id. ``pool_ids`` is the rows' ids, or the number
    of rows of a bare array (line order: the counts must agree). Items the embedding run skipped (``skipped.jsonl``) are left out."""
    if isinstance(pool_ids, int):  # a bare array of this many rows: line order
        if len(items) != pool_ids:
            raise ValidationError(f"{what} hold {len(items)} items but the embeddings have {pool_ids} rows "
                                  "(a .npy without ids pairs items with rows by line order)")
        return items
    by_id = {it["id"]: it for it in items}
    row_of = set(pool_ids)
    unknown = [i for i in by_id if i not in row_of and i not in skipped]
    if unknown:
        raise ValidationError(f"{len(unknown)} of {what} have ids that are not in the embeddings' ids "
                              f"(first: {_short(unknown)}): expected every item id among the pool's")
    missing = [i for i in pool_ids if i not in by_id]
    if missing:
        raise ValidationError(f"{len(missing)} of the {len(pool_ids)} embeddings rows have no item in {what} "
                              f"(first ids: {_short(missing)}): expected an item for every row")
    return [by_id[i] for i in pool_ids]
