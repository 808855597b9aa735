"""Offline data set loaders, and the messages they give when the data is not installed."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest

from datascout import datasets
from datascout.datasets import Dataset, cache_dir, load
from datascout.files import file_sha256
from datascout.exceptions import MissingDependencyError, ValidationError


def test_digits():
    ds = load("digits")
    assert ds.data.shape == (1797, 64) and ds.data.dtype == np.float32
    assert ds.kind == "vectors" and ds.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(np.unique(ds.labels), np.arange(10))


def test_fashion_mnist(fashion_ds):
    ds = fashion_ds
    assert ds.data.shape == (70_000, 28, 28) and ds.data.dtype == np.uint8
    assert ds.kind == "images" and len(ds.classes) == 10 and ds.classes[9] == "Ankle boot"
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, 7000))


def test_fortunes():
    try:
        ds = load("fortunes")
    except MissingDependencyError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))
    assert ds.kind == "text" and len(ds.data) == len(ds.labels) == len(ds.ids) > 10_000
    assert len(ds.classes) >= 20
    assert len(np.unique(ds.ids)) == len(ds.ids)
    counts = np.bincount(ds.labels, minlength=len(ds.classes))
    assert counts.min() >= 1 and counts.min() / counts.sum() < 0.01  # rare classes exist
    assert all(isinstance(t, str) and t and "\n%\n" not in t for t in ds.data[:200])
    assert ds.ids[0].startswith(ds.classes[ds.labels[0]] + ":")


def test_letter():
    try:
        ds = load("letter")
    except MissingDependencyError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))
    assert ds.data.shape == (20_000, 16) and ds.data.dtype == np.float32
    assert ds.classes == [chr(ord("A") + i) for i in range(26)]
    counts = np.bincount(ds.labels, minlength=26)
    assert counts[:3].tolist() == [789, 766, 736]  # UCI's published class counts for A, B, C
    assert counts.sum() == 20_000
    assert ds.data.min() >= 0 and ds.data.max() <= 15  # integer features 0..15


def _mlbench(name):
    try:
        return load(name)
    except MissingDependencyError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))


def test_satellite():
    ds = _mlbench("satellite")
    assert ds.data.shape == (6435, 36) and ds.data.dtype == np.float32 and ds.kind == "vectors"
    assert ds.classes == ["red soil", "cotton crop", "grey soil", "damp grey soil",
                          "vegetation stubble", "very damp grey soil"]
    # the class sizes of UCI's sat.doc (training + test sets)
    assert np.bincount(ds.labels).tolist() == [1072 + 461, 479 + 224, 961 + 397, 415 + 211,
                                                470 + 237, 1038 + 470]
    assert ds.data.min() >= 0 and ds.data.max() <= 255  # 8-bit multispectral values


def test_shuttle():
    ds = _mlbench("shuttle")
    assert ds.data.shape == (58_000, 9) and ds.data.dtype == np.float32 and ds.kind == "vectors"
    assert ds.classes == ["Rad.Flow", "Fpv.Close", "Fpv.Open", "High", "Bypass", "Bpv.Close", "Bpv.Open"]
    counts = np.bincount(ds.labels)
    assert counts.sum() == 43_500 + 14_500  # UCI's training and test sets
    assert counts[0] / counts.sum() > 0.78 and counts[[1, 5, 6]].tolist() == [50, 10, 13]  # rare classes


def test_unknown_dataset():
    with pytest.raises(ValidationError, match="unknown data set 'mnist': expected one of fortunes, fashion-mnist"):
        load("mnist")


def test_one_table_of_data_sets_feeds_the_loader_the_pools_and_the_command(capsys):
    from datascout.cli import main
    from datascout.datasets import DATASETS
    from datascout.embed import embed_dataset

    assert main(["datasets", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == list(DATASETS)
    assert DATASETS["digits"].installed() and load("digits").kind == DATASETS["digits"].kind
    with pytest.raises(ValidationError, match="unknown data set 'mnist'"):
        embed_dataset("mnist")
    with pytest.raises(SystemExit) as info:  # argparse refuses it, from the same table
        main(["datasets", "embed", "mnist"])
    assert info.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err


def test_missing_fashion_mnist_says_what_to_install(tmp_path):
    with pytest.raises(MissingDependencyError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path)


def test_missing_fortunes_says_what_to_install(tmp_path):
    with pytest.raises(MissingDependencyError, match="apt-get install fortunes"):
        datasets.load_fortunes(tmp_path / "absent")
    with pytest.raises(MissingDependencyError, match="no fortunes found"):
        datasets.load_fortunes(tmp_path)  # exists but empty


def test_missing_letter_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASCOUT_MLBENCH", str(tmp_path / "mlbench"))
    monkeypatch.setattr(datasets, "SYSTEM_MLBENCH", tmp_path / "nowhere")
    with pytest.raises(MissingDependencyError) as info:
        load("letter")
    msg = str(info.value)
    assert "apt-get download r-cran-mlbench" in msg
    assert f"dpkg -x r-cran-mlbench_*.deb {tmp_path / 'mlbench'}'" in msg
    assert "pip install rdata" in msg and "\n" not in msg


def test_letter_without_rdata_says_what_to_install(monkeypatch):
    try:
        datasets._mlbench_rda("LetterRecognition.rda")
    except MissingDependencyError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))
    monkeypatch.setitem(sys.modules, "rdata", None)  # import rdata -> ImportError
    with pytest.raises(MissingDependencyError, match="pip install rdata"):
        load("letter")


def test_pixel_embeddings_are_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    small = Dataset("fashion-mnist", rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, 300), list(datasets.FASHION_MNIST_CLASSES), "images")
    monkeypatch.setattr(datasets, "load_fashion_mnist", lambda: small)
    monkeypatch.setenv("DATASCOUT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    emb, ds = datasets.fashion_mnist_pixel_embeddings(8)
    assert emb.shape == (300, 8) and emb.dtype == np.float32 and ds is small
    cached = tmp_path / "fashion-mnist-pca8-rs0.npy"
    np.testing.assert_array_equal(np.load(cached), emb)
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary left

    def no_pca(*a, **k):  # the second call must come from the cache
        raise AssertionError("recomputed")

    import sklearn.decomposition

    monkeypatch.setattr(sklearn.decomposition, "PCA", no_pca)
    again, _ = datasets.fashion_mnist_pixel_embeddings(8)
    np.testing.assert_array_equal(again, emb)
    # PCA of the pixels: the first component carries the most variance
    v = emb.var(axis=0)
    assert np.all(np.diff(v) <= 1e-3)


def test_file_sha256(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    data = np.random.default_rng(0).bytes(3_000_000)
    big.write_bytes(data)
    assert file_sha256(big, chunk=1 << 16) == hashlib.sha256(data).hexdigest()
