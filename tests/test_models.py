"""Models: the float32 fast path equals scikit-learn, unseen classes are aligned, committees."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from datascout.exceptions import ValidationError
from datascout.models import MODEL_NAMES, BootstrapCommittee, FittedModel, default_model, make_model


def test_default_model_is_balanced_logistic_regression():
    m = default_model(3)
    assert isinstance(m, LogisticRegression)
    assert m.class_weight == "balanced" and m.random_state == 3


def test_named_models():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier

    assert MODEL_NAMES == ("logreg", "mlp", "random-forest", "scaled-logreg", "scaled-mlp")
    assert make_model("logreg", 4).get_params() == default_model(4).get_params()
    mlp = make_model("mlp", 4)
    assert isinstance(mlp, MLPClassifier) and mlp.hidden_layer_sizes == (128,) and mlp.random_state == 4
    rf = make_model("random-forest", 4)
    assert isinstance(rf, RandomForestClassifier) and rf.class_weight == "balanced" and rf.random_state == 4
    with pytest.raises(ValidationError, match="unknown model 'svm': expected one of logreg, mlp, random-forest, scaled-logreg, scaled-mlp"):
        make_model("svm")


@pytest.mark.parametrize("name", ["mlp", "random-forest"])
def test_named_models_keep_unseen_classes_aligned(digits, name):
    """A round where only some classes are labeled: the other columns are 0, rows sum to 1."""
    X, y = digits
    mask = np.isin(y, [1, 4, 7])
    fm = FittedModel(make_model(name, 0), 10).fit(X[mask][:200], y[mask][:200])
    p = fm.predict_proba(X[:40])
    assert p.shape == (40, 10)
    np.testing.assert_array_equal(p[:, [0, 2, 3, 5, 6, 8, 9]], 0.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_fast_path_equals_sklearn_predict_proba(digits, task):
    X, y = digits
    if task == "binary":
        y = (y == 3).astype(np.int64)
    n_classes = int(y.max()) + 1
    train = np.arange(0, 1797, 3)
    fm = FittedModel(default_model(0), n_classes).fit(X[train], y[train])
    assert fm._linear is not None  # the fast path is the one under test
    ref = clone(default_model(0)).fit(X[train].astype(np.float32), y[train])
    got = fm.predict_proba(X)
    assert got.dtype == np.float32 and got.shape == (len(X), n_classes)
    np.testing.assert_allclose(got, ref.predict_proba(X.astype(np.float32)), atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_fast_path_float16_input_and_large_logits(digits):
    X, y = digits
    fm = FittedModel(LogisticRegression(C=1e4, max_iter=2000), 10).fit(X[:600] * 50, y[:600])
    p = fm.predict_proba((X[600:] * 50).astype(np.float16))
    assert np.isfinite(p).all()  # no overflow in the softmax
    ref = fm.estimator_.predict_proba((X[600:] * 50).astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(p, ref, atol=1e-4)


def test_binary_fast_path_with_huge_logits_is_exact_and_quiet(digits):
    """Logits far beyond float32's exp range: no overflow warning, and the small probability keeps
    its relative precision instead of rounding to 0 (the reference is float64 arithmetic)."""
    X, y = digits
    y = (y == 3).astype(np.int64)
    fm = FittedModel(LogisticRegression(C=1e4, max_iter=3000), 2).fit(X[:600] * 50, y[:600])
    w, b = fm._linear
    z = ((X[600:] * 50).astype(np.float32) @ w + b)[:, 0].astype(np.float64)
    assert z.min() < -89 and z.max() > 20  # exp(89) overflows float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail here
        p = fm.predict_proba((X[600:] * 50).astype(np.float32))
    p1 = 1.0 / (1.0 + np.exp(-z))  # float64: exact to well below float32's resolution
    p0 = 1.0 / (1.0 + np.exp(z))
    for got, want in ((p[:, 1], p1), (p[:, 0], p0)):
        normal = want > 1e-30  # below float32's normal range precision runs out by design
        np.testing.assert_allclose(got[normal], want[normal], rtol=1e-4)
        assert (got[~normal] < 1e-30).all() and (got >= 0).all()
    assert (p[z > 20, 0] > 0).all()  # 1 - p1 would be exactly 0 there in float32


@pytest.mark.parametrize("seen", [[0, 2, 4], [1, 3]])
def test_unseen_classes_get_zero_columns(digits, seen):
    X, y = digits
    mask = np.isin(y, seen)
    fm = FittedModel(default_model(0), 5).fit(X[mask][:300], y[mask][:300])
    p = fm.predict_proba(X[:50])
    assert p.shape == (50, 5)
    unseen = [c for c in range(5) if c not in seen]
    np.testing.assert_array_equal(p[:, unseen], 0.0)
    ref = clone(default_model(0)).fit(X[mask][:300].astype(np.float32), y[mask][:300])
    np.testing.assert_allclose(p[:, seen], ref.predict_proba(X[:50].astype(np.float32)), atol=1e-5)


def test_one_class_seen_predicts_that_class():
    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    fm = FittedModel(default_model(), 4).fit(X, np.full(8, 2))
    assert fm.estimator_ is None
    p = fm.predict_proba(X[:3])
    np.testing.assert_array_equal(p, np.tile([0.0, 0.0, 1.0, 0.0], (3, 1)))


def test_generic_estimator_columns_are_aligned(digits):
    X, y = digits
    mask = np.isin(y, [1, 7])
    fm = FittedModel(GaussianNB(), 10).fit(X[mask], y[mask])
    assert fm._linear is None
    p = fm.predict_proba(X[:20])
    ref = GaussianNB().fit(X[mask], y[mask]).predict_proba(X[:20])
    np.testing.assert_allclose(p[:, [1, 7]], ref, atol=1e-6)
    assert p[:, [0, 2, 3, 4, 5, 6, 8, 9]].sum() == 0


def test_fit_rejects_bad_labels():
    X = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValidationError, match=r"0\.\.2 but contain 5"):
        FittedModel(default_model(), 3).fit(X, [0, 1, 5, 1])
    with pytest.raises(ValidationError, match="0 labeled"):
        FittedModel(default_model(), 3).fit(X[:0], [])


def test_bootstrap_committee(digits):
    X, y = digits
    X, y = X[:200], y[:200]
    c = BootstrapCommittee(default_model(0), 10, n_members=3, random_state=4).fit(X, y)
    assert len(c.members_) == 3
    for m in c.members_:
        np.testing.assert_array_equal(m.seen_classes_, np.arange(10))  # every member sees all
    mp = c.predict_proba_members(X[:7])
    assert mp.shape == (3, 7, 10)
    assert not np.allclose(mp[0], mp[1])  # different resamples
    again = BootstrapCommittee(default_model(0), 10, n_members=3, random_state=4).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba_members(X[:7]), mp)
    with pytest.raises(ValidationError, match="at least 2 members"):
        BootstrapCommittee(default_model(), 10, n_members=1).fit(X, y)


@pytest.mark.parametrize("task", ["binary", "multiclass", "generic", "one-class"])
def test_projection_rides_along_the_logits(digits, task):
    """predict_proba(X, project=u) = (predict_proba(X), X @ u), with one matrix product for LR."""
    X, y = digits
    X = X.astype(np.float32)
    est = GaussianNB() if task == "generic" else default_model()
    if task == "binary":
        y = (y == 3).astype(np.int64)
    n_classes = 2 if task == "binary" else 10
    fit_y = np.zeros_like(y) if task == "one-class" else y
    m = FittedModel(est, n_classes).fit(X[:400], fit_y[:400])
    u = np.random.default_rng(0).normal(size=X.shape[1]).astype(np.float32)
    probs, dots = m.predict_proba(X[400:900], project=u)
    np.testing.assert_allclose(probs, m.predict_proba(X[400:900]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dots, X[400:900].astype(np.float64) @ u.astype(np.float64), rtol=1e-4, atol=1e-3)
