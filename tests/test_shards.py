"""Sharded pool format: a directory of shards read as one pool (no Ray needed)."""

import json
import pickle

import numpy as np
import pytest

from datascout.exceptions import ValidationError
from datascout.io import load_embeddings
from datascout.pool import Pool, check_embeddings
from datascout.seals import KNNGraph
from datascout.shards import ShardedArray, open_shards, shard_bounds, write_shards


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


@pytest.fixture()
def sharded(tmp_path, digits):
    ids = np.array([f"item-{i}" for i in range(len(digits))])
    path = write_shards(tmp_path / "pool.shards", digits, ids, shard_rows=500)
    return path, digits, ids


def test_shard_bounds_by_hand():
    assert shard_bounds(10, num_shards=3).tolist() == [0, 3, 7, 10]
    assert shard_bounds(10, shard_rows=4).tolist() == [0, 4, 8, 10]
    assert shard_bounds(5, num_shards=5).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValidationError, match="num_shards must be in 1..5"):
        shard_bounds(5, num_shards=6)
    with pytest.raises(ValidationError, match="exactly one"):
        shard_bounds(5)


def test_layout_and_manifest(sharded):
    path, X, _ = sharded
    m = json.loads((path / "manifest.json").read_text())
    assert m["n"] == 1797 and m["dim"] == 64 and m["dtype"] == "float32"
    assert [s["rows"] for s in m["shards"]] == [500, 500, 500, 297]
    np.testing.assert_array_equal(np.load(path / "shard-00001.npy"), X[500:1000])
    assert not list(path.parent.glob(".pool.shards.tmp*"))


def test_view_indexing_equals_concatenated_array(sharded):
    path, X, ids = sharded
    V, got_ids = open_shards(path)
    assert V.shape == X.shape and V.dtype == X.dtype and len(V) == 1797 and V.num_shards == 4
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(np.asarray(V), X)
    for key in [slice(None), slice(490, 1010), slice(499, 500), slice(1500, 1797), slice(10, 5),
                slice(3, 1700, 97), slice(None, None, -250), 0, 499, 500, -1, 1796]:
        np.testing.assert_array_equal(V[key], X[key])
    rng = np.random.default_rng(0)
    fancy = rng.integers(-1797, 1797, size=300)  # unsorted, repeated, negative
    np.testing.assert_array_equal(V[fancy], X[fancy])
    np.testing.assert_array_equal(V[fancy.reshape(20, 15)], X[fancy.reshape(20, 15)])
    mask = rng.random(1797) < 0.3
    np.testing.assert_array_equal(V[mask], X[mask])
    np.testing.assert_array_equal(V[fancy, 5], X[fancy, 5])
    np.testing.assert_array_equal(V[10:600, 2:9], X[10:600, 2:9])
    np.testing.assert_array_equal(V[np.array([], dtype=np.int64)], X[np.array([], dtype=np.int64)])
    with pytest.raises(IndexError):
        V[1797]
    with pytest.raises(IndexError):
        V[np.array([0, 5000])]
    with pytest.raises(IndexError):
        V[np.ones(10, dtype=bool)]


def test_view_is_lazy_and_pickles_as_a_path(sharded):
    path, X, _ = sharded
    V = ShardedArray(path)
    assert all(isinstance(V.shard(i), np.memmap) for i in range(V.num_shards))
    blob = pickle.dumps(V)
    assert len(blob) < 1000  # the path, not the data
    W = pickle.loads(blob)
    np.testing.assert_array_equal(W[[3, 1500]], X[[3, 1500]])


def test_load_embeddings_opens_a_shard_directory(sharded):
    path, X, ids = sharded
    V, got = load_embeddings(path)
    assert isinstance(V, ShardedArray)
    np.testing.assert_array_equal(got, ids)
    pool = Pool(V, got)
    assert check_embeddings(V) is V
    np.testing.assert_array_equal(pool.positions(["item-501", "item-2"]), [501, 2])


def test_library_on_view_equals_library_on_array(sharded):
    path, X, _ = sharded
    V = ShardedArray(path)
    g_view = KNNGraph.build(V, 5, "Flat")
    g_arr = KNNGraph.build(X, 5, "Flat")
    np.testing.assert_array_equal(g_view.neighbors, g_arr.neighbors)
    np.testing.assert_allclose(g_view.similarities, g_arr.similarities, rtol=0, atol=1e-6)


def test_parquet_shards(tmp_path, digits):
    pytest.importorskip("pyarrow")
    X = digits[:300].astype(np.float64)
    path = write_shards(tmp_path / "p.shards", X, np.arange(300) + 1000, num_shards=3, fmt="parquet")
    assert sorted(f.name for f in path.iterdir()) == [
        "manifest.json", "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    V, ids = load_embeddings(path)
    np.testing.assert_array_equal(ids, np.arange(300) + 1000)
    assert V.dtype == np.float32  # Parquet pools are read as float32, and the manifest says so
    np.testing.assert_array_equal(V[[299, 0, 150, 99, 100]], X[[299, 0, 150, 99, 100]])
    np.testing.assert_array_equal(V[95:205], X[95:205])


def test_pool_without_ids(tmp_path, digits):
    path = write_shards(tmp_path / "n.shards", digits[:100], num_shards=2)
    V, ids = load_embeddings(path)
    assert ids is None
    np.testing.assert_array_equal(V[40:60], digits[40:60])


def test_bad_directories_fail_with_one_clear_message(tmp_path, digits):
    with pytest.raises(ValidationError, match="expected a file"):
        load_embeddings(tmp_path)  # a folder without a manifest is no pool
    with pytest.raises(ValidationError, match="expected a shard manifest"):
        ShardedArray(tmp_path)
    path = write_shards(tmp_path / "a.shards", digits[:100], num_shards=2)
    with pytest.raises(ValidationError, match="already exists"):
        write_shards(path, digits[:100], num_shards=2)
    m = json.loads((path / "manifest.json").read_text())

    def broken(**change):
        bad = dict(m, **change)
        (path / "manifest.json").write_text(json.dumps(bad))
        return path

    with pytest.raises(ValidationError, match="n=99 but its shards hold 100 rows"):
        ShardedArray(broken(n=99))
    with pytest.raises(ValidationError, match="dtype 'int8'"):
        ShardedArray(broken(dtype="int8"))
    with pytest.raises(ValidationError, match="lists no shards"):
        ShardedArray(broken(shards=[]))
    shards = [dict(s) for s in m["shards"]]
    shards[1]["rows"], shards[0]["rows"] = 40, 60
    with pytest.raises(ValidationError, match=r"shard 'shard-00000.npy' has shape \(50, 64\) but the manifest says \(60, 64\)"):
        ShardedArray(broken(shards=shards))
    broken()
    (path / "shard-00001.npy").unlink()
    with pytest.raises(ValidationError, match="shard 1 .* is missing"):
        load_embeddings(path)


def test_a_folder_with_another_manifest_is_not_a_shard_directory(tmp_path):
    from datascout.shards import is_shard_dir

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "datascout-pool", "count": 3}))
    assert not is_shard_dir(tmp_path)
    with pytest.raises(ValidationError, match="expected a file"):
        load_embeddings(tmp_path)


def test_simulate_command_reads_a_shard_directory_as_one_pool(tmp_path, digits):
    from sklearn.datasets import load_digits

    from datascout.cli import main

    X = digits / 16.0
    y = load_digits().target
    write_shards(tmp_path / "E.shards", X, num_shards=3)
    np.save(tmp_path / "E.npy", X)
    np.save(tmp_path / "y.npy", y)
    results = []
    for name in ("E.shards", "E.npy"):
        out = tmp_path / f"run-{name}.json"
        assert main(["simulate", "--embeddings", str(tmp_path / name), "--labels", str(tmp_path / "y.npy"),
                     "--seals", "--k", "10", "--index", "Flat", "--initial", "50", "--batch-size", "20",
                     "--rounds", "2", "--no-plot", "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["aulc"] == results[1]["aulc"]
    assert [r["labeled"] for r in results[0]["rounds"]] == [r["labeled"] for r in results[1]["rounds"]]
