"""Float32 conversion of pool rows: exactness, rows not scored never converted, the budget."""

import numpy as np
import pytest

from datascout import convert
from datascout.convert import Float32Rows, as_float32, float16_to_float32, parse_size
from datascout.exceptions import DatascoutError, ValidationError
from datascout.loop import ActiveLearner
from datascout.strategies import kcenter_greedy


@pytest.fixture(autouse=True)
def _no_budget(monkeypatch):
    monkeypatch.delenv(convert.BUDGET_ENV, raising=False)
    convert.set_float32_budget(None)
    yield
    convert.set_float32_budget(None)


class RecordingRows:
    """An (N, d) array that records which rows each read asked for."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.reads = []

    def __getitem__(self, key):
        self.reads.append(np.arange(self.shape[0])[key].reshape(-1))
        return self.a[key]

    def rows_read(self):
        return np.unique(np.concatenate(self.reads)) if self.reads else np.empty(0, np.int64)


def clustered(n, d, seed=0, dtype=np.float16, scale=0.05):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, d))
    lab = rng.integers(0, 4, n)
    X = (scale * (centers[lab] + rng.standard_normal((n, d)))).astype(dtype)
    return X, lab


# --------------------------------------------------------------------------- the cast


def test_every_float16_value_converts_exactly():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got = float16_to_float32(every)
    # bit for bit what numpy's cast gives: +-0, subnormals, normals, +-inf, NaN payloads
    np.testing.assert_array_equal(got.view(np.uint32), every.astype(np.float32).view(np.uint32))
    finite = every[np.isfinite(every)]
    np.testing.assert_array_equal(float16_to_float32(finite, finite=True).view(np.uint32),
                                  finite.astype(np.float32).view(np.uint32))


def test_cast_keeps_shape_and_fills_out():
    X, _ = clustered(1000, 37)  # odd width, more than one conversion block in all
    out = np.empty(X.shape, dtype=np.float32)
    assert float16_to_float32(X, out) is out
    np.testing.assert_array_equal(out, X.astype(np.float32))
    np.testing.assert_array_equal(float16_to_float32(X[::3]), X[::3].astype(np.float32))


def test_cast_rejects_wrong_input_and_out():
    with pytest.raises(ValidationError, match="native float16 input but got float32"):
        float16_to_float32(np.zeros(3, np.float32))
    with pytest.raises(ValidationError, match=r"out must be a C-contiguous float32 array of shape \(3,\)"):
        float16_to_float32(np.zeros(3, np.float16), np.zeros(4, np.float32))


def test_as_float32_passes_float32_through_and_casts_the_rest():
    a = np.ones((4, 3), np.float32)
    assert as_float32(a) is a
    b = np.linspace(0, 1, 12).reshape(4, 3)
    np.testing.assert_array_equal(as_float32(b), b.astype(np.float32))
    out = np.empty((4, 3), np.float32)
    assert as_float32(b.astype(np.float16), out=out) is out


# --------------------------------------------------------------------------- the budget


def test_parse_size_units_and_errors():
    assert parse_size(0) == 0
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size(" 2gib ") == 2 * 2**30
    with pytest.raises(ValidationError, match=r"float32 budget must be a size such as 0, 512MiB or 2GiB but is 'lots'"):
        parse_size("lots")
    with pytest.raises(ValidationError, match="float32 budget must be >= 0 bytes but is -1"):
        parse_size(-1)
    with pytest.raises(DatascoutError):
        convert.set_float32_budget("2 parsecs")


def test_budget_from_setting_then_environment(monkeypatch):
    assert convert.float32_budget() == 0
    monkeypatch.setenv(convert.BUDGET_ENV, "1KiB")
    assert convert.float32_budget() == 1024
    convert.set_float32_budget("2KiB")
    assert convert.float32_budget() == 2048
    convert.set_float32_budget(None)
    monkeypatch.setenv(convert.BUDGET_ENV, "much")
    with pytest.raises(ValidationError, match=f"{convert.BUDGET_ENV} must be a size such as .* but is 'much'"):
        convert.float32_budget()


def test_copy_held_only_when_it_fits_the_budget():
    X, _ = clustered(500, 8)
    skip = np.zeros(500, bool)
    skip[::5] = True  # 400 rows scored: 400 * 8 * 4 = 12,800 bytes as float32
    tight = Float32Rows(X, budget=12_799)
    list(tight.chunks(skip))
    assert tight.copy_ is None
    fits = Float32Rows(X, budget=12_800)
    list(fits.chunks(skip))
    assert fits.copy_ is not None and fits.copy_.nbytes == 12_800
    np.testing.assert_array_equal(fits.copy_positions_, np.flatnonzero(~skip))
    np.testing.assert_array_equal(fits.copy_, X[~skip].astype(np.float32))
    converted = fits.converted_rows_
    list(fits.chunks(skip))  # the second round reads the copy: nothing converted
    assert fits.converted_rows_ == converted == 400
    skip[0] = False  # a row the copy lacks: a new copy, and it holds that row
    got = dict((int(p), r) for where, rows in fits.chunks(skip)
               for p, r in zip(np.arange(500)[where], rows))
    assert 0 in got and fits.converted_rows_ == 400 + 401
    np.testing.assert_array_equal(got[0], X[0].astype(np.float32))


def test_budget_setting_is_read_when_the_round_runs():
    X, _ = clustered(300, 8)
    rows = Float32Rows(X)
    list(rows.chunks())
    assert rows.copy_ is None
    convert.set_float32_budget("1MiB")
    list(rows.chunks())
    assert rows.copy_ is not None


def test_float32_pool_is_handed_out_without_conversion():
    X, _ = clustered(3000, 8, dtype=np.float32)
    rows = Float32Rows(X, budget="1GiB")
    chunks = list(rows.chunks(np.zeros(3000, bool)))
    assert rows.converted_rows_ == 0 and rows.copy_ is None
    assert all(np.shares_memory(c, X) for _, c in chunks)


def test_skip_with_the_wrong_length_is_refused():
    with pytest.raises(ValidationError, match="skip has 3 entries but the pool has 10 rows"):
        list(Float32Rows(np.zeros((10, 2), np.float16)).chunks(np.zeros(3, bool)))


# --------------------------------------------------------------------------- in the loop


def _learner(X, lab, holdout, strategy="entropy", n_classes=2, seed_size=40):
    y = lab % n_classes
    learner = ActiveLearner(X, n_classes, strategy, holdout=holdout, random_state=0)
    pool = np.setdiff1d(np.arange(len(X)), holdout)
    seed = np.random.default_rng(1).choice(pool, seed_size, replace=False)
    learner.teach(seed, y[seed])
    return learner, y


@pytest.mark.parametrize("strategy,n_classes", [("entropy", 2), ("margin", 3), ("density", 3), ("bald", 2)])
def test_float16_round_matches_the_float32_path(strategy, n_classes):
    X16, lab = clustered(700, 12, seed=3)
    holdout = np.random.default_rng(2).choice(700, 150, replace=False)
    fast, y = _learner(X16, lab, holdout, strategy, n_classes)
    plain, _ = _learner(X16.astype(np.float32), lab, holdout, strategy, n_classes)
    for _ in range(3):
        a, b = fast.query(25), plain.query(25)
        np.testing.assert_array_equal(a, b)
        fast.teach(a, y[a])
        plain.teach(b, y[b])
    free = fast.labels_ == -1
    np.testing.assert_array_equal(fast.score_rows(X16.astype(np.float32))[free],
                                  plain.score_rows(plain.pool.embeddings)[free])


def test_probabilities_and_top_b_against_a_float64_reference():
    X16, lab = clustered(400, 10, seed=5)
    holdout = np.arange(0, 400, 7)
    learner, _ = _learner(X16, lab, holdout)
    learner.fit()
    est = learner.model_.estimator_
    z = X16.astype(np.float64) @ est.coef_[0] + est.intercept_[0]
    p1 = 1.0 / (1.0 + np.exp(-z))
    ref = -(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1))
    scores = learner.score_rows(learner.pool.embeddings, skip=learner.labels_ != -1)
    free = learner.labels_ == -1
    np.testing.assert_allclose(scores[free], ref[free], rtol=2e-5, atol=1e-6)
    assert np.isneginf(scores[~free]).all()
    ids = learner.query(10)
    ref_rank = np.where(free, ref, -np.inf)
    np.testing.assert_array_equal(np.sort(ids), np.sort(np.argsort(-ref_rank)[:10]))


def test_rows_not_scored_are_never_read_nor_converted():
    X16, lab = clustered(5000, 8, seed=7)
    holdout = np.random.default_rng(3).choice(5000, 1000, replace=False)
    learner, y = _learner(X16, lab, holdout)
    learner.fit()
    rec = RecordingRows(learner.pool.embeddings)
    learner.pool.embeddings = rec
    ids = learner.query(50)
    not_scored = np.flatnonzero(learner.labels_ != -1)  # held out + the seed
    assert len(np.intersect1d(rec.rows_read(), not_scored)) == 0
    assert learner.pool_rows().converted_rows_ == learner.n_unlabeled == 5000 - 1000 - 40
    learner.teach(ids, y[ids])
    learner.fit()  # fitting reads the labeled rows; the round that follows must not
    rec.reads.clear()
    learner.query(50)
    assert len(np.intersect1d(rec.rows_read(), np.flatnonzero(learner.labels_ != -1))) == 0


def test_results_identical_with_and_without_the_copy():
    X16, lab = clustered(3000, 16, seed=9)
    holdout = np.random.default_rng(4).choice(3000, 600, replace=False)
    streamed, y = _learner(X16, lab, holdout, "margin", 3)
    cached, _ = _learner(X16, lab, holdout, "margin", 3)
    cached._pool_rows = Float32Rows(cached.pool.embeddings, budget="1GiB", finite=True)
    for r in range(4):
        a, b = streamed.query(30), cached.query(30)
        np.testing.assert_array_equal(a, b)
        free = streamed.labels_ == -1
        np.testing.assert_array_equal(
            streamed.score_rows(streamed.pool.embeddings, skip=~free)[free],
            cached.score_rows(cached.pool.embeddings, skip=~free)[free])
        streamed.teach(a, y[a])
        cached.teach(b, y[b])
    assert streamed.pool_rows().copy_ is None
    assert cached.pool_rows().copy_ is not None
    # the copy was made once, in the first round: later rounds converted nothing
    assert cached.pool_rows().converted_rows_ == 3000 - 600 - 40


def test_kcenter_on_a_float16_pool_picks_what_float32_picks():
    X16, _ = clustered(2000, 8, seed=11)
    centers = X16[:5].astype(np.float32)
    a = kcenter_greedy(X16, centers, 12, np.random.default_rng(0))
    b = kcenter_greedy(X16.astype(np.float32), centers, 12, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)


def test_kcenter_round_identical_with_and_without_the_copy():
    X16, lab = clustered(3000, 8, seed=13)
    holdout = np.random.default_rng(5).choice(3000, 500, replace=False)
    streamed, y = _learner(X16, lab, holdout, "kcenter")
    cached, _ = _learner(X16, lab, holdout, "kcenter")
    cached._pool_rows = Float32Rows(cached.pool.embeddings, budget="1GiB", finite=True)
    for _ in range(3):
        a, b = streamed.query(10), cached.query(10)
        np.testing.assert_array_equal(a, b)
        assert not np.isin(a, holdout).any()
        streamed.teach(a, y[a])
        cached.teach(b, y[b])
    assert cached.pool_rows().copy_ is not None and streamed.pool_rows().copy_ is None
    assert cached.pool_rows().converted_rows_ == 3000 - 500 - 40
    assert streamed.pool_rows().converted_rows_ == 0  # no copy to make: k-center streams its passes
