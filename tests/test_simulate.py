"""Simulation harness on real data (digits): rounds, metrics, SEALS, validation, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from datascout.exceptions import ValidationError
from datascout.models import default_model
from datascout.seeds import positives_negatives_seed, random_seed, stratified_seed
from datascout.simulate import ROUND_KEYS, STOPPING_KEYS, SimulationConfig, aulc, simulate, write_result

ISSUE_ROUND_KEYS = {"round", "labeled", "positives_found", "pool_positives", "candidates",
                    "select_seconds", "fit_seconds", "accuracy", "average_precision"}


def test_aulc_by_hand():
    # trapezoids (0.5+0.7)/2*100 + (0.7+0.9)/2*100 = 140, over a span of 200
    assert aulc([100, 200, 300], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert aulc([100, 300], [0.2, 0.6]) == pytest.approx(0.4)
    assert aulc([100], [0.8]) == pytest.approx(0.8)
    assert aulc([], []) is None


def test_multiclass_run(digits):
    X, y = digits
    cfg = SimulationConfig(strategy="margin", initial=50, batch_size=40, rounds=3, seed=1)
    res = simulate(X, y, cfg)
    assert res["task"] == "multiclass" and res["n_classes"] == 10 and res["metric"] == "accuracy"
    assert res["n_test"] == 360 and res["n_pool"] == 1437  # ceil(0.2 * 1797) held out
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert [r["labeled"] for r in rounds] == [50, 90, 130, 170]
    for r in rounds:
        # and the stopping rules' measurements (a clean oracle: no noise figures)
        assert ISSUE_ROUND_KEYS <= set(r) and set(r) == set(ROUND_KEYS) | {
            "kappa", "changed", "uncertainty", "max_uncertainty", "selected_accuracy", "gain"}
        assert r["positives_found"] is None and r["pool_positives"] is None
        assert r["average_precision"] is None
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["fit_seconds"] >= 0
    assert rounds[0]["candidates"] is None and rounds[0]["select_seconds"] is None
    # full pool: every unlabeled pool item is a candidate
    assert [r["candidates"] for r in rounds[1:]] == [1437 - 50, 1437 - 90, 1437 - 130]
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    assert res["aulc"] == pytest.approx(aulc([r["labeled"] for r in rounds], [r["accuracy"] for r in rounds]))
    assert res["config"]["strategy"] == "margin" and res["config"]["batch_size"] == 40
    assert len(res["labeled_per_class"]) == 10 and sum(res["labeled_per_class"]) == 170


def test_round_zero_accuracy_matches_an_independent_fit(digits):
    """Round 0 = the model fitted on the seed, evaluated on the stratified test split."""
    from sklearn.model_selection import train_test_split

    X, y = digits
    cfg = SimulationConfig(strategy="random", initial=60, batch_size=10, rounds=0, seed=3)
    res = simulate(X, y, cfg)
    pool, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=3, stratify=y)
    pool, test = np.sort(pool), np.sort(test)
    seed = pool[random_seed(len(pool), 60, np.random.default_rng(3))]
    model = default_model(3).fit(X[seed], y[seed])
    assert res["rounds"][0]["accuracy"] == pytest.approx(accuracy_score(y[test], model.predict(X[test])),
                                                         abs=1e-9)
    assert res["labeled_per_class"] == np.bincount(y[seed], minlength=10).tolist()


@pytest.mark.parametrize("how", ["named", "object"])
def test_round_zero_uses_the_chosen_model(digits, how):
    """``config.model`` names a model (random forest here); ``model=`` passes any classifier. Round
    0's accuracy is that of the same classifier fitted independently on the seed."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    X, y = digits
    if how == "named":
        cfg = SimulationConfig(strategy="margin", initial=80, batch_size=10, rounds=1, seed=2,
                               model="random-forest")
        res = simulate(X, y, cfg)
        reference = RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=2)
        assert res["config"]["model"] == "random-forest"
    else:
        cfg = SimulationConfig(strategy="margin", initial=80, batch_size=10, rounds=1, seed=2)
        res = simulate(X, y, cfg, model=KNeighborsClassifier(n_neighbors=3))
        reference = KNeighborsClassifier(n_neighbors=3)
        assert res["config"]["model"] == "KNeighborsClassifier(n_neighbors=3)"
    pool, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=2, stratify=y)
    pool, test = np.sort(pool), np.sort(test)
    seed = pool[random_seed(len(pool), 80, np.random.default_rng(2))]
    reference.fit(X[seed].astype(np.float32), y[seed])
    assert res["rounds"][0]["accuracy"] == pytest.approx(
        accuracy_score(y[test], reference.predict(X[test].astype(np.float32))), abs=1e-9)
    assert res["rounds"][1]["labeled"] == 90


def test_binary_active_search_finds_positives(digits):
    X, y = digits
    found = {}
    for strategy in ("most-likely-positive", "random"):
        cfg = SimulationConfig(strategy=strategy, positive_class=3, initial_positives=5,
                               initial_negatives=95, batch_size=20, rounds=4, seed=0)
        res = simulate(X, y, cfg)
        rounds = res["rounds"]
        assert res["task"] == "binary" and res["metric"] == "average_precision"
        assert rounds[0]["positives_found"] == 5
        pool_pos = rounds[0]["pool_positives"]
        assert pool_pos == int((y == 3).sum()) - int(round(0.2 * (y == 3).sum()))  # stratified split
        for a, b in zip(rounds, rounds[1:]):
            assert a["positives_found"] <= b["positives_found"] <= pool_pos
        assert all(0 <= r["average_precision"] <= 1 for r in rounds)
        assert res["labeled_per_class"] == [rounds[-1]["labeled"] - rounds[-1]["positives_found"],
                                          rounds[-1]["positives_found"]]
        found[strategy] = rounds[-1]["positives_found"] - 5
    # 80 queried labels: active search finds mostly 3s, random about 10% of them
    assert found["most-likely-positive"] >= 60
    assert found["random"] <= 25


def test_runs_are_reproducible(digits):
    X, y = digits
    cfg = SimulationConfig(strategy="entropy", initial=30, batch_size=10, rounds=2, seed=5)
    a, b = simulate(X, y, cfg), simulate(X, y, cfg)
    strip = lambda res: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in res["rounds"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_seals_run_scores_only_neighbours(digits):
    X, y = digits
    cfg = SimulationConfig(strategy="entropy", positive_class=0, seals=True, k=10, index="Flat",
                           initial_positives=3, initial_negatives=20, batch_size=10, rounds=3, seed=0)
    res = simulate(X, y, cfg)
    cands = [r["candidates"] for r in res["rounds"][1:]]
    assert all(0 < c <= 10 * r["labeled"] for c, r in zip(cands, res["rounds"]))
    assert max(cands) < res["n_pool"] // 2
    assert res["graph"]["meta"]["k"] == 10


def test_fashion_slice_margin_beats_the_seed(fashion_slice):
    X, y = fashion_slice
    cfg = SimulationConfig(strategy="margin", initial=50, batch_size=50, rounds=4, seed=0)
    res = simulate(X, y, cfg)
    accs = [r["accuracy"] for r in res["rounds"]]
    assert res["n_pool"] == 2400 and accs[-1] > accs[0] + 0.03


BAD = [
    ("batch 0", dict(batch_size=0), "batch_size must be > 0 but is 0"),
    ("batch too large", dict(batch_size=2000, rounds=1), "batch_size 2000 is larger than"),
    ("budget too large", dict(batch_size=500, rounds=5), "more than the pool's 1437 items"),
    ("absent class", dict(positive_class=12), "positive class 12 does not occur"),
    ("test size", dict(test_size=1.5), r"test_size must be in \(0, 1\) but is 1.5"),
    ("both seeds", dict(positive_class=1, initial=10, initial_positives=2, initial_negatives=3), "not both"),
    ("seed without class", dict(initial_positives=2, initial_negatives=3), "need positive_class"),
    ("half a seed", dict(positive_class=1, initial_positives=2), "go together"),
    ("unknown strategy", dict(strategy="best"), "unknown strategy 'best'"),
    ("k", dict(k=0), "k must be >= 1"),
    ("unknown model", dict(model="svm"), "unknown model 'svm': expected one of logreg, mlp, random-forest"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_simulate_rejects_bad_configs(digits, case):
    X, y = digits
    _, kw, match = case
    with pytest.raises(ValidationError, match=match):
        simulate(X, y, SimulationConfig(**kw))


def test_simulate_rejects_bad_data(digits):
    X, y = digits
    with pytest.raises(ValidationError, match="labels has 1796 entries but embeddings has 1797 rows"):
        simulate(X, y[:-1], SimulationConfig())
    Xn = X.copy()
    Xn[7, 3] = np.nan
    with pytest.raises(ValidationError, match="row 7 contains NaN or inf"):
        simulate(Xn, y, SimulationConfig())
    with pytest.raises(ValidationError, match="no labeled item"):
        simulate(X, np.full(len(y), -1), SimulationConfig())
    with pytest.raises(ValidationError, match="integer class ids"):
        simulate(X, y.astype(float), SimulationConfig())


def test_seed_sets():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)
    s = stratified_seed(labels, 10, rng)
    assert len(s) == 10 and len(np.unique(s)) == 10
    np.testing.assert_array_equal(np.bincount(labels[s], minlength=3), [8, 1, 1])  # each class present
    pn = positives_negatives_seed((labels == 1).astype(int), 3, 4, rng)
    assert (labels[pn] == 1).sum() == 3 and len(pn) == 7
    with pytest.raises(ValidationError, match="asked for 9 seed positives but the pool has 8"):
        positives_negatives_seed((labels == 1).astype(int), 9, 4, rng)
    with pytest.raises(ValidationError, match="seed size must be in 1..100 but is 0"):
        random_seed(100, 0, rng)


def test_write_result_files(tmp_path, digits):
    X, y = digits
    res = simulate(X, y, SimulationConfig(strategy="random", initial=30, batch_size=10, rounds=2))
    paths = write_result(res, tmp_path / "run.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.json", "run.png"]
    assert {p.name for p in paths} == {"run.json", "run.csv", "run.png"}
    data = json.loads((tmp_path / "run.json").read_text())
    assert {"config", "rounds", "aulc"} <= set(data) and len(data["rounds"]) == 3
    rows = list(csv.DictReader((tmp_path / "run.csv").open()))
    assert list(rows[0])[:len(ROUND_KEYS)] == list(ROUND_KEYS)
    assert set(list(rows[0])[len(ROUND_KEYS):]) <= set(STOPPING_KEYS)
    assert [int(r["labeled"]) for r in rows] == [30, 40, 50]
    assert rows[0]["average_precision"] == "" and rows[0]["candidates"] == ""
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_result_leaves_nothing_when_rendering_fails(tmp_path, digits, monkeypatch):
    import datascout.simulate as sim

    X, y = digits
    res = simulate(X, y, SimulationConfig(strategy="random", initial=30, batch_size=10, rounds=1))

    def broken(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(sim, "learning_curves_png", broken)
    with pytest.raises(RuntimeError):
        write_result(res, tmp_path / "run.json")
    assert list(tmp_path.iterdir()) == []


def test_macro_f1_ignores_class_ids_that_never_occur(digits):
    """Labels 1..10 instead of 0..9: id 0 is no class, so accuracy and macro-F1 are the same."""
    X, y = digits
    cfg = SimulationConfig(strategy="margin", initial=50, batch_size=20, rounds=2, seed=0)
    a, b = simulate(X, y, cfg), simulate(X, y + 1, cfg)
    for ra, rb in zip(a["rounds"], b["rounds"]):
        assert ra["accuracy"] == rb["accuracy"]
        assert ra["macro_f1"] == pytest.approx(rb["macro_f1"], abs=1e-12)


def test_zero_rounds_with_a_seed_of_almost_the_whole_pool(digits):
    """No batch is drawn with 0 rounds, so the batch size cannot be too large for what is left."""
    X, y = digits
    cfg = SimulationConfig(strategy="margin", initial=1400, batch_size=100, rounds=0, seed=0)
    res = simulate(X, y, cfg)  # 1,437 pool items: 37 left, fewer than one batch
    assert [r["labeled"] for r in res["rounds"]] == [1400]
    with pytest.raises(ValidationError, match="larger than the 37 unlabeled pool items"):
        simulate(X, y, SimulationConfig(strategy="margin", initial=1400, batch_size=100, rounds=1))


def test_auto_rounds_record_their_phase(digits):
    X, y = digits
    res = simulate(X, y, SimulationConfig(strategy="auto", initial=50, batch_size=40, rounds=2, seed=1))
    rounds = res["rounds"]
    assert "auto" not in rounds[0] and set(rounds[0]) == set(ROUND_KEYS) | {
        "kappa", "changed", "uncertainty", "max_uncertainty", "selected_accuracy", "gain"}
    first, second = rounds[1]["auto"], rounds[2]["auto"]
    assert set(first) == {"auto", "agreement", "confidence"} and first["agreement"] is None
    assert 0 < first["confidence"] <= 1  # the seed's model, over the 1,387 candidates
    assert (first["auto"] == "margin") == (first["confidence"] >= 0.75)
    assert second["auto"] in ("typiclust", "margin", "cluster-margin")
