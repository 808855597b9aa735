"""Turn raw text, images or precomputed vectors into a pool folder, offline and resumably.

>>> from datascout.embed import TextSource, TextEmbedder, embed_to_dir, load_pool_dir
>>> embed_to_dir(TextSource("quotes.csv", id_column="id", text_column="text"),
...              TextEmbedder(), "pool/")                                   # doctest: +SKIP
>>> emb, ids, labels, manifest = load_pool_dir("pool/")                   # doctest: +SKIP

The folder layout is documented in :mod:`datascout.embed.pipeline`.
"""

from .dataset_pools import dataset_pool, embed_dataset, pools_dir
from .models import (DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, ImageEmbedder, TextEmbedder,
                     set_threads)
from .pipeline import PoolFiles, embed_to_dir, load_pool_dir
from .sources import ArraySource, ImageSource, TextSource, VectorSource

__all__ = [
    "DEFAULT_IMAGE_MODEL", "DEFAULT_TEXT_MODEL", "ArraySource", "ImageEmbedder",
    "ImageSource", "PoolFiles", "TextEmbedder", "TextSource", "VectorSource", "dataset_pool",
    "embed_dataset", "embed_to_dir", "load_pool_dir", "pools_dir", "set_threads",
]
