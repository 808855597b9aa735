"""simulate's stopping rules: run.json says where each rule fires, consistent with the per-round
measurements it records; the CLI prints it and marks it on the plot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from datascout.simulate import SimulationConfig, simulate
from datascout.stopping import RULES


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.fixture(scope="module")
def run(digits):
    X, y = digits
    return simulate(X, y, SimulationConfig(strategy="margin", initial=50, batch_size=50, rounds=12, seed=0,
                                           label_budget=300, stop_set=500))


def first_passing(rounds, key, op, thr, window=1):
    """Where a rule should fire, recomputed here from the recorded measurements."""
    vals = [r[key] for r in rounds]
    for i in range(window - 1, len(vals)):
        last = vals[i - window + 1:i + 1]
        if all(v is not None for v in last):
            m = sum(last) / window
            if (m >= thr) if op == ">=" else (m <= thr):
                return rounds[i]["round"]
    return None


def test_stopping_rounds_match_the_recorded_measurements(run):
    rounds = run["rounds"]
    assert set(run["stopping"]) == {n for n in RULES if not n.startswith("recall")} | {"budget"}  # multiclass
    assert run["stopping"]["budget"] == 5  # 50 + 5 x 50 = 300 labels
    for name, rule in RULES.items():
        if name.startswith("recall"):
            continue
        assert run["stopping"][name] == first_passing(rounds, rule.signal, rule.op, rule.threshold, rule.window)
    # the measurements: none before there are two models; kappa and change agree in direction
    assert rounds[0]["kappa"] is None and rounds[0]["changed"] is None and rounds[0]["selected_accuracy"] is None
    assert all(0 <= r["changed"] <= 1 and -1 <= r["kappa"] <= 1 for r in rounds[1:])
    assert all(0 <= r["uncertainty"] <= 1 for r in rounds)
    fired = run["stopping"]["stabilizing-predictions"]
    assert fired is not None, "digits' predictions stabilise within 650 labels"
    d = run["stopping_detail"]["stabilizing-predictions"]
    assert d["labeled"] == rounds[fired]["labeled"] and d["metric"] == rounds[fired]["accuracy"]
    assert d["labels_saved"] == pytest.approx(1 - rounds[fired]["labeled"] / rounds[-1]["labeled"])


def test_recall_rule_on_a_rare_concept(digits):
    X, y = digits
    res = simulate(X, y, SimulationConfig(strategy="most-likely-positive", positive_class=3, initial_positives=5,
                                          initial_negatives=45, batch_size=20, rounds=10, seed=0))
    assert "recall" in res["stopping"]
    n_test, n_pool = res["n_test"], res["n_pool"]
    test_pos = round(np.mean(y == 3) * n_test)  # a stratified split: the test split's share of digit 3
    for r in res["rounds"]:
        lo, est, hi = r["recall_lower"], r["recall_estimate"], r["recall_upper"]
        assert 0 <= lo <= est <= hi <= 1
        found = r["positives_found"]
        assert r["recall_true"] == pytest.approx(found / r["pool_positives"])  # a clean oracle: found = true
        # the test split plays the audit sample: pool positives estimated as its prevalence x the pool
        assert est == pytest.approx(min(1.0, found / (test_pos / n_test * n_pool)), rel=0.02)
        assert 0 <= r["recall_scores_lower"] <= r["recall_scores"] <= 1
    rule = RULES["recall"]
    assert res["stopping"]["recall"] == first_passing(res["rounds"], "recall_lower", ">=", rule.threshold)
    # recall climbs as positives are found; most-likely-positive finds nearly all of digit 3
    assert res["rounds"][-1]["recall_true"] > 0.8


def test_cli_simulate_with_label_noise_reports_stopping(tmp_path, digits):
    X, y = digits
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "datascout", "simulate", "--embeddings", str(tmp_path / "X.npy"),
           "--labels", str(tmp_path / "y.npy"), "--strategy", "margin", "--initial", "50", "--batch-size", "50",
           "--rounds", "8", "--label-noise", "0.1", "--review-fraction", "0.2", "--label-budget", "200",
           "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["config"]["label_noise"] == 0.1 and res["stopping"]["budget"] == 3
    assert "stopping: budget fired at round 3 (200 labels" in p.stdout
    assert "label noise 0.1 (uniform)" in p.stdout and "re-asking the" in p.stdout
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert {"kappa", "wrong_labels", "answers", "gain"} <= set(rows[0])
    assert [int(r["wrong_labels"]) for r in rows] == [r["wrong_labels"] for r in res["rounds"]]
    assert out.with_suffix(".png").stat().st_size > 1000
    bad = subprocess.run(cmd[:-2] + ["--label-noise", "1.5", "--out", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "label_noise must be in" in bad.stderr
    assert not (tmp_path / "bad.json").exists()
