"""The embedding run: stream a source through a model into a pool folder, resumably.

Pool folder layout (read by :func:`load_pool_dir`; ``datascout.io.load_embeddings`` reads
``embeddings.npy`` directly)::

    embeddings.npy   (count, dimension) float32 or float16, L2-normalised when the manifest says so
    ids.npy          (count,) int64 (line numbers, positions, integer ids) or fixed-width unicode
                     strings; always ids.npy, never a text file; read with allow_pickle=False
    labels.npy       (count,) int64 class ids (only when the source has ground truth)
    classes.json     class names in class-id order (only with labels.npy)
    skipped.jsonl    one {"id", "position", "reason"} per item left out (empty when none)
    manifest.json    format, model, kind, dimension, dtype, count, normalization, source
                     (path, sha256), skipped, settings and a fingerprint of all of them

Rows of ``embeddings.npy`` are the source's items in source order, minus the skipped ones.
``manifest.json`` is written last: a folder without it is unfinished.

Resumability: rows are written into a pre-allocated memory-mapped ``.partial/embeddings.npy``,
one chunk at a time; after each chunk, ``.partial/state.json`` records how many items are done.
Run the same command again after a kill and it continues from the last finished chunk (chunk
boundaries and model settings are part of the fingerprint, so the result is the same file as an
uninterrupted run). Different settings on an existing folder are refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datascout.exceptions import ValidationError
from datascout.io import atomic_write_bytes, atomic_write_text
from datascout.pool import iter_row_chunks, normalize_rows
from datascout.progress import ProgressBar


FORMAT = "datascout-pool/1"
DTYPES = ("float32", "float16")
MANIFEST = "manifest.json"


class PoolFiles(NamedTuple):
    embeddings: np.ndarray  # memory map
    ids: np.ndarray
    labels: np.ndarray | None
    manifest: dict  # with "classes" when labels exist


def load_pool_dir(directory) -> PoolFiles:
    """Read a pool folder written by ``datascout embed`` / ``datascout datasets embed``."""
    d = Path(directory)
    if not (d / MANIFEST).is_file():
        hint = " (an unfinished run: run the same command again to resume)" if (d / ".partial").is_dir() else ""
        raise ValidationError(f"expected a pool folder with {MANIFEST} at {str(d)!r} but found none{hint}")
    manifest = json.loads((d / MANIFEST).read_text())
    emb = np.load(d / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    ids = np.load(d / "ids.npy", allow_pickle=False)
    labels = np.load(d / "labels.npy", allow_pickle=False) if (d / "labels.npy").is_file() else None
    if (d / "classes.json").is_file():
        manifest["classes"] = json.loads((d / "classes.json").read_text())
    n = manifest.get("count")
    if emb.shape[0] != n or len(ids) != n or (labels is not None and len(labels) != n):
        raise ValidationError(
            f"pool folder {str(d)!r} is inconsistent: manifest count {n}, embeddings {emb.shape[0]} rows, "
            f"ids {len(ids)}" + ("" if labels is None else f", labels {len(labels)}")
        )
    return PoolFiles(emb, ids, labels, manifest)


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _encode_chunk(embedder, items, reasons, dim):
    """(m, dim) float32 for a chunk; rows of skipped items are zero. May add reasons."""
    m = len(items)
    out = np.zeros((m, dim), dtype=np.float32)
    if isinstance(items, np.ndarray) and not reasons:  # in-memory images / vectors
        out[:] = items.astype(np.float32) if embedder is None else embedder.encode(items)
        return out
    keep = [i for i in range(m) if i not in reasons]
    if keep:
        if embedder is None:
            vecs = np.asarray([items[i] for i in keep], dtype=np.float32)
        elif embedder.kind == "text":
            vecs = embedder.encode([items[i] for i in keep])
        else:
            vecs = embedder.encode(np.stack([items[i] for i in keep]))
        out[keep] = vecs
    return out


def _stored_rows(vecs, reasons, dtype) -> np.ndarray:
    """``vecs`` in the output dtype, with every row that is not finite there zeroed and skipped:
    a model's NaN / inf, and values a float16 file cannot hold (beyond +-65504)."""
    with np.errstate(over="ignore"):  # an overflowing row is caught below, by name
        stored = vecs.astype(dtype)
    for i in np.flatnonzero(~np.isfinite(stored).all(axis=1)).tolist():
        if i not in reasons:
            reasons[i] = ("the vector is not finite" if not np.isfinite(vecs[i]).all()
                          else f"the vector does not fit {dtype} (values beyond its range)")
        stored[i] = 0
    return stored


def embed_to_dir(source, embedder, out, *, dtype: str = "float32", normalize: bool = True,
                 chunk_size: int = 1024, progress: bool = True, overwrite: bool = False,
                 extra: dict | None = None, _stop_after_chunks: int | None = None) -> Path:
    """Embed ``source`` (an opened or unopened source) with ``embedder`` (a loaded or unloaded
    embedder, or ``None`` to pass vectors through) into the pool folder ``out``.

    Validates everything (source ids and columns, model installed, settings) before any item is
    embedded; resumes an unfinished run with the same settings; returns ``out``.
    ``_stop_after_chunks`` stops (as a kill would) after that many chunks, for tests.
    """
    if dtype not in DTYPES:
        raise ValidationError(f"dtype must be one of {DTYPES} but is {dtype!r}")
    if int(chunk_size) < 1:
        raise ValidationError(f"chunk_size must be >= 1 but is {chunk_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"the output must be a folder but {str(out)!r} is a file")
    if not hasattr(source, "ids_"):
        source.open()
    if embedder is not None and not hasattr(embedder, "dim_"):
        embedder.load()
    n = len(source)
    if embedder is None:
        dim = int(source.dim_)
        model_name, model_cfg = "identity", {"model": "identity"}
    else:
        dim, model_name, model_cfg = int(embedder.dim_), embedder.name_, embedder.config()
    settings = {"format": FORMAT, "source": source.describe(), "model": model_cfg, "dtype": dtype,
                "normalize": bool(normalize), "chunk_size": int(chunk_size), "n": n, "dim": dim,
                "extra": extra or {}}
    fp = _fingerprint(settings)

    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") == fp and not overwrite:
            return out  # already complete with the same input and settings
        if not overwrite:
            raise ValidationError(
                f"{str(out)!r} already holds a pool made from other input or settings "
                f"(model {old.get('model')!r}, {old.get('count')} items): overwrite it or choose another output folder"
            )
    partial = out / ".partial"
    state_path = partial / "state.json"
    done = 0
    if partial.is_dir() and state_path.is_file() and not overwrite:
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") == fp:
            done = int(state["done"])
        if done == n and not ((partial / "embeddings.npy").is_file() or (out / "embeddings.npy").is_file()):
            done = 0  # nothing left to finish from: embed again
    if done == 0:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        buf = np.lib.format.open_memmap(partial / "embeddings.npy", mode="w+", dtype=dtype, shape=(n, dim))
        (partial / "skipped.jsonl").write_text("")
        atomic_write_text(state_path, json.dumps({"fingerprint": fp, "done": 0}))
    else:
        # done == n: a finalize that was interrupted may already have moved the file out
        buf = np.lib.format.open_memmap(partial / "embeddings.npy", mode="r+") if done < n else None
        # drop skipped records written after the last finished chunk (a kill between the two)
        lines = (partial / "skipped.jsonl").read_text().splitlines()
        kept = [ln for ln in lines if ln and json.loads(ln)["position"] < done]
        atomic_write_text(partial / "skipped.jsonl", "".join(ln + "\n" for ln in kept))

    ids = source.ids_
    prog = ProgressBar(n, f"embedding {n} {source.kind}", done=done, enabled=progress)
    pos, n_chunks = done, 0
    with prog, open(partial / "skipped.jsonl", "a", encoding="utf-8") as skipped_fh:
        for items, reasons in source.chunks(done, int(chunk_size)):
            m = len(items)
            vecs = _encode_chunk(embedder, items, reasons, dim)
            if normalize:
                vecs = normalize_rows(vecs)
            buf[pos:pos + m] = _stored_rows(vecs, reasons, dtype)
            buf.flush()
            for i in sorted(reasons):
                skipped_fh.write(json.dumps({"id": ids[pos + i].item(), "position": pos + i,
                                             "reason": reasons[i]}) + "\n")
            skipped_fh.flush()
            pos += m
            atomic_write_text(state_path, json.dumps({"fingerprint": fp, "done": pos}))
            prog.update(pos)
            n_chunks += 1
            if _stop_after_chunks is not None and n_chunks >= _stop_after_chunks and pos < n:
                raise KeyboardInterrupt("stopped for a test")
    if pos != n:
        raise ValidationError(f"the source yielded {pos} items but listed {n} ids: was it changed meanwhile?")
    del buf
    return _finalize(out, partial, source, settings, fp, model_name, dim, dtype, normalize)


def _finalize(out, partial, source, settings, fp, model_name, dim, dtype, normalize):
    records = [json.loads(ln) for ln in (partial / "skipped.jsonl").read_text().splitlines() if ln]
    skipped_pos = np.asarray(sorted(r["position"] for r in records), dtype=np.int64)
    n = len(source)
    keep = np.setdiff1d(np.arange(n, dtype=np.int64), skipped_pos, assume_unique=True)
    for name in (MANIFEST, "labels.npy", "classes.json"):
        if (out / name).exists():
            (out / name).unlink()
    atomic_write_text(out / "skipped.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    if len(keep) == 0:
        raise ValidationError(f"every one of the {n} items was skipped: see {str(out / 'skipped.jsonl')!r}")
    staged = partial / "embeddings.npy"
    if len(keep) == n:
        if staged.is_file():  # else an interrupted finalize moved it out already
            staged.replace(out / "embeddings.npy")
    else:
        src = np.load(staged, mmap_mode="r")
        tmp = out / ".embeddings.tmp.npy"
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(keep), dim))
        for rows in iter_row_chunks(len(keep)):
            dst[rows] = src[keep[rows]]
        dst.flush()
        del dst, src
        tmp.replace(out / "embeddings.npy")
    ids = source.ids_[keep]
    _save_npy(out / "ids.npy", ids)
    labels = getattr(source, "labels_", None)
    classes = getattr(source, "classes_", None)
    if labels is not None:
        _save_npy(out / "labels.npy", np.asarray(labels, dtype=np.int64)[keep])
        atomic_write_text(out / "classes.json", json.dumps(list(classes) if classes is not None else None))
    manifest = {
        "format": FORMAT,
        "model": model_name,
        "kind": source.kind,
        "dimension": dim,
        "dtype": dtype,
        "count": int(len(keep)),
        "normalization": "l2" if normalize else "none",
        "source": settings["source"],
        "source_count": n,
        "skipped": int(len(skipped_pos)),
        "ids_dtype": "int64" if ids.dtype.kind in "iu" else "str",
        "files": {"embeddings": "embeddings.npy", "ids": "ids.npy", "skipped": "skipped.jsonl",
                  **({"labels": "labels.npy", "classes": "classes.json"} if labels is not None else {})},
        "settings": {"model": settings["model"], "chunk_size": settings["chunk_size"], **settings["extra"]},
        "fingerprint": fp,
    }
    if classes is not None:
        manifest["classes"] = list(classes)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    atomic_write_bytes(path, b.getvalue())
