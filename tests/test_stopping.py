"""Stopping rules (datascout.stopping): every measurement and rule checked by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datascout.exceptions import ValidationError
from datascout.stopping import (
    RULES,
    add_gain,
    budget_round,
    check_rules,
    kappa,
    next_round_gain,
    normalized_entropy,
    recall_estimate,
    remaining_from_sample,
    round_signals,
    rule_round,
    stopping_report,
    stopping_rounds,
    wilson_interval,
)


def H2(p):  # binary entropy in nats, by hand
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_normalized_entropy_by_hand():
    got = normalized_entropy([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    assert got == pytest.approx([1.0, 0.0, H2(0.9) / math.log(2)])
    assert normalized_entropy([[0.25] * 4]) == pytest.approx([1.0])
    with pytest.raises(ValidationError, match="at least 2 classes"):
        normalized_entropy([[1.0]])


def test_kappa_by_hand():
    # observed agreement 3/4; chance: a says 0 half the time, b a quarter: 0.5*0.25 + 0.5*0.75 = 0.5
    assert kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((0.75 - 0.5) / (1 - 0.5))
    assert kappa([2, 2, 2], [2, 2, 2], 3) == 1.0  # identical (one class: 0/0 in the formula)
    with pytest.raises(ValidationError, match="same stop set"):
        kappa([0, 1], [0, 1, 1], 2)


def test_round_signals_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    sig = round_signals(stop_probs=probs, previous_stop_pred=[0, 0, 0], unlabeled_mask=[True, True, False],
                        selected_probs=[[0.6, 0.4], [0.99, 0.01]], selected_pred=[1, 0, 1],
                        selected_labels=[1, 1, 1])
    assert sig["changed"] == pytest.approx(1 / 3)  # predictions now 0, 1, 0 (a tie goes to class 0)
    # previous all 0, now 0,1,0: observed 2/3, chance 1 * 2/3 = 2/3 -> kappa 0
    assert sig["kappa"] == pytest.approx(0.0)
    assert sig["uncertainty"] == pytest.approx((H2(0.9) + H2(0.8)) / 2 / math.log(2))  # the unlabeled two
    assert sig["max_uncertainty"] == pytest.approx(H2(0.6) / math.log(2))
    assert sig["selected_accuracy"] == pytest.approx(2 / 3)
    assert round_signals() == {k: None for k in ("kappa", "changed", "uncertainty", "max_uncertainty",
                                                 "selected_accuracy")}


def test_stabilizing_predictions_needs_the_mean_of_three_kappas():
    rule = RULES["stabilizing-predictions"]
    hist = [{"kappa": v} for v in (None, 0.97, 0.99, 1.0, 1.0)]
    # round 3: mean(0.97, 0.99, 1.0) = 0.9867 < 0.99; round 4: mean(0.99, 1, 1) = 0.9967
    assert rule_round(hist, rule) == 4
    assert rule_round(hist[:4], rule) is None
    assert rule_round([{"kappa": 1.0}, {"kappa": None}, {"kappa": 1.0}, {"kappa": 1.0}], rule) is None


def test_lower_is_better_rules_and_thresholds():
    hist = [{"uncertainty": 0.3, "changed": 0.1}, {"uncertainty": 0.06, "changed": 0.0},
            {"uncertainty": 0.05, "changed": 0.02}]
    assert rule_round(hist, RULES["overall-uncertainty"]) == 2  # <= 0.05
    assert rule_round(hist, RULES["classification-change"]) == 1  # no change at all
    assert stopping_rounds(hist, rules={"overall-uncertainty": 0.1}) == {"overall-uncertainty": 1}
    with pytest.raises(ValidationError, match="unknown stopping rule 'nope'"):
        check_rules({"nope": 1})


def test_next_round_gain_is_the_slope_times_the_batch():
    assert next_round_gain([100, 200, 300, 400], [0.5, 0.6, 0.7, 0.8]) == pytest.approx(0.1)
    # least squares through (0, 0), (1, 1), (2, 0), (3, 1): slope 0.2; step 1
    assert next_round_gain([0, 1, 2, 3], [0, 1, 0, 1]) == pytest.approx(0.2)
    assert next_round_gain([1, 2, 3], [0.1, 0.2, 0.3]) is None  # fewer than 4 rounds
    assert next_round_gain([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], step=10) == pytest.approx(1.0)
    hist = add_gain([{"labeled": 10 * i, "acc": 0.5} for i in range(5)], "acc")
    assert [h["gain"] for h in hist][:3] == [None, None, None]
    assert [h["gain"] for h in hist][3:] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert rule_round(hist, RULES["gain"]) == 3
    # with intervals: a round whose interval is wider than 0.1 reads no slope
    hist = [{"labeled": 10 * i, "acc": 0.5, "ci": [0.46, 0.54] if i != 4 else [0.3, 0.7]} for i in range(6)]
    gains = [h["gain"] for h in add_gain(hist, "acc", ci_key="ci")]
    assert gains[:5] == [None, None, None, pytest.approx(0.0, abs=1e-12), None] and gains[5] == pytest.approx(0, abs=1e-12)


def test_budget_round():
    assert budget_round([100, 200, 300], 200) == 1
    assert budget_round([100, 200, 300], 1000) is None
    assert budget_round([100], None) is None
    hist = [{"labeled": 100}, {"labeled": 250}]
    assert stopping_rounds(hist, rules={}, budget=250) == {"budget": 1}
    with pytest.raises(ValidationError, match="budget must be > 0"):
        budget_round([1], 0)


def test_recall_estimate_and_remaining_by_hand():
    r = recall_estimate(90, 10, [5, 20])
    assert r["value"] == pytest.approx(0.9)
    assert r["ci"] == pytest.approx([90 / 110, 90 / 95])  # more remaining = lower recall
    rem, ci = remaining_from_sample(5, 100, 1000)
    assert rem == pytest.approx(50)
    assert ci == pytest.approx([x * 1000 for x in wilson_interval(5, 100)])
    assert remaining_from_sample(0, 0, 10) == (None, None)


def test_stopping_report_figures():
    hist = [{"round": 0, "labeled": 100, "acc": 0.5, "kappa": None},
            {"round": 1, "labeled": 200, "acc": 0.8, "kappa": 0.995},
            {"round": 2, "labeled": 400, "acc": 0.9, "kappa": 1.0}]
    fired = {"stabilizing-predictions": 1, "gain": None}
    rep = stopping_report(hist, fired, metric="acc")
    s = rep["stabilizing-predictions"]
    assert (s["round"], s["labeled"], s["metric"], s["final_metric"]) == (1, 200, 0.8, 0.9)
    assert s["labels_saved"] == pytest.approx(0.5) and s["metric_lost"] == pytest.approx(0.1)
    assert s["value"] == 0.995 and s["threshold"] == 0.99
    assert rep["gain"]["round"] is None


def test_calibrated_positive_probs_count_the_positives_a_balanced_model_overstates():
    """A rare concept (3% of the pool) and a balanced logistic regression fitted on items chosen
    by score (the most likely positives first, as an active search does): its probabilities
    summed over the unlabeled items overstate the positives left many times over; after Platt
    scaling on the labeled items' out-of-fold probabilities the sum lands near the true count."""
    from datascout.labels import calibrated_positive_probs
    from datascout.models import FittedModel, default_model

    rng = np.random.default_rng(0)
    n, d = 20000, 8
    y = (rng.random(n) < 0.03).astype(np.int64)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, 0] += 1.8 * y  # the concept shows, overlapping, on one direction
    first = FittedModel(default_model(0), 2).fit(X[:400], y[:400])
    score = first.predict_proba(X)[:, 1]
    chosen = np.argsort(-score)[:300]  # chosen by score
    lab = np.unique(np.concatenate([np.arange(400), chosen]))
    model = FittedModel(default_model(0), 2).fit(X[lab], y[lab])
    unl = np.setdiff1d(np.arange(n), lab)
    p = model.predict_proba(X[unl])[:, 1]
    truth = int(y[unl].sum())
    cal = calibrated_positive_probs(X[lab], y[lab], p, random_state=0)
    assert p.sum() > 3 * truth  # balanced weights: every item looks half positive near the boundary
    assert abs(cal.sum() - truth) < 0.35 * truth
    assert calibrated_positive_probs(X[:10], np.r_[np.ones(1), np.zeros(9)].astype(int), p) is None
