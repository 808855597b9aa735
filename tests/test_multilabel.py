"""Multi-label active learning: label-set files, the learner's checked teach step, models,
hand-computed scores, seeds and SEALS over label sets. (Every multi-label strategy also runs
through the shared contract suite in tests/test_strategies.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import ClassifierChain

from datascout.exceptions import LabelingError, ValidationError
from datascout.loop import ActiveLearner
from datascout.multilabel import (
    adaptive,
    binary_entropy,
    label_cardinality_inconsistency,
    load_label_sets,
    max_entropy,
    max_loss,
    mean_entropy,
    mean_max_loss,
    min_margin,
    mmc,
    separation_margin,
)
from datascout.multilabel_loop import MultiLabelLearner
from datascout.multilabel_models import BinaryRelevance, FittedMultiLabel, make_multilabel_model
from datascout.registry import MULTILABEL_STRATEGY_NAMES, make_multilabel_strategy, make_strategy
from datascout.seals import CandidatePool, KNNGraph
from datascout.seeds import iterative_stratification_seed, label_positives_seed, random_seed

# --------------------------------------------------------------------------- scores by hand

P = np.array([[0.9, 0.2, 0.6], [0.5, 0.5, 0.1], [0.3, 0.1, 0.2]])
H = {0.9: 0.3250830, 0.1: 0.3250830, 0.2: 0.5004024, 0.6: 0.6730117, 0.5: math.log(2), 0.3: 0.6108643}


def test_binary_entropies_by_hand():
    np.testing.assert_allclose(binary_entropy(np.array([[0.0, 1.0, 0.5]])), [[0.0, 0.0, math.log(2)]], atol=1e-7)
    np.testing.assert_allclose(mean_entropy(P), [(H[0.9] + H[0.2] + H[0.6]) / 3, (2 * H[0.5] + H[0.1]) / 3,
                                                 (H[0.3] + H[0.1] + H[0.2]) / 3], atol=1e-6)
    np.testing.assert_allclose(max_entropy(P), [H[0.6], H[0.5], H[0.3]], atol=1e-6)


def test_min_margin_by_hand():
    # |2p - 1|: row 0 -> .8 .6 .2; row 1 -> 0 0 .8; row 2 -> .4 .8 .6
    np.testing.assert_allclose(min_margin(P), [-0.2, 0.0, -0.4], atol=1e-12)


def test_cardinality_inconsistency_and_separation_by_hand():
    # predicted (p > .5): {0, 2}, {}, {}; mean labeled cardinality 1.5
    np.testing.assert_allclose(label_cardinality_inconsistency(P, 1.5), [0.5, 1.5, 1.5])
    # f = p - .5: row 0 min positive .1, max negative -.3; row 1 no positive, max negative 0;
    # row 2 no positive, max negative -.2
    np.testing.assert_allclose(separation_margin(P), [0.4, 0.0, 0.2], atol=1e-12)
    # u = 1 / max(margin, 1e-6) = 2.5, 1e6, 5; c = .5, 1.5, 1.5
    np.testing.assert_allclose(adaptive(P, 1.5, beta=0.5), [math.sqrt(1.25), 1000 * math.sqrt(1.5), math.sqrt(7.5)],
                               rtol=1e-9)
    np.testing.assert_allclose(adaptive(P, 1.5, beta=1.0), [2.5, 1e6, 5.0], rtol=1e-9)
    np.testing.assert_allclose(adaptive(P, 1.5, beta=0.0), [0.5, 1.5, 1.5], rtol=1e-9)


def test_mmc_by_hand():
    # m = round(1.5) = 2 most probable labels positive; loss = sum_top (1 - p) + sum_rest p
    np.testing.assert_allclose(mmc(P, 1.5), [0.1 + 0.4 + 0.2, 0.5 + 0.5 + 0.1, 0.7 + 0.8 + 0.1], atol=1e-12)
    # m = 1 (at least one label even when the labeled cardinality is below 1/2)
    np.testing.assert_allclose(mmc(P, 0.2), [0.1 + 0.2 + 0.6, 0.5 + 0.5 + 0.1, 0.7 + 0.1 + 0.2], atol=1e-12)
    np.testing.assert_allclose(mmc(P, 9.0), [0.1 + 0.8 + 0.4, 0.5 + 0.5 + 0.9, 0.7 + 0.9 + 0.8], atol=1e-12)


def test_max_loss_and_mean_max_loss_by_hand():
    # yhat: row 0 {0, 2}; rows 1, 2 predict nothing -> their most probable label (0) is positive.
    # f = 2p - 1; hinge max(0, 1 - yhat f):
    # row 0: f = .8 -.6 .2 -> .2 .4 .8; row 1: f = 0 0 -.8 -> 1 1 .2; row 2: f = -.4 -.8 -.6 -> 1.4 .2 .4
    np.testing.assert_allclose(max_loss(P), [0.8, 1.0, 1.4], atol=1e-12)
    np.testing.assert_allclose(mean_max_loss(P), [1.4 / 3, 2.2 / 3, 2.0 / 3], atol=1e-12)


def test_multilabel_strategy_names_build():
    for name in MULTILABEL_STRATEGY_NAMES:
        assert make_multilabel_strategy(name).name == name
    with pytest.raises(ValidationError, match="unknown multi-label strategy 'mean-entropi'.*did you mean 'mean-entropy'"):
        make_multilabel_strategy("mean-entropi")
    with pytest.raises(ValidationError, match=r"beta must be in \[0, 1\]"):
        type(make_multilabel_strategy("adaptive"))(beta=2.0)


def test_strategy_kinds_do_not_mix():
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValidationError, match="'mean-entropy' is for multi-label tasks but this learner's task is single-label"):
        ActiveLearner(X, 3, make_multilabel_strategy("mean-entropy"))
    with pytest.raises(ValidationError, match="'entropy' is for single-label tasks but this learner's task is multi-label"):
        MultiLabelLearner(X, 3, make_strategy("entropy"))
    MultiLabelLearner(X, 3, make_strategy("kcenter"))  # label-agnostic: both kinds


# --------------------------------------------------------------------------- label-set files


def test_load_label_sets_npy_npz_csv(tmp_path):
    Y = np.array([[1, 0, 1], [0, 0, 0], [-1, -1, -1], [0, 1, 0]])
    np.save(tmp_path / "Y.npy", Y)
    got, labeled, classes = load_label_sets(tmp_path / "Y.npy")
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(labeled, [True, True, False, True])  # an all -1 row: unlabeled
    assert got.dtype == bool and classes is None

    scipy.sparse.save_npz(tmp_path / "Y.npz", scipy.sparse.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]])))
    got, labeled, _ = load_label_sets(tmp_path / "Y.npz", classes=["a", "b", "c"])
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 1, 0]])
    assert labeled.all()

    (tmp_path / "Y.csv").write_text("id,labels\nz,b;a\nx,\ny, c ; a\n")
    got, labeled, classes = load_label_sets(tmp_path / "Y.csv", ids=np.array(["x", "y", "z", "w"]))
    assert classes == ["a", "b", "c"]  # sorted when not given
    np.testing.assert_array_equal(got, [[0, 0, 0], [1, 0, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(labeled, [True, True, True, False])  # x: the empty set; w: unlabeled
    got, _, classes = load_label_sets(tmp_path / "Y.csv", ids=np.array(["x", "y", "z"]), classes=["c", "b", "a"])
    np.testing.assert_array_equal(got, [[0, 0, 0], [1, 0, 1], [0, 1, 1]])


@pytest.mark.parametrize(("content", "message"), [
    ("id,labels\nx,a;q\n", r"unknown class 'q' in label sets in Y.csv \(item 0\): expected one of \['a', 'b'\]"),
    ("id,labels\nv,a\n", "names id 'v', which is not in the pool"),
    ("id,labels\nx,a\nx,b\n", r"names id 'x' twice \(line 3\)"),
    ("id,tags\nx,a\n", "expected a 'labels' column"),
])
def test_label_set_csv_errors(tmp_path, content, message):
    (tmp_path / "Y.csv").write_text(content)
    with pytest.raises(ValidationError, match=message):
        load_label_sets(tmp_path / "Y.csv", ids=np.array(["x", "y"]), classes=["a", "b"])


def test_label_set_array_errors(tmp_path):
    np.save(tmp_path / "bad.npy", np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValidationError, match="only 0 and 1 but row 0, column 1 holds 2"):
        load_label_sets(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.array([0, 1]))
    with pytest.raises(ValidationError, match=r"must be an \(items x labels\) array but have shape \(2,\)"):
        load_label_sets(tmp_path / "flat.npy")
    np.save(tmp_path / "Y.npy", np.array([[0, 1], [1, 0]]))
    with pytest.raises(ValidationError, match="have 2 columns but the task has 3 labels"):
        load_label_sets(tmp_path / "Y.npy", classes=["a", "b", "c"])


# --------------------------------------------------------------------------- the learner's teach


def synthetic(n, d, n_labels, seed=0):
    """Items whose label l is on when a noisy linear score of the item is high (a few per item)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    scores = X @ rng.normal(size=(d, n_labels)) + rng.normal(scale=0.5, size=(n, n_labels))
    return X, scores > np.quantile(scores, 0.7, axis=0)


@pytest.fixture(scope="module")
def small():
    return synthetic(120, 8, 4, seed=1)


def test_teach_takes_sets_of_names_ids_and_indicators(small):
    X, Y = small
    L = MultiLabelLearner(X, ["a", "b", "c", "d"], "mean-entropy", random_state=0)
    L.teach([0, 1, 2], [{"a", "c"}, [], ("d",)])
    L.teach([3, 4], [[1], [0, 3]])  # label ids
    L.teach([5, 6], np.array([[1, 1, 0, 0], [0, 0, 0, 1]]))
    L.teach([7], scipy.sparse.csr_matrix(np.array([[0, 1, 1, 0]])))
    pos, sets = L.label_sets()
    np.testing.assert_array_equal(pos, np.arange(8))
    np.testing.assert_array_equal(sets.astype(int), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0],
                                                     [1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0]])
    assert L.label_cardinality == pytest.approx(11 / 8)
    np.testing.assert_array_equal(L.labels_[:9], [2, 0, 1, 1, 2, 2, 1, 2, -1])  # >= 0: labeled (its set's size)


@pytest.mark.parametrize(("labels", "message"), [
    ([{"a"}, {"zebra"}], r"unknown class 'zebra' in label sets \(item 1\): expected one of \['a', 'b', 'c', 'd'\]"),
    ([{"a"}, {7}], "unknown class 7"),
    (np.array([[1, 0, 0], [0, 1, 0]]), "have 3 columns but the task has 4 labels"),
    (np.array([[1, 0, 0, 0], [0, 3, 0, 0]]), "only 0 and 1"),
    ([{"a"}], "got 2 ids but 1 labels"),
    (["ab", "c"], "item 0 is the string 'ab', expected a set of class names"),
])
def test_teach_rejects_bad_sets_and_records_nothing(small, labels, message):
    X, _ = small
    L = MultiLabelLearner(X, ["a", "b", "c", "d"], "mean-entropy", random_state=0)
    with pytest.raises(LabelingError, match=message):
        L.teach([10, 11], labels)
    assert L.n_labeled_ == 0 and (L.labels_ == -1).all() and L.label_sets()[0].size == 0


def test_empty_sets_only_where_allowed(small):
    X, _ = small
    L = MultiLabelLearner(X, 4, "mean-entropy", allow_empty=False, random_state=0)
    with pytest.raises(LabelingError, match="row 1 is the empty set, which this task does not allow"):
        L.teach([0, 1], [[0], []])
    assert L.n_labeled_ == 0
    L.teach([0, 1], [[0], [2, 3]])
    with pytest.raises(LabelingError, match="id 1 is already labeled"):
        L.teach([1], [[0]])
    with pytest.raises(LabelingError, match="occurs 2 times"):
        L.teach([5, 5], [[0], [1]])


def test_learner_refuses_bad_setup(small):
    X, _ = small
    with pytest.raises(ValidationError, match="at least 2 labels but has 1"):
        MultiLabelLearner(X, 1)
    with pytest.raises(ValidationError, match="class names must be unique"):
        MultiLabelLearner(X, ["a", "a"])
    with pytest.raises(ValidationError, match="no labeled items yet"):
        MultiLabelLearner(X, 4, "mean-entropy").query(3)
    from datascout.pool import Pool

    with pytest.raises(ValidationError, match="the pool holds single-label class ids"):
        MultiLabelLearner(Pool(X, labels=np.r_[0, np.full(len(X) - 1, -1)]), 4)


# --------------------------------------------------------------------------- models


def test_binary_relevance_fast_path_matches_each_logistic_regression(small):
    X, Y = small
    Y = Y.copy()
    Y[:, 3] = False  # never seen positive
    Y[:, 2] = True  # always positive
    fitted = FittedMultiLabel(BinaryRelevance(random_state=0), 4).fit(X[:80], Y[:80])
    assert fitted._linear is not None  # one (d, L) float32 matrix product
    p = fitted.predict_proba(X[80:])
    assert p.shape == (40, 4) and p.dtype == np.float32
    for j in (0, 1):
        ref = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=0).fit(X[:80], Y[:80, j])
        np.testing.assert_allclose(p[:, j], ref.predict_proba(X[80:])[:, 1], atol=2e-5)
    np.testing.assert_array_equal(p[:, 3], 0.0)
    np.testing.assert_array_equal(p[:, 2], 1.0)


def test_binary_relevance_over_any_classifier_and_native_models(small):
    from sklearn.neighbors import KNeighborsClassifier

    X, Y = small
    knn = FittedMultiLabel(BinaryRelevance(KNeighborsClassifier(5)), 4).fit(X[:80], Y[:80])
    for j in range(4):
        ref = KNeighborsClassifier(5).fit(X[:80], Y[:80, j])
        np.testing.assert_allclose(knn.predict_proba(X[80:])[:, j], ref.predict_proba(X[80:])[:, 1])
    native = FittedMultiLabel(KNeighborsClassifier(5), 4).fit(X[:80], Y[:80])  # a list of (n, 2) arrays
    np.testing.assert_allclose(native.predict_proba(X[80:]), knn.predict_proba(X[80:]))
    for name in ("mlp", "random-forest"):
        p = FittedMultiLabel(make_multilabel_model(name, 0), 4).fit(X[:80], Y[:80]).predict_proba(X[80:])
        assert p.shape == (40, 4) and np.all((p >= 0) & (p <= 1))


def test_classifier_chain_matches_scikit_learn(small):
    X, Y = small
    model = make_multilabel_model("chain", 3)
    assert isinstance(model, ClassifierChain)
    ours = FittedMultiLabel(model, 4).fit(X[:80], Y[:80]).predict_proba(X[80:])
    ref = ClassifierChain(LogisticRegression(class_weight="balanced", max_iter=1000, random_state=3),
                          order="random", random_state=3).fit(X[:80], Y[:80].astype(int))
    np.testing.assert_allclose(ours, ref.predict_proba(X[80:]), atol=1e-6)
    Y2 = Y[:80].copy()
    Y2[:, 1] = False  # a constant label drops out of the chain and is 0, not a crash
    p = FittedMultiLabel(model, 4).fit(X[:80], Y2).predict_proba(X[80:])
    np.testing.assert_array_equal(p[:, 1], 0.0)


# --------------------------------------------------------------------------- seeds


def test_iterative_stratification_by_hand():
    Y = np.zeros((8, 2), dtype=bool)
    Y[[0, 1], 0] = True  # the rare label: one of its two items goes to the seed
    Y[2:, 1] = True  # six items: three to the seed
    for s in range(6):
        seed = iterative_stratification_seed(Y, 4, np.random.default_rng(s))
        assert len(seed) == 4 and np.all(np.diff(seed) > 0)
        assert np.isin([0, 1], seed).sum() == 1 and np.isin(np.arange(2, 8), seed).sum() == 3


def test_iterative_stratification_keeps_label_proportions():
    _, Y = synthetic(1000, 6, 12)
    Y[:, :3] &= np.random.default_rng(1).random((1000, 3)) < 0.1  # three rare labels
    want = Y.sum(axis=0) * 0.1
    dev_strat, dev_rand = [], []
    for s in range(5):
        seed = iterative_stratification_seed(Y, 100, np.random.default_rng(s))
        assert len(seed) == 100 and len(np.unique(seed)) == 100
        dev_strat.append(np.abs(Y[seed].sum(axis=0) - want).max())
        dev_rand.append(np.abs(Y[random_seed(1000, 100, np.random.default_rng(s))].sum(axis=0) - want).max())
    assert max(dev_strat) <= 2.0  # every label within 2 items of its share
    assert np.mean(dev_strat) < np.mean(dev_rand) / 2
    a = iterative_stratification_seed(Y, 50, np.random.default_rng(9))
    np.testing.assert_array_equal(a, iterative_stratification_seed(Y, 50, np.random.default_rng(9)))


def test_label_positives_seed():
    Y = np.zeros((30, 3), dtype=bool)
    Y[[4, 9, 17], 2] = True
    Y[:, 0] = True
    seed = label_positives_seed(Y, 2, 2, 5, np.random.default_rng(0))
    assert len(seed) == 7 and Y[seed, 2].sum() == 2
    with pytest.raises(ValidationError, match="asked for 4 seed positives but the pool has 3"):
        label_positives_seed(Y, 2, 4, 5, np.random.default_rng(0))
    with pytest.raises(ValidationError, match=r"label id in 0..2 but is 3"):
        label_positives_seed(Y, 3, 1, 1, np.random.default_rng(0))


# --------------------------------------------------------------------------- SEALS


def test_seals_candidates_are_the_neighbours_of_every_labeled_item_empty_sets_included(small):
    X, Y = small
    graph = KNNGraph.build(X, k=5, index="Flat")
    L = MultiLabelLearner(X, 4, "max-entropy", candidates=CandidatePool(X, graph=graph, k=5), random_state=0)
    seed = np.array([0, 1, 2, 3, 4, 5])
    sets = Y[seed].copy()
    sets[:3] = False  # three items with the empty set still bring their neighbours
    L.teach(seed, sets)
    expected = set(np.unique(graph.neighbors[seed]).tolist()) - set(seed.tolist())
    ids = L.query(4)
    assert L.last_query_["candidates"] == len(expected) and L.last_query_["padded"] == 0
    assert set(ids.tolist()) <= expected
    scores = L.score_rows(X)
    cand = np.fromiter(expected, dtype=np.int64)
    assert scores[ids].min() >= np.sort(scores[cand])[-4] - 1e-12  # the top 4 candidates


# --------------------------------------------------------------------------- real data: debtags


def test_debtags_snapshot_end_to_end():
    """The committed 311-package Debian snapshot: debtags with enough support as label sets,
    TF-IDF + SVD features of the descriptions, a SEALS run that learns."""
    from pathlib import Path

    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from datascout.datasets import load_debian_packages
    from datascout.multilabel import supported_labels
    from datascout.multilabel_simulate import MultiLabelSimulationConfig, simulate_multilabel

    pk = load_debian_packages(Path(__file__).parent / "data" / "debian", min_items=1)
    Y, names = supported_labels(pk.tags, min_support=25)
    assert names == sorted(names) and "role::program" in names and "interface::commandline" in names
    assert Y.sum(axis=0).min() >= 25 and Y.shape == (len(pk.ids), len(names))
    for r in (0, 7, 100):  # an item's set is its tags among the kept ones
        assert {names[j] for j in np.flatnonzero(Y[r])} == set(pk.tags[r]) & set(names)
    with pytest.raises(ValidationError, match="no label is carried by at least 1000 items"):
        supported_labels(pk.tags, min_support=1000)
    X = TruncatedSVD(48, random_state=0).fit_transform(TfidfVectorizer(min_df=2).fit_transform(pk.texts))
    res = simulate_multilabel(X.astype(np.float32), Y, MultiLabelSimulationConfig(
        strategy="random", initial=40, batch_size=20, rounds=5, test_size=0.3, seals=True, k=10, index="Flat"),
        classes=names)
    f1 = [r["micro_f1"] for r in res["rounds"]]
    assert f1[-1] > f1[0] + 0.05  # 40 -> 140 labels
    assert all(r["candidates"] < res["n_pool"] for r in res["rounds"][1:])


def test_items_are_taught_by_id_never_by_position(small):
    from datascout.pool import Pool

    X, _ = small
    ids = np.array([f"pkg{i:03d}" for i in range(len(X))])[::-1].copy()  # id order != position order
    L = MultiLabelLearner(Pool(X, ids=ids), ["a", "b", "c", "d"], "max-loss", random_state=0)
    L.teach(["pkg000", "pkg119"], [{"b"}, {"a", "d"}])
    pos, sets = L.label_sets()
    np.testing.assert_array_equal(pos, [0, 119])  # pkg119 sits at position 0, pkg000 at 119
    np.testing.assert_array_equal(sets, [[True, False, False, True], [False, True, False, False]])
    got = L.query(3)
    assert got.dtype.kind == "U" and not set(got.tolist()) & {"pkg000", "pkg119"}
    with pytest.raises(LabelingError, match="already labeled"):
        L.teach(["pkg119"], [{"c"}])
