"""``datascout simulate --multi-label`` and its harness: the run.json contract (every metric key,
null where it does not apply), metrics against hand-computed values, seeds, SEALS, and bad input
-> exit 2, one line, no file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from datascout.cli import main
from datascout.exceptions import ValidationError
from datascout.multilabel_simulate import (
    MULTILABEL_ROUND_KEYS,
    MultiLabelSimulationConfig,
    evaluate_sets,
    label_ranking_ap,
    simulate_multilabel,
)

NAMES = ["even", "big", "loop", "prime", "straight"]
SETS = np.array([[d % 2 == 0, d >= 5, d in (0, 6, 8, 9), d in (2, 3, 5, 7), d in (1, 4, 7)] for d in range(10)])


@pytest.fixture
def ml_files(tmp_path, digits):
    """600 digits as E.npy and their property sets as a CSV 'id,labels' (ids = row numbers);
    the last 20 rows are absent from the CSV (unlabeled)."""
    X, y = digits
    X, y = X[:600].astype(np.float32), y[:600]
    e, lab = tmp_path / "E.npy", tmp_path / "sets.csv"
    np.save(e, X)
    lines = ["id,labels"] + [f"{i},{';'.join(n for n, on in zip(NAMES, SETS[d]) if on)}" for i, d in enumerate(y[:580])]
    lab.write_text("\n".join(lines) + "\n")
    return e, lab


def ml_args(e, lab, out, *extra):
    return ["simulate", "--multi-label", "--embeddings", str(e), "--labels", str(lab), "--out", str(out), *extra]


def test_metrics_by_hand():
    Y = np.array([[1, 0], [0, 1], [0, 0]], dtype=bool)
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.1]])  # predicted {0}, {0, 1}, {}
    m = evaluate_sets(Y, probs)
    assert m["micro_f1"] == pytest.approx(0.8)  # TP 2, FP 1, FN 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["samples_f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)  # the empty row predicted empty: 1
    assert m["hamming_loss"] == pytest.approx(1 / 6)
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["average_precision"] == pytest.approx(1.0)
    assert m["label_ranking_ap"] == pytest.approx((1 + 0.5 + 1) / 3)  # row 1's true label ranks second
    # a label with no test positive leaves AP and macro-F1 to the others; no positive at all: null
    none = evaluate_sets(np.zeros((2, 2), dtype=bool), np.array([[0.6, 0.1], [0.2, 0.3]]))
    assert none["average_precision"] is None and none["macro_f1"] is None and none["label_ranking_ap"] is None
    assert none["micro_f1"] == 0.0 and none["hamming_loss"] == pytest.approx(0.25)


def test_label_ranking_ap_matches_scikit_learn():
    from sklearn.metrics import label_ranking_average_precision_score

    rng = np.random.default_rng(0)
    Y = rng.random((300, 7)) < 0.3
    Y[0], Y[1] = False, True  # no relevant label / every label relevant
    S = np.round(rng.random((300, 7)), 1)  # many ties
    assert label_ranking_ap(Y, S, chunk_elements=500) == pytest.approx(label_ranking_average_precision_score(Y, S))


def test_multilabel_run_writes_the_contract(tmp_path, ml_files, capsys):
    e, lab = ml_files
    out = tmp_path / "run.json"
    assert main(ml_args(e, lab, out, "--strategy", "adaptive", "--seed-kind", "stratified", "--initial", "40",
                        "--batch-size", "20", "--rounds", "3", "--seed", "1")) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run.csv", "run.json", "run.png"]
    data = json.loads(out.read_text())
    assert data["task"] == "multi-label" and data["metric"] == "micro_f1"
    assert data["classes"] == sorted(NAMES) and data["n_labels"] == 5
    assert data["n_pool"] + data["n_test"] == 580  # the 20 rows the CSV does not name are in neither
    assert data["config"]["strategy"] == "adaptive" and data["config"]["seed_kind"] == "stratified"
    assert [r["labeled"] for r in data["rounds"]] == [40, 60, 80, 100]
    for r in data["rounds"]:
        assert set(MULTILABEL_ROUND_KEYS) <= set(r)
        for k in ("micro_f1", "macro_f1", "samples_f1", "hamming_loss", "subset_accuracy", "average_precision"):
            assert 0.0 <= r[k] <= 1.0
    assert data["rounds"][0]["candidates"] is None and data["rounds"][1]["candidates"] == data["n_pool"] - 40
    assert data["rounds"][-1]["micro_f1"] > 0.7  # digits' properties are learnable
    assert isinstance(data["aulc"], float)
    assert sum(data["labeled_per_label"]) == pytest.approx(data["rounds"][-1]["label_cardinality"] * 100)
    with open(tmp_path / "run.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(MULTILABEL_ROUND_KEYS) and len(rows) == 4
    assert "micro-F1=" in capsys.readouterr().out


def test_multilabel_seals_and_label_positives_seed(tmp_path, ml_files):
    e, lab = ml_files
    out = tmp_path / "seals.json"
    assert main(ml_args(e, lab, out, "--seals", "--k", "10", "--index", "Flat", "--seed-label", "straight",
                        "--initial-positives", "3", "--initial-negatives", "17", "--batch-size", "10",
                        "--rounds", "2", "--strategy", "hybrid-min-margin", "--no-plot")) == 0
    data = json.loads(out.read_text())
    assert data["config"]["seals"] is True and data["config"]["seed_label"] == sorted(NAMES).index("straight")
    assert all(0 < r["candidates"] < data["n_pool"] for r in data["rounds"][1:])


def test_label_positives_seed_holds_p_positives(digits):
    X, y = digits
    Y = SETS[y[:400]]
    res = simulate_multilabel(X[:400], Y, MultiLabelSimulationConfig(seed_label=4, initial_positives=3,
                                                                     initial_negatives=30, rounds=0))
    assert res["labeled_per_label"][4] == 3 and res["rounds"][0]["labeled"] == 33


def test_stratified_test_split_keeps_every_label(digits):
    X, y = digits
    Y = SETS[y[:400]].copy()
    Y[:, 4] &= np.arange(400) < 60  # a rarer label
    res = simulate_multilabel(X[:400], Y, MultiLabelSimulationConfig(initial=30, rounds=0, test_size=0.25))
    assert res["n_test"] == 100
    assert res["rounds"][0]["macro_f1"] is not None


@pytest.mark.parametrize(("extra", "message"), [
    (["--positive-class", "1"], "--positive-class is for single-label runs"),
    (["--strategy", "entropy"], "--strategy entropy is for single-label runs: with --multi-label expected one of"),
    (["--model", "mlp", "--strategy", "bald"], "--strategy bald is for single-label runs"),
    (["--seed-label", "zebra", "--initial-positives", "2", "--initial-negatives", "2"],
     "--seed-label 'zebra' is not a label"),
    (["--initial-positives", "2", "--initial-negatives", "2"], "needs seed_label, initial_positives"),
    (["--initial", "50", "--batch-size", "100", "--rounds", "9"], "more than the pool's"),
    (["--batch-size", "0"], "batch_size must be > 0"),
    (["--label-noise", "0.1"], "--label-noise is for single-label runs"),
])
def test_bad_multilabel_input_is_one_line_exit_2_no_file(tmp_path, ml_files, capsys, extra, message):
    e, lab = ml_files
    out = tmp_path / "bad.json"
    assert main(ml_args(e, lab, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any(p.name.startswith("bad") for p in tmp_path.iterdir())


def test_bad_label_files_exit_2(tmp_path, ml_files, capsys):
    e, _ = ml_files
    bad = tmp_path / "bad.csv"
    bad.write_text("id,labels\n0,even;prime\n9999,even\n")
    assert main(ml_args(e, bad, tmp_path / "r.json")) == 2
    assert "names id '9999', which is not in the pool" in capsys.readouterr().err
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(600, dtype=np.int64))
    assert main(ml_args(e, flat, tmp_path / "r.json")) == 2
    assert "must be an (items x labels) array but have shape (600,)" in capsys.readouterr().err
    assert main(["simulate", "--embeddings", str(e), "--labels", str(flat), "--out", str(tmp_path / "r.json"),
                 "--strategy", "mean-entropy"]) == 2
    assert "--strategy mean-entropy is for --multi-label runs" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_library_refuses_a_single_label_strategy(digits):
    X, y = digits
    with pytest.raises(ValidationError, match="unknown multi-label strategy 'entropy'"):
        simulate_multilabel(X[:100], SETS[y[:100]], MultiLabelSimulationConfig(strategy="entropy"))
