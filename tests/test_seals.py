"""SEALS: kNN graph against brute force, persistence and reuse, the candidate pool (exact ids,
incremental growth, holdout), density references and the index CLI."""

import json

import numpy as np
import pytest

from datascout.cli import main
from datascout.exceptions import IndexMismatchError, ValidationError
from datascout.index import SimilarityIndex
from datascout.pool import normalize_rows
from datascout.loop import ActiveLearner
from datascout.seals import CandidatePool, KNNGraph, build_or_load_graph, find_graph, graph_dir
from datascout.simulate import SimulationConfig, simulate


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(n=1500, d=16, n_clusters=12, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d))
    lab = rng.integers(0, n_clusters, n)
    return (centers[lab] + noise * rng.normal(size=(n, d))).astype(np.float32), lab


def brute_knn(X, k):
    """Exact k nearest neighbours by cosine, self excluded (the reference)."""
    Xn = normalize_rows(X)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    nb = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return nb, np.take_along_axis(S, nb, axis=1)


@pytest.fixture(scope="module")
def pool():
    X, lab = clustered()
    return X, lab, KNNGraph.build(X, 10, "Flat")


def test_graph_matches_brute_force(pool):
    X, _, g = pool
    nb, sims = brute_knn(X, 10)
    assert g.neighbors.shape == (len(X), 10)
    assert not (g.neighbors == np.arange(len(X))[:, None]).any()  # self excluded
    np.testing.assert_allclose(g.similarities, sims, atol=1e-5)
    same = (g.neighbors == nb).mean()
    assert same > 0.99  # identical up to float ties


def test_hnsw_graph_recall(pool):
    X, _, _ = pool
    g = KNNGraph.build(X, 10, "HNSW32", batch_rows=300)
    nb, _ = brute_knn(X, 10)
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(g.neighbors, nb))
    assert hits / nb.size >= 0.95


def test_graph_built_into_a_folder_is_whole_or_absent(tmp_path, pool, monkeypatch):
    """``build(out_dir=...)`` writes the same graph as in memory; a failure partway leaves an
    existing folder as it was and no staging folder behind."""
    X, _, g = pool
    out = tmp_path / "graph"
    on_disk = KNNGraph.build(X, 10, "Flat", batch_rows=400, out_dir=out)
    assert isinstance(on_disk.neighbors, np.memmap)
    np.testing.assert_array_equal(on_disk.neighbors, g.neighbors)
    np.testing.assert_allclose(on_disk.similarities, g.similarities, atol=1e-6)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    calls = {"n": 0}
    search = SimilarityIndex.search

    def failing_search(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return search(self, *args, **kwargs)

    monkeypatch.setattr(SimilarityIndex, "search", failing_search)
    with pytest.raises(RuntimeError, match="disk full"):
        KNNGraph.build(X[::-1].copy(), 10, "Flat", batch_rows=400, out_dir=out)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["graph"]


def test_graph_save_load_memory_mapped_and_reused(tmp_path, pool):
    X, _, _ = pool
    path = tmp_path / "emb.npy"
    np.save(path, X)
    g1 = build_or_load_graph(np.load(path, mmap_mode="r"), path, "Flat", 10)
    d = graph_dir(path, "Flat", 10)
    assert d.is_dir() and isinstance(g1.neighbors, np.memmap)
    assert json.loads((d / "graph.json").read_text())["k"] == 10
    stamp = (d / "neighbors.npy").stat().st_mtime_ns
    g2 = build_or_load_graph(X, path, "Flat", 8)  # a saved graph with a larger k is reused
    assert (d / "neighbors.npy").stat().st_mtime_ns == stamp
    assert isinstance(g2.neighbors, np.memmap)
    np.testing.assert_array_equal(g2.neighbors, g1.neighbors)
    # other embeddings of the same shape must not reuse it
    Y = X[::-1].copy()
    np.save(path, Y)
    g3 = build_or_load_graph(Y, path, "Flat", 10)
    assert not np.array_equal(np.asarray(g3.neighbors), np.asarray(g1.neighbors))
    with pytest.raises(IndexMismatchError, match="1500 rows but the pool has 10"):
        KNNGraph.load(d, expect_n=10)
    with pytest.raises(ValidationError, match="expected a kNN graph"):
        KNNGraph.load(tmp_path / "nothing")


def test_a_saved_graph_is_reused_only_for_the_very_same_embeddings(tmp_path, pool):
    X, _, _ = pool
    path = tmp_path / "emb[v2].npy"  # glob characters in the name must not hide the graph
    np.save(path, X)
    g1 = build_or_load_graph(X, path, "Flat", 10)
    d = graph_dir(path, "Flat", 10)
    assert find_graph(X, path, "Flat", 10) == d
    # one row changed, anywhere (the old fingerprint sampled 64 rows and missed most edits)
    Y = X.copy()
    Y[777] = X[3]
    np.save(path, Y)
    assert find_graph(Y, path, "Flat", 10) is None
    g2 = build_or_load_graph(Y, path, "Flat", 10)
    assert 3 in np.asarray(g2.neighbors[777]) and 3 not in np.asarray(g1.neighbors[777])
    # a folder that lost a file is not a graph: it is built anew, not loaded and crashed on
    (d / "similarities.npy").unlink()
    assert find_graph(Y, path, "Flat", 10) is None
    with pytest.raises(ValidationError, match="lacks similarities.npy"):
        KNNGraph.load(d)
    g3 = build_or_load_graph(Y, path, "Flat", 10)
    np.testing.assert_array_equal(np.asarray(g3.neighbors), np.asarray(g2.neighbors))


def reference_candidates(nb, labeled, blocked=()):
    labeled = np.asarray(sorted(set(labeled)), dtype=np.int64)
    c = set(nb[labeled].ravel().tolist()) - set(labeled.tolist()) - set(blocked)
    return np.asarray(sorted(c), dtype=np.int64)


class RecordingArray(np.ndarray):
    """An array that records which rows are read through fancy indexing."""

    def __getitem__(self, item):
        if isinstance(item, np.ndarray) and item.dtype.kind in "iu":
            self.reads.append(np.asarray(item).copy())
        return np.asarray(super().__getitem__(item))


def start(X, g=None, k=5, *, blocked=(), explore=0, index=None):
    """A candidate set as a learner holds it: the labels array (-2 = held out) is the caller's."""
    labels = np.full(len(X), -1, dtype=np.int64)
    labels[np.asarray(blocked, dtype=np.int64)] = -2
    return CandidatePool(X, graph=g, index=index, k=k, explore=explore).start(labels), labels


def label(cs, labels, new):
    """Record labels (as the learner does first), then tell the candidate set."""
    new = np.unique(np.asarray(new, dtype=np.int64))
    labels[new] = 0
    return cs.add_labeled(new)


def test_candidate_pool_incremental_and_exact(pool):
    X, _, g = pool
    rec = X.view(RecordingArray)
    rec.reads = []
    rng = np.random.default_rng(1)
    labeled, blocked = [], rng.choice(len(X), 100, replace=False).tolist()
    cs, labels = start(rec, g, 5, blocked=blocked)
    nb = np.asarray(g.neighbors)[:, :5]
    for step in range(6):
        free = np.setdiff1d(np.arange(len(X)), np.r_[labeled, blocked].astype(int))
        new = rng.choice(free, 40, replace=False)
        before = set(cs.positions.tolist())
        rec.reads = []
        added = label(cs, labels, new)
        labeled += new.tolist()
        ref = reference_candidates(nb, labeled, blocked)
        np.testing.assert_array_equal(cs.positions, ref)
        assert len(cs) == len(ref)
        # the pool rows read: the new candidates (copied into the buffer) and the newly labeled
        # items that were candidates (their unit vectors leave C's sum); O(new labels * k)
        read = np.concatenate(rec.reads) if rec.reads else np.empty(0, int)
        left = np.intersect1d(new, np.fromiter(before, dtype=np.int64))
        np.testing.assert_array_equal(np.sort(read), np.sort(np.r_[sorted(set(ref) - before), left]))
        assert added == len(set(ref) - before)
        view = cs.view()
        np.testing.assert_array_equal(view.embeddings, X[view.positions])  # rows align with positions
        np.testing.assert_array_equal(np.sort(view.positions[~view.excluded]), ref)
        np.testing.assert_allclose(view.norms, np.linalg.norm(X[view.positions], axis=1), rtol=1e-6)
        for a in (view.embeddings, view.positions, view.excluded, view.norms):
            assert not a.flags.writeable  # one read-only view per round


def test_reading_positions_or_a_view_changes_nothing(pool):
    """Reading ``positions`` or taking a view has no side effect: views taken in any order agree."""
    X, _, g = pool
    cs, labels = start(X, g, 10, explore=20)
    label(cs, labels, np.arange(0, 40))
    first = cs.positions.copy()
    v1 = cs.view(np.random.default_rng(5))
    _ = cs.positions
    v2 = cs.view(np.random.default_rng(5))
    np.testing.assert_array_equal(v1.positions, v2.positions)
    np.testing.assert_array_equal(v1.norms, v2.norms)
    assert v1.explored == v2.explored == 20 and len(v2.norms) == len(v2.positions)
    np.testing.assert_array_equal(cs.positions, first)


def test_the_learner_leaves_the_candidate_pool_it_was_given_unchanged(pool):
    X, lab, g = pool
    cp = CandidatePool(X, graph=g, k=10)
    before = dict(vars(cp))
    n_classes = int(lab.max()) + 1
    a = ActiveLearner(X, n_classes, "entropy", candidates=cp, random_state=0)
    b = ActiveLearner(X, n_classes, "entropy", candidates=cp, random_state=0)  # one pool, two learners
    a.teach(np.arange(30), lab[:30])
    assert vars(cp) == before
    assert len(b.candidates_) == 0 and len(a.candidates_) > 0
    b.teach(np.arange(30), lab[:30])
    np.testing.assert_array_equal(a.query(10), b.query(10))


def test_on_the_fly_index_matches_graph(pool):
    X, _, g = pool
    a, la = start(X, g, 7)
    b, lb = start(X, index=SimilarityIndex("Flat").build(X), k=7)
    for batch in (np.arange(0, 30), np.arange(500, 540)):
        label(a, la, batch)
        label(b, lb, batch)
    np.testing.assert_array_equal(a.positions, b.positions)
    view = b.view()
    np.testing.assert_array_equal(view.embeddings, X[view.positions])


def test_candidate_pool_errors(pool):
    X, _, g = pool
    labels = np.full(len(X), -1)
    with pytest.raises(ValidationError, match="needs a kNN graph or a similarity index"):
        CandidatePool(X).start(labels)
    with pytest.raises(ValidationError, match="k=11 is larger than the graph's k=10"):
        CandidatePool(X, graph=g, k=11).start(labels)
    with pytest.raises(IndexMismatchError, match="1500 rows but the pool has 100"):
        CandidatePool(X[:100], graph=g, k=5).start(labels[:100])
    with pytest.raises(IndexMismatchError, match="1500 rows but the pool has 100"):
        ActiveLearner(X[:100], 2, "entropy", candidates=CandidatePool(X[:100], graph=g, k=5))
    with pytest.raises(ValidationError, match="needs a kNN graph"):
        ActiveLearner(X, 2, "density", density_reference="neighbors",
                      candidates=CandidatePool(X, index=SimilarityIndex("Flat").build(X), k=5))


def test_label_remove_requery_no_misalignment(pool):
    """Query, label, and re-query with SEALS and a holdout: every chosen id is the exact top of
    the model's scores over the reference candidate set (computed independently)."""
    X, lab, g = pool
    y = (lab == 3).astype(np.int64)
    holdout = np.arange(0, len(X), 5)  # every 5th item is a test item
    cp = CandidatePool(X, graph=g, k=10)
    learner = ActiveLearner(X, 2, "most-likely-positive", candidates=cp, holdout=holdout, random_state=0)
    pos_items = np.setdiff1d(np.flatnonzero(y == 1), holdout)[:3]
    neg_items = np.setdiff1d(np.flatnonzero(y == 0), holdout)[:20]
    seed = np.r_[pos_items, neg_items]
    learner.teach(seed, y[seed])
    labeled = list(seed)
    nb = np.asarray(g.neighbors)
    for _ in range(5):
        ids = learner.query(15)
        ref = reference_candidates(nb, labeled, holdout)
        assert learner.last_query_["candidates"] == len(ref)
        p = learner.model_.predict_proba(X[ref])[:, 1]
        expected = ref[np.argsort(-p, kind="stable")[:15]]
        assert set(ids.tolist()) == set(expected.tolist())
        assert not np.isin(ids, holdout).any() and not np.isin(ids, labeled).any()
        learner.teach(ids, y[ids])
        labeled += ids.tolist()
    assert (learner.labels_[holdout] == -2).all()


def test_candidate_density_direction_follows_c_through_labels_and_blocks(pool):
    """The maintained sum behind density_direction equals the brute-force mean unit vector of C
    after every change: neighbours joining, candidates labeled, held-out items never joining."""
    X, _, g = pool
    Xn = normalize_rows(X).astype(np.float64)
    cs, labels = start(X, g, 10, blocked=np.arange(0, len(X), 9))
    rng = np.random.default_rng(3)
    free = lambda: np.flatnonzero(labels == -1)  # noqa: E731
    for step in range(6):
        label(cs, labels, rng.choice(free(), 15, replace=False))
        if step % 2:
            label(cs, labels, cs.positions[:7])  # some current candidates leave C
        assert not np.isin(cs.positions, np.arange(0, len(X), 9)).any()
        np.testing.assert_allclose(cs.density_direction(), Xn[cs.positions].mean(axis=0), atol=1e-5)


def test_explore_adds_fresh_random_unseen_items(pool):
    """explore=m: each view holds C plus m distinct random items that are neither candidates,
    labeled nor blocked, with their own embeddings; they never join C; redrawn each round."""
    X, _, g = pool
    nb = np.asarray(g.neighbors)
    blocked = np.arange(0, len(X), 7)
    cs, labels = start(X, g, 10, blocked=blocked, explore=50)
    labeled = [3, 400, 900]
    label(cs, labels, labeled)
    ref = reference_candidates(nb, labeled, blocked)
    rng = np.random.default_rng(0)
    v = cs.view(rng)
    pos, exclude = v.positions, v.excluded
    assert v.explored == 50 and len(pos) == len(ref) + 50
    extra = pos[~exclude][~np.isin(pos[~exclude], ref)]
    assert len(extra) == 50 and len(np.unique(extra)) == 50
    assert not np.isin(extra, np.r_[blocked, labeled]).any()
    np.testing.assert_array_equal(v.embeddings[~exclude], X[pos[~exclude]])
    np.testing.assert_allclose(v.norms, np.linalg.norm(X[pos], axis=1), rtol=1e-6)
    np.testing.assert_array_equal(cs.positions, ref)  # C itself is unchanged
    v2 = cs.view(rng)
    extra2 = np.setdiff1d(v2.positions[~v2.excluded], ref)
    assert len(extra2) == 50 and not np.array_equal(np.sort(extra), np.sort(extra2))
    v0 = cs.view()  # no generator: the candidate set alone
    np.testing.assert_array_equal(np.sort(v0.positions), ref)
    assert v0.explored == 0


def test_explore_is_uniform_and_stops_at_the_unseen_count():
    X = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
    g = KNNGraph.build(X, 3, "Flat")
    cs, labels = start(X, g, 3, blocked=np.arange(20), explore=10)  # 40 unseen items remain
    rng = np.random.default_rng(0)
    counts = np.zeros(60)
    for _ in range(2000):
        counts[cs.view(rng).positions] += 1
    assert counts[:20].sum() == 0
    # each of the 40 is drawn with probability 10/40: 500 expected, binomial sd ~19
    assert np.abs(counts[20:] - 500).max() < 100
    n_unseen = 40 - 1 - len(reference_candidates(np.asarray(g.neighbors), [20], np.arange(20)))
    big, big_labels = start(X, g, 3, blocked=np.arange(20), explore=1000)
    label(big, big_labels, [20])  # labels one, its 3 neighbours become candidates
    v = big.view(rng)
    assert v.explored == n_unseen
    assert len(np.unique(v.positions[~v.excluded])) == n_unseen + len(big.positions)
    with pytest.raises(ValidationError, match="explore must be an integer >= 0"):
        CandidatePool(X, graph=g, k=3, explore=-1).start(labels)


def test_explore_learner_never_returns_labeled_or_held_out(pool):
    X, lab, g = pool
    y = (lab == 3).astype(np.int64)
    holdout = np.arange(0, len(X), 5)
    learner = ActiveLearner(X, 2, "entropy", candidates=CandidatePool(X, graph=g, k=10, explore=200),
                            holdout=holdout, random_state=0)
    seed = np.r_[np.setdiff1d(np.flatnonzero(y == 1), holdout)[:3], np.setdiff1d(np.flatnonzero(y == 0), holdout)[:20]]
    learner.teach(seed, y[seed])
    seen = set(seed.tolist())
    for _ in range(4):
        ids = learner.query(20)
        assert learner.last_query_["explored"] == 200
        assert not np.isin(ids, holdout).any() and not (set(ids.tolist()) & seen)
        learner.teach(ids, y[ids])
        seen |= set(ids.tolist())


def test_density_references(pool):
    X, _, g = pool
    Xn = normalize_rows(X).astype(np.float64)
    holdout = np.arange(100)
    seed = np.arange(100, 160)
    y = (np.arange(len(X)) % 2).astype(np.int64)

    def learner(ref):
        al = ActiveLearner(X, 2, "density", candidates=CandidatePool(X, graph=g, k=10),
                           density_reference=ref, holdout=holdout, random_state=0)
        al.teach(seed, y[seed])
        return al, al.candidates_

    al, cp = learner("pool")
    unl = np.setdiff1d(np.arange(len(X)), np.r_[holdout, seed])
    np.testing.assert_allclose(al._density_direction(), Xn[unl].mean(axis=0), atol=1e-5)
    al, cp = learner("candidates")
    np.testing.assert_allclose(al._density_direction(), Xn[cp.positions].mean(axis=0), atol=1e-5)
    al, cp = learner("neighbors")
    assert al._density_direction() is None
    c = cp.positions[:25]
    got = cp.neighbor_similarity(c)
    for i, item in enumerate(c):  # by hand: mean similarity over unlabeled, non-held-out neighbours
        keep = [j for j in range(10) if g.neighbors[item, j] not in set(seed) | set(holdout)]
        want = np.mean(g.similarities[item, keep]) if keep else 0.0
        assert got[i] == pytest.approx(want, abs=1e-5)
    ids = al.query(10)
    assert np.isin(ids, cp.positions).all()
    assert learner("pool")[0].query(10).shape == (10,)


@pytest.mark.parametrize("ref", ["pool", "candidates"])
def test_seals_density_query_matches_brute_force(pool, ref):
    """A SEALS density query (norms from the candidate buffer, explore rows included) returns the
    top items of entropy x max(cos to the reference mean, 0), computed here from scratch."""
    X, lab, g = pool
    y = (lab == 3).astype(np.int64)
    Xn = normalize_rows(X).astype(np.float64)
    al = ActiveLearner(X, 2, "density", candidates=CandidatePool(X, graph=g, k=10, explore=30),
                       density_reference=ref, random_state=0)
    cp = al.candidates_
    seed = np.r_[np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[:30]]
    al.teach(seed, y[seed])
    al.fit()
    if ref == "pool":
        direction = Xn[al.labels_ == -1].mean(axis=0)
    else:
        direction = Xn[cp.positions].mean(axis=0)
    state = al.rng.bit_generator.state
    v = al.view()  # the rows the query will see (same draw below)
    rows = v.positions[~v.excluded]
    al.rng.bit_generator.state = state
    ids = al.query(8)
    p = al.model_.predict_proba(X[rows])
    ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    cos = Xn[rows] @ direction  # mean cosine to the reference set
    score = ent * np.maximum(cos, 0.0)
    expected = rows[np.argsort(-score, kind="stable")[:8]]
    assert set(ids.tolist()) == set(expected.tolist())


def test_simulate_seals_on_digits_reports_candidates(tmp_path, digits):
    X, lab = digits
    path = tmp_path / "digits.npy"
    np.save(path, X.astype(np.float32))
    cfg = SimulationConfig(strategy="entropy", positive_class=4, seals=True, k=10, index="HNSW32",
                           initial_positives=3, initial_negatives=20, batch_size=20, rounds=4, seed=0)
    res = simulate(np.load(path, mmap_mode="r"), lab.astype(np.int64), cfg, embeddings_path=path)
    cands = [r["candidates"] for r in res["rounds"][1:]]
    assert all(0 < c < res["n_pool"] for c in cands)
    d = graph_dir(path, "HNSW32", 10)
    assert d.is_dir()
    # the saved graph is the exact kNN graph of the digits (HNSW at this size is exact)
    g = KNNGraph.load(d)
    np.testing.assert_allclose(g.similarities, brute_knn(X.astype(np.float32), 10)[1], atol=1e-4)


def test_cli_index_build(tmp_path, capsys):
    X, _ = clustered(n=800)
    path = tmp_path / "E.npy"
    np.save(path, X)
    assert main(["index", "build", "--embeddings", str(path), "--index", "HNSW32", "--k", "10",
                 "--no-progress", "--recall-sample", "200"]) == 0
    out = capsys.readouterr().out
    assert "peak memory" in out and "recall@10" in out
    g = KNNGraph.load(graph_dir(path, "HNSW32", 10))
    np.testing.assert_allclose(g.similarities, brute_knn(X, 10)[1], atol=1e-4)
    assert main(["index", "build", "--embeddings", str(path), "--k", "10", "--index", "HNSW32"]) == 0
    assert "already exists" in capsys.readouterr().out
    for bad, msg in ([["--index", "HNSW"], "unsupported index"], [["--k", "800"], "--k must be below"],
                     [["--k", "0"], "--k must be >= 1"]):
        assert main(["index", "build", "--embeddings", str(path), *bad]) == 2
        assert msg in capsys.readouterr().err
    assert main(["index", "build", "--embeddings", str(tmp_path / "none.npy")]) == 2
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name,ref,norms,sums", [
    ("entropy", "pool", False, False), ("density", "pool", True, False),
    ("density", "candidates", True, True), ("density", "neighbors", False, False)])
def test_a_learner_keeps_only_what_its_strategy_reads(pool, name, ref, norms, sums):
    """Norms and the unit-vector sum of C cost O(new candidates * d) a round: kept only for density."""
    X, _, g = pool
    al = ActiveLearner(X, 2, name, candidates=CandidatePool(X, graph=g, k=10), density_reference=ref)
    al.teach(np.arange(10), np.arange(10) % 2)
    assert (al.candidates_.norms, al.candidates_.unit_sum) == (norms, sums)
    assert (al.view().norms is not None) == norms
