"""ActiveLearner: checked teach / query, string ids, held-out items, SEALS padding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from datascout.exceptions import DatascoutError, LabelingError, ValidationError
from datascout.loop import ActiveLearner
from datascout.pool import Pool
from datascout.seals import CandidatePool, KNNGraph


def state(L):
    return (L.labels_.copy(), L.n_labeled_, [a.copy() for a in L.labeled_order_],
            L._unit_sum_labeled.copy())


def assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert len(a[2]) == len(b[2]) and all(np.array_equal(x, y) for x, y in zip(a[2], b[2]))
    np.testing.assert_array_equal(a[3], b[3])


@pytest.fixture()
def learner(blobs):
    X, y = blobs
    L = ActiveLearner(X, 3, "entropy", holdout=[57, 58, 59], random_state=0)
    L.teach([0, 20, 40], [0, 1, 2])
    return L


BAD_TEACH = [
    ("size mismatch", [1, 2], [0], LabelingError, "2 ids but 1 labels"),
    ("duplicate ids", [1, 2, 1], [0, 0, 0], LabelingError, "id 1 occurs 2 times"),
    ("already labeled", [1, 20], [0, 1], LabelingError, "id 20 is already labeled"),
    ("unknown id", [1, 60], [0, 0], ValidationError, "unknown id 60"),
    ("negative id", [-1], [0], ValidationError, "unknown id -1"),
    ("unknown class", [1, 2], [0, 3], LabelingError, r"unknown class 3: expected a class id in 0\.\.2"),
    ("negative class", [1], [-1], LabelingError, "unknown class -1"),
    ("held out", [3, 58], [0, 2], LabelingError, "id 58 is held out"),
    ("float labels", [1], [0.5], LabelingError, "integer class ids"),
    ("empty", [], [], LabelingError, "at least 1 id"),
    ("2-D ids", [[1, 2]], [[0, 0]], LabelingError, "1-D"),
]


@pytest.mark.parametrize("case", BAD_TEACH, ids=[c[0] for c in BAD_TEACH])
def test_teach_rejects_and_records_nothing(learner, case):
    _, ids, labels, exc, match = case
    before = state(learner)
    with pytest.raises(exc, match=match) as info:
        learner.teach(ids, labels)
    assert isinstance(info.value, DatascoutError)
    assert "\n" not in str(info.value)  # one line
    assert_same_state(before, state(learner))


def test_teach_records_labels_in_order(learner):
    learner.teach(np.array([5, 3]), np.array([0, 0]))
    assert learner.n_labeled_ == 5
    np.testing.assert_array_equal(learner.labeled_positions, [0, 20, 40, 5, 3])
    assert learner.labels_[5] == 0 and learner.labels_[3] == 0
    assert learner.n_unlabeled == 60 - 5 - 3


def test_query_rejects_bad_batch_sizes(learner):
    for n in (0, -3):
        with pytest.raises(ValidationError, match=f"batch size must be > 0 but is {n}"):
            learner.query(n)
    with pytest.raises(ValidationError, match="batch size 55 is larger than the 54 unlabeled items"):
        learner.query(55)
    assert len(learner.query(54)) == 54  # exactly the rest of the pool


def test_model_query_needs_a_seed(blobs):
    X, _ = blobs
    with pytest.raises(ValidationError, match="teach a seed set"):
        ActiveLearner(X, 3, "margin", random_state=0).query(2)
    ids = ActiveLearner(X, 3, "random", random_state=0).query(5)  # random needs no model
    assert len(np.unique(ids)) == 5


def test_string_ids_and_class_names(blobs):
    X, y = blobs
    names = np.array([f"item-{i:02d}" for i in range(60)])
    pool = Pool(X, ids=names, classes=["a", "b", "c"])
    L = ActiveLearner(pool, 3, "margin", random_state=0)
    L.teach(["item-00", "item-20", "item-40"], ["a", "b", "c"])
    np.testing.assert_array_equal(L.labels_[[0, 20, 40]], [0, 1, 2])
    ids = L.query(4)
    assert ids.dtype.kind == "U" and set(ids.tolist()) <= set(names.tolist())
    assert not set(ids.tolist()) & {"item-00", "item-20", "item-40"}
    before = state(L)
    with pytest.raises(ValidationError, match="unknown id 'nope'"):
        L.teach(["item-01", "nope"], ["a", "a"])
    with pytest.raises(LabelingError, match="unknown class 'd'"):
        L.teach(["item-01"], ["d"])
    with pytest.raises(LabelingError, match="'item-20' is already labeled"):
        L.teach(["item-20"], ["b"])
    assert_same_state(before, state(L))
    L.teach(ids, y[[int(i[-2:]) for i in ids]])  # integer class ids work too
    assert L.n_labeled_ == 7


def test_integer_ids_that_are_not_positions(blobs):
    X, y = blobs
    pool = Pool(X, ids=np.arange(1000, 1060))
    L = ActiveLearner(pool, 3, "entropy", random_state=0)
    L.teach([1000, 1020, 1040], [0, 1, 2])
    assert list(np.flatnonzero(L.labels_ >= 0)) == [0, 20, 40]
    assert np.all(L.query(5) >= 1000)
    with pytest.raises(ValidationError, match="unknown id 5"):
        L.teach([5], [0])


def test_integer_ids_in_an_object_array_stay_integers(blobs):
    X, y = blobs
    ids = np.array([100 + 7 * i for i in range(60)], dtype=object)  # as pandas often hands them over
    pool = Pool(X, ids=ids)
    assert pool.ids.dtype == np.int64
    assert pool.positions([100, 107]).tolist() == [0, 1]


def test_pool_labels_are_taught_at_start(blobs):
    X, y = blobs
    labels = np.full(60, -1)
    labels[[1, 21, 41]] = [0, 1, 2]
    L = ActiveLearner(Pool(X, labels=labels), 3, "entropy", random_state=0)
    assert L.n_labeled_ == 3
    assert not np.isin(L.query(10), [1, 21, 41]).any()


def test_pool_labels_on_held_out_items_are_not_taught(blobs):
    X, _ = blobs
    labels = np.full(60, -1)
    labels[[0, 1, 2, 30]] = [0, 1, 0, 2]
    L = ActiveLearner(Pool(X, labels=labels), 3, "entropy", holdout=[0, 30], random_state=0)
    assert L.n_labeled_ == 2 and L.n_holdout_ == 2 and L.n_unlabeled == 56
    np.testing.assert_array_equal(np.sort(L.labeled_positions), [1, 2])
    assert L.labels_[0] == L.labels_[30] != 0  # still held out
    picked = L.query(56)  # every item that is neither labeled nor held out
    np.testing.assert_array_equal(np.sort(picked), np.setdiff1d(np.arange(60), [0, 1, 2, 30]))


class _NaNWhereFirstFeaturePositive(BaseEstimator, ClassifierMixin):
    """A model whose probabilities are NaN on half of the pool (a degenerate fit)."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        X = np.asarray(X)
        p = np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))
        p[X[:, 0] > np.median(X[:, 0])] = np.nan
        return p


def test_nan_scores_never_return_labeled_items(blobs):
    X, y = blobs
    L = ActiveLearner(X, 3, "entropy", model=_NaNWhereFirstFeaturePositive(), random_state=0)
    L.teach(np.arange(40), y[:40])
    nan_rows = X[40:, 0] > np.median(X[:, 0])
    assert 5 < nan_rows.sum() < 20  # fewer than 15 finite scores: a batch of 15 takes NaN-scored items
    for seed in range(5):
        L.rng = np.random.default_rng(seed)
        picked = L.query(15)
        assert set(picked.tolist()) <= set(range(40, 60)) and len(set(picked.tolist())) == 15
        assert nan_rows[picked[-1] - 40]  # NaN-scored items come last
    assert set(L.query(20).tolist()) == set(range(40, 60))


def test_top_b_puts_nan_between_numbers_and_minus_infinity():
    from datascout.strategies import top_b

    s = np.array([-np.inf, np.nan, 0.5, -np.inf, -1e300])
    for seed in range(10):
        np.testing.assert_array_equal(top_b(s, 3, np.random.default_rng(seed)), [2, 4, 1])


def test_constructor_validation(blobs):
    X, _ = blobs
    with pytest.raises(ValidationError, match="n_classes must be >= 2 but is 1"):
        ActiveLearner(X, 1)
    with pytest.raises(ValidationError, match="unknown strategy"):
        ActiveLearner(X, 3, "bogus")
    with pytest.raises(ValidationError, match="fit and predict_proba"):
        ActiveLearner(X, 3, model=object())
    with pytest.raises(ValidationError, match="holdout positions must be in 0..59"):
        ActiveLearner(X, 3, holdout=[3, 60])
    with pytest.raises(ValidationError, match="density_reference"):
        ActiveLearner(X, 3, density_reference="nearby")


def test_seals_query_pads_with_random_unlabeled_items(blobs):
    X, y = blobs
    graph = KNNGraph.build(X, k=2, index="Flat")
    cand = CandidatePool(X, graph=graph, k=2)
    L = ActiveLearner(X, 3, "entropy", candidates=cand, holdout=[59], random_state=0)
    L.teach([0], [0])  # at most 2 candidates: the neighbours of item 0
    expected = set(graph.neighbors[0].tolist()) - {0, 59}
    ids = L.query(6)
    assert L.last_query_["candidates"] == len(expected)
    assert L.last_query_["padded"] == 6 - len(expected)
    assert set(ids[: len(expected)].tolist()) == expected
    assert len(np.unique(ids)) == 6 and not np.isin(ids, [0, 59]).any()


def test_query_does_not_change_labels(learner):
    before = copy.deepcopy(learner.labels_)
    learner.query(10)
    np.testing.assert_array_equal(before, learner.labels_)


@pytest.mark.parametrize("name", ["entropy", "density", "bald", "margin"])
def test_chunked_scoring_equals_one_pass(digits, name):
    X, y = digits
    L = ActiveLearner(X[:400], 10, name, random_state=0)
    L.teach(np.arange(0, 400, 8), y[:400:8])
    whole = L.score_rows(L.pool.embeddings, chunk_rows=1 << 20)
    np.testing.assert_allclose(L.score_rows(L.pool.embeddings, chunk_rows=37), whole, rtol=1e-6, atol=1e-7)


def test_float16_memory_map_pool(tmp_path, digits):
    from datascout.io import load_embeddings

    X, y = digits
    np.save(tmp_path / "e16.npy", X[:500].astype(np.float16))
    mm, _ = load_embeddings(tmp_path / "e16.npy")
    assert mm.dtype == np.float16 and isinstance(mm, np.memmap)
    for name in ("density", "kcenter", "hybrid"):
        L = ActiveLearner(mm, 10, name, random_state=0)
        L.teach(np.arange(0, 500, 10), y[:500:10])
        ids = L.query(7)
        assert len(np.unique(ids)) == 7 and not np.isin(ids, np.arange(0, 500, 10)).any()
