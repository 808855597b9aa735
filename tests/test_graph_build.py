"""The block graph builder (datascout.graph_build, ``KNNGraph.build(index="blocks")``): recall
against exact search on seeded clustered data, hand-checked tiny pools, memory-mapped input,
bounded memory, and the saved graph through ``KNNGraph.load``'s checks and the CLI."""

import tracemalloc

import numpy as np
import pytest

from datascout import graph_build
from datascout.cli import main
from datascout.exceptions import ValidationError
from datascout.graph_build import BlockPlan, build_block_graph, merge_offers, plan
from datascout.index import recall_at_k
from datascout.pool import normalize_rows
from datascout.seals import GraphCorruptError, KNNGraph, build_or_load_graph, find_graph, graph_dir

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(n=4000, d=32, n_clusters=40, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d))
    lab = rng.integers(0, n_clusters, n)
    return (centers[lab] + noise * rng.normal(size=(n, d))).astype(np.float32)


def brute(X, k):
    """Exact k nearest neighbours by cosine, self excluded (the reference)."""
    Xn = normalize_rows(X)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    top = np.argpartition(-S, k, axis=1)[:, :k]
    nb = np.take_along_axis(top, np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable"), axis=1)
    return nb, np.take_along_axis(S, nb, axis=1)


def check_rows(g, X):
    """Every row: no self, no repeat, best first, similarities the exact cosines of its neighbours."""
    nb = np.asarray(g.neighbors, dtype=np.int64)
    assert not (nb == np.arange(len(X))[:, None]).any()
    srt = np.sort(nb, axis=1)
    assert not ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any()
    assert (np.diff(g.similarities, axis=1) <= 1e-6).all()
    Xn = normalize_rows(X)
    exact = np.einsum("ikd,id->ik", Xn[np.maximum(nb, 0)], Xn)
    np.testing.assert_allclose(g.similarities[nb >= 0], exact[nb >= 0], atol=1e-5)


@pytest.mark.parametrize("probe", [0, 3])
def test_blocks_recall_against_exact_search_on_clustered_data(probe):
    X = clustered()
    k = 20
    settings = plan(len(X), k, block_rows=100, search_blocks=8, probe=probe)
    assert settings.n_blocks == 40 and settings.search_rows == 800
    g = KNNGraph.build(X, k, "blocks", blocks=settings)
    nb, _ = brute(X, k)
    assert recall_at_k(np.asarray(g.neighbors, dtype=np.int64), nb) >= 0.95
    check_rows(g, X)
    rec = g.meta["blocks"]
    assert g.meta["index"] == "blocks" and rec["blocks"] == 40 and rec["probe"] == probe
    assert rec["pairs_fraction"] < 0.4, rec  # a real partition: far from all pairs


def test_reverse_edges_are_what_recovers_the_block_borders(monkeypatch):
    """Without the reverse-edge step the same partition finds fewer true neighbours."""
    X = clustered(n=2000, n_clusters=40, noise=0.8, seed=1)
    k = 20
    settings = plan(len(X), k, block_rows=100, search_blocks=2, probe=0)
    nb, _ = brute(X, k)
    with_reverse = KNNGraph.build(X, k, "blocks", blocks=settings)
    monkeypatch.setattr(graph_build, "_reverse_edges", lambda *a: 0)
    without = KNNGraph.build(X, k, "blocks", blocks=settings)
    r_with = recall_at_k(np.asarray(with_reverse.neighbors, dtype=np.int64), nb)
    r_without = recall_at_k(np.asarray(without.neighbors, dtype=np.int64), nb)
    assert with_reverse.meta["blocks"]["reverse_edges_added"] > 0
    assert r_with > r_without + 0.005


def test_neighbors_of_neighbors_round_only_improves():
    X = clustered(n=2000, n_clusters=40, noise=0.8, seed=1)
    nb, _ = brute(X, 20)
    base = plan(len(X), 20, block_rows=100, search_blocks=2, probe=0)
    refined = plan(len(X), 20, block_rows=100, search_blocks=2, probe=0, refine_rounds=1)
    g0 = KNNGraph.build(X, 20, "blocks", blocks=base)
    g1 = KNNGraph.build(X, 20, "blocks", blocks=refined)
    assert g1.meta["blocks"]["neighbor_edges_added"][0] > 0
    assert recall_at_k(np.asarray(g1.neighbors, np.int64), nb) > recall_at_k(np.asarray(g0.neighbors, np.int64), nb)
    check_rows(g1, X)


def angles(degrees):
    t = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)


def test_tiny_pool_by_hand_with_k_larger_than_a_block():
    # points at 0, 1, 3, 7, 15 degrees: gaps 1, 2, 4, 8, so no two distances tie
    X = angles([0, 1, 3, 7, 15])
    expect = [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0], [3, 2, 1]]
    deg = [0, 1, 3, 7, 15]
    settings = BlockPlan(n_blocks=2, search_rows=4, probe=0, refine_rounds=0, refine_neighbors=2, train_rows=5)
    nbs, sims = np.empty((5, 3), np.int64), np.empty((5, 3), np.float32)
    build_block_graph(X, 3, nbs, sims, settings=settings)  # blocks of 2-3 items, k + 1 = 4 rows needed
    assert nbs.tolist() == expect
    want = [[np.cos(np.radians(deg[i] - deg[j])) for j in row] for i, row in enumerate(expect)]
    np.testing.assert_allclose(sims, want, atol=1e-6)


def test_duplicates_zero_rows_and_the_smallest_pools():
    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    X = np.array([a, a, a, b, [0.0, 0.0, 0.0]], dtype=np.float32)
    g = KNNGraph.build(X, 2, "blocks")
    nb = np.asarray(g.neighbors)
    for i in range(3):  # three copies of a: each one's neighbours are the two other copies, at 1
        assert sorted(nb[i].tolist()) == sorted({0, 1, 2} - {i})
        np.testing.assert_allclose(g.similarities[i], [1, 1], atol=1e-6)
    assert set(nb[3].tolist()) <= {0, 1, 2, 4} and np.isfinite(g.similarities).all()
    np.testing.assert_allclose(g.similarities[4], [0, 0])  # the zero row: cosine 0 with everything
    # n = k + 1: every other item is a neighbour
    Y = angles([0, 10, 30])
    g = KNNGraph.build(Y, 2, "blocks")
    assert np.asarray(g.neighbors).tolist() == [[1, 2], [0, 2], [1, 0]]
    for bad_k in (3, 0):  # n <= k, k < 1
        with pytest.raises(ValidationError, match="k must be in 1..2"):
            KNNGraph.build(Y, bad_k, "blocks")
    with pytest.raises(ValidationError, match="empty"):
        KNNGraph.build(np.zeros((0, 3), np.float32), 1, "blocks")
    for bad in ({"block_rows": 0}, {"search_blocks": -1}, {"refine_rounds": 1.5}):
        with pytest.raises(ValidationError, match="must be an integer"):
            plan(100, 5, **bad)


def test_merge_offers_by_hand():
    nb = np.array([[5, 7, -1], [1, 2, 3]], dtype=np.int64)
    sims = np.array([[0.9, 0.5, -np.inf], [0.8, 0.7, 0.6]], dtype=np.float32)
    added = merge_offers(nb, sims, np.array([0, 0, 1, 1]), np.array([6, 5, 4, 9]),
                         np.array([0.7, 0.9, 0.75, 0.1], np.float32), 3)
    assert nb.tolist() == [[5, 6, 7], [1, 4, 2]]  # 5 offered again: kept once; 9 too weak
    np.testing.assert_allclose(sims, [[0.9, 0.7, 0.5], [0.8, 0.75, 0.7]])
    assert added == 2


def test_memory_mapped_and_float16_input_give_the_same_graph(tmp_path):
    X = clustered(n=2000)
    path = tmp_path / "E.npy"
    np.save(path, X)
    settings = plan(len(X), 10, block_rows=100, search_blocks=4)
    g_mem = KNNGraph.build(X, 10, "blocks", blocks=settings)
    g_map = KNNGraph.build(np.load(path, mmap_mode="r"), 10, "blocks", blocks=settings)
    np.testing.assert_array_equal(g_mem.neighbors, g_map.neighbors)
    np.save(tmp_path / "H.npy", X.astype(np.float16))
    g16 = KNNGraph.build(np.load(tmp_path / "H.npy", mmap_mode="r"), 10, "blocks", blocks=settings)
    nb, _ = brute(X, 10)
    assert recall_at_k(np.asarray(g16.neighbors, np.int64), nb) >= 0.95


def test_memory_stays_bounded_far_below_the_pool(tmp_path, monkeypatch):
    """With the reordered rows in a scratch file and small product blocks, what the builder
    allocates (tracemalloc: numpy buffers) stays a small fraction of the float32 pool."""
    n, d, k = 40000, 256, 5
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(tmp_path / "E.npy", mode="w+", dtype=np.float32, shape=(n, d))
    centers = rng.normal(size=(50, d)).astype(np.float32)
    for s in range(0, n, 4000):
        X[s: s + 4000] = centers[rng.integers(0, 50, 4000)] + rng.normal(size=(4000, d)).astype(np.float32)
    X.flush()
    X = np.load(tmp_path / "E.npy", mmap_mode="r")
    nbs = np.lib.format.open_memmap(tmp_path / "nb.npy", mode="w+", dtype=np.int32, shape=(n, k))
    sims = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32, shape=(n, k))
    monkeypatch.setattr(graph_build, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(graph_build, "PRODUCT_BYTES", 1 << 20)
    settings = plan(n, k, block_rows=400, probe=2)
    tracemalloc.start()
    try:
        build_block_graph(X, k, nbs, sims, settings=settings, scratch_dir=tmp_path, chunk_rows=2048)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    pool_bytes = n * d * 4
    assert peak < pool_bytes / 4, f"peak {peak} bytes against a {pool_bytes}-byte pool"
    assert not list(tmp_path.glob("datascout-blocks-*"))  # the scratch file is gone
    sample = np.arange(0, n, 97)
    Xn = normalize_rows(X)
    S = Xn[sample] @ Xn.T
    S[np.arange(len(sample)), sample] = -np.inf
    exact = np.argpartition(-S, k, axis=1)[:, :k]
    assert recall_at_k(np.asarray(nbs[sample], np.int64), exact) >= 0.9


def test_saved_blocks_graph_loads_checked_and_is_reused(tmp_path):
    X = clustered(n=2000)
    path = tmp_path / "E.npy"
    np.save(path, X)
    g = build_or_load_graph(np.load(path, mmap_mode="r"), path, "blocks", 10)
    d = graph_dir(path, "blocks", 10)
    assert d.name == "E.knn-blocks-k10" and sorted(p.name for p in d.iterdir()) == [
        "graph.json", "neighbors.npy", "similarities.npy"]
    loaded = KNNGraph.load(d, expect_n=len(X))
    np.testing.assert_array_equal(loaded.neighbors, g.neighbors)
    assert find_graph(X, path, "blocks", 5) == d  # a larger k serves a smaller one
    assert find_graph(X, path, "HNSW32", 10) is None  # another builder's graph is another graph
    with open(d / "similarities.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(GraphCorruptError):
        KNNGraph.load(d)


def test_cli_index_build_blocks(tmp_path, capsys):
    X = clustered(n=1000)
    path = tmp_path / "E.npy"
    np.save(path, X)
    assert main(["index", "build", "--embeddings", str(path), "--index", "blocks", "--k", "10",
                 "--block-rows", "100", "--search-blocks", "4", "--no-progress", "--recall-sample", "300"]) == 0
    out = capsys.readouterr().out
    assert "10 blocks" in out and "recall@10 against exact search on 300 items" in out
    recall = float(out.rsplit(":", 1)[1])
    assert recall >= 0.95
    g = KNNGraph.load(graph_dir(path, "blocks", 10), expect_n=len(X))
    check_rows(g, X)
    for bad, msg in ([["--index", "blockz"], "expected 'blocks' or a faiss factory string"],
                     [["--search-blocks", "0"], "--search-blocks must be >= 1 but is 0"],
                     [["--ray"], "--index blocks builds the graph in one process"]):
        assert main(["index", "build", "--embeddings", str(path), "--index", "blocks", "--force", *bad]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
