"""Offline data set loaders, and the messages they give when the data is not installed."""

from __future__ import annotations

import gzip
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


DEBIAN_SNAPSHOT = __import__("pathlib").Path(__file__).parent / "data" / "debian"


def _snapshot_paragraphs():
    """(package, section, has Tag) of the snapshot's Packages file, read without the loader."""
    import gzip
    import re

    text = gzip.open(DEBIAN_SNAPSHOT / "Packages.gz", "rt", encoding="utf-8").read()
    out = []
    for para in text.strip().split("\n\n"):
        name = re.search(r"^Package: (\S+)$", para, re.M).group(1)
        section = re.search(r"^Section: (\S+)$", para, re.M).group(1)
        out.append((name, section, re.search(r"^Tag: ", para, re.M) is not None))
    return out


def test_debian_snapshot_sections_and_tags():
    paras = _snapshot_paragraphs()
    assert len(paras) == 311
    pk = datasets.load_debian_packages(DEBIAN_SNAPSHOT, min_items=5)
    # kept: tagged packages of sections with >= 5 tagged packages in the snapshot, oldlibs dropped
    counts = {}
    for _, s, tagged in paras:
        counts[s] = counts.get(s, 0) + tagged
    keep = {s for s, c in counts.items() if c >= 5 and s != "oldlibs"}
    expected = [n for n, s, t in paras if t and s in keep]
    assert pk.ids.tolist() == expected and len(expected) == 270 and len(keep) == 45
    assert pk.info["untagged"] == 5 and pk.info["no_translation"] == 0 and pk.info["duplicates"] == 0
    assert pk.info["dropped_sections"]["oldlibs"] == 3 and "games" not in pk.info["dropped_sections"]
    i = pk.ids.tolist().index("abe-data")
    assert pk.sections[i] == "games"
    assert pk.tags[i] == ("game::arcade", "role::app-data", "use::gameplaying")
    assert pk.texts[i] == (
        "side-scrolling game named \"Abe's Amazing Adventure\" -- data\n"
        "A scrolling, platform-jumping, key-collecting, ancient pyramid exploring game,\n"
        "vaguely in the style of similar games for the Commodore+4. The game is\n"
        "intended to show young people all the cool games they missed.\n"
        "\n"
        "This package contains the architecture independent data files.")
    j = pk.ids.tolist().index("abiword-common")
    assert pk.sections[j] == "editors" and len(pk.tags[j]) == 11 and pk.tags[j][-1] == "x11::application"
    # with a lower floor the 3-package sections come back, oldlibs never does
    low = datasets.load_debian_packages(DEBIAN_SNAPSHOT, min_items=3)
    assert "oldlibs" not in set(low.sections.tolist()) and len(low.ids) == 270 + 3 * 11

    ds = datasets.load_debian(DEBIAN_SNAPSHOT, min_items=5)
    assert ds.kind == "text" and ds.classes == sorted(keep) and ds.ids.tolist() == expected
    assert [ds.classes[c] for c in ds.labels] == pk.sections.tolist()
    assert ds.info["tags"] == pk.tags and np.bincount(ds.labels).tolist() == [6] * 45


def test_debian_parsing_by_hand(tmp_path):
    (tmp_path / "Packages").write_text(
        "Package: a\nDescription: short a\nDescription-md5: m1\nTag: role::program,\n use::editing\n"
        "Section: contrib/games\n\n"
        "Package: b\nDescription: short b\nDescription-md5: m2\nTag: role::shared-lib\nSection: games\n\n"
        "Package: a\nDescription: again\nDescription-md5: m9\nTag: x::y\nSection: games\n\n"
        "Package: c\nDescription: short c\nSection: games\n\n"
        "Package: d\nDescription: short d\nDescription-md5: m4\nTag: role::program\nSection: oldlibs\n\n"
        "Package: e\nDescription: short e\nDescription-md5: m5\nTag: role::program\nSection: non-free/games\n")
    with gzip.open(tmp_path / "Translation-en.gz", "wt") as fh:
        fh.write("Package: a\nDescription-md5: m1\nDescription-en: short a\n line one\n .\n line two\n\n"
                 "Package: a\nDescription-md5: other\nDescription-en: not this one\n\n"
                 "Package: e\nDescription-md5: m5\nDescription-en: short e\n long e\n")
    pk = datasets.load_debian_packages(tmp_path, min_items=1)
    assert pk.ids.tolist() == ["a", "b", "e"]
    assert pk.sections.tolist() == ["games", "games", "games"]  # contrib/ and non-free/ stripped
    assert pk.texts == ["short a\nline one\n\nline two", "short b", "short e\nlong e"]
    assert pk.tags == [("role::program", "use::editing"), ("role::shared-lib",), ("role::program",)]
    assert pk.info == {"untagged": 1, "duplicates": 1, "no_translation": 1,
                       "dropped_sections": {"oldlibs": 1}, "min_items": 1}
    assert datasets.load_debian_packages(tmp_path, min_items=3).ids.tolist() == ["a", "b", "e"]
    with pytest.raises(ValidationError, match=r"no section has at least min_items=4 tagged packages \(the largest has 3\)"):
        datasets.load_debian_packages(tmp_path, min_items=4)
    with pytest.raises(ValidationError, match="min_items must be >= 1 but is 0"):
        datasets.load_debian_packages(tmp_path, min_items=0)


def test_missing_debian_lists_say_what_to_run(tmp_path, monkeypatch):
    with pytest.raises(MissingDependencyError, match="must hold a Packages file and a Translation-en file but holds 0 and 0"):
        datasets.load_debian_packages(tmp_path)
    monkeypatch.delenv("DATASCOUT_DEBIAN", raising=False)
    monkeypatch.setattr(datasets, "APT_LISTS", tmp_path)
    with pytest.raises(MissingDependencyError, match=r"run 'apt-get update -o Acquire::Languages=en'"):
        load("debian")
    assert not datasets.DATASETS["debian"].installed()
    monkeypatch.setenv("DATASCOUT_DEBIAN", str(DEBIAN_SNAPSHOT))
    assert datasets.DATASETS["debian"].installed()
    assert datasets.load_debian_packages(min_items=5).ids.tolist() == \
        datasets.load_debian_packages(DEBIAN_SNAPSHOT, min_items=5).ids.tolist()
    with pytest.raises(ValidationError, match="expected 'Field: value' but got 'no colon here'"):
        datasets.parse_deb822("Package: a\nno colon here\n")
