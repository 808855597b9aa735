"""Embedding with Ray Data: actor pools of the library's embedders, written as a shard directory.

:func:`embed_text` and :func:`embed_images` read their input with Ray Data, run each unfinished
shard through ``map_batches`` with an actor pool (one loaded embedder per actor), and write every
shard atomically as soon as its last row arrives, so a rerun after an interruption embeds only
the missing shards. The manifest is written last.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.files import atomic_write_text, file_sha256
from datascout.pool import normalize_rows
from datascout.ray.session import init_ray
from datascout.shards import is_shard_dir, shard_bounds, shard_name, write_manifest, write_shard


class TextEmbedActor:
    """Ray Data callable class: one loaded text embedder per actor, batch -> embeddings."""

    def __init__(self, model=None, backend: str = "torch", batch_size: int = 64, normalize: bool = True,
                 id_column: str = "id", text_column: str = "text"):
        from datascout.embed import TextEmbedder

        self.embedder = TextEmbedder(model=model, batch_size=batch_size, backend=backend).load()
        self.normalize, self.id_column, self.text_column = normalize, id_column, text_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column].tolist()]
        emb = self.embedder.encode(texts) if texts else np.zeros((0, self.embedder.dim_), np.float32)
        if self.normalize:
            emb = normalize_rows(emb)
        return {"id": np.asarray(batch[self.id_column]), "embedding": emb.astype(np.float32)}


def _read_dataset(ray, path: Path, fmt: str, id_column: str, text_column: str):
    """A Ray Dataset of (id, text) rows in file order."""
    if fmt == "csv":
        ds = ray.data.read_csv(str(path))
    elif fmt == "jsonl":
        ds = ray.data.read_json(str(path), lines=True) if _accepts_lines(ray) else ray.data.read_json(str(path))
    elif fmt == "parquet":
        ds = ray.data.read_parquet(str(path))
    else:
        raise ValidationError(
            f"embedding on Ray reads CSV, JSONL or Parquet files with an id and a text column but received "
            f"{str(path)!r} (format {fmt!r})")
    missing = [c for c in (id_column, text_column) if c not in ds.schema().names]
    if missing:
        raise ValidationError(f"{str(path)!r} has columns {ds.schema().names}: expected a column {missing[0]!r}")
    return ds.select_columns([id_column, text_column])


def _accepts_lines(ray) -> bool:
    import inspect

    return "lines" in inspect.signature(ray.data.read_json).parameters


def embed_text(input_path, out_dir, *, fmt: str | None = None, id_column: str = "id",
               text_column: str = "text", model=None, backend: str = "torch", batch_size: int = 64,
               concurrency: int = 1, shard_rows: int = 100_000, normalize: bool = True,
               progress=None) -> Path:
    """Embed a text file with Ray Data into a shard directory, resumably shard by shard.

    Ray Data reads ``input_path`` (CSV / JSONL / Parquet with id and text columns), the rows are cut into shards of ``shard_rows``, and each unfinished shard
    runs through ``map_batches`` with :class:`TextEmbedActor` as an actor pool of ``concurrency``
    actors; each shard is written atomically as soon as it is done, so a rerun after an
    interruption embeds only the missing shards. The manifest is written last.
    """
    ray = init_ray()
    path = Path(input_path)
    if not path.is_file():
        raise ValidationError(f"expected a file at {str(path)!r} but none exists")
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                  ".pq": "parquet"}.get(path.suffix.lower(), "txt")
    for name, v in (("batch size", batch_size), ("concurrency", concurrency), ("shard rows", shard_rows)):
        if int(v) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {v}")
    out = Path(out_dir)
    settings = {"input_sha256": file_sha256(path), "format": fmt, "id_column": id_column,
                "text_column": text_column, "model": str(model), "backend": backend,
                "normalize": bool(normalize), "shard_rows": int(shard_rows)}
    if _prepare_out(out, settings):
        return out
    _quiet_ray_data(ray)
    ds = _read_dataset(ray, path, fmt, id_column, text_column)
    n = ds.count()
    if n == 0:
        raise ValidationError(f"{str(path)!r} holds no rows: expected at least 1 text")
    bounds = shard_bounds(n, shard_rows=shard_rows)
    n_shards = len(bounds) - 1
    # the ids in file order (Ray Data keeps it with preserve_order) give every row its position
    all_ids = np.concatenate([np.asarray(b[id_column]) for b in
                              ds.select_columns([id_column]).iter_batches(batch_format="numpy", batch_size=None)])
    if all_ids.dtype.kind == "O":
        all_ids = all_ids.astype(str)
    if len(np.unique(all_ids)) != n:
        raise ValidationError(f"column {id_column!r} of {str(path)!r} must hold unique ids but has repeats")
    done = [(out / f"{shard_name(i)}.npy").is_file() and (out / f"{shard_name(i)}.ids.npy").is_file()
            for i in range(n_shards)]
    entries: dict[int, dict] = {}
    dim = None
    for i in np.flatnonzero(done).tolist():
        dim = np.load(out / f"{shard_name(i)}.npy", mmap_mode="r").shape[1]
        entries[i] = {"file": f"{shard_name(i)}.npy", "ids": f"{shard_name(i)}.ids.npy",
                      "rows": int(bounds[i + 1] - bounds[i])}
    todo = [i for i in range(n_shards) if not done[i]]
    if todo:
        pending = ds
        if len(todo) < n_shards:  # only the rows of missing shards go to the embedder
            keep_ids = np.concatenate([all_ids[bounds[i]:bounds[i + 1]] for i in todo])
            col = id_column

            def keep_rows(b):
                mask = np.isin(np.asarray(b[col]).astype(keep_ids.dtype), keep_ids)
                return {k: np.asarray(v)[mask] for k, v in b.items()}

            pending = ds.map_batches(keep_rows, batch_format="numpy")
        got = pending.map_batches(TextEmbedActor, batch_size=int(batch_size), concurrency=int(concurrency),
                                  num_cpus=1, batch_format="numpy",
                                  fn_constructor_kwargs={"model": model, "backend": backend,
                                                         "batch_size": int(batch_size), "normalize": normalize,
                                                         "id_column": id_column, "text_column": text_column})
        dim = _collect_shards(got, all_ids, bounds, todo, out, entries, progress) or dim
    entries = [entries[i] for i in range(n_shards)]
    write_manifest(out, entries, dim=dim, dtype="float32")
    return out


def _prepare_out(out: Path, settings: dict) -> bool:
    """Check (or start) an embedding output folder made with ``settings``. True when it already
    holds the finished shard directory."""
    state_path = out / "embed-settings.json"
    if out.exists():
        old = json.loads(state_path.read_text()) if state_path.is_file() else None
        if old != settings:
            raise ValidationError(
                f"{str(out)!r} exists and was not made by this command with these settings: expected a new "
                "or matching folder")
        if is_shard_dir(out):
            return True
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_path, json.dumps(settings, indent=1))
    return False


def _quiet_ray_data(ray) -> None:
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class ImageEmbedActor:
    """Ray Data callable class: one loaded image embedder per actor; a batch of (id, path) rows ->
    embeddings, with ``reason`` = why an image was skipped (unreadable, missing) or ``""``."""

    def __init__(self, model=None, image_size: int = 112, batch_size: int = 64, weights=None,
                 normalize: bool = True):
        from datascout.embed import ImageEmbedder

        self.embedder = ImageEmbedder(model=model or "efficientnet-lite0", image_size=image_size,
                                      batch_size=batch_size, weights=weights).load()
        self.size, self.normalize = int(image_size), normalize

    def __call__(self, batch: dict) -> dict:
        from datascout.embed.sources import _read_image

        paths = [str(p) for p in batch["path"].tolist()]
        got = [_read_image(Path(p), self.size) for p in paths]
        reasons = [g if isinstance(g, str) else "" for g in got]
        emb = np.zeros((len(paths), self.embedder.dim_), dtype=np.float32)
        good = [i for i, r in enumerate(reasons) if not r]
        if good:
            e = self.embedder.encode(np.stack([got[i] for i in good]))
            emb[good] = normalize_rows(e) if self.normalize else e
        return {"id": np.asarray(batch["id"]), "embedding": emb, "reason": np.asarray(reasons, dtype=object)}


def embed_images(input_path, out_dir, *, model=None, image_size: int = 112, batch_size: int = 64,
                 weights=None, concurrency: int = 1, shard_rows: int = 100_000, normalize: bool = True,
                 progress=None) -> Path:
    """Embed an image folder tree (ids = relative paths) or a list file with Ray Data into a shard
    directory, resumably shard by shard, as :func:`embed_text` does for texts. Images that cannot
    be read are left out of their shard and recorded, with the reason, in ``skipped.jsonl``."""
    from datascout.embed import ImageSource
    ray = init_ray()
    for name, v in (("batch size", batch_size), ("concurrency", concurrency), ("shard rows", shard_rows)):
        if int(v) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {v}")
    src = ImageSource(input_path, image_size=image_size).open()
    out = Path(out_dir)
    settings = {"input_sha256": src.checksum_, "kind": "images", "model": str(model or "efficientnet-lite0"),
                "image_size": int(image_size), "weights": None if weights is None else str(weights),
                "normalize": bool(normalize), "shard_rows": int(shard_rows)}
    if _prepare_out(out, settings):
        return out
    _quiet_ray_data(ray)
    all_ids = np.asarray(src.ids_).astype(str)
    if len(np.unique(all_ids)) != len(all_ids):
        raise ValidationError(f"{str(input_path)!r} lists an image twice: ids must be unique")
    paths = [str(p if Path(p).is_absolute() else src.root_ / p) for p in src.files_]
    bounds = shard_bounds(len(all_ids), shard_rows=shard_rows)
    n_shards = len(bounds) - 1
    entries: dict[int, dict | None] = {}
    skipped: dict[int, list] = {}
    for i in range(n_shards):
        name = shard_name(i)
        if (out / f"{name}.skipped.json").is_file() and (
                (out / f"{name}.empty").is_file() or (out / f"{name}.ids.npy").is_file()):
            skipped[i] = json.loads((out / f"{name}.skipped.json").read_text())
            entries[i] = None if (out / f"{name}.empty").is_file() else {
                "file": f"{name}.npy", "ids": f"{name}.ids.npy",
                "rows": int(np.load(out / f"{name}.ids.npy", mmap_mode="r").shape[0])}
    todo = [i for i in range(n_shards) if i not in entries]
    dim = None
    if todo:
        rows = [{"id": all_ids[j], "path": paths[j]} for i in todo for j in range(bounds[i], bounds[i + 1])]
        got = ray.data.from_items(rows).map_batches(
            ImageEmbedActor, batch_size=int(batch_size), concurrency=int(concurrency), num_cpus=1,
            batch_format="numpy", fn_constructor_kwargs={"model": model, "image_size": int(image_size),
                                                         "batch_size": int(batch_size), "weights": weights,
                                                         "normalize": normalize})
        dim = _collect_shards(got, all_ids, bounds, todo, out, entries, progress, skipped)
    kept = [entries[i] for i in range(n_shards) if entries[i] is not None]
    records = sorted((r for i in range(n_shards) for r in skipped.get(i, [])), key=lambda r: r["position"])
    atomic_write_text(out / "skipped.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    if not kept:
        raise ValidationError(f"every one of the {len(all_ids)} images was skipped: see {str(out / 'skipped.jsonl')!r}")
    if dim is None:
        dim = np.load(out / kept[0]["file"], mmap_mode="r").shape[1]
    write_manifest(out, kept, dim=dim, dtype="float32")
    return out


def _collect_shards(got, all_ids, bounds, todo, out, entries: dict, progress, skipped: dict | None = None):
    """Drain the embedder's output batches (``id``, ``embedding`` and, for images, ``reason``:
    ``""`` or why the item was skipped) into per-shard buffers in input order; write each shard
    the moment its last row arrives (the unit of resumption), keeping only the rows that were
    embedded. ``skipped[i]`` collects shard i's skip records. Returns the dimension seen."""
    sorter = np.argsort(all_ids, kind="stable")
    bufs: dict[int, np.ndarray] = {}
    ok: dict[int, np.ndarray] = {}
    filled = {i: 0 for i in todo}
    dim = None
    for batch in got.iter_batches(batch_size=None, batch_format="numpy"):
        b_ids = np.asarray(batch["id"])
        b_ids = b_ids.astype(all_ids.dtype) if b_ids.dtype != all_ids.dtype else b_ids
        emb = np.asarray(batch["embedding"], dtype=np.float32)
        reasons = np.asarray(batch["reason"]).astype(str) if "reason" in batch else None
        pos = sorter[np.searchsorted(all_ids, b_ids, sorter=sorter)]
        shard_of = np.searchsorted(bounds, pos, side="right") - 1
        for i in np.unique(shard_of).tolist():
            sel = shard_of == i
            rows = int(bounds[i + 1] - bounds[i])
            if i not in bufs:
                bufs[i] = np.empty((rows, emb.shape[1]), dtype=np.float32)
                ok[i] = np.ones(rows, dtype=bool)
            local = pos[sel] - bounds[i]
            bufs[i][local] = emb[sel]
            if reasons is not None:
                bad = reasons[sel] != ""
                ok[i][local[bad]] = False
                for p_, id_, why in zip(pos[sel][bad].tolist(), b_ids[sel][bad].tolist(), reasons[sel][bad].tolist()):
                    skipped.setdefault(i, []).append({"position": int(p_), "id": id_, "reason": why})
            filled[i] += int(sel.sum())
            if filled[i] == rows:  # shard complete: write it now
                dim = emb.shape[1]
                keep = ok.pop(i)
                if skipped is not None:
                    _write_skipped(out, i, skipped.get(i, []))
                if keep.any():
                    entries[i] = write_shard(out, i, bufs.pop(i)[keep], all_ids[bounds[i]:bounds[i + 1]][keep])
                else:  # every item of the shard was skipped: a marker, no empty array files
                    bufs.pop(i)
                    atomic_write_text(out / f"{shard_name(i)}.empty", "")
                    entries[i] = None
                if progress is not None:
                    progress(len(entries), len(bounds) - 1)
    if any(i not in entries for i in todo):  # a bug, not a user's mistake
        raise RuntimeError(f"embedded {len(entries)} of {len(bounds) - 1} shards")
    return dim


def _write_skipped(out: Path, i: int, records: list) -> None:
    atomic_write_text(out / f"{shard_name(i)}.skipped.json", json.dumps(sorted(records, key=lambda r: r["position"])))
