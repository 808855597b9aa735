"""Ready pools for the offline data sets: ``datascout datasets embed NAME``.

The data sets and their default embedders are the table :data:`datascout.datasets.DATASETS`:
``fortunes`` with all-MiniLM-L6-v2 (384-d), ``fashion-mnist`` with EfficientNet-Lite0 at 112 px
(1280-d), ``debian`` (package descriptions, their sections as labels) with all-MiniLM-L6-v2, ``letter``, ``satellite``, ``shuttle`` and ``digits`` passed through as their feature
vectors. Each pool folder (``cache_dir()/pools/NAME`` by default) holds ground truth in
``labels.npy`` and ``classes.json``; see :mod:`datascout.embed.pipeline` for the layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from datascout import datasets as ds
from datascout.exceptions import ValidationError

from .models import ImageEmbedder, TextEmbedder
from .pipeline import MANIFEST, embed_to_dir
from .sources import ArraySource, _folder_checksum

def pools_dir() -> Path:
    return ds.cache_dir() / "pools"


def dataset_pool(name: str) -> Path | None:
    """The finished pool folder of data set ``name`` under ``cache_dir()/pools``, or ``None``."""
    path = pools_dir() / name
    return path if (path / MANIFEST).is_file() else None


def _source_checksum(name: str, data) -> str:
    if name == "fortunes":
        files = sorted(p.name for p in ds.FORTUNES_DIR.iterdir()
                       if p.is_file() and not p.suffix and not p.is_symlink())
        return _folder_checksum(ds.FORTUNES_DIR, files)
    if name == "fashion-mnist":
        files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        return _folder_checksum(ds.FASHION_MNIST_DIR, files)
    if isinstance(data, list):  # texts: one by one (one array of them pads every text to the longest)
        h = hashlib.sha256()
        for text in data:
            h.update(text.encode("utf-8") + b"\0")
        return h.hexdigest()
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def subset_positions(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """All positions, or ``limit`` of them drawn at random (seeded) and kept in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValidationError(f"limit must be >= 1 but is {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def embed_dataset(name: str, out=None, *, model=None, image_size: int = 112, batch_size: int | None = None,
                  dtype: str = "float32", normalize: bool | None = None, limit: int | None = None,
                  chunk_size: int | None = None, backend: str = "torch", progress: bool = True,
                  overwrite: bool = False, _stop_after_chunks=None) -> Path:
    """Embed the offline data set ``name`` into a pool folder with ground truth; returns it."""
    d = ds.check_dataset(name).load()
    pos = subset_positions(len(d.labels), limit)
    if d.kind == "text":
        data = [d.data[i] for i in pos.tolist()]
    else:
        data = d.data[pos]
    ids = d.ids[pos] if d.ids is not None else pos
    describe = {"dataset": name, "kind": d.kind, "sha256": _source_checksum(name, d.data),
                "subset": None if limit is None or limit >= len(d.labels) else {"limit": int(limit), "seed": 0}}
    source = ArraySource(data, d.kind, ids=ids, labels=d.labels[pos], classes=d.classes, describe=describe)
    if d.kind == "text":
        embedder = TextEmbedder(model=model, batch_size=batch_size or 64, backend=backend)
        norm = True if normalize is None else normalize
        chunk = chunk_size or 2048
    elif d.kind == "images":
        embedder = ImageEmbedder(model=model or "efficientnet-lite0", image_size=image_size,
                                 batch_size=batch_size or 64)
        norm = True if normalize is None else normalize
        chunk = chunk_size or 1024
    else:
        if model not in (None, "identity"):
            raise ValidationError(f"{name} holds feature vectors: expected no model but got {model!r}")
        embedder = None
        source.dim_ = int(d.data.shape[1])
        norm = False if normalize is None else normalize
        chunk = chunk_size or 65536
    out = pools_dir() / name if out is None else Path(out)
    return embed_to_dir(source, embedder, out, dtype=dtype, normalize=norm, chunk_size=chunk,
                        progress=progress, overwrite=overwrite, extra={"dataset": name},
                        _stop_after_chunks=_stop_after_chunks)
