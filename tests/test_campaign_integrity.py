"""Data integrity of the campaign (issue "Data engine, part 1"): items are matched to embeddings
rows by id, imported labels drive the loop, graph writers cannot corrupt a graph, a rejected init
leaves nothing behind, and a round never re-reads the whole embeddings file to check it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from datascout.campaign import Campaign
from datascout.cli import main
from test_campaign_support import fortunes_items, write_inputs


def _items_by_pos(directory: Path) -> dict:
    con = sqlite3.connect(directory / "campaign.db")
    try:
        return dict(con.execute("SELECT pos, id FROM items").fetchall())
    finally:
        con.close()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _leftovers(root: Path) -> list[str]:
    """What a run left in ``root`` besides the inputs."""
    return sorted(p.name for p in root.iterdir() if p.name not in ("inputs",) and not p.name.endswith(".lock"))


def test_items_in_another_order_are_matched_to_their_rows_by_id(tmp_path, capsys):
    items, X, _, classes = fortunes_items(n_per_class=10)
    emb, _ = write_inputs(tmp_path / "inputs", items, X)
    ids = np.asarray([it["id"] for it in items])
    np.save(emb.parent / "ids.npy", ids)  # ids.npy beside the .npy: rows carry ids
    shuffled = [items[i] for i in np.random.default_rng(1).permutation(len(items))]
    path = tmp_path / "inputs" / "shuffled.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in shuffled))
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(path),
                 "--classes", ",".join(classes), "--batch-size", "5", "--k", "5"]) == 0
    assert "matched to the embeddings by id" in capsys.readouterr().out
    by_pos = _items_by_pos(d)
    assert [by_pos[p] for p in range(len(ids))] == ids.tolist()  # row p holds the item of id ids[p]
    text_of = {it["id"]: it["text"] for it in items}
    camp = Campaign(d)
    for item in camp.lease_batch("alice", 5)["items"]:
        assert item["text"] == text_of[item["id"]]


def test_item_ids_not_in_the_pool_or_rows_without_items_are_one_line_errors(tmp_path, capsys):
    items, X, _, classes = fortunes_items(n_per_class=10)
    emb, _ = write_inputs(tmp_path / "inputs", items, X)
    np.savez(tmp_path / "inputs" / "pool.npz", embeddings=X, ids=np.asarray([it["id"] for it in items]))
    stranger = tmp_path / "inputs" / "stranger.jsonl"
    stranger.write_text("".join(json.dumps(it) + "\n" for it in items[:-2])
                        + json.dumps({"id": "nobody-1", "text": "x"}) + "\n"
                        + json.dumps({"id": "nobody-2", "text": "y"}) + "\n")
    d = tmp_path / "camp"
    args = ["campaign", "init", str(d), "--embeddings", str(tmp_path / "inputs" / "pool.npz"), "--items",
            str(stranger), "--classes", ",".join(classes), "--k", "5"]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "2 of stranger.jsonl have ids that are not in the embeddings' ids" in line
    assert "'nobody-1', 'nobody-2'" in line
    short = tmp_path / "inputs" / "short.jsonl"
    short.write_text("".join(json.dumps(it) + "\n" for it in items[3:]))
    args[6] = str(short)
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"3 of the {len(items)} embeddings rows have no item in short.jsonl" in line
    assert repr(items[0]["id"]) in line
    assert _leftovers(tmp_path) == []  # no campaign folder, no graph


def test_campaign_from_a_pool_folder_of_datascout_embed(tmp_path, capsys):
    """The real path: ``embed text`` a CSV, then ``campaign init --pool``; and ``--items`` as
    CSV in another order, matched by id; a pool folder given as --embeddings works too."""
    items, _, y, classes = fortunes_items(n_per_class=8)
    csv_path = tmp_path / "inputs" / "quotes.csv"
    csv_path.parent.mkdir(parents=True)
    import csv

    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "body"])
        w.writerows([[it["id"], it["text"]] for it in items])
    pool = tmp_path / "inputs" / "pool"
    assert main(["embed", "text", str(csv_path), "--id-column", "key", "--text-column", "body",
                 "--out", str(pool), "--quiet"]) == 0
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--pool", str(pool), "--classes", ",".join(classes),
                 "--batch-size", "4", "--k", "5"]) == 0
    ids = [str(i) for i in np.load(pool / "ids.npy").tolist()]
    by_pos = _items_by_pos(d)
    assert [by_pos[p] for p in range(len(ids))] == ids
    camp = Campaign(d)
    text_of = {it["id"]: it["text"] for it in items}
    got = camp.lease_batch("alice", 4)["items"]
    assert got and all(it["text"] == text_of[it["id"]] for it in got)
    # the CSV itself as --items, rows reversed: matched by id all the same
    rev = tmp_path / "inputs" / "reversed.csv"
    with open(rev, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "body"])
        w.writerows([[it["id"], it["text"]] for it in items[::-1]])
    d2 = tmp_path / "camp2"
    assert main(["campaign", "init", str(d2), "--embeddings", str(pool), "--items", str(rev),
                 "--id-column", "key", "--text-column", "body", "--classes", ",".join(classes), "--k", "5"]) == 0
    assert _items_by_pos(d2) == by_pos
    capsys.readouterr()


def test_imported_labels_count_toward_the_round_are_never_leased_and_import_twice_adds_nothing(tmp_path, capsys):
    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    d = tmp_path / "camp"
    camp = Campaign.create(d, embeddings=emb, items=items_path, classes=classes, batch_size=6, k=5)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    con = sqlite3.connect(d / "campaign.db")
    round0 = [r[0] for r in con.execute("SELECT i.id FROM selections s JOIN items i ON i.pos = s.pos "
                                        "WHERE s.round = 0 ORDER BY s.rank")]
    f = tmp_path / "labels.csv"
    f.write_text("id,label,annotator\n" + "".join(f"{i},{truth[i]},bob\n" for i in round0[:4]))
    assert main(["campaign", "import", str(d), str(f)]) == 0
    assert "imported 4 new labels" in capsys.readouterr().out
    assert camp.round_progress() == {"round": 0, "selected": 6, "done": 4}
    assert main(["campaign", "import", str(d), str(f)]) == 0
    assert "imported 0 new labels" in capsys.readouterr().out
    assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 4
    leased = [it["id"] for it in Campaign(d).lease_batch("alice", 10)["items"]]
    assert sorted(leased) == sorted(round0[4:])  # the imported ones are not handed out again
    con.execute("DELETE FROM leases")
    con.commit()
    # importing the rest completes round 0: round 1 is selected, and the imported are never leased
    f.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in round0[4:]))
    assert main(["campaign", "import", str(d), str(f)]) == 0
    assert "round 0 complete: round 1 selected" in capsys.readouterr().out
    camp = Campaign(d)
    assert camp.round_progress()["round"] == 1
    assert not set(it["id"] for it in camp.lease_batch("alice", 10)["items"]) & set(round0)


def test_concurrent_graph_writers_leave_one_whole_graph(tmp_path):
    """Two ``datascout index build`` runs of one graph at once: each stages apart and waits for
    the other's lock; both succeed and the graph is exact (it crashed, or kept zero rows)."""
    import subprocess
    import sys

    from datascout.index import SimilarityIndex, drop_self
    from datascout.seals import KNNGraph, graph_dir

    X = np.random.default_rng(0).normal(size=(12000, 32)).astype(np.float32)
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    cmd = [sys.executable, "-m", "datascout", "index", "build", "--embeddings", str(emb), "--index", "Flat",
           "--k", "8", "--no-progress", "--force", "--batch-rows", "256"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    _, exact = SimilarityIndex("Flat").build(X).search(X, 9)
    _, exact = drop_self(np.zeros(exact.shape, np.float32), exact, np.arange(len(X)), 8)
    g = KNNGraph.load(graph_dir(emb, "Flat", 8))
    assert np.array_equal(np.asarray(g.neighbors), exact)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no staging folder left


def test_a_truncated_or_inconsistent_graph_is_rebuilt_with_a_note(tmp_path, caplog):
    from datascout.seals import KNNGraph, build_or_load_graph, graph_dir

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    good = np.asarray(build_or_load_graph(X, emb, "Flat", 6).neighbors).copy()
    d = graph_dir(emb, "Flat", 6)
    with open(d / "neighbors.npy", "r+b") as fh:  # a write that stopped half-way
        fh.truncate((d / "neighbors.npy").stat().st_size // 2)
    with pytest.raises(ValueError, match="cannot read .*neighbors.npy"):
        KNNGraph.load(d)
    g = build_or_load_graph(X, emb, "Flat", 6)
    assert np.array_equal(np.asarray(g.neighbors), good)
    assert "ignoring a damaged kNN graph" in caplog.text
    # arrays of another shape than graph.json records
    np.save(d / "similarities.npy", np.zeros((500, 5), np.float32))
    with pytest.raises(ValueError, match=r"graph.json records \(500, 6\)"):
        KNNGraph.load(d)
    assert np.array_equal(np.asarray(build_or_load_graph(X, emb, "Flat", 6).neighbors), good)


def test_a_full_disk_while_writing_the_graph_is_an_error_not_a_silent_second_build(tmp_path, monkeypatch):
    from datascout import seals
    from datascout.exceptions import DatascoutError

    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    calls = []
    real = seals.KNNGraph.build.__func__

    def build(cls, *a, **kw):
        calls.append(kw.get("out_dir"))
        if kw.get("out_dir") is not None:
            raise OSError(28, "No space left on device")
        return real(cls, *a, **kw)

    monkeypatch.setattr(seals.KNNGraph, "build", classmethod(build))
    with pytest.raises(DatascoutError, match="cannot write the kNN graph to .*No space left on device"):
        seals.build_or_load_graph(X, emb, "Flat", 5)
    assert len(calls) == 1  # no second build in memory
    # a read-only folder: built in memory, with a note
    monkeypatch.setattr(seals.os, "access", lambda path, mode: False)
    g = seals.build_or_load_graph(X, emb, "Flat", 5)
    assert len(g) == 300 and calls[-1] is None


def test_a_rejected_init_leaves_nothing_behind(tmp_path, capsys):
    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    d = tmp_path / "camp"
    base = ["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(items_path),
            "--classes", ",".join(classes), "--k", "5"]
    seed = tmp_path / "inputs" / "seed.csv"
    seed.write_text(f"id,label\nno-such-item,{classes[0]}\n")
    zero = tmp_path / "inputs" / "zero.npy"
    np.save(zero, np.zeros(X.shape[1], np.float32))
    nan = tmp_path / "inputs" / "nan.npy"
    np.save(nan, np.full(X.shape[1], np.nan, np.float32))
    flat = tmp_path / "inputs" / "flat.npy"
    np.save(flat, X[:, 0].copy())
    cases = [
        (["--seed-labels", str(seed)], "labels name items that are not in the campaign"),
        (["--like", "no-such-item"], "unknown item 'no-such-item'"),
        (["--query-embedding", str(zero)], "the query vector is all zeros"),
        (["--query-embedding", str(nan)], "the query vector must be finite"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in _one_line(capsys.readouterr().err)
        assert _leftovers(tmp_path) == [], extra  # no campaign folder and no graph beside the embeddings
        assert sorted(p.name for p in emb.parent.iterdir() if not p.name.startswith(".")) == \
            sorted(["emb.npy", "items.jsonl", "seed.csv", "zero.npy", "nan.npy", "flat.npy"])
    assert main(["campaign", "init", str(d), "--embeddings", str(flat), "--items", str(items_path),
                 "--classes", ",".join(classes)]) == 2
    assert "must be a 2-D array" in _one_line(capsys.readouterr().err)
    assert not d.exists()


def test_an_svg_image_item_is_refused_at_init(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "inputs"
    d.mkdir()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(d / "a.png")
    (d / "b.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (d / "c.png").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    X = np.eye(2, 4, dtype=np.float32)
    np.save(d / "emb.npy", X)
    for bad in ("b.svg", "c.png"):  # by its bytes, whatever the name says
        (d / "items.jsonl").write_text(json.dumps({"id": "a", "image": "a.png"}) + "\n"
                                       + json.dumps({"id": "b", "image": bad}) + "\n")
        assert main(["campaign", "init", str(tmp_path / "camp"), "--embeddings", str(d / "emb.npy"),
                     "--items", str(d / "items.jsonl"), "--classes", "x,y", "--k", "1"]) == 2
        assert "is not a PNG, JPEG, GIF or WebP file" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "camp").exists()


def test_a_round_does_not_reread_the_embeddings_unless_the_file_changed(tmp_path, monkeypatch):
    from datascout import seals

    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=4, k=5)
    calls = []
    real = seals.fingerprint
    monkeypatch.setattr(seals, "fingerprint", lambda A, *a, **kw: calls.append(A.shape) or real(A, *a, **kw))
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}

    def answer_round(c):
        batch = c.lease_batch("alice", 10)["items"]
        c.submit("alice", [(it["id"], truth[it["id"]]) for it in batch])
        c.wait_idle(60)

    camp = Campaign(tmp_path / "camp")  # a fresh process would do the same
    for _ in range(2):
        answer_round(camp)
    assert camp.current_round() == 2 and calls == []  # no fingerprint: nothing re-read
    os.utime(emb, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    answer_round(camp)
    assert camp.current_round() == 3 and len(calls) == 1  # checked once, and the record renewed
    answer_round(camp)
    assert len(calls) == 1
    Y = np.load(emb).copy()
    Y[0] += 1
    np.save(emb, Y)  # new content
    with pytest.raises(ValueError, match="changed since the campaign was created"):
        camp.embeddings()


# -- what the labeler and the dashboard are told (issue "Data engine, part 2", campaign side) ----


def test_wilson_interval_and_audit_figures_by_hand():
    from sklearn.metrics import average_precision_score, f1_score

    from datascout.campaign.metrics import audit_quality, wilson_interval

    # Wilson 95% for 8/10, by hand: centre (0.8 + z^2/20) / (1 + z^2/10), half-width
    # z sqrt(0.016 + z^2/400) / (1 + z^2/10), z = 1.959964
    z = 1.959964
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * np.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert wilson_interval(8, 10) == pytest.approx([centre - half, centre + half], abs=1e-6)
    assert wilson_interval(0, 0) == [0.0, 1.0]
    y = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    proba = np.eye(3)[[0, 1, 1, 1, 2, 0, 2, 1]] * 0.8 + 0.2 / 3
    a = audit_quality(y, proba, 3, n_boot=400, random_state=0)
    assert a["labels"] == 8 and a["metric"] == "accuracy"
    assert a["value"] == a["accuracy"]["value"] == 6 / 8 and a["ci"] == a["accuracy"]["ci"] == wilson_interval(6, 8)
    assert a["macro_f1"]["value"] == pytest.approx(f1_score(y, proba.argmax(1), average="macro"))
    assert a["macro_f1"]["ci"] is None  # 8 audit labels over 3 classes: too few for its spread
    big = audit_quality(np.tile(y, 4), np.tile(proba, (4, 1)), 3, n_boot=400, random_state=0)
    lo, hi = big["macro_f1"]["ci"]
    assert 0 <= lo <= big["macro_f1"]["value"] <= hi <= 1 and hi - lo > 0
    # rare concept: AP, prevalence and the positives left among 1,000 unlabeled items
    yb = np.array([0] * 16 + [1] * 4)
    score = np.r_[np.linspace(0.0, 0.6, 16), [0.55, 0.7, 0.8, 0.9]]
    pb = np.c_[1 - score, score]
    b = audit_quality(yb, pb, 2, positive=1, n_unlabeled=1000, random_state=0)
    assert b["metric"] == "average_precision"
    assert b["value"] == pytest.approx(average_precision_score(yb, score))
    assert b["prevalence"]["value"] == 0.2 and b["prevalence"]["ci"] == wilson_interval(4, 20)
    assert b["positives_remaining"]["value"] == pytest.approx(200.0)
    assert b["positives_remaining"]["ci"] == pytest.approx([1000 * x for x in wilson_interval(4, 20)])
    # flagged at 0.5: scores 0.52.., 0.56.., 0.6 of negatives and all 4 positives
    flagged = score >= 0.5
    assert b["precision_at_0.5"]["value"] == 4 / int(flagged.sum())


def test_cv_with_a_class_of_one_label_still_gives_an_estimate():
    from datascout.campaign.metrics import cv_quality

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10, int), np.ones(10, int), [2]]
    X = (np.eye(3)[y] * 4 + rng.normal(size=(21, 3))).astype(np.float32)
    q = cv_quality(X, y, 3)
    assert q["cv"] is not None and q["left_out_classes"] == [2] and q["n_labels"] == 21
    assert q["cv"]["accuracy"] > 0.9


def test_audit_items_are_uniform_never_trained_on_and_measured(tmp_path, capsys):
    items, X, y, classes = fortunes_items(n_per_class=40)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    d = tmp_path / "camp"
    camp = Campaign.create(d, embeddings=emb, items=items_path, classes=classes, batch_size=10, k=8,
                           audit_fraction=0.3)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    for _ in range(4):
        batch = camp.lease_batch("alice", 20)["items"]
        camp.submit("alice", [(it["id"], truth[it["id"]]) for it in batch])
        camp.wait_idle(60)
    con = camp.con
    assert con.execute("SELECT round, SUM(audit), COUNT(*) FROM selections GROUP BY round").fetchall()[:4] == \
        [(r, 3, 10) for r in range(4)]
    # audit labels are never taught: the SEALS candidates come from the training labels alone
    audit = {p for (p,) in con.execute("SELECT pos FROM selections WHERE audit = 1")}
    s = camp.stats()
    last = s["rounds"][-1]
    assert last["audit"]["labels"] == 12 and last["labels_before"] == 40
    assert s["audit"]["metric"] == "accuracy" and 0 <= s["audit"]["ci"][0] <= s["audit"]["value"] <= s["audit"]["ci"][1]
    assert s["audit"]["value"] > 0.8  # well-separated classes
    # every leased item carries the model's guess and why it was chosen; audit items look alike
    batch = camp.lease_batch("bob", 20)["items"]
    assert batch and all(set(it["selected_by"]) == {"strategy", "score", "audit"} for it in batch)
    assert all(it["prediction"]["label"] in classes and 0 < it["prediction"]["probability"] <= 1 for it in batch)
    right = sum(it["prediction"]["label"] == truth[it["id"]] for it in batch)
    assert right >= 0.7 * len(batch)
    assert all(it["selected_by"]["audit"] == (camp.positions([it["id"]])[0] in audit) for it in batch)
    assert main(["campaign", "status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "audit (12 random items, never trained on): accuracy" in out and "actively chosen labels" in out


def test_predictions_are_null_before_the_first_model(tmp_path):
    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=5, k=5)
    batch = camp.lease_batch("alice", 5)["items"]
    assert [it["prediction"] for it in batch] == [None] * 5
    assert {it["selected_by"]["strategy"] for it in batch} == {"random"}


def test_an_expired_lease_is_honoured_only_while_nobody_else_holds_the_item(tmp_path):
    from datascout.campaign import ConflictError

    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=4,
                           k=5, lease_seconds=0.2, audit_fraction=0)
    a = [it["id"] for it in camp.lease_batch("alice", 2)["items"]]
    s = camp.stats()["leases"]
    assert s["live"] == 2 and [x["annotator"] for x in s["by_annotator"]] == ["alice"]
    time.sleep(0.3)
    assert camp.stats()["leases"]["live"] == 0  # expired: the items are free again
    b = [it["id"] for it in camp.lease_batch("bob", 4)["items"]]
    assert set(a) <= set(b)
    with pytest.raises(ConflictError, match="expired and the item is now leased to 'bob'"):
        camp.submit("alice", [(a[0], classes[0])])
    c = [it["id"] for it in camp.lease_batch("carol", 1)["items"]]
    assert c == []  # bob holds all four
    time.sleep(0.3)  # bob's leases expire too: alice's late answer is taken
    assert camp.submit("alice", [(a[0], classes[0])])["accepted"] == 1


# -- label quality in the campaign (issue "Label quality"): review queue, consensus, agreement ----


def test_agreement_kappa_and_alpha_by_hand():
    pytest.importorskip("krippendorff")
    from datascout.campaign.formats import agreement

    # alice [0,0,1,1], bob [0,1,1,1] on the same four items; carol one item alone
    latest = [(p, str(p), "alice", c, 0, "web") for p, c in enumerate([0, 0, 1, 1])]
    latest += [(p, str(p), "bob", c, 0, "web") for p, c in enumerate([0, 1, 1, 1])]
    latest += [(9, "9", "carol", 0, 0, "web")]
    a = agreement(latest, ["x", "y"])
    # kappa: p_o = 3/4, p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2, kappa = (3/4 - 1/2) / (1/2) = 1/2
    assert a["pairs"] == [{"a": "alice", "b": "bob", "items": 4, "kappa": pytest.approx(0.5)}]
    # alpha (nominal): coincidences o00 = 2, o01 = o10 = 1, o11 = 4; n = 8, n0 = 3, n1 = 5;
    # D_o = 2/8, D_e = 2 * 3 * 5 / (8 * 7); alpha = 1 - D_o / D_e = 1 - 0.25 / (30 / 56)
    assert a["alpha"] == pytest.approx(1 - 0.25 / (30 / 56))
    assert a["items_with_several_answers"] == 4


def test_votes_are_weighted_by_annotator_quality(tmp_path):
    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=4,
                           k=5, labels_per_item=2, audit_fraction=0)
    item = camp.lease_batch("alice", 1)["items"][0]["id"]
    camp.lease_batch("bob", 1)
    camp.submit("bob", [(item, classes[1])])
    camp.submit("alice", [(item, classes[0])])
    p = camp.positions([item])[0]
    pos, lab = camp.resolved_labels()
    assert lab[pos.tolist().index(p)] == 0  # a tie: the latest answer (alice)
    camp._set_meta({"annotator_quality": {"alice": 0.2, "bob": 0.9}})
    pos, lab = camp.resolved_labels()
    assert lab[pos.tolist().index(p)] == 1  # bob's answer weighs more


def test_suspect_labels_are_asked_again_blind_and_resolved(tmp_path, capsys):
    pytest.importorskip("cleanlab")
    items, X, y, classes = fortunes_items(n_per_class=40)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    d = tmp_path / "camp"
    camp = Campaign.create(d, embeddings=emb, items=items_path, classes=classes, batch_size=30, k=8,
                           audit_fraction=0, review_fraction=0.2)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    batch = [it["id"] for it in camp.lease_batch("alice", 30)["items"]]
    wrong = batch[:3]  # alice gets three wrong
    camp.submit("alice", [(i, classes[(classes.index(truth[i]) + 1) % 3] if i in wrong else truth[i]) for i in batch])
    camp.wait_idle(60)
    assert camp.current_round() == 1
    queued = {r[0] for r in camp.con.execute("SELECT pos FROM reviews")}
    assert len(queued) == 6  # 20% of 30
    assert set(camp.positions(wrong)) <= queued  # the three wrong labels are the most suspect
    # bob is asked first for the reviews, blind, then for round 1's items
    got = camp.lease_batch("bob", 10)["items"]
    review_items = [it for it in got if it["selected_by"]["strategy"] == "review"]
    assert {camp.positions([it["id"]])[0] for it in review_items} == queued
    assert all("answers" not in it and it["selected_by"]["score"] is None for it in review_items)
    assert camp.lease_batch("alice", 10)["items"] and all(
        it["selected_by"]["strategy"] != "review" for it in camp.lease_batch("alice", 10)["items"])  # never her own
    camp.submit("bob", [(it["id"], truth[it["id"]]) for it in review_items])
    s = camp.stats()["review"]
    assert s == {"queued": 6, "open": 3, "done": 3, "changed": 0}  # the 3 that disagree wait for a third
    carol = [it for it in camp.lease_batch("carol", 10)["items"] if it["selected_by"]["strategy"] == "review"]
    assert sorted(it["id"] for it in carol) == sorted(wrong)
    camp.submit("carol", [(it["id"], truth[it["id"]]) for it in carol])
    assert camp.stats()["review"] == {"queued": 6, "open": 0, "done": 6, "changed": 3}
    pos, lab = camp.resolved_labels()
    resolved = dict(zip(pos.tolist(), lab.tolist()))
    assert all(classes[resolved[p]] == truth[i] for i, p in zip(wrong, camp.positions(wrong)))
    assert main(["campaign", "status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "review: 0 open, 6 done, 3 labels changed by review" in out and "Krippendorff's alpha" in out


def test_the_next_round_is_ready_before_the_current_one_runs_out(tmp_path):
    items, X, y, classes = fortunes_items(n_per_class=20)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=6,
                           k=5, audit_fraction=0, review_fraction=0)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    a = [it["id"] for it in camp.lease_batch("alice", 3)["items"]]
    camp.submit("alice", [(i, truth[i]) for i in a])
    assert camp.current_round() == 0  # 3 of 6 answered, 3 still free: too early
    b = [it["id"] for it in camp.lease_batch("bob", 3)["items"]]  # nothing left to hand out, half answered
    camp.wait_idle(60)
    assert camp.current_round() == 1 and camp.round_progress(0) == {"round": 0, "selected": 6, "done": 3}
    nxt = camp.lease_batch("alice", 6)["items"]
    assert len(nxt) == 6 and not {it["id"] for it in nxt} & set(a + b)  # no empty page for alice
    assert camp.submit("bob", [(i, truth[i]) for i in b])["accepted"] == 3  # round 0's last answers count
    assert camp.round_progress(0)["done"] == 6
    rounds = camp.stats()["rounds"]
    assert rounds[1]["labels_before"] == 3  # chosen from the labels so far: the one-round lag


def test_parquet_items_are_read_with_the_column_flags(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    items, X, _, classes = fortunes_items(n_per_class=8)
    emb, _ = write_inputs(tmp_path / "inputs", items, X)
    ids = [it["id"] for it in items]
    np.save(emb.parent / "ids.npy", np.asarray(ids))
    order = np.random.default_rng(3).permutation(len(items))
    pq.write_table(pa.table({"key": [ids[i] for i in order], "quote": [items[i]["text"] for i in order]}),
                   tmp_path / "inputs" / "q.parquet")
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(tmp_path / "inputs" / "q.parquet"),
                 "--id-column", "key", "--text-column", "quote", "--classes", ",".join(classes), "--k", "5"]) == 0
    by_pos = _items_by_pos(d)
    assert [by_pos[p] for p in range(len(ids))] == ids
    text = dict(Campaign(d).con.execute("SELECT id, payload FROM items").fetchall())
    assert all(text[it["id"]] == it["text"] for it in items)
    capsys.readouterr()


def test_imports_keep_each_annotator_and_never_count_an_export_twice(tmp_path, capsys):
    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    d = tmp_path / "camp"
    camp = Campaign.create(d, embeddings=emb, items=items_path, classes=classes, batch_size=5, k=5)
    a, b = items[0]["id"], items[1]["id"]
    # Label Studio writes user ids as integers, and a cancelled (skipped) annotation has no answer
    ls = tmp_path / "ls.json"
    choice = lambda c: [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [c]}}]  # noqa: E731
    ls.write_text(json.dumps([{"data": {"item_id": a, "text": "x"}, "annotations": [
        {"completed_by": 3, "result": choice(classes[0])},
        {"completed_by": 4, "result": choice(classes[1])},
        {"completed_by": 5, "result": choice(classes[2]), "was_cancelled": True}]}]))
    assert camp.import_labels(ls) == 3
    got = camp.con.execute("SELECT annotator, class FROM labels ORDER BY annotator").fetchall()
    assert got == [("ls-3", 0), ("ls-4", 1), ("ls-5", None)]  # the cancelled one is a skip
    assert camp.import_labels(ls) == 0  # and none of them twice
    # the campaign's own exports imported back add nothing
    f = tmp_path / "two.csv"
    f.write_text(f"id,label,annotator\n{b},{classes[2]},alice\n{b},{classes[2]},bob\n")
    assert camp.import_labels(f) == 2
    for fmt, ext in (("jsonl", "jsonl"), ("csv", "csv"), ("label-studio", "json")):
        out = tmp_path / f"export.{ext}"
        out.write_text(camp.export(fmt, annotators="alice=alice@x.org,bob=bob@x.org,ls-3=3,ls-4=4,ls-5=5")
                       if fmt == "label-studio" else camp.export(fmt))
        assert camp.import_labels(out) == 0, fmt  # alice and bob come back from their emails as themselves
    assert camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 5
    # a JSONL export into a fresh campaign keeps each annotator's answer
    out = tmp_path / "export.jsonl"
    fresh = Campaign.create(tmp_path / "fresh", embeddings=emb, items=items_path, classes=classes, batch_size=5,
                            k=5, seed_labels=out)
    assert sorted(r[0] for r in fresh.con.execute("SELECT annotator FROM labels")) == ["alice", "bob", "ls-3", "ls-4"]
    # one file giving one item two labels by the same annotator is refused
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,label\n{a},{classes[0]}\n{a},{classes[1]}\n")
    with pytest.raises(ValueError, match=f"gives item '{a}' two different labels"):
        camp.import_labels(bad)


def test_a_graph_with_neighbours_outside_the_pool_is_damaged(tmp_path):
    from datascout.seals import KNNGraph, build_or_load_graph, graph_dir

    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    good = np.asarray(build_or_load_graph(X, emb, "Flat", 5).neighbors).copy()
    d = graph_dir(emb, "Flat", 5)
    nb = np.load(d / "neighbors.npy", mmap_mode="r+")
    nb[7, 2] = 999999  # same shape and size, a value no pool position has
    nb.flush()
    del nb
    with pytest.raises(ValueError, match="outside -1..299"):
        KNNGraph.load(d)
    assert np.array_equal(np.asarray(build_or_load_graph(X, emb, "Flat", 5).neighbors), good)


def test_an_even_split_is_not_trained_on_and_asks_a_third_annotator(tmp_path):
    items, X, y, classes = fortunes_items(n_per_class=20)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=6,
                           k=5, labels_per_item=2, audit_fraction=0, review_fraction=0)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    ids = [it["id"] for it in camp.lease_batch("alice", 6)["items"]]
    camp.lease_batch("bob", 6)
    wrong = lambda i: classes[(classes.index(truth[i]) + 1) % 3]  # noqa: E731
    camp.submit("alice", [(i, truth[i]) for i in ids])
    camp.submit("bob", [(i, wrong(i) if k < 2 else truth[i]) for k, i in enumerate(ids)])  # bob, later, wrong twice
    camp.wait_idle(60)
    assert camp.current_round() == 1
    split = set(camp.positions(ids[:2]))
    assert {r[0] for r in camp.con.execute("SELECT pos FROM reviews WHERE reason = 'tie'")} == split
    metrics = json.loads(camp.con.execute("SELECT metrics FROM rounds WHERE round = 1").fetchone()[0])
    assert metrics["n_labels"] == 6 and metrics["n_train"] == 4  # the two split items were not trained on
    # carol is asked for the two split items first, blind; her answer decides
    got = [it for it in camp.lease_batch("carol", 10)["items"] if it["selected_by"]["strategy"] == "review"]
    assert {camp.positions([it["id"]])[0] for it in got} == split
    camp.submit("carol", [(it["id"], truth[it["id"]]) for it in got])
    pos, lab, tied = camp.resolved_labels(with_ties=True)
    resolved = dict(zip(pos.tolist(), lab.tolist()))
    assert not tied.any() and all(classes[resolved[p]] == truth[i] for i, p in zip(ids[:2], camp.positions(ids[:2])))


def test_creating_a_campaign_hashes_the_embeddings_once(tmp_path, monkeypatch):
    from datascout import seals

    items, X, y, classes = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    calls = []
    real = seals.fingerprint
    monkeypatch.setattr(seals, "fingerprint", lambda A, *a, **kw: calls.append(A.shape) or real(A, *a, **kw))
    Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=4, k=5)
    assert len(calls) == 1  # recorded in the campaign and in graph.json alike (it was hashed twice)
    meta = json.loads(next((tmp_path / "inputs").glob("emb.knn-*")).joinpath("graph.json").read_text())
    assert meta["fingerprint"] == real(X)


def test_a_campaign_from_a_data_set_pool_embedded_with_a_limit(tmp_path, capsys):
    """``datasets embed fortunes --limit 40`` keeps a seeded draw of the quotes: ``campaign init
    --pool`` reads back exactly those items (it refused the pool before: the other 15k quotes had
    no embedding), each text the data set's quote of that id."""
    from datascout import datasets

    pool = tmp_path / "pool"
    assert main(["datasets", "embed", "fortunes", "--limit", "40", "--out", str(pool), "--quiet"]) == 0
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--pool", str(pool), "--positive-class", "startrek",
                 "--batch-size", "4", "--k", "5"]) == 0
    data = datasets.load("fortunes")
    text_of = dict(zip((str(i) for i in data.ids.tolist()), data.data))
    ids = [str(i) for i in np.load(pool / "ids.npy").tolist()]
    assert len(ids) == 40 and len(set(ids)) == 40
    con = sqlite3.connect(d / "campaign.db")
    rows = dict(con.execute("SELECT id, payload FROM items"))
    assert sorted(rows) == sorted(ids) and all(rows[i] == text_of[i] for i in ids)
    capsys.readouterr()
