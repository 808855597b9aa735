"""Embed a query ("find items like this") with the very model and settings that made a pool.

A pool folder's ``manifest.json`` records the model, its settings and the normalisation, so a
text or an image given at ``datascout campaign init --query-text/--query-image`` lands in the
same space as the pool's rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError

from datascout.pool import normalize_rows

from .models import ImageEmbedder, TextEmbedder
from .pipeline import MANIFEST


def pool_manifest(embeddings) -> dict:
    """The manifest of the pool folder that holds ``embeddings`` (a pool folder or its
    ``embeddings.npy``). Raises a one-line error when the file was not made by ``datascout embed``."""
    p = Path(embeddings)
    folder = p if p.is_dir() else p.parent
    m = folder / MANIFEST
    if not m.is_file() or (not p.is_dir() and p.name != "embeddings.npy"):
        raise ValidationError(
            f"a text or image query needs embeddings made by 'datascout embed' (a pool folder with "
            f"{MANIFEST}) but {str(p)!r} has none: embed the query yourself and pass its embedding")
    return json.loads(m.read_text(encoding="utf-8"))


def embed_query(manifest: dict, *, text: str | None = None, image=None) -> np.ndarray:
    """(dim,) float32: ``text`` or the image file ``image`` embedded as the pool's rows were."""
    if (text is None) == (image is None):
        raise ValidationError("give a query text or a query image, not both or neither")
    kind = manifest.get("kind")
    settings = dict(manifest.get("settings", {}).get("model", {}))
    if text is not None:
        if kind != "text":
            raise ValidationError(f"a text query needs a pool of text embeddings but this pool holds {kind!r}")
        if not str(text).strip():
            raise ValidationError("the query text is empty")
        model = TextEmbedder(model=settings.get("model"), backend=settings.get("backend", "torch"),
                             max_length=settings.get("max_length")).load()
        vec = model.encode([str(text)])
    else:
        from .sources import _read_image

        if kind != "images":
            raise ValidationError(f"an image query needs a pool of image embeddings but this pool holds {kind!r}")
        size = int(settings.get("image_size", 112))
        pixels = _read_image(Path(image), size)
        if isinstance(pixels, str):
            raise ValidationError(f"expected a readable query image at {str(image)!r} but found: {pixels}")
        model = ImageEmbedder(model=settings.get("model"), image_size=size, weights=settings.get("weights")).load()
        vec = model.encode(pixels[None])
    if vec.shape[1] != manifest.get("dimension"):
        raise ValidationError(f"the query embeds to {vec.shape[1]} dimensions but the pool has "
                              f"{manifest.get('dimension')}: the pool's model is not the one installed")
    if manifest.get("normalization") == "l2":
        vec = normalize_rows(vec)
    return np.asarray(vec[0], dtype=np.float32)
