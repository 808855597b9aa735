"""The embedding pipeline without a neural model: sources, pool layout, resumption, bad input,
the CLI. Vectors pass through, so every expected value is computable by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datascout.cli import main
from datascout.embed import (ArraySource, ImageSource, TextSource, VectorSource, embed_to_dir,
                             load_pool_dir)
from datascout.exceptions import ValidationError
from datascout.io import load_embeddings


def _vectors(n=23, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# --- sources ----------------------------------------------------------------------------------

def test_text_sources_ids_and_empty_texts(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('id,text,other\n7,"hello, world",x\n8,,y\n10,  ,z\n11,bye,w\n')
    s = TextSource(csv_path).open()
    assert s.ids_.dtype == np.int64 and s.ids_.tolist() == [7, 8, 10, 11]
    items, reasons = next(s.chunks(0, 10))
    assert items == ["hello, world", None, None, "bye"]
    assert reasons == {1: "empty text", 2: "empty text"}
    # resuming mid-file streams from that position
    assert next(s.chunks(3, 10))[0] == ["bye"]

    jl = tmp_path / "t.jsonl"
    jl.write_text('{"key": "a", "body": "x"}\n\n{"key": "b"}\n{"key": "c", "body": "z"}\n')
    s = TextSource(jl, id_column="key", text_column="body").open()
    assert s.ids_.tolist() == ["a", "b", "c"]
    items, reasons = next(s.chunks(0, 2))
    assert items == ["x", None] and reasons == {1: "missing text"}

    txt = tmp_path / "t.txt"
    txt.write_text("first\n\nthird\n")
    s = TextSource(txt).open()
    assert s.ids_.tolist() == [1, 2, 3]  # line numbers from 1
    assert next(s.chunks(0, 5)) == (["first", None, "third"], {1: "empty text"})


def test_ids_beyond_int64_stay_text():
    from datascout.embed.sources import _id_array

    assert _id_array(["1", "22", "-3"], "x").tolist() == [1, 22, -3]
    assert _id_array(["007", "8"], "x").tolist() == ["007", "8"]  # not canonical integers
    big = _id_array(["12345678901234567890", "5"], "x")
    assert big.dtype.kind == "U" and big.tolist() == ["12345678901234567890", "5"]
    assert _id_array([2**63, 1], "x").tolist() == [str(2**63), "1"]


def test_parquet_text_source(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["u", "v", "w"], "text": ["one", None, "three"]}), path)
    s = TextSource(path).open()
    assert s.ids_.tolist() == ["u", "v", "w"]
    assert next(s.chunks(1, 5)) == ([None, "three"], {0: "missing text"})
    with pytest.raises(ValidationError, match="expected a column 'body'"):
        TextSource(path, text_column="body").open()


def test_text_source_rejects_duplicates_and_missing_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,text\na,x\nb,y\na,z\n")
    with pytest.raises(ValidationError, match=r"ids must be unique.*'a' occurs 2 times"):
        TextSource(p).open()
    with pytest.raises(ValidationError, match=r"has columns \['id', 'text'\]: expected a column 'body'"):
        TextSource(p, text_column="body").open()
    with pytest.raises(ValidationError, match="none exists"):
        TextSource(tmp_path / "missing.csv").open()


def _png(path, value, size=(9, 7)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_image_folder_labels_and_bad_files(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "cat" / "a.png", 10)
    _png(root / "dog" / "b.png", 200)
    (root / "dog" / "broken.png").write_bytes(b"not an image at all")
    s = ImageSource(root, labels_from_folders=True, image_size=4).open()
    assert s.ids_.tolist() == ["cat/a.png", "dog/b.png", "dog/broken.png"]
    assert s.classes_ == ["cat", "dog"] and s.labels_.tolist() == [0, 1, 1]
    items, reasons = next(s.chunks(0, 10))
    assert items[0].shape == (4, 4, 3) and (items[0] == 10).all() and (items[1] == 200).all()
    assert list(reasons) == [2] and reasons[2].startswith("unreadable image")
    # a list file: paths relative to it; a missing file is skipped, not fatal
    lst = tmp_path / "list.txt"
    lst.write_text("imgs/cat/a.png\nimgs/nowhere.png\n")
    s = ImageSource(lst, image_size=4).open()
    assert s.ids_.tolist() == ["imgs/cat/a.png", "imgs/nowhere.png"]
    assert next(s.chunks(0, 10))[1] == {1: "missing file"}
    _png(tmp_path / "flat" / "x.png", 1)
    with pytest.raises(ValidationError, match="class sub-folder"):
        ImageSource(tmp_path / "flat", labels_from_folders=True).open()


# --- the pool folder ---------------------------------------------------------------------------

def test_vectors_pass_through_normalised_and_float16(tmp_path):
    X = _vectors()
    np.save(tmp_path / "x.npy", X)
    out = embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "pool", dtype="float16",
                       normalize=True, chunk_size=4, progress=False)
    emb, ids, labels, manifest = load_pool_dir(out)
    expected = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert isinstance(emb, np.memmap) and emb.dtype == np.float16 and emb.shape == X.shape
    np.testing.assert_allclose(emb.astype(np.float32), expected, atol=1e-3)
    assert ids.tolist() == list(range(len(X))) and labels is None
    assert manifest["count"] == len(X) and manifest["dimension"] == 5 and manifest["dtype"] == "float16"
    assert manifest["normalization"] == "l2" and manifest["model"] == "identity"
    assert manifest["source"]["sha256"] == __import__("hashlib").sha256((tmp_path / "x.npy").read_bytes()).hexdigest()
    assert (out / "skipped.jsonl").read_text() == ""
    assert not (out / ".partial").exists()
    # the core loader reads the file as is
    again, _ = load_embeddings(out / "embeddings.npy")
    np.testing.assert_array_equal(again, emb)


def test_skipped_items_are_left_out_and_recorded(tmp_path):
    texts = ["a", "", "c", "   ", "e"]
    fake = np.arange(10, dtype=np.float32).reshape(5, 2)

    class Lookup:  # a deterministic "model": the row of the text's letter
        kind, dim_, name_ = "text", 2, "lookup"

        def config(self):
            return {"model": "lookup"}

        def encode(self, batch):
            return fake[["abcde".index(t) for t in batch]]

    src = ArraySource(texts, "text", ids=["i0", "i1", "i2", "i3", "i4"], labels=[0, 1, 0, 1, 1],
                      classes=["x", "y"], describe={"kind": "text", "sha256": "s"})
    out = embed_to_dir(src, Lookup(), tmp_path / "p", normalize=False, chunk_size=2, progress=False)
    emb, ids, labels, manifest = load_pool_dir(out)
    np.testing.assert_array_equal(emb, fake[[0, 2, 4]])
    assert ids.tolist() == ["i0", "i2", "i4"] and labels.tolist() == [0, 0, 1]
    assert manifest["classes"] == ["x", "y"] and manifest["skipped"] == 2 and manifest["count"] == 3
    recs = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    assert recs == [{"id": "i1", "position": 1, "reason": "empty text"},
                    {"id": "i3", "position": 3, "reason": "empty text"}]


def test_resume_after_a_kill_gives_the_same_files(tmp_path):
    X = _vectors(n=50, d=3, seed=1)
    X[17] = np.nan  # validated: vectors must be finite
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(ValidationError, match="row 17 contains NaN"):
        VectorSource(tmp_path / "bad.npy").open()
    X[17] = 1.0
    np.save(tmp_path / "x.npy", X)

    clean = embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "clean", normalize=True,
                         chunk_size=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "resumed", normalize=True,
                     chunk_size=8, progress=False, _stop_after_chunks=3)
    state = json.loads((tmp_path / "resumed" / ".partial" / "state.json").read_text())
    assert state["done"] == 24 and not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(ValidationError, match="unfinished run"):
        load_pool_dir(tmp_path / "resumed")

    seen = []

    class Spy(VectorSource):  # records where the second run starts
        def chunks(self, start, size):
            seen.append(start)
            return super().chunks(start, size)

    resumed = embed_to_dir(Spy(tmp_path / "x.npy"), None, tmp_path / "resumed", normalize=True,
                           chunk_size=8, progress=False)
    assert seen == [24]
    for name in ("embeddings.npy", "ids.npy", "skipped.jsonl", "manifest.json"):
        assert (clean / name).read_bytes() == (resumed / name).read_bytes(), name


def test_resume_after_a_kill_while_finishing(tmp_path, monkeypatch):
    """Interrupted after the embeddings file was moved into place but before the manifest: the
    same command finishes the pool, byte for byte as an uninterrupted run."""
    from datascout.embed import pipeline

    X = _vectors(n=30, d=4, seed=2)
    np.save(tmp_path / "x.npy", X)
    clean = embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "clean", chunk_size=8, progress=False)
    real = pipeline._save_npy

    def interrupted(path, arr):
        raise KeyboardInterrupt("killed while finishing")

    monkeypatch.setattr(pipeline, "_save_npy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "p", chunk_size=8, progress=False)
    assert (tmp_path / "p" / "embeddings.npy").is_file() and not (tmp_path / "p" / "manifest.json").exists()
    monkeypatch.setattr(pipeline, "_save_npy", real)
    done = embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "p", chunk_size=8, progress=False)
    for name in ("embeddings.npy", "ids.npy", "skipped.jsonl", "manifest.json"):
        assert (clean / name).read_bytes() == (done / name).read_bytes(), name


def test_vectors_beyond_float16_are_skipped_not_stored_as_inf(tmp_path):
    X = _vectors(n=6, d=3)
    X[2] *= 1e6  # |values| far beyond float16's 65504
    np.save(tmp_path / "x.npy", X)
    out = embed_to_dir(VectorSource(tmp_path / "x.npy"), None, tmp_path / "p", dtype="float16",
                       normalize=False, chunk_size=4, progress=False)
    emb, ids, _, manifest = load_pool_dir(out)
    assert np.isfinite(emb).all() and ids.tolist() == [0, 1, 3, 4, 5] and manifest["skipped"] == 1
    np.testing.assert_allclose(emb.astype(np.float32), X[[0, 1, 3, 4, 5]], rtol=1e-3)
    rec = json.loads((out / "skipped.jsonl").read_text())
    assert rec["position"] == 2 and "does not fit float16" in rec["reason"]


def test_existing_pool_with_other_settings_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", _vectors())
    out = tmp_path / "p"
    embed_to_dir(VectorSource(tmp_path / "x.npy"), None, out, progress=False, normalize=False)
    before = (out / "embeddings.npy").read_bytes()
    # same settings again: nothing to do, nothing changes
    embed_to_dir(VectorSource(tmp_path / "x.npy"), None, out, progress=False, normalize=False)
    assert (out / "embeddings.npy").read_bytes() == before
    with pytest.raises(ValidationError, match="other input or settings"):
        embed_to_dir(VectorSource(tmp_path / "x.npy"), None, out, progress=False, normalize=True)
    embed_to_dir(VectorSource(tmp_path / "x.npy"), None, out, progress=False, normalize=True,
                 overwrite=True)
    assert load_pool_dir(out).manifest["normalization"] == "l2"


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_vectors_and_user_errors(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X = _vectors(n=6, d=3)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(6)], "vec": [r.tolist() for r in X]}),
                   tmp_path / "v.parquet")
    rc = main(["embed", "vectors", str(tmp_path / "v.parquet"), "--id-column", "key", "--vector-column",
               "vec", "--out", str(tmp_path / "pool"), "--quiet"])
    assert rc == 0
    emb, ids, _, _ = load_pool_dir(tmp_path / "pool")
    np.testing.assert_allclose(emb, X, rtol=1e-6)
    assert ids.tolist() == [f"k{i}" for i in range(6)]

    (tmp_path / "dup.csv").write_text("id,text\n1,a\n1,b\n")
    _png(tmp_path / "imgs" / "a.png", 3)
    cases = [
        (["embed", "text", str(tmp_path / "dup.csv")], "ids must be unique"),
        (["embed", "text", str(tmp_path / "dup.csv"), "--text-column", "body"], "expected a column 'body'"),
        (["embed", "text", str(tmp_path / "nothing.csv")], "none exists"),
        (["embed", "text", str(tmp_path / "v.parquet"), "--id-column", "key", "--text-column", "vec",
          "--model", str(tmp_path / "no-model")], "is not installed"),
        (["embed", "images", str(tmp_path / "v.parquet")], "is not text"),
        (["embed", "images", str(tmp_path / "imgs"), "--model", "resnet9000"], "is not installed"),
    ]
    _all_refused(cases, tmp_path, capsys)


def test_cli_datasets_embed_digits(tmp_path, capsys):
    from sklearn.datasets import load_digits

    out = tmp_path / "digits"
    assert main(["datasets", "embed", "digits", "--out", str(out), "--quiet"]) == 0
    assert "wrote 1797 x 64 float32" in capsys.readouterr().out
    emb, ids, labels, manifest = load_pool_dir(out)
    d = load_digits()
    np.testing.assert_array_equal(emb, d.data.astype(np.float32))
    np.testing.assert_array_equal(labels, d.target)
    assert ids.tolist() == list(range(1797)) and manifest["classes"] == [str(i) for i in range(10)]
    assert json.loads((out / "classes.json").read_text()) == manifest["classes"]
    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("fortunes", "fashion-mnist", "letter", "digits"))


def test_cli_vectors_chunk_size_and_id_column_are_never_silently_replaced(tmp_path, capsys):
    """--chunk-size 0 is refused (not read as the default); a named id column must exist (the
    ids are not silently the row numbers); without --id-column a Parquet 'id' column is used."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X = _vectors(n=5, d=3)
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(5)], "embedding": [r.tolist() for r in X]}),
                   tmp_path / "v.parquet")
    np.save(tmp_path / "v.npy", X)
    cases = [
        (["embed", "vectors", str(tmp_path / "v.npy"), "--chunk-size", "0"], "--chunk-size must be >= 1 but is 0"),
        (["embed", "vectors", str(tmp_path / "v.npy"), "--chunk-size", "-2"], "--chunk-size must be >= 1 but is -2"),
        (["embed", "vectors", str(tmp_path / "v.parquet"), "--id-column", "nope"],
         "has columns ['id', 'embedding']: expected an id column 'nope'"),
        (["embed", "vectors", str(tmp_path / "v.npy"), "--id-column", "key"], "an id column applies to Parquet"),
    ]
    _all_refused(cases, tmp_path, capsys)
    assert main(["embed", "vectors", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert load_pool_dir(tmp_path / "p").ids.tolist() == [f"r{i}" for i in range(5)]
    assert main(["embed", "vectors", str(tmp_path / "v.npy"), "--out", str(tmp_path / "q"), "--quiet",
                 "--chunk-size", "2"]) == 0
    assert load_pool_dir(tmp_path / "q").manifest["settings"]["chunk_size"] == 2


def _all_refused(cases, tmp_path, capsys):
    """Each command exits 2 with its one-line message, refused before any work."""
    for argv, message in cases:
        capsys.readouterr()
        out = tmp_path / "never"
        assert main(argv + ["--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()
