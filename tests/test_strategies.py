"""Strategies: one contract suite every strategy passes, hand-computed scores on tiny inputs,
batch selection (top-b ties, k-center greedy, hybrid) and hypothesis properties of the scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datascout import coverage
from datascout.auto import Auto, prediction_agreement
from datascout.coverage import (
    SelectInputs,
    badge_select,
    coldstart_kcenter_select,
    gradient_factor,
    gradient_sq_distances,
    kmeans_labels,
    local_graph,
    max_coverage_greedy,
    purity_threshold,
    round_robin,
    threshold_to_delta,
    typicality,
    typiclust_select,
)
from datascout.exceptions import ValidationError
from datascout.index import SimilarityIndex
from datascout.loop import ActiveLearner
from datascout.multilabel_loop import MultiLabelLearner
from datascout.seals import CandidatePool, KNNGraph
from datascout.registry import MULTILABEL_STRATEGY_NAMES, STRATEGY_NAMES, make_strategy
from datascout.strategies import (
    Entropy,
    Hybrid,
    Margin,
    bald,
    cosine_to_direction,
    entropy,
    information_density,
    kcenter_greedy,
    least_confidence,
    margin,
    min_sq_distances,
    most_likely_positive,
    top_b,
    vote_entropy,
)

# --------------------------------------------------------------------------- contract suite

N_POOL = 500
HOLDOUT = np.arange(400, 500)
N_CLASSES = 10


@pytest.fixture(scope="module")
def pool(digits):
    X, y = digits
    return np.ascontiguousarray(X[:N_POOL]), y[:N_POOL]


@pytest.fixture(scope="module")
def flat_graph(pool):
    return KNNGraph.build(pool[0], k=10, index="Flat")


def seed_positions(seed=0, size=30):
    return np.sort(np.random.default_rng(seed).choice(400, size=size, replace=False))


# the multi-label task on the same digits: each digit's set of properties
ML_NAMES = ["even", "big", "loop", "prime", "straight"]
ML_SETS = np.array([[d % 2 == 0, d >= 5, d in (0, 6, 8, 9), d in (2, 3, 5, 7), d in (1, 4, 7)]
                    for d in range(10)])
CASES = [("single", n) for n in STRATEGY_NAMES] + [("multi", n) for n in MULTILABEL_STRATEGY_NAMES]


def task_data(task, pool):
    """The pool's embeddings and its labels for the task: class ids, or (N, 5) label sets."""
    X, y = pool
    return X, (y if task == "single" else ML_SETS[y])


def learner_for(name, X, *, seed=0, candidates=None, task="single"):
    if task == "multi":
        return MultiLabelLearner(X, ML_NAMES, name, candidates=candidates, holdout=HOLDOUT, random_state=seed)
    return ActiveLearner(X, N_CLASSES, name, candidates=candidates, holdout=HOLDOUT, random_state=seed)


def eligible(learner):
    return np.flatnonzero(learner.labels_ == -1)


def min_sq_dist_to(X, rows, centers):
    d = ((X[rows][:, None, :] - X[centers][None, :, :]) ** 2).sum(axis=2)
    return d.min(axis=1)


def check_selection_criterion(name, L, X, seed, ids, free, b):
    """What each batch-selecting strategy promises of its batch, recomputed apart from it."""
    if name == "cluster-margin":  # every pick among the m * b smallest margins
        m = margin(L.predict_proba(X))
        assert np.all(m[ids] >= np.sort(m[free])[-int(L.strategy.m) * b])
    elif name == "badge":  # never an item whose gradient embedding is zero while others are not
        p = L.predict_proba(X)
        g = np.linalg.norm(gradient_factor(p), axis=1)
        assert np.all(g[ids] > 0) and (g[free] > 0).sum() >= b
    elif name == "probcover":  # the first pick covers the most uncovered items
        t = L.cache_[("probcover-threshold", 0.95)]
        g = L.cache_[("knn-graph", coverage.FALLBACK_K)]
        nb, sims = np.asarray(g.neighbors), np.asarray(g.similarities)
        covered = np.zeros(len(X), dtype=bool)
        covered[seed] = True
        covered[nb[seed][sims[seed] > t]] = True
        ok = ~np.isin(np.arange(len(X)), np.concatenate([free, seed]))  # held out: not nodes
        gain = np.array([(~covered[np.r_[i, nb[i][(sims[i] > t) & ~ok[nb[i]]]]]).sum() for i in free])
        first = int(np.flatnonzero(free == ids[0])[0])
        assert gain[first] == gain.max() and gain.max() >= 1
    elif name == "kcenter-cold":  # the first pick is the farthest dense item from the labels
        g = L.cache_[("knn-graph", coverage.FALLBACK_K)]
        sims = np.asarray(g.similarities)[free]
        nb = np.asarray(g.neighbors)[free]
        node = np.isin(nb, np.concatenate([free, seed]))
        dens = np.where(node, sims, 0).sum(axis=1) / np.maximum(node.sum(axis=1), 1)
        dense = free[dens >= np.quantile(dens, 0.5)]
        assert np.isin(ids, dense).all()
        d = min_sq_dist_to(X, dense, seed)
        assert min_sq_dist_to(X, ids[:1], seed)[0] >= d.max() - 1e-4
    elif name in ("typiclust", "auto"):  # 3 labels per class: TypiClust's phase of auto
        if name == "auto":
            assert L.last_query_["auto"] == "typiclust"
        assert L.last_query_["clusters"] == len(seed) + b
    else:  # pragma: no cover - a new selecting strategy must say what it promises
        raise AssertionError(f"no selection criterion for {name}")


@pytest.mark.parametrize(("task", "name"), CASES, ids=[f"{t}-{n}" for t, n in CASES])
class TestContract:
    def test_shape_and_membership(self, task, name, pool):
        X, y = task_data(task, pool)
        L = learner_for(name, X, task=task)
        s = seed_positions()
        L.teach(s, y[s])
        ids = L.query(12)
        assert ids.shape == (12,)
        assert ids.dtype.kind in "iu"
        assert len(np.unique(ids)) == 12
        assert np.all((ids >= 0) & (ids < 400))  # never held out
        assert not np.isin(ids, s).any()  # never already labeled
        assert L.last_query_["candidates"] == 400 - len(s)
        assert L.last_query_["padded"] == 0

    def test_direction_higher_first(self, task, name, pool):
        X, y = task_data(task, pool)
        L = learner_for(name, X, task=task)
        s = seed_positions()
        L.teach(s, y[s])
        b = 8
        ids = L.query(b)
        free = eligible(L)
        strat = L.strategy
        if name == "kcenter":
            # first pick: the unlabeled item farthest from every labeled item
            d = min_sq_dist_to(X, free, s)
            first = min_sq_dist_to(X, ids[:1], s)[0]
            assert first >= d.max() - 1e-4
            return
        if strat.needs_inputs:
            check_selection_criterion(name, L, X, s, ids, free, b)
            return
        scores = L.score_rows(X)
        if isinstance(strat, Hybrid):
            kth = np.sort(scores[free])[-strat.m * b]
            assert np.all(scores[ids] >= kth)
            return
        picked = scores[ids]
        assert np.all(np.diff(picked) <= 1e-12)  # best first
        rest = np.setdiff1d(free, ids)
        assert picked.min() >= scores[rest].max() - 1e-12  # nothing better left behind
        if name == "random":
            assert np.all(scores == scores[0])

    def test_deterministic_under_seed(self, task, name, pool):
        X, y = task_data(task, pool)
        s = seed_positions()
        runs = []
        for _ in range(2):
            L = learner_for(name, X, seed=7, task=task)
            L.teach(s, y[s])
            first = L.query(10)
            L.teach(first, y[first])
            runs.append(np.concatenate([first, L.query(10)]))
        np.testing.assert_array_equal(runs[0], runs[1])
        if name == "random":
            L = learner_for(name, X, seed=8, task=task)
            L.teach(s, y[s])
            assert not np.array_equal(L.query(10), runs[0][:10])

    def test_never_repeats_labeled_or_held_out(self, task, name, pool):
        X, y = task_data(task, pool)
        L = learner_for(name, X, seed=3, task=task)
        s = seed_positions(3)
        L.teach(s, y[s])
        seen = set(s.tolist())
        for _ in range(3):
            ids = L.query(15)
            assert not (set(ids.tolist()) & seen)
            assert not np.isin(ids, HOLDOUT).any()
            L.teach(ids, y[ids])
            seen |= set(ids.tolist())
        assert L.n_labeled_ == len(seen) == 30 + 45

    def test_one_class_seen(self, task, name, pool):
        X, digit = pool
        L = learner_for(name, X, seed=1, task=task)
        only3 = np.flatnonzero(digit[:400] == 3)[:12]
        threes = np.full(len(only3), 3)
        L.teach(only3, threes if task == "single" else ML_SETS[threes])  # multi: no label varies
        ids = L.query(6)
        assert len(np.unique(ids)) == 6
        assert not np.isin(ids, only3).any() and not np.isin(ids, HOLDOUT).any()
        if L.model_ is not None:
            p = L.predict_proba(X[:5])
            if task == "single":
                assert p.shape == (5, N_CLASSES)
                np.testing.assert_allclose(p[:, 3], 1.0)
            else:  # labels never seen positive are 0, a label always seen is 1
                np.testing.assert_array_equal(p, np.broadcast_to(ML_SETS[3].astype(np.float32), (5, 5)))

    def test_seals_candidates(self, task, name, pool, flat_graph):
        X, y = task_data(task, pool)
        cand = CandidatePool(X, graph=flat_graph, k=10)
        L = learner_for(name, X, seed=2, candidates=cand, task=task)
        s = seed_positions(2, size=40)
        L.teach(s, y[s])
        labeled = set(s.tolist())
        for _ in range(2):
            lab = np.fromiter(labeled, dtype=np.int64)
            expected = set(np.unique(flat_graph.neighbors[lab]).tolist()) - labeled - set(HOLDOUT.tolist())
            ids = L.query(10)
            assert L.last_query_["padded"] == 0
            assert L.last_query_["candidates"] == len(expected)
            assert set(ids.tolist()) <= expected
            assert len(np.unique(ids)) == 10
            L.teach(ids, y[ids])
            labeled |= set(ids.tolist())


def test_strategy_names_build():
    for name in STRATEGY_NAMES:
        assert make_strategy(name).name == name
    with pytest.raises(ValidationError, match="unknown strategy 'nope'"):
        make_strategy("nope")
    with pytest.raises(ValidationError, match="beta"):
        make_strategy("density", beta=-1.0)


# --------------------------------------------------------------------------- hand-computed scores

P3 = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_entropy_by_hand():
    # -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.2496725 + 0.3218876 + 0.2302585
    # -(2 * 0.4 ln 0.4 + 0.2 ln 0.2) = 0.7330326 + 0.3218876
    np.testing.assert_allclose(entropy(P3), [0.8018186, 1.0549202, 0.0, math.log(3)], atol=1e-6)
    np.testing.assert_allclose(entropy(np.array([[0.5, 0.5]])), [math.log(2)], atol=1e-12)


def test_margin_and_least_confidence_by_hand():
    np.testing.assert_allclose(margin(P3), [-0.5, 0.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(least_confidence(P3), [0.3, 0.6, 0.0, 2 / 3], atol=1e-12)
    # the two best classes can be anywhere among many columns
    p = np.zeros((1, 40))
    p[0, 33], p[0, 5], p[0, 17] = 0.5, 0.3, 0.2
    np.testing.assert_allclose(margin(p), [-0.2], atol=1e-12)


def test_most_likely_positive_by_hand():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_array_equal(most_likely_positive(p), [0.1, 0.8])
    np.testing.assert_array_equal(most_likely_positive(P3, positive=2), [0.1, 0.2, 0.0, 1 / 3])


def test_information_density_with_beta_by_hand():
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    sim = np.array([0.25, -0.3, 1.0, 0.5])
    ln2 = math.log(2)
    h4 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(information_density(p, sim, beta=2.0),
                               [ln2 * 0.0625, 0.0, ln2, h4 * 0.25], atol=1e-7)
    np.testing.assert_allclose(information_density(p, sim, beta=1.0),
                               [ln2 * 0.25, 0.0, ln2, h4 * 0.5], atol=1e-7)
    # beta = 0 is plain entropy, except where the similarity is clipped to 0 (0 ** 0 = 1)
    np.testing.assert_allclose(information_density(p, sim, beta=0.0), [ln2, ln2, ln2, h4], atol=1e-7)


def test_bald_by_hand():
    # members disagree completely: H(mean) = ln 2, mean H = 0
    m = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(bald(m), [math.log(2)], atol=1e-7)
    # members agree on [.5, .5]: no mutual information
    np.testing.assert_allclose(bald(np.array([[[0.5, 0.5]], [[0.5, 0.5]]])), [0.0], atol=1e-7)
    # [.5, .5] and [1, 0]: H([.75, .25]) - (ln 2 + 0) / 2 = 0.5623351 - 0.3465736
    np.testing.assert_allclose(bald(np.array([[[0.5, 0.5]], [[1.0, 0.0]]])), [0.2157616], atol=1e-6)


def test_vote_entropy_by_hand():
    members = np.array([
        [[0.9, 0.1, 0.0], [0.1, 0.8, 0.1]],
        [[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]],
        [[0.2, 0.7, 0.1], [0.7, 0.2, 0.1]],
    ])  # votes: item 0 -> 0, 0, 1; item 1 -> 1, 2, 0
    # item 0: H([2/3, 1/3]) = 0.6365142; item 1: H([1/3]*3) = ln 3
    np.testing.assert_allclose(vote_entropy(members), [0.6365142, math.log(3)], atol=1e-6)


def test_density_mean_unit_vector_equals_brute_force_mean_cosine():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32) + 0.5
    P = X[10:]  # the reference set (the unlabeled pool)
    U = P / np.linalg.norm(P, axis=1, keepdims=True)
    fast = cosine_to_direction(X, U.mean(axis=0))
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    brute = (Xu.astype(np.float64) @ U.T.astype(np.float64)).mean(axis=1)  # N x |P| cosines
    np.testing.assert_allclose(fast, brute, atol=1e-5)


def test_learner_density_scores_use_the_unlabeled_pool(digits):
    X, y = digits
    X = np.ascontiguousarray(X[:300])
    holdout = np.arange(250, 300)
    L = ActiveLearner(X, 10, make_strategy("density", beta=2.0), holdout=holdout, random_state=0)
    s = np.arange(0, 200, 5)
    L.teach(s, y[s])
    L.query(5)  # fits and caches the pool direction
    t = np.arange(1, 200, 7)
    t = t[~np.isin(t, s)]
    L.teach(t, y[t])  # the reference set shrinks: the direction must follow
    scores = L.score_rows(X)
    unl = np.flatnonzero(L.labels_ == -1)
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    mean_cos = (Xu @ Xu[unl].T).mean(axis=1)
    expected = entropy(L.predict_proba(X)) * np.maximum(mean_cos, 0) ** 2
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_prepare_makes_the_density_pass_before_any_label(digits):
    """prepare() before the seed set: the pass reads every row once, the queries read none of the
    pool beyond the rows they score, and the scores equal those of an unprepared learner."""
    X, y = digits
    X = np.ascontiguousarray(X[:300])
    s = np.arange(0, 200, 5)
    a = ActiveLearner(X, 10, make_strategy("density"), random_state=0).prepare()
    assert a._unit_sum_all is not None
    np.testing.assert_allclose(a._unit_sum_all, (X / np.linalg.norm(X, axis=1, keepdims=True)).sum(axis=0),
                               rtol=1e-5)
    b = ActiveLearner(X, 10, make_strategy("density"), random_state=0)
    assert b._unit_sum_all is None
    for L in (a, b):
        L.teach(s, y[s])
    np.testing.assert_allclose(a.score_rows(X), b.score_rows(X), rtol=1e-6)
    assert ActiveLearner(X, 10, "margin").prepare()._unit_sum_all is None  # nothing to do


# --------------------------------------------------------------------------- top-b


def test_top_b_orders_best_first_and_validates():
    s = np.array([0.1, 0.9, 0.5, 0.7, np.nan, 0.3])
    np.testing.assert_array_equal(top_b(s, 3, np.random.default_rng(0)), [1, 3, 2])
    assert top_b(s, 6, np.random.default_rng(0))[-1] == 4  # NaN ranks last
    for b in (0, -1, 7):
        with pytest.raises(ValidationError, match="batch size"):
            top_b(s, b, np.random.default_rng(0))


def test_top_b_ties_are_uniform_and_reproducible():
    s = np.array([5.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    counts = np.zeros(len(s), dtype=int)
    for seed in range(4000):
        pick = top_b(s, 2, np.random.default_rng(seed))
        assert pick[0] == 0
        counts[pick[1]] += 1
        if seed % 20 == 0:  # the same seed gives the same batch
            np.testing.assert_array_equal(pick, top_b(s, 2, np.random.default_rng(seed)))
    tied = counts[[1, 2, 3, 4, 6]]
    assert counts[0] == 0 and counts[5] == 0
    # each of 5 tied items expects 800 (sd ~25): a biased tie-break would be far outside
    assert np.all(np.abs(tied - 800) < 130), tied
    # all-equal scores: the order itself is random, every item equally likely to come first
    firsts = np.bincount([top_b(np.zeros(4), 4, np.random.default_rng(i))[0] for i in range(2000)],
                         minlength=4)
    assert np.all(np.abs(firsts - 500) < 100), firsts


# --------------------------------------------------------------------------- k-center greedy, hybrid


def test_kcenter_greedy_on_an_obvious_set():
    X = np.array([[0, 0], [1, 0], [10, 0], [0, 7], [10, 10]], dtype=np.float32)
    centers = X[:1]
    # farthest from the origin: (10,10) d2=200; then (10,0) min(100, 100); then (0,7) 49
    np.testing.assert_array_equal(kcenter_greedy(X, centers, 3, np.random.default_rng(0)), [4, 2, 3])
    exclude = np.array([False, False, True, False, False])
    np.testing.assert_array_equal(
        kcenter_greedy(X, centers, 2, np.random.default_rng(0), exclude=exclude), [4, 3])
    # no centers: the first pick is random, then always the farthest point
    picks = kcenter_greedy(X, np.empty((0, 2), np.float32), 2, np.random.default_rng(5))
    d = ((X - X[picks[0]]) ** 2).sum(axis=1)
    assert picks[1] == int(np.argmax(d))
    with pytest.raises(ValidationError, match="batch size"):
        kcenter_greedy(X, centers, 5, np.random.default_rng(0), exclude=exclude)


def test_hybrid_spreads_a_batch_that_entropy_spends_on_duplicates(blobs):
    X, y = blobs
    # four identical items halfway between clusters 0 and 1: the most uncertain of the pool
    dup = np.tile(np.array([[5.0, 0.0]], dtype=np.float32), (4, 1))
    X = np.vstack([X, dup])
    y = np.concatenate([y, [0, 0, 0, 0]])
    dups = np.arange(60, 64)
    s = np.array([0, 1, 2, 20, 21, 22, 40, 41, 42])
    ent = ActiveLearner(X, 3, "entropy", random_state=0)
    ent.teach(s, y[s])
    assert set(ent.query(2).tolist()) <= set(dups.tolist())
    hyb = ActiveLearner(X, 3, Hybrid(Entropy(), m=3), random_state=0)
    hyb.teach(s, y[s])
    picks = hyb.query(2)
    assert np.isin(picks, dups).sum() == 1
    scores = hyb.score_rows(X)
    free = np.flatnonzero(hyb.labels_ == -1)
    assert np.all(scores[picks] >= np.sort(scores[free])[-6])  # from the top m * b = 6
    # hybrid-margin: the same, prefiltered by margin
    hm = make_strategy("hybrid-margin", hybrid_m=3)
    assert hm.name == "hybrid-margin" and isinstance(hm.base, Margin)
    hmar = ActiveLearner(X, 3, hm, random_state=0)
    hmar.teach(s, y[s])
    picks = hmar.query(2)
    assert np.isin(picks, dups).sum() == 1
    m = margin(hmar.predict_proba(X))
    assert np.all(m[picks] >= np.sort(m[free])[-6])


# --------------------------------------------------------------------------- properties


@st.composite
def prob_rows(draw, min_classes=2, max_classes=8):
    c = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 12))
    raw = draw(arrays(np.float64, (n, c), elements=st.floats(0.0, 1.0)))
    raw[:, 0] += 1e-9  # no all-zero row
    return raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=80, deadline=None)
@given(prob_rows())
def test_score_ranges(p):
    c = p.shape[1]
    h = entropy(p)
    assert np.all(h >= -1e-9) and np.all(h <= math.log(c) + 1e-9)
    m = margin(p)
    assert np.all(m >= -1 - 1e-12) and np.all(m <= 1e-12)
    lc = least_confidence(p)
    assert np.all(lc >= -1e-12) and np.all(lc <= 1 - 1 / c + 1e-9)
    mlp = most_likely_positive(p)
    assert np.all((mlp >= 0) & (mlp <= 1))


@settings(max_examples=60, deadline=None)
@given(prob_rows(), st.randoms(use_true_random=False))
def test_scores_invariant_to_class_permutation(p, r):
    perm = list(range(p.shape[1]))
    r.shuffle(perm)
    q = p[:, perm]
    for f in (entropy, margin, least_confidence):
        np.testing.assert_allclose(f(q), f(p), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(prob_rows())
def test_uniform_distribution_is_the_maximum(p):
    c = p.shape[1]
    u = np.full((1, c), 1.0 / c)
    assert np.all(entropy(p) <= entropy(u)[0] + 1e-9)
    assert np.all(margin(p) <= margin(u)[0] + 1e-12)
    assert np.all(least_confidence(p) <= least_confidence(u)[0] + 1e-12)
    np.testing.assert_allclose(entropy(u), [math.log(c)], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(2, 4), st.data())
def test_bald_is_between_zero_and_log_c(members, c, data):
    raw = data.draw(arrays(np.float64, (members, 6, c), elements=st.floats(0.0, 1.0)))
    raw[..., 0] += 1e-9
    mp = raw / raw.sum(axis=2, keepdims=True)
    v = bald(mp)
    assert np.all(v >= -1e-7) and np.all(v <= math.log(c) + 1e-7)
    ve = vote_entropy(mp)
    assert np.all(ve >= -1e-9) and np.all(ve <= math.log(min(c, members)) + 1e-9)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60, unique=True),
       st.integers(1, 60), st.integers(0, 2**32 - 1))
def test_top_b_equals_a_full_sort_without_ties(values, b, seed):
    s = np.asarray(values)
    b = min(b, len(s))
    np.testing.assert_array_equal(top_b(s, b, np.random.default_rng(seed)), np.argsort(-s)[:b])


def test_kcenter_is_exact_on_rows_far_from_the_origin():
    """Raw features around 3000 with a spread of a few units: float32 |x|^2 - 2x.c + |c|^2 would
    lose the distances in cancellation; the picks must equal a float64 greedy by hand."""
    rng = np.random.default_rng(0)
    X = (3000 + rng.normal(size=(1000, 16))).astype(np.float32)
    X64 = X.astype(np.float64)
    exact = ((X64 - X64[0]) ** 2).sum(axis=1)
    np.testing.assert_allclose(min_sq_distances(X, X[:1]), exact, atol=1e-3)
    dist, expected = exact.copy(), []
    dist[0] = -1.0
    for _ in range(10):
        j = int(np.argmax(dist))
        expected.append(j)
        dist = np.minimum(dist, ((X64 - X64[j]) ** 2).sum(axis=1))
        dist[j] = -1.0
    assert kcenter_greedy(X, X[:1], 10, np.random.default_rng(0)).tolist() == expected


def test_positive_class_outside_the_classes_is_an_error(pool):
    """Not a bare IndexError for a class >= n_classes, not the last column for -1."""
    from datascout.strategies import MostLikelyPositive

    X, y = pool
    with pytest.raises(ValidationError, match="the positive class must be in 0..9 but is 10"):
        ActiveLearner(X, N_CLASSES, MostLikelyPositive(10))
    with pytest.raises(ValidationError, match="the positive class must be in 0..9 but is 12"):
        ActiveLearner(X, N_CLASSES, make_strategy("most-likely-positive", positive=12))
    with pytest.raises(ValidationError, match="the positive class must be in 0..1 but is 3"):
        ActiveLearner(X, 2, Hybrid(MostLikelyPositive(3)))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValidationError, match="the positive class must be"):
            MostLikelyPositive(bad)
    with pytest.raises(ValidationError, match="the positive class must be in 0..2 but is -1"):
        most_likely_positive(P3, positive=-1)
    with pytest.raises(ValidationError, match="the positive class must be in 0..2 but is 3"):
        most_likely_positive(P3, positive=3)


def test_one_spelling_per_strategy():
    """The registry has one name per strategy; old spellings are clear errors with a hint."""
    assert len(STRATEGY_NAMES) == len(set(STRATEGY_NAMES))
    for old, new in (("least_confidence", "least-confidence"), ("information_density", None),
                     ("maxent", None), ("most_likely_positive", "most-likely-positive")):
        with pytest.raises(ValidationError, match=f"unknown strategy '{old}'") as info:
            make_strategy(old)
        if new:
            assert f"did you mean '{new}'" in str(info.value)


def test_hybrid_over_a_committee_score_selects_by_kcenter_among_its_top(pool):
    """Hybrid(BALD()) / Hybrid(VoteEntropy()): a committee of the base's size is fitted, and the
    batch is k-center greedy over the top m*b by the committee score."""
    from datascout.strategies import BALD, VoteEntropy

    X, y = pool
    s = seed_positions()
    for base in (BALD(n_members=3), VoteEntropy(n_members=4)):
        L = learner_for(Hybrid(base, m=3), X)
        L.teach(s, y[s])
        ids = L.query(6)
        assert len(L.committee_.members_) == base.n_members
        scores = L.score_rows(X)
        free = eligible(L)
        assert np.all(scores[ids] >= np.sort(scores[free])[-18])
        assert len(np.unique(ids)) == 6 and not np.isin(ids, np.r_[s, HOLDOUT]).any()


# --------------------------------------------------------------------------- coverage, BADGE, Cluster-Margin, auto

PLUS = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)
TWO_PLUSES = np.vstack([PLUS, PLUS + np.array([10, 0], dtype=np.float32)])


def inputs(X, *, exclude=None, labeled=(), graph=None, probs=None, seed=0, n_classes=2):
    labeled = np.asarray(labeled, dtype=np.int64)
    return SelectInputs(X=X, positions=None, exclude=exclude, labeled_positions=labeled,
                        labeled_embeddings=np.asarray(X[labeled], dtype=np.float32).reshape(len(labeled), X.shape[1]),
                        labeled_classes=np.zeros(len(labeled), dtype=np.int64), n_classes=n_classes,
                        rng=np.random.default_rng(seed), graph=graph, probs=probs)


def test_typicality_by_hand():
    # centre: 4 neighbours at distance 1; (1, 0): 1, 2, sqrt 2, sqrt 2 -> mean (3 + 2 sqrt 2) / 4
    t = typicality(PLUS, knn=4)
    np.testing.assert_allclose(t, [1.0] + [4 / (3 + 2 * math.sqrt(2))] * 4, rtol=1e-6)
    # knn=1: every point has a neighbour at distance 1
    np.testing.assert_allclose(typicality(PLUS, knn=1), np.ones(5), rtol=1e-6)


def test_typiclust_takes_the_centre_of_each_uncovered_cluster():
    for seed in range(5):
        assert set(typiclust_select(inputs(TWO_PLUSES, seed=seed), 2).tolist()) == {0, 5}
    # the left centre is labeled: |L| + b = 2 clusters, the right one holds no label
    exclude = np.zeros(10, dtype=bool)
    exclude[0] = True
    for seed in range(5):
        assert typiclust_select(inputs(TWO_PLUSES, exclude=exclude, labeled=[0], seed=seed), 1).tolist() == [5]
    with pytest.raises(ValidationError, match="batch size must be in 1..9 but is 10"):
        typiclust_select(inputs(TWO_PLUSES, exclude=exclude, labeled=[0]), 10)


def test_kmeans_separates_two_far_groups():
    lab, C = kmeans_labels(TWO_PLUSES, 2, np.random.default_rng(0))
    assert len(set(lab[:5])) == 1 and len(set(lab[5:])) == 1 and lab[0] != lab[5]
    np.testing.assert_allclose(np.sort(C[:, 0]), [0.0, 10.0], atol=1e-6)


HAND_NB = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
HAND_SIM = np.array([[0.9, 0.5], [0.9, 0.3], [0.8, 0.5], [0.8, 0.3]], dtype=np.float32)


def test_purity_threshold_by_hand():
    cluster = np.array([0, 0, 1, 1])
    # most similar neighbour of another cluster: 0.5, 0.3, 0.5, 0.3
    assert purity_threshold(HAND_NB, HAND_SIM, cluster, alpha=1.0) == pytest.approx(0.5)
    assert purity_threshold(HAND_NB, HAND_SIM, cluster, alpha=0.5) == pytest.approx(0.3)
    # one cluster: every ball is pure at any radius the graph reaches
    assert purity_threshold(HAND_NB, HAND_SIM, np.zeros(4, int), alpha=0.95) == -np.inf
    assert threshold_to_delta(0.5) == pytest.approx(1.0)  # |x - y|^2 = 2 - 2 cos
    assert threshold_to_delta(-np.inf) == 2.0


STAR_NB = np.array([[1, 2, 3], [0, -1, -1], [0, -1, -1], [0, -1, -1], [5, -1, -1], [4, -1, -1], [-1, -1, -1]])
STAR_SIM = np.where(STAR_NB >= 0, 0.9, -np.inf).astype(np.float32)


def test_max_coverage_greedy_by_hand():
    # balls: 0 -> {0,1,2,3}; 1..3 -> {i, 0}; 4 <-> 5; 6 alone
    every = np.ones(7, dtype=bool)
    seen = set()
    for seed in range(20):
        picks = max_coverage_greedy(STAR_NB, STAR_SIM, 0.5, every, np.zeros(7, bool), 3, np.random.default_rng(seed))
        assert picks[0] == 0 and picks[1] in (4, 5) and picks[2] == 6
        seen.add(int(picks[1]))
    assert seen == {4, 5}  # the tie is broken at random
    # the star is covered already (a labeled item): the pair comes first
    covered = np.zeros(7, bool)
    covered[:4] = True
    picks = max_coverage_greedy(STAR_NB, STAR_SIM, 0.5, every, covered, 2, np.random.default_rng(0))
    assert picks[0] in (4, 5) and picks[1] == 6
    # above the threshold nothing is an edge: each ball is its centre, one new item per pick
    picks = max_coverage_greedy(STAR_NB, STAR_SIM, 0.95, every, covered, 3, np.random.default_rng(0))
    assert set(picks.tolist()) == {4, 5, 6}
    # everything covered: the rest of the batch is random among the chooseable
    picks = max_coverage_greedy(STAR_NB, STAR_SIM, 0.5, every, np.ones(7, bool), 3, np.random.default_rng(0))
    assert len(set(picks.tolist())) == 3


def test_local_graph_restricts_the_pool_graph_to_the_candidates():
    nb = np.array([[1, 2], [0, 3], [3, 0], [2, 1], [0, 1]])
    sims = np.array([[0.9, 0.8], [0.9, 0.7], [0.6, 0.8], [0.6, 0.7], [0.5, 0.4]], dtype=np.float32)
    X = np.eye(5, dtype=np.float32)
    # the view holds pool positions 4, 3, 2 (SEALS buffer order); 3 is excluded; 0 is labeled
    inp = SelectInputs(X=X[[4, 3, 2]], positions=np.array([4, 3, 2]), exclude=np.array([False, True, False]),
                       labeled_positions=np.array([0]), labeled_embeddings=X[[0]],
                       labeled_classes=np.array([0]), n_classes=2, rng=np.random.default_rng(0),
                       graph=KNNGraph(nb, sims))
    lg = local_graph(inp)
    assert lg.rows.tolist() == [0, 2] and lg.n_labeled == 1  # nodes: pool 4, pool 2, labeled pool 0
    # pool 4 -> (0, 1): node 2, none; pool 2 -> (3, 0): none, node 2; pool 0 -> (1, 2): none, node 1
    np.testing.assert_array_equal(lg.neighbors, [[2, -1], [-1, 2], [-1, 1]])
    np.testing.assert_allclose(lg.similarities, [[0.5, -np.inf], [-np.inf, 0.8], [-np.inf, 0.8]])


def test_coldstart_kcenter_skips_the_outlier():
    X = np.array([[0, 0], [1, 0], [0, 1], [10, 0], [10, 1], [50, 50]], dtype=np.float32)
    nb = np.array([[1, 2], [0, 2], [0, 1], [4, 1], [3, 1], [3, 4]])
    sims = np.array([[0.9, 0.9], [0.9, 0.8], [0.9, 0.8], [0.9, 0.1], [0.9, 0.1], [0.05, 0.05]], dtype=np.float32)
    g = KNNGraph(nb, sims)
    # densities 0.9, 0.85, 0.85, 0.5, 0.5, 0.05; the 0.2 quantile is 0.5: the outlier is out
    # nothing labeled: the densest first, then the farthest dense item, (10, 1) (plain k-center: (50, 50))
    assert coldstart_kcenter_select(inputs(X, graph=g), 2, quantile=0.2).tolist() == [0, 4]
    exclude = np.array([True, False, False, False, False, False])
    assert coldstart_kcenter_select(inputs(X, exclude=exclude, labeled=[0], graph=g), 1, quantile=0.2).tolist() == [4]
    assert kcenter_greedy(X[1:], X[:1], 1, np.random.default_rng(0)).tolist() == [4]  # the outlier, index 5 - 1


def test_gradient_distances_equal_the_explicit_embedding():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=7)
    H = rng.normal(size=(7, 3))
    a = gradient_factor(P)
    G = np.einsum("ic,id->icd", a, H).reshape(7, -1)  # the explicit (n, C d) embedding
    for j in range(7):
        np.testing.assert_allclose(gradient_sq_distances(a, H, j), ((G - G[j]) ** 2).sum(axis=1), atol=1e-10)
    # by hand: p = (0.7, 0.2, 0.1) -> a = (-0.3, 0.2, 0.1)
    np.testing.assert_allclose(gradient_factor(np.array([[0.7, 0.2, 0.1]])), [[-0.3, 0.2, 0.1]])


def test_badge_never_takes_a_confident_item_or_a_duplicate():
    X = np.array([[1, 0], [0, 1], [0, 1], [2, 2]], dtype=np.float32)
    P = np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.6, 0.4]])
    firsts = []
    for seed in range(200):
        picks = badge_select(X, P, 2, np.random.default_rng(seed))
        assert 0 not in picks  # its gradient is zero: distance 0 to the origin
        assert set(picks.tolist()) != {1, 2}  # identical gradients: the second has distance 0
        firsts.append(int(picks[0]))
    # first pick by D^2 from the origin: |a|^2 |h|^2 = 0.5 * 2 (items 1, 2), 0.32 * 9 (item 3)
    share3 = 2.88 / (1.0 + 1.0 + 2.88)
    assert abs(np.mean(np.asarray(firsts) == 3) - share3) < 0.12
    # every gradient zero: a random batch, still distinct
    assert len(set(badge_select(X, np.tile([1.0, 0.0], (4, 1)), 3, np.random.default_rng(0)).tolist())) == 3


def test_round_robin_by_hand():
    cluster = np.array([0, 0, 0, 1, 1, 2])
    for seed in range(10):
        order = round_robin(cluster, 6, np.random.default_rng(seed))
        # pass 1: the smallest cluster (2), then cluster 1, then cluster 0; pass 2: 1, 0; pass 3: 0
        assert [int(cluster[i]) for i in order] == [2, 1, 0, 1, 0, 0]
        assert sorted(order.tolist()) == list(range(6))
    assert 5 in round_robin(cluster, 3, np.random.default_rng(0)).tolist()  # the singleton cluster is in any batch


def test_auto_phases():
    a = Auto(agreement=0.95)
    assert a.phase(0, 10, None) == "typiclust"  # no label: nothing to fit
    assert a.phase(300, 10, None) == "typiclust"  # the first model: nothing to compare with
    assert a.phase(300, 10, 0.949) == "typiclust"
    assert a.phase(300, 10, 0.95) == "cluster-margin"
    assert a.phase(300, 10, 0.5, switched=True) == "cluster-margin"  # the switch is kept
    assert Auto(uncertainty="margin").phase(300, 10, 0.96) == "margin"
    assert a.phase(100, 2, None) == "entropy"  # binary: MaxEnt, as before
    assert a.phase(0, 2, None) == "typiclust"
    assert Auto(coverage="probcover").phase(5, 10, None) == "probcover"
    # the model's own expected accuracy (mean top probability) switches without a second model
    # ... to margin while the model is confident, to Cluster-Margin when only the agreement says so
    assert a.phase(100, 10, None, confidence=0.75) == "margin"
    assert a.phase(100, 10, 0.5, confidence=0.7499) == "typiclust"
    assert a.phase(100, 10, 0.96, confidence=0.7499) == "cluster-margin"
    assert a.phase(900, 10, None, switched=True, confidence=0.8) == "margin"  # per query once switched
    assert a.phase(900, 10, None, switched=True, confidence=0.7) == "cluster-margin"
    assert Auto(uncertainty="cluster-margin").phase(100, 10, None, confidence=0.8) == "cluster-margin"
    assert Auto(confidence=0.6).phase(100, 10, None, confidence=0.61) == "margin"
    assert Auto(confidence=1.0).phase(100, 10, None, confidence=1.0) == "typiclust"  # agreement alone
    assert a.phase(100, 2, None, confidence=0.1) == "entropy"
    for bad, match in (({"agreement": 0.0}, "agreement"), ({"coverage": "margin"}, "coverage"),
                       ({"uncertainty": "entropy"}, "uncertainty"),
                       ({"uncertainty": "entropy"}, "by-confidence, cluster-margin, margin"),
                       ({"confidence": 0.0}, "confidence must be in \\(0, 1\\] but is 0.0")):
        with pytest.raises(ValidationError, match=match):
            Auto(**bad)
    for bad, match in ((lambda: coverage.ProbCover(alpha=0), "alpha must be in"),
                       (lambda: coverage.ClusterMargin(m=0.5), "m must be >= 1"),
                       (lambda: coverage.ColdStartKCenter(quantile=1.0), "quantile")):
        with pytest.raises(ValidationError, match=match):
            bad()


def test_prediction_agreement_by_hand():
    prev = (np.array([1, 3, 5, 7]), np.array([0, 1, 2, 0]))
    cur = (np.array([3, 4, 5, 7]), np.array([1, 1, 0, 0]))  # common 3, 5, 7: same, changed, same
    assert prediction_agreement(prev, cur) == pytest.approx(2 / 3)
    assert prediction_agreement(prev, (np.array([2]), np.array([0]))) is None


def test_auto_switches_from_coverage_to_margin_in_a_learner(pool):
    X, y = pool
    L = ActiveLearner(X, N_CLASSES, Auto(agreement=0.9, uncertainty="margin", confidence=1.0), holdout=HOLDOUT,
                      random_state=0)
    ids = L.query(20)  # no label yet: coverage needs no model
    assert L.last_query_["auto"] == "typiclust" and L.model_ is None
    phases, agreements = [], []
    for _ in range(8):
        L.teach(ids, y[ids])
        ids = L.query(20)
        phases.append(L.last_query_["auto"])
        agreements.append(L.last_query_.get("agreement"))
    assert phases[0] == "typiclust" and agreements[0] is None  # the first model
    first = phases.index("margin")  # digits: successive models agree on 90% within 180 labels
    assert all(p == "typiclust" for p in phases[:first]) and all(p == "margin" for p in phases[first:])
    assert agreements[first] >= 0.9 and all(a < 0.9 for a in agreements[1:first])
    m = margin(L.predict_proba(X))
    free = eligible(L)
    assert np.all(m[ids] >= np.sort(m[free])[-20] - 1e-12)


def test_auto_switches_on_the_models_mean_top_probability(pool):
    """The confidence auto measures is the mean top probability of the model over the
    candidates, recomputed here; it switches exactly at the threshold, from the first model."""
    X, y = pool
    s = seed_positions(2, size=40)

    def first_query(threshold):
        L = ActiveLearner(X, N_CLASSES, Auto(agreement=1.0, confidence=threshold), holdout=HOLDOUT,
                          random_state=0)
        L.teach(s, y[s])
        free = eligible(L)
        ids = L.query(10)
        return L, free, ids

    L, free, _ = first_query(0.999)
    c = L.last_query_["confidence"]
    assert c == pytest.approx(L.predict_proba(X[free]).max(axis=1).mean(), abs=1e-12)
    assert L.last_query_["auto"] == "typiclust" and L.last_query_["agreement"] is None and 0.1 < c < 0.999
    L, _, ids = first_query(c - 1e-9)
    assert L.last_query_["auto"] == "margin"
    m = margin(L.predict_proba(X))
    assert np.all(m[ids] >= np.sort(m[eligible(L)])[-10] - 1e-12)  # the 10 smallest margins
    assert first_query(c + 1e-6)[0].last_query_["auto"] == "typiclust"
    # on a SEALS candidate pool: measured over C, and the uncertainty phase picks from C
    cand = CandidatePool(X, index=SimilarityIndex("Flat").build(X), k=10)
    L = ActiveLearner(X, N_CLASSES, Auto(agreement=1.0, confidence=0.01), candidates=cand,
                      holdout=HOLDOUT, random_state=0)
    L.teach(s, y[s])
    C = L.candidates_.positions.copy()
    ids = L.query(10)
    assert L.last_query_["auto"] == "margin" and set(ids.tolist()) <= set(C.tolist())
    assert L.last_query_["confidence"] == pytest.approx(L.predict_proba(X[C]).max(axis=1).mean(), abs=1e-9)
    # one class labeled: every probability is 1, which estimates nothing
    one = np.flatnonzero(y[:400] == 3)[:5]
    L = ActiveLearner(X, N_CLASSES, Auto(agreement=1.0, confidence=0.5), holdout=HOLDOUT, random_state=0)
    L.teach(one, y[one])
    L.query(5)
    assert L.last_query_["confidence"] is None and L.last_query_["auto"] == "typiclust"


@pytest.mark.parametrize("name", ["typiclust", "probcover", "kcenter-cold", "badge", "cluster-margin", "auto"])
def test_selecting_strategies_on_an_index_without_graph(name, pool):
    """SEALS with on-the-fly index queries: the batch comes from C, the graph is built on C."""
    X, y = pool
    cand = CandidatePool(X, index=SimilarityIndex("Flat").build(X), k=10)
    L = learner_for(name, X, seed=4, candidates=cand)
    s = seed_positions(4, size=40)
    L.teach(s, y[s])
    C = set(L.candidates_.positions.tolist())
    ids = L.query(10)
    assert set(ids.tolist()) <= C and len(np.unique(ids)) == 10 and L.last_query_["padded"] == 0


def test_coverage_reads_a_bounded_sample_of_a_large_view():
    """Beyond their row caps TypiClust clusters, and ProbCover reads the graph of, a uniform
    sample of the available rows: the batch is still distinct, available rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    exclude = np.zeros(300, dtype=bool)
    exclude[:50] = True
    picks = typiclust_select(inputs(X, exclude=exclude, seed=1), 10, max_rows=60)
    assert len(set(picks.tolist())) == 10 and picks.min() >= 50
    inp = inputs(X, exclude=exclude, seed=1, graph=KNNGraph.build(X, k=8, index="Flat"))
    lg = local_graph(inp, max_nodes=40)
    assert len(lg.rows) == 40 and lg.rows.min() >= 50 and len(set(lg.rows.tolist())) == 40
    assert lg.neighbors.max() < 40


def test_reduce_dims_keeps_the_principal_directions():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(400, 3)) * [10.0, 3.0, 0.01]  # variance along three axes
    R = np.linalg.qr(rng.normal(size=(100, 100)))[0][:, :3]
    A = (Z @ R.T).astype(np.float32)  # 100 columns, 3 real directions
    cache = {}
    P = coverage.reduce_dims(A, cache, dims=2)
    assert P.shape == (400, 2) and len(cache) == 1
    # the projection keeps the two large directions: distances within 1% of those in Z[:, :2]
    d_p = np.linalg.norm(P[:50, None] - P[None, :50], axis=2)
    d_z = np.linalg.norm(Z[:50, None, :2] - Z[None, :50, :2], axis=2)
    np.testing.assert_allclose(d_p, d_z, rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(coverage.reduce_dims(A[:, :2], {}, dims=2), A[:, :2])  # narrow rows pass through


def test_auto_is_the_default_of_the_learner_the_simulation_and_the_cli(pool):
    from datascout.cli import build_parser
    from datascout.simulate import SimulationConfig

    X, y = pool
    L = ActiveLearner(X, N_CLASSES, holdout=HOLDOUT, random_state=0)
    assert isinstance(L.strategy, Auto) and SimulationConfig().strategy == "auto"
    args = build_parser().parse_args(["simulate", "--embeddings", "e.npy", "--labels", "y.npy", "--out", "r.json"])
    assert args.strategy is None  # chosen at run time: auto, or mean-entropy with --multi-label
    # two classes (a rare concept against the rest): MaxEnt from the first labeled round, as before
    yb = (y == 3).astype(np.int64)
    B = ActiveLearner(X, 2, holdout=HOLDOUT, random_state=0)
    s = np.concatenate([np.flatnonzero(yb[:400] == 1)[:5], np.flatnonzero(yb[:400] == 0)[:25]])
    B.teach(s, yb[s])
    ids = B.query(10)
    assert B.last_query_["auto"] == "entropy"
    e = entropy(B.predict_proba(X))
    assert np.all(e[ids] >= np.sort(e[eligible(B)])[-10] - 1e-12)
