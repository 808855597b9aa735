"""Embedding over Ray Data (actor pools of the real MiniLM and EfficientNet-Lite0) equals the single-process pipeline."""

import csv
import json
import os

import numpy as np
import pytest

from datascout import ray as dist
from datascout.exceptions import ValidationError
from datascout.io import load_embeddings

pytest.importorskip("sentence_transformers")

TEXTS = [f"{w} number {i} is {adj}" for i, (w, adj) in enumerate(
    [("the cat", "asleep"), ("a river", "cold"), ("my code", "fast"), ("this quote", "short"),
     ("the moon", "bright"), ("a dog", "loud"), ("that train", "late"), ("our server", "down"),
     ("the soup", "hot"), ("a poem", "sad"), ("the crowd", "calm"), ("your plan", "bold")] * 2)]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    dist.init_ray(num_cpus=2)
    return ray


@pytest.fixture()
def texts_csv(tmp_path):
    path = tmp_path / "quotes.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "other"])
        for i, t in enumerate(TEXTS):
            w.writerow([f"q{i:02d}", t, "x"])
    return path


def test_embed_text_over_ray_equals_the_single_process_embedder(ray_session, texts_csv, tmp_path):
    from datascout.embed import TextEmbedder

    out = dist.embed_text(texts_csv, tmp_path / "pool.shards", batch_size=5, concurrency=1, shard_rows=12)
    X, ids = load_embeddings(out)
    assert X.shape == (24, 384) and X.num_shards == 2
    assert ids.tolist() == [f"q{i:02d}" for i in range(24)]
    ref = TextEmbedder().load().encode(TEXTS)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(X[:], ref, atol=2e-5)

    # resumable per shard: a lost shard is embedded again, the others are kept as they are
    before = os.stat(out / "shard-00000.npy").st_mtime_ns
    (out / "shard-00001.npy").unlink()
    (out / "manifest.json").unlink()
    dist.embed_text(texts_csv, out, batch_size=5, concurrency=1, shard_rows=12)
    assert os.stat(out / "shard-00000.npy").st_mtime_ns == before
    np.testing.assert_allclose(load_embeddings(out)[0][:], ref, atol=2e-5)

    with pytest.raises(ValidationError, match="with these settings"):
        dist.embed_text(texts_csv, out, batch_size=5, shard_rows=7)


def test_embed_text_over_ray_rejects_bad_input(ray_session, texts_csv, tmp_path):
    with pytest.raises(ValidationError, match="expected a column 'body'"):
        dist.embed_text(texts_csv, tmp_path / "a", text_column="body")
    txt = tmp_path / "plain.txt"
    txt.write_text("one\ntwo\n")
    with pytest.raises(ValidationError, match="reads CSV, JSONL or Parquet"):
        dist.embed_text(txt, tmp_path / "b")


def test_embed_cli_ray_flags_need_ray(texts_csv, tmp_path, capsys):
    from datascout.cli import main

    assert main(["embed", "text", str(texts_csv), "--out", str(tmp_path / "o"), "--shard-rows", "5"]) == 2
    assert "--shard-rows needs --ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_embed_cli_rejects_zero_concurrency(texts_csv, tmp_path, capsys):
    from datascout.cli import main

    assert main(["embed", "text", str(texts_csv), "--out", str(tmp_path / "o"), "--ray",
                 "--concurrency", "0"]) == 2
    assert "--concurrency must be >= 1 but is 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_embed_images_over_ray_equals_the_single_process_pipeline(ray_session, tmp_path, fashion_ds):
    from PIL import Image

    from datascout.embed import ImageEmbedder, ImageSource, embed_to_dir, load_pool_dir

    ds = fashion_ds
    root = tmp_path / "imgs"
    for c, name in ((8, "bag"), (1, "trouser")):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(ds.labels == c)[:4]:
            Image.fromarray(ds.data[i]).save(root / name / f"{i}.png")
    (root / "bad").mkdir()
    for j in range(4):  # sorted first: the whole first shard is unreadable
        (root / "bad" / f"x{j}.png").write_bytes(b"not an image")
    out = dist.embed_images(root, tmp_path / "pool.shards", image_size=64, batch_size=3, shard_rows=4)
    X, ids = load_embeddings(out)
    assert X.shape == (8, 1280) and X.num_shards == 2
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [r["id"] for r in skipped] == [f"bad/x{j}.png" for j in range(4)]
    assert [r["position"] for r in skipped] == [0, 1, 2, 3] and all("unreadable" in r["reason"] for r in skipped)
    # the single-process pipeline on the same folder: same ids, same vectors
    ref_dir = embed_to_dir(ImageSource(root, image_size=64).open(),
                           ImageEmbedder(image_size=64, batch_size=3).load(), tmp_path / "ref", progress=False)
    ref = load_pool_dir(ref_dir)
    assert ids.tolist() == ref.ids.tolist()
    np.testing.assert_allclose(X[:], ref.embeddings, atol=2e-5)

    # resumable per shard: a lost shard is embedded again, the finished ones are kept
    before = os.stat(out / "shard-00001.npy").st_mtime_ns
    for f in ("shard-00002.npy", "shard-00002.ids.npy", "manifest.json"):
        (out / f).unlink()
    dist.embed_images(root, out, image_size=64, batch_size=3, shard_rows=4)
    assert os.stat(out / "shard-00001.npy").st_mtime_ns == before
    np.testing.assert_allclose(load_embeddings(out)[0][:], ref.embeddings, atol=2e-5)
    with pytest.raises(ValidationError, match="with these settings"):
        dist.embed_images(root, out, image_size=96, shard_rows=4)


def test_embed_images_cli_over_ray(ray_session, tmp_path, capsys):
    from datascout.cli import main

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"broken")
    assert main(["embed", "images", str(root), "--out", str(tmp_path / "o"), "--ray", "--quiet"]) == 2
    assert "every one of the 1 images was skipped" in capsys.readouterr().err
    assert main(["embed", "images", str(root), "--out", str(tmp_path / "p"), "--ray",
                 "--labels-from-folders"]) == 2
    assert "--labels-from-folders is not available with --ray" in capsys.readouterr().err


def test_embed_text_command_on_ray(ray_session, texts_csv, tmp_path, capsys):
    """``datascout embed text --ray`` once Ray is up: the shard directory embed_text writes."""
    from datascout.cli import main

    out = tmp_path / "cli.shards"
    assert main(["embed", "text", str(texts_csv), "--out", str(out), "--ray", "--shard-rows", "12",
                 "--batch-size", "5", "--quiet"]) == 0
    assert "wrote 24 x 384 float32 in 2 shards" in capsys.readouterr().out
    ref = dist.embed_text(texts_csv, tmp_path / "lib.shards", batch_size=5, shard_rows=12)
    X, ids = load_embeddings(out)
    np.testing.assert_allclose(X[:], load_embeddings(ref)[0][:], atol=1e-6)
    assert ids.tolist() == [f"q{i:02d}" for i in range(24)]
    assert main(["embed", "text", str(texts_csv), "--out", str(out), "--ray", "--chunk-size", "4"]) == 2
    assert "--chunk-size does not apply with --ray" in capsys.readouterr().err
