"""Pool validation and the loaders: .npy (memory-mapped), .npz, Parquet, labels .npy / CSV."""

from __future__ import annotations

import numpy as np
import pytest

from datascout.exceptions import ValidationError
from datascout.io import atomic_write_text, load_embeddings, load_labels
from datascout.loop import ActiveLearner
from datascout.pool import Pool, check_embeddings, iter_row_chunks, row_max, row_sum


def test_iter_row_chunks_covers_everything():
    assert [(s.start, s.stop) for s in iter_row_chunks(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert list(iter_row_chunks(0, 4)) == []


@pytest.mark.parametrize("cols", [3, 10, 33, 100])
def test_row_reductions_match_numpy(cols):
    a = np.random.default_rng(cols).normal(size=(50, cols)).astype(np.float32)
    np.testing.assert_array_equal(row_max(a), a.max(axis=1))
    np.testing.assert_allclose(row_sum(a), a.sum(axis=1), rtol=1e-5, atol=1e-5)


BAD_EMBEDDINGS = [
    ("nan", lambda: np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32), "row 1 contains NaN or inf"),
    ("inf", lambda: np.array([[0.0, 1.0], [1.0, 2.0], [np.inf, 0.0]], np.float32), "row 2 contains NaN or inf"),
    ("1-D", lambda: np.zeros(5, np.float32), r"2-D array .* has 1 dimension\(s\) with shape \(5,\)"),
    ("3-D", lambda: np.zeros((2, 3, 4), np.float32), r"has 3 dimension\(s\) with shape \(2, 3, 4\)"),
    ("empty", lambda: np.zeros((0, 8), np.float32), r"empty: expected at least 1 row, got shape \(0, 8\)"),
    ("no columns", lambda: np.zeros((3, 0), np.float32), "0 columns"),
    ("integers", lambda: np.zeros((3, 2), np.int64), "float16, float32 or float64 but has dtype int64"),
]


@pytest.mark.parametrize("case", BAD_EMBEDDINGS, ids=[c[0] for c in BAD_EMBEDDINGS])
def test_bad_embeddings(case):
    _, make, match = case
    with pytest.raises(ValidationError, match=match):
        check_embeddings(make())
    with pytest.raises(ValidationError, match=match):
        Pool(make())


def test_nan_in_a_memory_map_is_found(tmp_path):
    X = np.ones((70_000, 2), np.float32)
    X[68_123, 1] = np.nan  # in the second chunk
    np.save(tmp_path / "e.npy", X)
    mm, _ = load_embeddings(tmp_path / "e.npy")
    with pytest.raises(ValidationError, match="row 68123"):
        check_embeddings(mm)


def test_pool_rejects_mismatched_lengths_and_bad_ids_or_labels():
    X = np.zeros((4, 2), np.float32)
    with pytest.raises(ValidationError, match="ids has 3 entries but embeddings has 4 rows"):
        Pool(X, ids=[1, 2, 3])
    with pytest.raises(ValidationError, match="labels has 5 entries but embeddings has 4 rows"):
        Pool(X, labels=[0, 1, 0, 1, 0])
    with pytest.raises(ValidationError, match="ids must be unique but 7 occurs 2 times"):
        Pool(X, ids=[7, 8, 7, 9])
    with pytest.raises(ValidationError, match="ids must be unique but 'a' occurs 3 times"):
        Pool(X, ids=["a", "b", "a", "a"])
    with pytest.raises(ValidationError, match="integers or strings"):
        Pool(X, ids=[0.5, 1.5, 2.5, 3.5])
    with pytest.raises(ValidationError, match="integer class ids"):
        Pool(X, labels=[0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValidationError, match="contain -3"):
        Pool(X, labels=[0, -3, 0, 1])


def test_pool_positions_and_ids_round_trip():
    X = np.zeros((4, 2), np.float32)
    p = Pool(X, ids=["d", "c", "b", "a"])
    np.testing.assert_array_equal(p.positions(["a", "d"]), [3, 0])
    np.testing.assert_array_equal(p.ids_at([1, 2]), ["c", "b"])
    q = Pool(X)
    np.testing.assert_array_equal(q.positions([3, 0]), [3, 0])
    with pytest.raises(ValidationError, match="unknown id 4: expected ids in 0..3"):
        q.positions([4])
    with pytest.raises(ValidationError, match="integer positions"):
        q.positions(["a"])


def test_npy_is_memory_mapped_not_loaded(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    np.save(tmp_path / "e.npy", X)
    mm, ids = load_embeddings(tmp_path / "e.npy")
    assert ids is None
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    assert check_embeddings(mm) is mm  # validation never copies
    pool = Pool(mm)
    assert pool.embeddings is mm
    L = ActiveLearner(pool, 2, "entropy", random_state=0)
    L.teach([0, 1, 2, 3], [0, 1, 0, 1])
    assert len(L.query(5)) == 5
    assert isinstance(L.pool.embeddings, np.memmap)
    loaded, _ = load_embeddings(tmp_path / "e.npy", mmap=False)
    assert not isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, X)


def test_npz_with_and_without_ids(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "a.npz", embeddings=X, ids=np.array(["w", "x", "y", "z"]))
    e, ids = load_embeddings(tmp_path / "a.npz")
    np.testing.assert_array_equal(e, X)
    np.testing.assert_array_equal(ids, ["w", "x", "y", "z"])
    np.savez(tmp_path / "b.npz", vectors=X)
    e, ids = load_embeddings(tmp_path / "b.npz")
    np.testing.assert_array_equal(e, X)
    assert ids is None
    np.savez(tmp_path / "c.npz", a=X, b=X)
    with pytest.raises(ValidationError, match="expected one named 'embeddings'"):
        load_embeddings(tmp_path / "c.npz")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X = np.random.default_rng(1).normal(size=(5, 4))
    table = pa.table({"id": ["a", "b", "c", "d", "e"], "embedding": [list(r) for r in X]})
    pq.write_table(table, tmp_path / "e.parquet")
    e, ids = load_embeddings(tmp_path / "e.parquet")
    assert e.dtype == np.float32 and e.shape == (5, 4)
    np.testing.assert_allclose(e, X.astype(np.float32))
    np.testing.assert_array_equal(ids, ["a", "b", "c", "d", "e"])
    # fixed_size_list<float>[4], as many tools store embeddings
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float32).ravel()), 4)
    pq.write_table(pa.table({"id": np.arange(5), "embedding": fixed}), tmp_path / "f.parquet")
    e, ids = load_embeddings(tmp_path / "f.parquet")
    np.testing.assert_array_equal(e, X.astype(np.float32))
    np.testing.assert_array_equal(ids, np.arange(5))
    ragged = pa.table({"id": [1, 2], "embedding": [[1.0, 2.0], [3.0]]})
    pq.write_table(ragged, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match="vectors of one length but has lengths 1 to 2"):
        load_embeddings(tmp_path / "r.parquet")
    pq.write_table(pa.table({"id": [1], "vec": [[1.0]]}), tmp_path / "n.parquet")
    with pytest.raises(ValidationError, match="expected a vector column 'embedding'"):
        load_embeddings(tmp_path / "n.parquet")


def test_embedding_file_errors(tmp_path):
    with pytest.raises(ValidationError, match="expected a file at"):
        load_embeddings(tmp_path / "missing.npy")
    (tmp_path / "e.txt").write_text("1 2 3")
    with pytest.raises(ValidationError, match="expected .npy, .npz or .parquet"):
        load_embeddings(tmp_path / "e.txt")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValidationError, match="cannot read"):
        load_embeddings(tmp_path / "bad.npy")


def test_labels_npy(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 2, -1, 1]))
    y, classes = load_labels(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, [0, 2, -1, 1])
    assert classes is None and y.dtype == np.int64
    np.save(tmp_path / "f.npy", np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(load_labels(tmp_path / "f.npy")[0], [0, 1, 2])
    np.save(tmp_path / "g.npy", np.array([0.0, 1.5]))
    with pytest.raises(ValidationError, match="integer class ids"):
        load_labels(tmp_path / "g.npy")
    np.save(tmp_path / "h.npy", np.zeros((2, 2), np.int64))
    with pytest.raises(ValidationError, match=r"1-D but have shape \(2, 2\)"):
        load_labels(tmp_path / "h.npy")


def test_labels_csv_names_and_ids(tmp_path):
    (tmp_path / "names.csv").write_text("label\ncat\ndog\n\ncat\n")
    y, classes = load_labels(tmp_path / "names.csv")
    assert classes == ["cat", "dog"]
    np.testing.assert_array_equal(y, [0, 1, -1, 0])
    (tmp_path / "ints.csv").write_text("label\n3\n-1\n0\n")
    y, classes = load_labels(tmp_path / "ints.csv")
    assert classes is None
    np.testing.assert_array_equal(y, [3, -1, 0])
    # id + label columns, in any order, matched to the pool's ids; absent ids stay unlabeled
    (tmp_path / "byid.csv").write_text("label,id\ndog,z\ncat,x\n")
    y, classes = load_labels(tmp_path / "byid.csv", ids=np.array(["x", "y", "z"]))
    np.testing.assert_array_equal(y, [0, -1, 1])
    y, _ = load_labels(tmp_path / "byid.csv", ids=np.array(["x", "y", "z"]), classes=["dog", "cat"])
    np.testing.assert_array_equal(y, [1, -1, 0])
    with pytest.raises(ValidationError, match="pass the pool's ids"):
        load_labels(tmp_path / "byid.csv")
    with pytest.raises(ValidationError, match="names id 'z', which is not in the pool"):
        load_labels(tmp_path / "byid.csv", ids=np.array(["x", "y"]))
    with pytest.raises(ValidationError, match="unknown class 'dog': expected one of"):
        load_labels(tmp_path / "names.csv", classes=["cat"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValidationError, match="is empty"):
        load_labels(tmp_path / "empty.csv")


def test_labels_csv_as_spreadsheets_write_it(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark, and hand-written files put a space after
    the comma: both read as the plain file does. Not UTF-8, or no label column: one-line errors."""
    ids = np.array([10, 11, 12])
    plain = "id,label\n12,dog\n10,cat\n11,cat\n"
    (tmp_path / "plain.csv").write_text(plain, encoding="utf-8")
    (tmp_path / "bom.csv").write_text(plain, encoding="utf-8-sig")
    (tmp_path / "spaced.csv").write_text("id, label\n12, dog\n10, cat\n11, cat\n", encoding="utf-8")
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    for name in ("plain.csv", "bom.csv", "spaced.csv"):
        y, classes = load_labels(tmp_path / name, ids=ids)
        assert classes == ["cat", "dog"], name
        np.testing.assert_array_equal(y, [0, 0, 1], err_msg=name)
    (tmp_path / "latin1.csv").write_bytes("id,label\n10,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValidationError, match="latin1.csv must be UTF-8 text"):
        load_labels(tmp_path / "latin1.csv", ids=ids)
    (tmp_path / "nolabel.csv").write_text("id,klass\n10,cat\n11,dog\n12,cat\n")
    with pytest.raises(ValidationError, match=r"has columns \['id', 'klass'\]: expected a 'label' column"):
        load_labels(tmp_path / "nolabel.csv", ids=ids)


def test_atomic_write_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "sub", "x")  # the rename fails: the temporary is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_labels_csv_short_rows(tmp_path):
    (tmp_path / "short.csv").write_text("id,label\na,cat\nb\n")
    with pytest.raises(ValidationError, match="line 3 of .* has 1 field"):
        load_labels(tmp_path / "short.csv", ids=np.array(["a", "b"]))
    (tmp_path / "blank.csv").write_text("id,label\na,cat\n\nb,dog\n")
    y, classes = load_labels(tmp_path / "blank.csv", ids=np.array(["b", "a"]))
    np.testing.assert_array_equal(y, [1, 0])


def test_staged_dir_appears_whole_or_not_at_all(tmp_path):
    from datascout.io import staged_dir

    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(final) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["out"]  # no tmp left behind
    assert (final / "old.txt").read_text() == "old"
    with staged_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["out"]


def test_row_helpers_by_hand():
    """The one helper each for norms, unit rows, their sum and softmax."""
    from datascout.pool import normalize_rows, row_norms, softmax, unit_rows_sum

    X = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(row_norms(X), [5.0, 1e-12, 2.0])
    np.testing.assert_allclose(normalize_rows(X), [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(unit_rows_sum(X, [0, 2]), [0.6, 1.8], rtol=1e-6)
    np.testing.assert_array_equal(unit_rows_sum(X, []), [0.0, 0.0])
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]], dtype=np.float32)
    np.testing.assert_allclose(softmax(logits), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    softmax(logits, out=logits)  # in place
    np.testing.assert_allclose(logits, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
