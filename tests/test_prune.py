"""Dataset pruning: every score and sampler against values computed by hand on tiny inputs,
the entry point's validation, the keep/drop table, and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from datascout.cli import main as cli_main
from datascout.exceptions import DatascoutError, ValidationError
from datascout.prune import (PruneConfig, SoftmaxRegression, ccs_budget, ccs_strata, class_quotas,
                             el2n, el2n_scores, evaluate_pruning, forgetting_events,
                             forgetting_scores, keep_ccs, keep_class_balanced, keep_top, kmeans,
                             prototype_keep_hard, prototype_scores, prune, random_scores, semdedup)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


# ----------------------------------------------------------------------------- scores

def test_el2n_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1])
    expected = [np.sqrt(0.3**2 + 0.2**2 + 0.1**2), np.sqrt(0.9**2 + 0.1**2 + 0.8**2), 0.0]
    np.testing.assert_allclose(el2n(probs, labels), expected, atol=1e-12)


def test_forgetting_events_by_hand():
    # rows: presentations (epochs), columns: items
    history = np.array([[1, 0, 0, 1, 1],
                        [0, 1, 0, 1, 0],
                        [1, 1, 0, 0, 1],
                        [0, 1, 0, 0, 0]], dtype=bool)
    # item 0: 1->0 three times... 1,0,1,0 -> events at t=1 and t=3 -> 2
    # item 1: 0,1,1,1 -> 0; item 2: never right -> T = 4; item 3: 1,1,0,0 -> 1; item 4: 1,0,1,0 -> 2
    np.testing.assert_array_equal(forgetting_events(history), [2, 0, 4, 1, 2])


def test_softmax_regression_one_full_batch_step_matches_manual_gradient():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    lr, l2 = 0.5, 0.01
    m = SoftmaxRegression(3, epochs=1, batch_size=7, lr=lr, l2=l2, random_state=11).fit(X, y)
    # the same computation written out: standardise, initial weights from the seed, one step
    Z = (X - X.mean(0)) / X.std(0)
    W0 = np.random.default_rng(11).standard_normal((3, 3)) * 0.01
    logits = Z @ W0
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = P.copy()
    G[np.arange(7), y] -= 1
    W1 = W0 - lr * (Z.T @ G / 7 + l2 * W0)
    b1 = -lr * G.sum(0) / 7
    np.testing.assert_allclose(m.coef_, W1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.intercept_, b1, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(m.correct_[0], logits.argmax(1) == y)
    out = m.predict_proba(X)
    np.testing.assert_allclose(out.sum(1), 1.0)
    ref = Z @ W1 + b1
    ref = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose(out, ref / ref.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_el2n_scores_average_the_proxies(digits):
    X, y = digits[0][:300], digits[1][:300]
    s = el2n_scores(X, y, 10, n_models=3, epochs=2, random_state=5)
    manual = np.mean([el2n(SoftmaxRegression(10, epochs=2, random_state=5 + m).fit(X, y).predict_proba(X), y)
                      for m in range(3)], axis=0)
    np.testing.assert_allclose(s, manual, rtol=1e-6)
    assert s.shape == (300,) and (s >= 0).all() and (s <= np.sqrt(2) + 1e-9).all()


def test_forgetting_scores_follow_the_recorded_history(digits):
    X, y = digits[0][:300], digits[1][:300]
    s = forgetting_scores(X, y, 10, epochs=6, random_state=2)
    m = SoftmaxRegression(10, epochs=6, random_state=2).fit(X, y)
    np.testing.assert_array_equal(s, forgetting_events(m.correct_))


def test_mislabeled_items_score_high_on_real_digits(digits):
    """Flip 5% of the labels: EL2N's top 5% and forgetting's top 5% should mostly be the flips."""
    X, y = digits
    rng = np.random.default_rng(0)
    flip = rng.choice(len(y), 90, replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, 90)) % 10
    is_flip = np.zeros(len(y), bool)
    is_flip[flip] = True
    for scores in (el2n_scores(X, noisy, 10, n_models=3, epochs=3), forgetting_scores(X, noisy, 10, epochs=8)):
        top = keep_top(scores, 90 / len(y))
        assert is_flip[top].mean() > 0.4  # base rate 5%
        assert is_flip[keep_top(random_scores(len(y), 1), 90 / len(y))].mean() < 0.2


def test_prototype_scores_are_distances_to_the_nearest_centroid():
    X = np.array([[0, 0], [0, 1], [0, -1], [10, 0], [10, 3], [10, -3]], dtype=np.float32)
    s, cluster = prototype_scores(X, 2, normalize=False, random_state=0)
    np.testing.assert_allclose(s, [0, 1, 1, 0, 3, 3], atol=1e-5)
    assert cluster[0] == cluster[1] == cluster[2] != cluster[3] == cluster[4] == cluster[5]


def test_prototype_rule_of_thumb():
    assert prototype_keep_hard(0.9) and prototype_keep_hard(0.5)
    assert not prototype_keep_hard(0.1) and not prototype_keep_hard(0.3)
    X = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    scarce = prune(X, None, PruneConfig(method="prototypes", fraction=0.2, n_clusters=3))
    plentiful = prune(X, None, PruneConfig(method="prototypes", fraction=0.8, n_clusters=3))
    assert scarce.direction == "lower kept" and plentiful.direction == "higher kept"
    assert scarce.scores[scarce.kept].max() <= scarce.scores[~scarce.kept].min()
    assert plentiful.scores[plentiful.kept].min() >= plentiful.scores[~plentiful.kept].max()


def test_kmeans_needs_at_least_as_many_items_as_clusters():
    with pytest.raises(ValidationError, match="3 items but 5 clusters"):
        kmeans(np.eye(3, dtype=np.float32), 5)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_semdedup_one_cluster_by_hand():
    a = _unit([1, 0, 0])
    a2 = _unit([1, 0.02, 0])
    b = _unit([0, 1, 0])
    b2 = _unit([0.03, 1, 0])
    c = _unit([0, 0, 1])
    X = np.array([a, b, c, a2, b2], dtype=np.float32)
    res = semdedup(X, 1, random_state=0)
    # the expected order: cosine to the normalised mean, lowest first
    cen = _unit(X.mean(0))
    sim = X @ cen
    order = np.lexsort((np.arange(5), sim))
    rank = np.empty(5, int)
    rank[order] = np.arange(5)
    for i, j in ((0, 3), (1, 4)):
        first, second = (i, j) if rank[i] < rank[j] else (j, i)
        assert res.duplicate_of[second] == first
        assert res.score[second] == pytest.approx(1 - float(X[i] @ X[j]), abs=1e-5)
    keep = res.keep(0.01)
    assert keep.sum() == 3 and keep[2]  # c, and one of each pair
    assert keep[0] != keep[3] and keep[1] != keep[4]
    # the first item in the order has no earlier item
    assert res.score[order[0]] == 2.0 and res.duplicate_of[order[0]] == -1
    # eps below the pairs' distance: nothing is a duplicate
    assert res.keep(1e-4).all()


def test_semdedup_finds_injected_copies_across_clusters():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)) * 5
    X = np.repeat(centres, 40, axis=0) + rng.standard_normal((200, 16))
    copies = X[:20] + 1e-3 * rng.standard_normal((20, 16))
    Y = np.concatenate([X, copies]).astype(np.float32)
    res = semdedup(Y, 5, random_state=0)
    dropped = res.score < 1e-3
    # exactly one of each (original, copy) pair is dropped and nothing else
    assert dropped.sum() == 20
    assert (dropped[:20] ^ dropped[200:]).all()
    # independent check of the scores: exact cosine of each dropped item to its partner
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    d = np.flatnonzero(dropped)
    partner = np.where(d < 200, d + 200, d - 200)
    np.testing.assert_allclose(res.score[d], 1 - (Yn[d] * Yn[partner]).sum(1), atol=1e-5)
    np.testing.assert_array_equal(res.duplicate_of[d], partner)


# ----------------------------------------------------------------------------- samplers

def test_keep_top_and_bottom():
    s = np.array([3, 1, 2, 5, 4.0])
    np.testing.assert_array_equal(np.flatnonzero(keep_top(s, 0.4)), [3, 4])
    np.testing.assert_array_equal(np.flatnonzero(keep_top(s, 0.4, largest=False)), [1, 2])
    assert keep_top(s, 1.0).all()
    assert keep_top(s, 0.01).sum() == 1  # at least one item


def test_keep_top_breaks_ties_at_random_reproducibly():
    s = np.zeros(100)
    a, b, c = (keep_top(s, 0.3, random_state=r) for r in (1, 1, 2))
    assert a.sum() == 30 and (a == b).all() and (a != c).any()


def test_class_quotas_by_hand():
    np.testing.assert_array_equal(class_quotas([5, 3, 2], 5, "proportional"), [3, 1, 1])
    # a class whose share rounds to 0 keeps 1, taken from the largest quota
    np.testing.assert_array_equal(class_quotas([99, 1], 10, "proportional"), [9, 1])
    np.testing.assert_array_equal(class_quotas([50, 45, 3, 2], 10, "proportional"), [4, 4, 1, 1])
    np.testing.assert_array_equal(class_quotas([99, 1, 0], 1, "proportional"), [1, 0, 0])  # too few to cover
    np.testing.assert_array_equal(class_quotas([10, 2, 6], 9, "equal"), [4, 2, 3])
    np.testing.assert_array_equal(class_quotas([4, 4, 4], 6, "equal"), [2, 2, 2])
    np.testing.assert_array_equal(class_quotas([1, 1, 10], 6, "equal"), [1, 1, 4])


def test_keep_class_balanced_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([1, 2, 3, 10, 20, 30.0])
    np.testing.assert_array_equal(np.flatnonzero(keep_top(scores, 2 / 6)), [4, 5])
    np.testing.assert_array_equal(np.flatnonzero(keep_class_balanced(scores, labels, 2 / 6)), [2, 5])
    bottom = keep_class_balanced(scores, labels, 4 / 6, largest=False)
    np.testing.assert_array_equal(np.flatnonzero(bottom), [0, 1, 3, 4])


def test_ccs_strata_and_budget_by_hand():
    np.testing.assert_array_equal(ccs_strata([0, 0.25, 0.5, 0.99, 1.0], 4), [0, 1, 2, 3, 3])
    # strata visited smallest first: 1 (size 1), 2 (3), 4 (6), 0 (10); empty stratum 3 skipped
    np.testing.assert_array_equal(ccs_budget([10, 1, 3, 0, 6], 10), [3, 1, 3, 0, 3])
    np.testing.assert_array_equal(ccs_budget([2, 2], 10), [2, 2])  # not enough items: all kept


def test_keep_ccs_by_hand():
    scores = np.arange(100.0)
    keep = keep_ccs(scores, 0.2, beta=0.1, n_strata=4, random_state=0)
    assert keep.sum() == 20
    assert not keep[90:].any()  # the hardest 10% are dropped first
    # remaining range 0..89 in 4 equal-width strata: 0-22, 23-44, 45-66, 67-89; 5 from each
    edges = [(0, 23), (23, 45), (45, 67), (67, 90)]
    assert [int(keep[a:b].sum()) for a, b in edges] == [5, 5, 5, 5]
    # beta is lowered when it would leave fewer items than the budget
    keep = keep_ccs(scores, 0.95, beta=0.1, n_strata=4)
    assert keep.sum() == 95 and not keep[95:].any()


# ----------------------------------------------------------------------------- entry point

@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_prune_rejects_fraction_outside_unit_interval(digits, fraction):
    with pytest.raises(ValidationError, match=r"\(0, 1\]"):
        prune(digits[0][:50], digits[1][:50], PruneConfig(method="random", fraction=fraction))


def test_prune_rejects_missing_labels_and_too_many_clusters(digits):
    X, y = digits[0][:50], digits[1][:50].copy()
    with pytest.raises(ValidationError, match="labels are missing: method 'el2n'"):
        prune(X, None, PruneConfig(method="el2n"))
    y[[3, 7]] = -1
    with pytest.raises(ValidationError, match="missing for 2 of 50"):
        prune(X, y, PruneConfig(method="random"))
    with pytest.raises(ValidationError, match="50 items but 60 clusters"):
        prune(X, None, PruneConfig(method="semdedup", n_clusters=60))
    with pytest.raises(ValidationError, match="unknown pruning method"):
        prune(X, None, PruneConfig(method="nope"))
    with pytest.raises(DatascoutError, match="expected"):
        prune(X, np.zeros(49, dtype=int), PruneConfig(method="random"))


def test_prune_result_table_and_summary(digits, tmp_path):
    X, y = digits[0][:200], digits[1][:200]
    ids = np.array([f"img{i}" for i in range(200)])
    res = prune(X, y, PruneConfig(method="el2n", fraction=0.25, sampler="class-balanced"), ids=ids)
    s = res.summary()
    assert s["kept"] == 50 and s["items"] == 200
    per = {r["class"]: r for r in s["per_class"]}
    assert sum(r["kept"] for r in per.values()) == 50
    assert all(r["items"] == int((y == c).sum()) for c, r in per.items())
    res.write(tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["id"] for r in rows] == ids.tolist()
    assert [int(r["kept"]) for r in rows] == res.kept.astype(int).tolist()
    np.testing.assert_allclose([float(r["score"]) for r in rows], res.scores)
    import pyarrow.parquet as pq

    res.write(tmp_path / "t.parquet")
    t = pq.read_table(tmp_path / "t.parquet")
    assert t.column("id").to_pylist() == ids.tolist()
    assert t.column("kept").to_pylist() == res.kept.tolist()
    with pytest.raises(ValidationError, match=".csv or .parquet"):
        res.write(tmp_path / "t.txt")


def test_semdedup_threshold_mode_without_fraction():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 8)).astype(np.float32)
    Y = np.concatenate([X, X[:10] * 1.0001]).astype(np.float32)  # 10 exact-direction copies
    res = prune(Y, None, PruneConfig(method="semdedup", fraction=None, n_clusters=4, eps=0.01))
    assert res.kept.sum() == 100 and res.summary()["near_duplicates_at_eps"] == 10


def test_evaluate_pruning_records(digits):
    X, y = digits
    recs = evaluate_pruning(X[:1200], y[:1200], X[1200:], y[1200:],
                            {"random": PruneConfig(method="random"), "el2n": PruneConfig(method="el2n")},
                            (0.2, 1.0), seeds=(0, 1))
    assert len(recs) == 2 * 2 * 2
    full = [r["accuracy"] for r in recs if r["fraction"] == 1.0]
    assert max(full) - min(full) < 1e-9  # 100% kept is the same training set for every method
    assert all(r["kept"] == (240 if r["fraction"] == 0.2 else 1200) for r in recs)
    acc = {(r["name"], r["fraction"], r["seed"]): r["accuracy"] for r in recs}
    assert all(acc["random", f, s] > 0.8 for f in (0.2, 1.0) for s in (0, 1))
    assert {r["model"] for r in recs} == {"scaled-logreg"}  # the model registry's name, nothing of its own
    # keeping only the hardest 20% of a small data set hurts (Sorscher et al.: keep easy when scarce)
    assert all(acc["el2n", 0.2, s] < acc["random", 0.2, s] - 0.1 for s in (0, 1))


def test_evaluate_pruning_names_its_models_from_the_one_registry(digits):
    """The evaluation model is the registry's scaled-logreg (fitted here by hand: the same
    accuracy), and a name the registry lacks is refused before any score is computed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = digits
    recs = evaluate_pruning(X[:1200], y[:1200], X[1200:], y[1200:], {"random": PruneConfig(method="random")},
                            (1.0,), seeds=(0,))
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X[:1200], y[:1200])
    assert recs[0]["accuracy"] == pytest.approx(float(np.mean(by_hand.predict(X[1200:]) == y[1200:])))
    with pytest.raises(ValidationError, match="unknown evaluation model 'svm': expected one of logreg, mlp"):
        evaluate_pruning(X[:100], y[:100], X[100:200], y[100:200], {"random": PruneConfig(method="random")},
                         (1.0,), models=("svm",))


# ----------------------------------------------------------------------------- CLI

@pytest.fixture()
def files(digits, tmp_path):
    X, y = digits
    np.save(tmp_path / "E.npy", X[:400])
    np.save(tmp_path / "Y.npy", y[:400])
    bad = y[:400].copy()
    bad[0] = -1
    np.save(tmp_path / "Ybad.npy", bad)
    return tmp_path


def test_cli_writes_table_summary_and_plot(files, capsys):
    out = files / "keep.csv"
    rc = cli_main(["prune", "--embeddings", str(files / "E.npy"), "--labels", str(files / "Y.npy"),
                   "--method", "el2n", "--fraction", "0.5", "--sampler", "ccs", "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 400 and sum(int(r["kept"]) for r in rows) == 200
    summary = json.loads((files / "keep.csv.summary.json").read_text())
    assert summary["kept"] == 200 and summary["method"] == "el2n"
    assert {r["name"] for r in summary["accuracy_vs_fraction"]} == {"el2n", "random"}
    assert (files / "keep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kept 200 of 400" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--fraction", "0"], "--fraction must be in (0, 1] but is 0.0"),
    (["--fraction", "1.5"], "--fraction must be in (0, 1] but is 1.5"),
    (["--fraction", "0.5", "--method", "prototypes", "--clusters", "500"], "400 items but 500 clusters"),
    (["--fraction", "0.5", "--bad-labels"], "labels are missing for 1 of 400"),
    (["--fraction", "0.5", "--no-labels"], "labels are missing: method 'el2n'"),
    (["--fraction", "0.5", "--test-size", "0.999"], "splits 400 items into 0 to train the plot's models"),
])
def test_cli_bad_input_one_line_exit_2(files, capsys, extra, message):
    labels = ["--labels", str(files / "Y.npy")]
    if "--bad-labels" in extra:
        labels, extra = ["--labels", str(files / "Ybad.npy")], [e for e in extra if e != "--bad-labels"]
    if "--no-labels" in extra:
        labels, extra = [], [e for e in extra if e != "--no-labels"] + ["--no-plot"]
    out = files / "k.csv"
    rc = cli_main(["prune", "--embeddings", str(files / "E.npy"), *labels, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and message in err
    assert not out.exists() and not (files / "k.csv.summary.json").exists()


def test_cli_plot_with_more_classes_than_a_stratified_split_allows(tmp_path, digits, capsys):
    """40 items in 10 classes: a 20% test split (8 items) cannot hold every class; the plot uses a
    plain random split instead of failing."""
    X, y = digits
    rows = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(10)])
    np.save(tmp_path / "E.npy", X[rows])
    np.save(tmp_path / "Y.npy", y[rows])
    rc = cli_main(["prune", "--embeddings", str(tmp_path / "E.npy"), "--labels", str(tmp_path / "Y.npy"),
                   "--method", "prototypes", "--clusters", "5", "--fraction", "0.5",
                   "--out", str(tmp_path / "k.csv")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "k.png").is_file() and sum(1 for _ in open(tmp_path / "k.csv")) == 41


@pytest.mark.parametrize("method,sampler,fraction,direction,ran", [
    ("random", "top", 0.5, "higher kept", "top"),
    ("random", "bottom", 0.5, "lower kept", "bottom"),
    ("random", "class-balanced", 0.5, "higher kept", "class-balanced"),
    ("random", "ccs", 0.5, "stratified", "ccs"),
    ("prototypes", "auto", 0.3, "lower kept", "bottom"),
    ("prototypes", "auto", 0.8, "higher kept", "top"),
    ("semdedup", "auto", None, "threshold", "threshold"),
    ("semdedup", "ccs", 0.5, "stratified", "ccs"),
])
def test_direction_is_one_of_four_values_and_the_sampler_that_ran_is_recorded(
        digits, method, sampler, fraction, direction, ran):
    from datascout.prune import DIRECTIONS

    X, y = digits
    res = prune(X[:400], y[:400], PruneConfig(method=method, sampler=sampler, fraction=fraction, n_clusters=8))
    assert res.direction == direction and res.direction in DIRECTIONS
    assert res.sampler == ran and res.summary()["sampler"] == ran
    if fraction is not None:
        assert res.kept.sum() == round(fraction * 400)


def test_unknown_method_or_sampler_never_falls_through(digits):
    """compute_scores / select read one table each: an unknown name is an error, not SemDeDup / CCS."""
    from datascout.prune import compute_scores, select

    X, y = digits
    with pytest.raises(ValidationError, match="unknown pruning method 'el2m': expected one of prototypes, el2n"):
        compute_scores(X[:50], y[:50], PruneConfig(method="el2m"))
    with pytest.raises(ValidationError, match="unknown sampler 'topp': expected one of auto, top"):
        select(np.arange(50.0), y[:50], PruneConfig(method="random", sampler="topp"))
