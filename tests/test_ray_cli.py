"""``datascout index build --ray``: the same graph file as the single-machine command."""

import sys

import numpy as np
import pytest

from datascout import ray as dist
from datascout.cli import main
from datascout.seals import KNNGraph


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    dist.init_ray(num_cpus=2)  # kept for the other Ray test modules; Ray stops at exit
    return ray


@pytest.fixture()
def emb(tmp_path):
    from sklearn.datasets import load_digits

    X = load_digits().data[:900].astype(np.float32)
    X += np.random.default_rng(1).normal(0, 0.01, X.shape).astype(np.float32)
    path = tmp_path / "E.npy"
    np.save(path, X)
    return path, X


def test_ray_flags_without_ray_or_with_bad_values_exit_2(emb, capsys, monkeypatch):
    path, _ = emb
    assert main(["index", "build", "--embeddings", str(path), "--num-shards", "2"]) == 2
    assert "--num-shards needs --ray" in capsys.readouterr().err
    assert main(["index", "build", "--embeddings", str(path), "--ray", "--num-shards", "0"]) == 2
    assert "--num-shards must be >= 1 but is 0" in capsys.readouterr().err
    assert main(["index", "build", "--embeddings", str(path), "--ray", "--num-shards", "2",
                 "--batch-rows", "0"]) == 2
    assert "--batch-rows must be >= 1 but is 0" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["index", "build", "--embeddings", str(path), "--ray", "--num-shards", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'datascout[ray]'" in err


def test_shards_are_rewritten_when_the_embeddings_change(emb):
    from datascout.shards import ShardedArray

    path, X = emb
    out = dist.shards_for(path, 2)
    np.testing.assert_array_equal(ShardedArray(out)[0:900], X)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert dist.shards_for(path, 2) == out and (out / "manifest.json").stat().st_mtime_ns == stamp
    Y = X.copy()
    Y[5] += 1.0  # same shape and dtype, other content
    np.save(path, Y)
    np.testing.assert_array_equal(ShardedArray(dist.shards_for(path, 2))[0:900], Y)


def test_single_file_needs_num_shards(ray_session, emb, capsys):
    path, _ = emb
    assert main(["index", "build", "--embeddings", str(path), "--ray", "--k", "5"]) == 2
    assert "pass --num-shards N" in capsys.readouterr().err


@pytest.mark.parametrize("factory", ["IVF8,Flat", "HNSW16"])
def test_index_build_ray_writes_the_single_machine_graph(ray_session, emb, tmp_path, factory, capsys):
    path, X = emb
    slug = factory.replace(",", "-")
    args = ["index", "build", "--embeddings", str(path), "--index", factory, "--k", "6", "--no-progress",
            "--nprobe", "8"]
    assert main(args) == 0
    single = KNNGraph.load(tmp_path / f"E.knn-{slug}-k6", mmap=False)
    assert main(args + ["--force", "--ray", "--num-shards", "3", "--num-tasks", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 shards" in out
    assert (tmp_path / "E.shards" / "manifest.json").is_file()
    ray_graph = KNNGraph.load(tmp_path / f"E.knn-{slug}-k6")
    np.testing.assert_array_equal(ray_graph.neighbors, single.neighbors)
    np.testing.assert_allclose(ray_graph.similarities, single.similarities, atol=1e-6)
    assert ray_graph.meta["fingerprint"] == single.meta["fingerprint"]
    # the shard directory itself is accepted too, and the graph lands beside it
    assert main(["index", "build", "--embeddings", str(tmp_path / "E.shards"), "--index", factory,
                 "--k", "6", "--nprobe", "8", "--ray"]) == 0
    np.testing.assert_array_equal(KNNGraph.load(tmp_path / f"E.knn-{slug}-k6").neighbors, single.neighbors)


def test_unreachable_ray_address_fails_fast_with_one_line(emb, capsys):
    path, _ = emb
    args = ["index", "build", "--embeddings", str(path), "--ray", "--num-shards", "2", "--k", "5"]
    assert main(args + ["--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect to the Ray cluster at '127.0.0.1:1'" in err
    assert main(args + ["--ray-address", "nonsense"]) == 2
    assert "a Ray address must be 'auto', 'host:port' or 'ray://host:port' but is 'nonsense'" in capsys.readouterr().err
    assert not (path.parent / "E.shards").exists()  # nothing written before the cluster is reached


def test_embed_overwrite_keeps_the_folder_when_the_cluster_is_unreachable(tmp_path, capsys):
    """Nothing is removed before the step that can fail (reaching Ray) has succeeded."""
    pytest.importorskip("ray")
    (tmp_path / "quotes.csv").write_text("id,text\n1,a quote\n")
    out = tmp_path / "pool.shards"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    for kind in ("text", "images"):
        args = ["embed", kind, str(tmp_path / "quotes.csv"), "--out", str(out), "--ray", "--overwrite",
                "--ray-address", "127.0.0.1:1"]
        assert main(args) == 2
        assert "cannot connect to the Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err
        assert (out / "keep.txt").read_text() == "earlier work"
