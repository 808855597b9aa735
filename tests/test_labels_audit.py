"""``datascout.labels`` and ``datascout labels audit``: wrong labels found from out-of-fold
probabilities (cleanlab), near-duplicate conflicts and outliers from the kNN graph."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("cleanlab")

from datascout.cli import main  # noqa: E402
from datascout.labels import audit_labels, out_of_fold_probs  # noqa: E402


def clusters(n_per=200, dim=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 6
    y = np.repeat(np.arange(k), n_per)
    X = (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
    return X, y


def test_flipped_labels_rank_first_with_the_true_class_suggested():
    X, truth = clusters()
    rng = np.random.default_rng(1)
    flipped = np.sort(rng.choice(len(truth), size=15, replace=False))
    y = truth.copy()
    y[flipped] = (truth[flipped] + 1 + rng.integers(0, 2, size=15)) % 3
    a = audit_labels(X, y, n_classes=3)
    top = a.positions[:15]
    assert len(set(top) & set(flipped)) >= 14
    by_pos = dict(zip(a.positions.tolist(), a.suggested.tolist()))
    assert all(by_pos[p] == truth[p] for p in flipped if p in by_pos)
    assert all("low-self-confidence" in r for r, p in zip(a.reasons, a.positions) if p in flipped)
    # the noise rate per given class: the flips into that class over its labels, about
    per_class = np.array([np.sum(y[flipped] == c) / np.sum(y == c) for c in range(3)])
    assert np.allclose(a.noise_rate, per_class, atol=0.03)
    assert a.summary(["a", "b", "c"]).startswith(f"checked 600 labeled items, flagged {len(a.positions)}")


def test_score_is_one_minus_the_probability_of_the_given_label():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    probs = np.array([[.9, .05, .05], [.8, .1, .1], [.1, .8, .1],  # item 2: given 0, believed 1
                      [.1, .8, .1], [.1, .9, 0.], [.2, .7, .1],
                      [.05, .05, .9], [.1, .1, .8], [.1, .2, .7]])
    a = audit_labels(X, y, n_classes=3, probs=probs, graph=None)
    assert a.checked.tolist() == list(range(9))  # the unlabeled item is not checked
    assert np.allclose(a.quality, probs[np.arange(9), y[:9]])
    assert a.positions[0] == 2 and a.suggested[0] == 1 and a.score[0] == pytest.approx(0.9)


def test_graph_finds_near_duplicate_conflicts_and_outliers():
    from datascout.seals import KNNGraph

    X, y = clusters(n_per=100, dim=8)
    X = np.vstack([X, X[5:6], 40 * np.ones((1, 8), np.float32)])  # a copy of item 5, and a far point
    y = np.r_[y, 1, 0]  # the copy says class 1; item 5 (class 0) lies among class 0
    g = KNNGraph.build(X, 8, "Flat")
    a = audit_labels(X, y, n_classes=3, graph=g, outlier_quantile=0.004)
    why = dict(zip(a.positions.tolist(), a.reasons))
    assert "near-duplicate-conflict" in why[300]  # the copy with the label its cluster contradicts
    assert 5 not in why or "near-duplicate-conflict" not in why[5]
    assert "outlier" in why[301]


def test_out_of_fold_probs_never_see_the_item():
    X, y = clusters(n_per=20, dim=4)
    p = out_of_fold_probs(X, y, 3, folds=4)
    assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 labels of every labeled class"):
        out_of_fold_probs(X[:41], y[:41], 3)  # class 2 has one label


def test_cli_writes_suspects_csv_and_rejects_bad_input(tmp_path, capsys):
    X, truth = clusters(n_per=60, dim=8)
    y = truth.copy()
    y[[3, 70, 150]] = [1, 2, 0]
    ids = np.asarray([f"item-{i:03d}" for i in range(len(y))])
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    np.save(tmp_path / "ids.npy", ids)
    names = np.array(["cat", "dog", "eel"])
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows([[i, names[c]] for i, c in zip(ids, y)][::-1])  # another order: matched by id
    np.savez(tmp_path / "pool.npz", embeddings=X, ids=ids)
    out = tmp_path / "suspects.csv"
    assert main(["labels", "audit", "--embeddings", str(tmp_path / "pool.npz"), "--labels", str(labels),
                 "--index", "Flat", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("checked 180 labeled items, flagged ") and "estimated noise rate per class: cat" in printed
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["id", "given", "suggested", "score", "reason"]
    top = {r["id"]: r for r in rows[:3]}
    assert set(top) == {"item-003", "item-070", "item-150"}
    assert top["item-003"]["given"] == "dog" and top["item-003"]["suggested"] == "cat"
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # bad input: one line, exit 2, no file
    bad = tmp_path / "bad.npy"
    np.save(bad, y[:-1])
    out2 = tmp_path / "none.csv"
    for argv, message in [
        (["--embeddings", str(emb), "--labels", str(bad), "--out", str(out2)], "labels has 179 entries but embeddings has 180"),
        (["--embeddings", str(emb), "--labels", str(labels), "--out", str(tmp_path / "x.txt")], "must name a .csv"),
        (["--embeddings", str(emb), "--labels", str(labels), "--folds", "1", "--out", str(out2)], "--folds must be >= 2"),
        (["--embeddings", str(emb), "--labels", str(labels), "--model", "svm", "--out", str(out2)], "unknown model 'svm'"),
    ]:
        assert main(["labels", "audit", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out2.exists()
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(180, np.int64))
    assert main(["labels", "audit", "--embeddings", str(emb), "--labels", str(one), "--no-graph", "--out", str(out2)]) == 2
    assert "at least 2 classes" in capsys.readouterr().err and not out2.exists()


def test_cli_audits_a_campaigns_own_jsonl_export_and_export_to_stdout(tmp_path, capsys):
    import json

    from datascout.campaign import Campaign

    X, truth = clusters(n_per=30, dim=8)
    ids = [f"q{i}" for i in range(len(truth))]
    np.save(tmp_path / "emb.npy", X)
    np.save(tmp_path / "ids.npy", np.asarray(ids))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": i, "text": f"item {i}"}) + "\n" for i in ids))
    names = ["a", "b", "c"]
    labels = tmp_path / "given.csv"
    wrong = {5: 1, 40: 2}
    labels.write_text("id,label,annotator\n" + "".join(
        f"{i},{names[wrong.get(k, truth[k])]},ann\n" for k, i in enumerate(ids) if k % 9 != 8))  # 10 left to label
    camp = Campaign.create(tmp_path / "camp", embeddings=tmp_path / "emb.npy", items=items, classes=names,
                           batch_size=5, k=5, seed_labels=labels)
    camp.close()
    assert main(["campaign", "export", str(tmp_path / "camp"), "--format", "jsonl", "--out", "-"]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) == 80 and json.loads(text.splitlines()[0])["answers"][0]["annotator"] == "ann"
    (tmp_path / "export.jsonl").write_text(text)
    out = tmp_path / "s.csv"
    assert main(["labels", "audit", "--embeddings", str(tmp_path / "emb.npy"), "--labels",
                 str(tmp_path / "export.jsonl"), "--index", "Flat", "--out", str(out)]) == 0
    top = [r["id"] for r in csv.DictReader(open(out))][:2]
    assert sorted(top) == ["q40", "q5"]
    capsys.readouterr()
