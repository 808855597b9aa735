"""``datascout simulate``: the outside contract (run.json keys, files), SEALS, and every bad input
of the issue's list -> exit 2, one line on stderr, no traceback, no output file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from datascout.cli import main
from datascout.exceptions import ValidationError

ISSUE_ROUND_KEYS = {"round", "labeled", "positives_found", "pool_positives", "candidates",
                    "select_seconds", "fit_seconds", "accuracy", "average_precision"}


def args_for(e, y, out, *extra):
    return ["simulate", "--embeddings", str(e), "--labels", str(y), "--out", str(out), *extra]


def test_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "datascout simulate --embeddings E.npy" in out
    for flag in ("--positive-class", "--strategy", "--beta", "--seals", "--k", "--index",
                 "--initial-positives", "--initial-negatives", "--initial", "--batch-size",
                 "--rounds", "--test-size", "--seed", "--out"):
        assert flag in out


def test_binary_run_writes_the_contract(tmp_path, digits_files, capsys):
    e, y = digits_files
    out = tmp_path / "res" / "run.json"
    out.parent.mkdir()
    code = main(args_for(e, y, out, "--positive-class", "3", "--strategy", "most-likely-positive",
                         "--initial-positives", "5", "--initial-negatives", "95",
                         "--batch-size", "25", "--rounds", "3", "--seed", "2"))
    assert code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.csv", "run.json", "run.png"]
    data = json.loads(out.read_text())
    assert {"config", "rounds", "aulc"} <= set(data)
    assert data["config"]["positive_class"] == 3 and data["config"]["strategy"] == "most-likely-positive"
    assert data["config"]["initial_positives"] == 5 and data["config"]["batch_size"] == 25
    assert len(data["rounds"]) == 4
    for r in data["rounds"]:
        assert ISSUE_ROUND_KEYS <= set(r)
        assert r["positives_found"] is not None and r["average_precision"] is not None
    assert data["rounds"][0]["positives_found"] == 5
    assert data["rounds"][-1]["positives_found"] > 5 + 40  # active search on an easy digit
    assert isinstance(data["aulc"], float)
    rows = list(csv.DictReader((out.parent / "run.csv").open()))
    assert [int(r["labeled"]) for r in rows] == [100, 125, 150, 175]
    assert "aulc=" in capsys.readouterr().out


def test_multiclass_run_has_null_binary_fields(tmp_path, digits_files):
    e, y = digits_files
    out = tmp_path / "run.json"
    assert main(args_for(e, y, out, "--strategy", "margin", "--initial", "40", "--batch-size", "20",
                         "--rounds", "2", "--no-plot")) == 0
    data = json.loads(out.read_text())
    for r in data["rounds"]:
        assert r["positives_found"] is None and r["pool_positives"] is None
        assert r["average_precision"] is None and r["accuracy"] is not None
    assert not (tmp_path / "run.png").exists()
    assert data["config"]["model"] == "logreg"


def test_the_default_strategy_is_auto(tmp_path, digits_files):
    e, y = digits_files
    out = tmp_path / "run.json"
    assert main(args_for(e, y, out, "--initial", "40", "--batch-size", "20", "--rounds", "1", "--no-plot")) == 0
    assert json.loads(out.read_text())["config"]["strategy"] == "auto"


def test_model_option_is_recorded_and_checked(tmp_path, digits_files, capsys):
    e, y = digits_files
    out = tmp_path / "run.json"
    assert main(args_for(e, y, out, "--strategy", "margin", "--model", "random-forest", "--initial", "40",
                         "--batch-size", "20", "--rounds", "1", "--no-plot")) == 0
    data = json.loads(out.read_text())
    assert data["config"]["model"] == "random-forest" and len(data["rounds"]) == 2
    with pytest.raises(SystemExit) as info:
        main(args_for(e, y, tmp_path / "r2.json", "--model", "svm"))
    assert info.value.code == 2
    assert "invalid choice: 'svm'" in capsys.readouterr().err
    assert not (tmp_path / "r2.json").exists()


def test_seals_works(tmp_path, digits_files):
    e, y = digits_files
    out = tmp_path / "seals.json"
    code = main(args_for(e, y, out, "--positive-class", "0", "--strategy", "entropy", "--seals",
                         "--k", "10", "--index", "Flat", "--initial-positives", "5",
                         "--initial-negatives", "20", "--batch-size", "10", "--rounds", "2"))
    assert code == 0
    data = json.loads(out.read_text())
    assert data["config"]["seals"] is True and data["config"]["k"] == 10
    cands = [r["candidates"] for r in data["rounds"][1:]]
    assert all(c is not None and 0 < c < data["n_pool"] for c in cands)
    assert (e.parent / "E.knn-Flat-k10").is_dir()  # the kNN graph is kept beside the embeddings
    out2 = tmp_path / "explore.json"
    code = main(args_for(e, y, out2, "--positive-class", "0", "--strategy", "entropy", "--seals",
                         "--k", "10", "--index", "Flat", "--initial-positives", "5",
                         "--initial-negatives", "20", "--batch-size", "10", "--rounds", "2",
                         "--explore", "40"))
    assert code == 0
    data2 = json.loads(out2.read_text())
    assert data2["config"]["explore"] == 40
    # the same seed set and graph, so round 1 scores the same C plus 40 random items
    assert data2["rounds"][1]["candidates"] == cands[0] + 40


def write_bad(tmp_path, name, X=None, y=None):
    d = tmp_path / name
    d.mkdir()
    rng = np.random.default_rng(0)
    if X is None:
        X = rng.normal(size=(200, 8)).astype(np.float32)
    if y is None:
        y = np.arange(len(X) if np.ndim(X) > 0 else 0) % 3
    np.save(d / "E.npy", X)
    np.save(d / "Y.npy", y)
    return d


def _nan():
    X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    X[17, 2] = np.nan
    return X


def _inf():
    X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    X[150, 0] = -np.inf
    return X


BAD = [
    ("nan", dict(X=_nan()), [], "row 17 contains NaN or inf"),
    ("inf", dict(X=_inf()), [], "row 150 contains NaN or inf"),
    ("short labels", dict(y=np.zeros(150, np.int64)), [], "labels has 150 entries but embeddings has 200 rows"),
    ("1-D embeddings", dict(X=np.zeros(200, np.float32)), [], "2-D array"),
    ("3-D embeddings", dict(X=np.zeros((200, 2, 4), np.float32)), [], "has 3 dimension(s)"),
    ("batch 0", {}, ["--batch-size", "0"], "batch_size must be > 0 but is 0"),
    ("batch negative", {}, ["--batch-size", "-5"], "batch_size must be > 0 but is -5"),
    ("batch above pool", {}, ["--batch-size", "500", "--rounds", "1"], "batch_size 500 is larger than"),
    ("absent positive class", {}, ["--positive-class", "7"], "positive class 7 does not occur"),
    ("empty pool", dict(X=np.zeros((0, 8), np.float32), y=np.zeros(0, np.int64)), [],
     "embeddings is empty"),
    ("not json", {}, ["--out-name", "run.txt"], "--out must name a .json file"),
    ("missing labels file", dict(y="missing"), [], "expected a file at"),
    ("explore without seals", {}, ["--explore", "50"], "explore adds random items to the SEALS candidate set"),
    ("explore negative", {}, ["--seals", "--index", "Flat", "--explore", "-1"], "explore must be >= 0 but is -1"),
    ("test split below the classes", {}, ["--test-size", "0.005"],
     "splits 200 items into 199 for the pool and 1 for the test, but a stratified split needs at least 3"),
    ("pool below the classes", {}, ["--test-size", "0.995"], "199 for the test, but a stratified split"),
    ("seed negative", {}, ["--seed", "-1"], "seed must be in 0..4294967295 but is -1"),
    ("seed too large", {}, ["--seed", "5000000000"], "seed must be in 0..4294967295 but is 5000000000"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    _, data, extra, message = case
    y = data.get("y")
    d = write_bad(tmp_path, "in", data.get("X"), None if isinstance(y, str) else y)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "run.json"
    if extra[:1] == ["--out-name"]:
        out, extra = out_dir / extra[1], extra[2:]
    labels = d / "nope.npy" if isinstance(y, str) else d / "Y.npy"
    defaults = ["--initial", "20", "--batch-size", "10", "--rounds", "2"]
    code = main(args_for(d / "E.npy", labels, out, *defaults, *extra))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("datascout: error: ")
    assert message in err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []  # no partial output


def test_usage_errors_exit_2(tmp_path, digits_files, capsys):
    e, y = digits_files
    with pytest.raises(SystemExit) as info:
        main(args_for(e, y, tmp_path / "r.json", "--strategy", "best"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'best'" in err
    assert main(args_for(e, y, tmp_path / "no" / "dir" / "r.json")) == 2
    assert "folder of --out does not exist" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, digits_files):
    e, y = digits_files
    with pytest.raises(ValidationError, match="batch_size must be > 0"):
        main(["--debug", *args_for(e, y, tmp_path / "r.json", "--batch-size", "0")])
    with pytest.raises(ValidationError):
        main([*args_for(e, y, tmp_path / "r.json", "--batch-size", "0"), "--debug"])


def test_subprocess_on_fashion_mnist_slice(tmp_path, fashion_slice):
    X, y = fashion_slice
    np.save(tmp_path / "E.npy", X[:2000])
    np.save(tmp_path / "Y.npy", y[:2000])
    cmd = [sys.executable, "-m", "datascout", "simulate", "--embeddings", str(tmp_path / "E.npy"),
           "--labels", str(tmp_path / "Y.npy"), "--positive-class", "8", "--strategy", "margin",
           "--initial-positives", "5", "--initial-negatives", "95", "--batch-size", "50",
           "--rounds", "3", "--seed", "1", "--out", str(tmp_path / "run.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "run.json").read_text())
    assert [r["labeled"] for r in data["rounds"]] == [100, 150, 200, 250]
    assert data["rounds"][-1]["average_precision"] > 0.5  # bags are easy to tell apart
    assert (tmp_path / "run.csv").is_file() and (tmp_path / "run.png").is_file()
    # a bad input from a real process: status 2, one line, no traceback
    bad = tmp_path / "bad.npy"
    Xb = X[:2000].copy()
    Xb[3, 3] = np.inf
    np.save(bad, Xb)
    proc = subprocess.run([*cmd[:5], str(bad), *cmd[6:-1], str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "row 3 contains NaN or inf" in proc.stderr
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.csv").exists()


def test_npz_ids_must_match_the_embeddings(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.savez(tmp_path / "E.npz", embeddings=X, ids=np.arange(49))
    np.save(tmp_path / "Y.npy", np.arange(50) % 2)
    out = tmp_path / "out"
    out.mkdir()
    assert main(args_for(tmp_path / "E.npz", tmp_path / "Y.npy", out / "r.json")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ids has 49 entries but embeddings has 50 rows" in err
    np.savez(tmp_path / "D.npz", embeddings=X, ids=np.array([f"i{k % 40}" for k in range(50)]))
    assert main(args_for(tmp_path / "D.npz", tmp_path / "Y.npy", out / "r.json")) == 2
    assert "ids must be unique but 'i0' occurs 2 times" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_model_that_does_not_converge_gives_one_note(tmp_path, digits_files, capsys, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from datascout import models

    # one lbfgs iteration cannot converge: every round's refit warns
    monkeypatch.setitem(models.MODELS, "logreg", (lambda random_state=None: LogisticRegression(max_iter=1), ""))
    e, y = digits_files
    code = main(args_for(e, y, tmp_path / "run.json", "--strategy", "margin", "--initial", "50",
                         "--batch-size", "20", "--rounds", "3"))
    assert code == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("datascout: note:")]
    assert len(notes) == 1 and "lbfgs failed to converge" in notes[0]
    assert "ConvergenceWarning" not in err and "Increase the number of iterations" not in err


def test_the_convergence_note_lets_other_warnings_through():
    import io
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from datascout.cli import convergence_note

    X, y = load_digits(return_X_y=True)
    buf = io.StringIO()
    with pytest.warns(UserWarning, match="something else"):
        with convergence_note(stream=buf):
            LogisticRegression(max_iter=1).fit(X[:100], y[:100])
            LogisticRegression(max_iter=2).fit(X[:100], y[:100])
            warnings.warn("something else", UserWarning)
    assert buf.getvalue().count("\n") == 1 and buf.getvalue().startswith("datascout: note:")
    quiet = io.StringIO()
    with convergence_note(stream=quiet):
        LogisticRegression(max_iter=1000).fit(X[:100] / 16, y[:100])
    assert quiet.getvalue() == ""


def test_out_naming_a_folder_fails_before_the_run(tmp_path, digits_files, capsys):
    e, y = digits_files
    out_dir = tmp_path / "out"
    (out_dir / "run.csv").mkdir(parents=True)  # where run.csv would go
    code = main(args_for(e, y, out_dir / "run.json", "--initial", "20", "--batch-size", "10", "--rounds", "1"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "run.csv' but that is a folder" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["run.csv"]  # nothing else written
