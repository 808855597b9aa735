"""Sharded work over Ray equals the single-machine result: index, kNN graph, full-pool top-b.

One local Ray session (2 CPUs) for the whole module; small shards of real data (sklearn digits).
"""

import sys

import numpy as np
import pytest

from datascout import ray as dist
from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.index import SimilarityIndex
from datascout.models import FittedModel, default_model
from datascout.pool import normalize_rows
from datascout.seals import KNNGraph
from datascout.shards import write_shards
from datascout.strategies import entropy, top_b

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    dist.init_ray(num_cpus=2)  # kept for the other Ray test modules; Ray stops at exit
    return ray


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32) + np.random.default_rng(0).normal(0, 0.01, d.data.shape).astype(np.float32)
    path = write_shards(tmp_path_factory.mktemp("ray") / "digits.shards", X, num_shards=3)
    return path, X, d.target


# --------------------------------------------------------------------------- no Ray needed


def test_missing_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'datascout\[ray\]'"):
        dist.require_ray()


def test_shard_candidates_by_hand():
    s = np.array([0.1, 0.9, 0.5, 0.5, np.nan, 0.2])
    pos, sc = dist.shard_candidates(s, 100, 3)
    # 3rd best is 0.5: both 0.5s stay (ties), with 0.9
    assert pos.tolist() == [101, 102, 103] and sc.tolist() == [0.9, 0.5, 0.5]
    pos, _ = dist.shard_candidates(s, 100, 3, exclude=[101, 7, 500])
    assert pos.tolist() == [102, 103, 105]


@pytest.mark.parametrize("seed", range(6))
def test_merged_top_b_equals_top_b_over_the_pool_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    scores = rng.integers(0, 6, n).astype(np.float64)  # heavy ties
    scores[rng.random(n) < 0.05] = np.nan
    b = int(rng.integers(1, 60))
    cuts = np.unique(np.concatenate([[0, n], rng.integers(1, n, 4)]))
    parts = [dist.shard_candidates(scores[lo:hi], lo, b) for lo, hi in zip(cuts[:-1], cuts[1:])]
    pos, sc = dist.merge_candidates(parts, b, np.random.default_rng(seed + 100))
    want = top_b(scores, b, np.random.default_rng(seed + 100))
    np.testing.assert_array_equal(pos, want)
    np.testing.assert_array_equal(sc, np.where(np.isnan(scores), -np.inf, scores)[want])


# --------------------------------------------------------------------------- index


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF8,PQ8x4", "IVF8_HNSW8,Flat", "Flat"])
def test_index_built_over_shards_is_the_single_machine_index(ray_session, pool, factory):
    path, X, _ = pool
    timings = {}
    got = dist.build_index(path, factory, train_size=800, num_tasks=4, timings=timings)
    want = SimilarityIndex(factory, train_size=800).build(X)
    assert got.ntotal_ == len(X) and set(timings) == {"train", "add", "merge"}
    # identical structure: the same bytes faiss would write
    assert np.array_equal(faiss.serialize_index(got.index_), faiss.serialize_index(want.index_))
    s1, p1 = got.search(X[:50], 10)
    s2, p2 = want.search(X[:50], 10)
    np.testing.assert_array_equal(p1, p2)


def test_hnsw_cannot_be_merged(ray_session, pool):
    with pytest.raises(ValidationError, match="faiss cannot merge HNSW"):
        dist.build_index(pool[0], "HNSW32")


def test_a_plain_array_is_refused(ray_session, pool):
    with pytest.raises(ValidationError, match="needs a shard directory"):
        dist.build_index(pool[1], "Flat")


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_graph_over_shards_equals_single_machine_graph(ray_session, pool, tmp_path, factory):
    path, X, _ = pool
    index = SimilarityIndex(factory).build(X)
    got = dist.build_graph(path, index, 8, tmp_path / "g", num_tasks=5, batch_rows=300)
    want = KNNGraph.build(X, 8, index)
    assert got.meta["n"] == len(X) and got.meta["k"] == 8 and got.meta["index"] == factory
    assert got.neighbors.dtype == want.neighbors.dtype
    np.testing.assert_allclose(got.similarities, want.similarities, rtol=0, atol=1e-6)
    # same graph up to ties: rows agree as sets wherever the similarities are not tied
    same = (got.neighbors == want.neighbors).all(axis=1)
    assert same.mean() > 0.99
    for r in np.flatnonzero(~same):
        assert np.allclose(np.sort(got.similarities[r]), np.sort(want.similarities[r]), atol=1e-6)
    # no row lists itself
    assert not (np.asarray(got.neighbors) == np.arange(len(X))[:, None]).any()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("refine", [1, 8])
def test_graph_over_shards_re_ranks_with_the_index_refine(ray_session, pool, tmp_path, refine):
    """A lossy index re-ranks refine * (k+1) candidates: the same on Ray as on one machine."""
    path, X, _ = pool
    index = SimilarityIndex("IVF16,PQ8", nprobe=4, refine=refine, train_size=1797).build(X)
    got = dist.build_graph(path, index, 6, tmp_path / "g", num_tasks=3)
    want = KNNGraph.build(X, 6, index)
    np.testing.assert_allclose(got.similarities, want.similarities, atol=1e-6)
    assert (got.neighbors == want.neighbors).all(axis=1).mean() > 0.99
    assert got.meta["refine"] == refine


def test_graph_from_an_index_built_over_shards(ray_session, pool, tmp_path):
    path, X, _ = pool
    index = dist.build_index(path, "IVF16,Flat", train_size=800, nprobe=16)
    got = dist.build_graph(path, index, 5, tmp_path / "g")
    want = KNNGraph.build(X, 5, SimilarityIndex("IVF16,Flat", train_size=800, nprobe=16).build(X))
    np.testing.assert_array_equal(got.neighbors, want.neighbors)
    loaded = KNNGraph.load(tmp_path / "g", expect_n=len(X))
    np.testing.assert_array_equal(loaded.neighbors, want.neighbors)


# --------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def model(pool):
    _, X, y = pool
    seed = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(10)])
    return FittedModel(default_model(0), 10).fit(X[seed], y[seed]), seed


@pytest.mark.parametrize("strategy", ["entropy", "margin", "least-confidence", "most-likely-positive"])
def test_full_pool_top_b_over_shards_equals_single_machine(ray_session, pool, model, strategy):
    path, X, _ = pool
    m, seed = model
    scorer = dist.ShardScorer(m, strategy, positive=3)
    pos, sc = dist.score_top_b(path, scorer, 25, random_state=7, exclude=seed, num_tasks=4)
    scores = scorer(X)
    scores[seed] = -np.inf
    want = top_b(scores, 25, np.random.default_rng(7))
    np.testing.assert_array_equal(pos, want)
    np.testing.assert_allclose(sc, scores[want])
    assert not np.isin(pos, seed).any()
    if strategy == "entropy":  # the scorer is the library's pure entropy of predict_proba
        np.testing.assert_allclose(scores[want], entropy(m.predict_proba(X[want])), rtol=1e-6)


def test_tied_scores_are_broken_as_on_one_machine(ray_session, pool, model):
    class _RoundedModel:  # local, so Ray ships it by value to the workers
        """Probabilities rounded to 0.1: most scores tie, so the random tie-break decides."""

        def __init__(self, inner):
            self.inner = inner

        def predict_proba(self, X):
            return np.round(self.inner.predict_proba(X), 1)

    path, X, _ = pool
    scorer = dist.ShardScorer(_RoundedModel(model[0]), "least-confidence")
    scores = scorer(X)
    assert len(np.unique(scores)) < 15  # heavily tied
    for seed in (0, 1):
        pos, _ = dist.score_top_b(path, scorer, 40, random_state=seed)
        np.testing.assert_array_equal(pos, top_b(scores, 40, np.random.default_rng(seed)))


def test_information_density_over_shards(ray_session, pool, model):
    path, X, _ = pool
    m, seed = model
    direction = dist.unit_mean(path, exclude=seed, num_tasks=4)
    keep = np.setdiff1d(np.arange(len(X)), seed)
    U = X[keep] / np.linalg.norm(X[keep], axis=1, keepdims=True)
    np.testing.assert_allclose(direction, U.mean(axis=0), rtol=1e-5, atol=1e-6)
    scorer = dist.ShardScorer(m, "density", beta=1.0, direction=direction)
    pos, _ = dist.score_top_b(path, scorer, 10, random_state=0, exclude=seed)
    # by hand: entropy times mean cosine to the unlabeled pool
    p = m.predict_proba(X)
    ref = entropy(p) * np.maximum(0.0, (X / np.linalg.norm(X, axis=1, keepdims=True)) @ U.mean(axis=0))
    ref[seed] = -np.inf
    np.testing.assert_array_equal(np.sort(pos), np.sort(np.argsort(-ref)[:10]))


def test_unscorable_strategy_is_refused(ray_session, pool, model):
    for name in ("kcenter", "bald", "hybrid"):  # their batch is no top b of one model's score
        with pytest.raises(ValidationError, match=f"strategy '{name}' cannot be scored over shards"):
            dist.score_top_b(pool[0], dist.ShardScorer(model[0], name), 5)
    with pytest.raises(ValidationError, match="unknown strategy 'least_confidence' .did you mean 'least-confidence'"):
        dist.ShardScorer(model[0], "least_confidence").check()
    with pytest.raises(ValidationError, match="batch size must be > 0 but is 0"):
        dist.score_top_b(pool[0], dist.ShardScorer(model[0]), 0)


def test_shard_strategies_are_read_from_the_registry():
    from datascout.registry import STRATEGY_NAMES

    assert set(dist.SHARD_STRATEGIES) == {"random", "entropy", "margin", "least-confidence", "density",
                                          "most-likely-positive"}
    assert set(dist.SHARD_STRATEGIES) <= set(STRATEGY_NAMES)


def test_a_batch_above_what_exclude_leaves_is_refused_as_in_the_learner(ray_session, pool, model):
    """One contract with ActiveLearner.query: never an excluded item, so b > the rest raises."""
    path, X, _ = pool
    exclude = np.arange(5, len(X))  # 5 items left
    scorer = dist.ShardScorer(model[0])
    pos, _ = dist.score_top_b(path, scorer, 5, random_state=0, exclude=exclude)
    np.testing.assert_array_equal(np.sort(pos), np.arange(5))
    with pytest.raises(ValidationError, match="batch size 6 is larger than the 5 items left after exclude"):
        dist.score_top_b(path, scorer, 6, random_state=0, exclude=exclude)
    with pytest.raises(ValidationError, match="outside the pool's 0..1796"):
        dist.score_top_b(path, scorer, 1, exclude=[len(X)])


# --------------------------------------------------------------------------- pruning scores over shards


def test_pruning_scores_over_shards_equal_the_single_machine_scores(ray_session, pool):
    from datascout import prune

    path, X, y = pool
    # prototypes: distance to the nearest centroid, as prune.prototype_scores computes it
    centroids, _, dist_ref = prune.kmeans(normalize_rows(X), 12, random_state=0)
    got = dist.map_rows(path, dist.PrototypeDistance(centroids), num_tasks=4)
    assert got.shape == (len(X),)
    np.testing.assert_allclose(got, dist_ref, atol=1e-4)
    # EL2N with proxies trained on the driver, scored shard by shard
    models = [prune.SoftmaxRegression(10, epochs=2, random_state=s).fit(X, y) for s in range(3)]
    got = dist.map_rows(path, dist.EL2NScore(models, y), num_tasks=5)
    want = sum(prune.el2n(m.predict_proba(X), y) for m in models) / 3
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # and by hand on one row: || softmax - onehot ||
    p = models[0].predict_proba(X[:1])[0]
    e = p.copy()
    e[y[0]] -= 1.0
    one = dist.EL2NScore(models[:1], y)(X[:1], np.array([0]))
    assert abs(one[0] - np.sqrt((e * e).sum())) < 1e-12
