"""The campaign (data engine) on real SQLite: schema, leases, labels, rounds, import/export, CLI."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from datascout.campaign import SCHEMA_VERSION, Campaign, ConflictError, NotFoundError, connect
from datascout.campaign.schema import MIGRATIONS
from datascout.cli import main
from datascout.exceptions import DatascoutError, LabelingError, ValidationError
from test_campaign_support import fortunes_items, make_campaign, write_inputs


def n_labels(camp) -> int:
    return camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]


def test_schema_is_wal_versioned_and_migrates_forward(tmp_path):
    camp, _ = make_campaign(tmp_path)
    con = camp.con
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    # a version-1 database (before leases existed) is migrated on open, data kept
    old = tmp_path / "old.db"
    raw = sqlite3.connect(old)
    raw.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    raw.execute("INSERT INTO items VALUES (0, 'a', 'text', 'hello')")
    raw.commit()
    raw.close()
    con2 = connect(old)
    assert con2.execute("PRAGMA user_version").fetchone()[0] == 5
    assert con2.execute("SELECT payload FROM items").fetchone()[0] == "hello"
    con2.execute("INSERT INTO annotators VALUES ('x', 0)")
    con2.execute("INSERT INTO leases VALUES (0, 'x', 1.0, 0)")  # the new table exists
    con2.execute("INSERT INTO rounds VALUES (0, 'random', '{}', '{}', 0)")
    con2.execute("INSERT INTO selections (pos, round, rank) VALUES (0, 0, 0)")  # new columns, defaults
    assert con2.execute("SELECT audit, pred_class, pred_prob FROM selections").fetchone() == (0, None, None)
    con2.execute("INSERT INTO ls_tasks VALUES ('u#1', 0, NULL, 0, 'sending', 0)")  # the Label Studio sync state
    with pytest.raises(sqlite3.IntegrityError):
        con2.execute("INSERT INTO ls_tasks VALUES ('u#1', 0, 7, 0, 'pushed', 0)")  # an item is one task per project
    raw = sqlite3.connect(old)
    raw.execute("PRAGMA user_version=99")
    raw.commit()
    raw.close()
    with pytest.raises(DatascoutError, match="schema version 99"):
        connect(old)


def test_leases_are_exclusive_and_wrong_lease_changes_nothing(tmp_path):
    camp, truth = make_campaign(tmp_path)
    a = [it["id"] for it in camp.lease_batch("alice", 5)["items"]]
    b = [it["id"] for it in camp.lease_batch("bob", 5)["items"]]
    assert len(a) == 5 and len(b) == 5 and not set(a) & set(b)
    assert [it["id"] for it in camp.lease_batch("alice", 5)["items"]] == a  # same lease again
    with pytest.raises(ConflictError, match="not leased to annotator 'bob'"):
        camp.submit("bob", [(b[0], truth[b[0]]), (a[0], truth[a[0]])])
    with pytest.raises(LabelingError, match="unknown class 'nope'"):
        camp.submit("alice", [(a[0], truth[a[0]]), (a[1], "nope")])
    with pytest.raises(NotFoundError):
        camp.submit("alice", [("no-such-item", truth[a[0]])])
    assert n_labels(camp) == 0
    # 12 selected, 10 leased: carol gets the 2 free ones only
    assert len(camp.lease_batch("carol", 10)["items"]) == 2
    # alice's lease expires: her items go to dave; her late answers are still kept
    camp.con.execute("UPDATE leases SET expires = ? WHERE annotator = 'alice'", (time.time() - 1,))
    d = [it["id"] for it in camp.lease_batch("dave", 10)["items"]]
    assert sorted(d) == sorted(a)
    other = next(c for c in camp.classes if c != truth[a[0]])
    camp.submit("dave", [(a[0], other)])
    camp.submit("alice", [(a[0], truth[a[0]])])
    rows = camp.con.execute("SELECT annotator FROM labels l JOIN items i ON i.pos = l.pos WHERE i.id = ?",
                            (a[0],)).fetchall()
    assert sorted(r[0] for r in rows) == ["alice", "dave"]
    s = camp.stats()
    assert s["disagreements"]["items"] == 1
    assert s["disagreements"]["examples"][0]["answers"] == {"alice": truth[a[0]], "dave": other}


def test_resolved_label_is_majority_then_latest_and_relabels_are_history(tmp_path):
    camp, _ = make_campaign(tmp_path, labels_per_item=3)
    ids = [it["id"] for it in camp.lease_batch("a1", 2)["items"]]
    for who in ("a2", "a3"):
        assert [it["id"] for it in camp.lease_batch(who, 2)["items"]] == ids
    x, z = camp.classes[0], camp.classes[1]
    camp.submit("a1", [(ids[0], x), (ids[1], x)])
    camp.submit("a2", [(ids[0], z), (ids[1], z)])
    camp.submit("a3", [(ids[0], z)])          # item 0: z wins 2 votes to 1
    camp.submit("a1", [(ids[1], z)])          # relabel: a1 now says z
    camp.submit("a1", [(ids[1], x)])          # and back to x: tie x/z -> latest answer (x)
    pos, y = camp.resolved_labels()
    got = dict(zip(camp.con.execute(f"SELECT id FROM items WHERE pos IN ({pos[0]}, {pos[1]}) ORDER BY pos")
                   .fetchall(), y))
    got = {k[0]: camp.classes[v] for k, v in got.items()}
    assert got == {ids[0]: z, ids[1]: x} if camp.positions([ids[0]])[0] < camp.positions([ids[1]])[0] \
        else got == {ids[1]: x, ids[0]: z}
    s = camp.stats()
    assert s["labels"]["relabels"] == 2 and s["labels"]["answers"] == 7


def test_rounds_retrain_in_background_select_seals_candidates_never_twice(tmp_path):
    from datascout.seals import KNNGraph  # noqa: F401  (the graph the campaign reuses)

    camp, truth = make_campaign(tmp_path)
    selected_before = set()
    for rnd in range(3):
        assert camp.current_round() == rnd
        items = camp.lease_batch("alice", 100)["items"]
        assert len(items) == 12
        ids = [it["id"] for it in items]
        assert not set(ids) & selected_before
        selected_before |= set(ids)
        camp.submit("alice", [(i, None if k == 0 else truth[i]) for k, i in enumerate(ids)])  # one skip
        camp.wait_idle(60)
        assert camp.last_error_ is None
    assert camp.current_round() == 3
    sel = camp.con.execute("SELECT pos FROM selections").fetchall()
    assert len(sel) == len({p for (p,) in sel}) == 48
    # round 3 was chosen among the labeled items' kNN-graph neighbours (SEALS), by entropy
    graph = camp.graph()
    labeled = [p for (p,) in camp.con.execute(
        "SELECT DISTINCT pos FROM labels WHERE class IS NOT NULL "
        "AND pos NOT IN (SELECT pos FROM selections WHERE audit = 1)")]  # audit labels: never trained on
    neighbours = set(np.asarray(graph.neighbors[labeled][:, :camp.config["k"]]).ravel().tolist())
    r3 = [p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE round = 3 AND audit = 0")]
    per_round = camp.con.execute("SELECT round, SUM(audit) FROM selections GROUP BY round").fetchall()
    assert per_round == [(r, 1) for r in range(4)]  # 10% of 12, rounded
    assert set(r3) <= neighbours
    s = camp.stats()
    assert [r["strategy"] for r in s["rounds"]] == ["random", "entropy", "entropy", "entropy"]
    assert s["labels"]["skips"] == 3 and s["labels"]["items_labeled"] == 33
    assert s["rounds"][3]["labels_before"] == 33
    assert s["model"]["accuracy"] > 0.8  # well-separated classes


def test_a_saved_graph_with_more_neighbours_does_not_widen_the_campaigns_k(tmp_path):
    from datascout.seals import build_or_load_graph

    items, X, y, classes = fortunes_items()
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    build_or_load_graph(X, emb, "Flat", 40)  # an earlier, wider graph beside the embeddings
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes,
                           batch_size=10, k=5, index="Flat")
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    ids = [it["id"] for it in camp.lease_batch("a", 100)["items"]]
    camp.submit("a", [(i, truth[i]) for i in ids])
    camp.wait_idle(60)
    assert camp.last_error_ is None and camp.current_round() == 1
    labeled = [p for (p,) in camp.con.execute(
        "SELECT DISTINCT pos FROM labels WHERE pos NOT IN (SELECT pos FROM selections WHERE audit = 1)")]
    graph = build_or_load_graph(X, emb, "Flat", 40)
    near5 = set(np.asarray(graph.neighbors[labeled][:, :5]).ravel().tolist()) - set(labeled)
    near40 = set(np.asarray(graph.neighbors[labeled]).ravel().tolist()) - set(labeled)
    assert len(near5) < len(near40)
    r1 = [p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE round = 1 AND audit = 0")]
    assert len(r1) == 9 and set(r1) <= near5  # within the 5 nearest, not the 40 (+ 1 audit item)


def test_rounds_selected_in_a_separate_process_and_its_errors_reported(tmp_path):
    camp, truth = make_campaign(tmp_path)
    camp.close()
    camp = Campaign(tmp_path / "camp", select_in="process")
    ids = [it["id"] for it in camp.lease_batch("alice", 100)["items"]]
    camp.submit("alice", [(i, truth[i]) for i in ids])
    assert camp.selecting  # the round is being chosen by another interpreter
    camp.wait_idle(120)
    assert not camp.selecting and camp.last_error_ is None
    assert camp.current_round() == 1 and camp.stats()["rounds"][1]["strategy"] == "entropy"
    r1 = [p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE round = 1")]
    assert len(r1) == 12 and not set(r1) & set(camp.positions(ids))
    # a selection that fails in the child is reported, and the campaign keeps serving round 1
    ids = [it["id"] for it in camp.lease_batch("alice", 100)["items"]]
    emb = Path(camp.config["embeddings"])
    emb.rename(emb.with_suffix(".moved"))
    camp.submit("alice", [(i, truth[i]) for i in ids])
    camp.wait_idle(120)
    assert camp.current_round() == 1
    assert camp.last_error_.startswith("ValidationError:") and "emb.npy" in camp.last_error_
    assert camp.stats()["last_error"] == camp.last_error_
    with pytest.raises(ValidationError, match="select_in must be 'thread' or 'process' but is 'fork'"):
        Campaign(tmp_path / "camp", select_in="fork")


def test_export_import_round_trip_all_formats(tmp_path):
    camp, truth = make_campaign(tmp_path / "one")
    ids = [it["id"] for it in camp.lease_batch("alice", 100)["items"]]
    camp.submit("alice", [(i, truth[i]) for i in ids])
    camp.wait_idle(60)
    expected = {i: truth[i] for i in ids}
    csv_text = camp.export("csv")
    assert csv_text.splitlines()[0] == "id,label,n_answers,agreement"
    assert {r.split(",")[0]: r.split(",")[1] for r in csv_text.splitlines()[1:]} == expected
    jl = [json.loads(line) for line in camp.export("jsonl").splitlines()]
    assert {o["id"]: o["label"] for o in jl} == expected
    assert all(o["answers"][0]["annotator"] == "alice" for o in jl)
    # Label Studio takes annotations only from its members: without a map, alice's labels are
    # predictions of their own model_version; with one, annotations completed by her email
    tasks = json.loads(camp.export("label-studio"))
    assert len(tasks) == 24  # the 12 labeled + the 12 of the next round
    by_id = {t["data"]["item_id"]: t for t in tasks}
    for i in ids:
        assert by_id[i]["annotations"] == []
        human = [p for p in by_id[i]["predictions"] if p["model_version"] == "datascout-label-alice"]
        assert [p["result"][0]["value"]["choices"] for p in human] == [[truth[i]]]
        assert by_id[i]["data"]["text"]
    tasks = json.loads(camp.export("label-studio", annotators="alice=alice@example.com"))
    by_id = {t["data"]["item_id"]: t for t in tasks}
    for i in ids:
        ann = by_id[i]["annotations"][0]
        assert ann["completed_by"] == {"email": "alice@example.com"} and not ann["was_cancelled"]
        assert ann["result"][0]["value"]["choices"] == [truth[i]] and ann["result"][0]["to_name"] == "text"
        assert [p["model_version"] for p in by_id[i]["predictions"]] == ["datascout-round-1"]
    preds = [t["predictions"][0] for t in tasks]
    assert all(p["result"][0]["value"]["choices"][0] in camp.classes and 0 < p["score"] <= 1 for p in preds)
    # each format imports back into a fresh campaign with the same labels (whatever the file's name)
    for fmt, ext in (("csv", "csv"), ("jsonl", "jsonl"), ("label-studio", "txt")):
        f = tmp_path / f"labels.{ext}"
        f.write_text(camp.export(fmt, annotators="alice=alice@example.com") if fmt == "label-studio"
                     else camp.export(fmt))
        fresh, _ = make_campaign(tmp_path / fmt, seed_labels=f)
        pos, y = fresh.resolved_labels()
        ids_at = dict(fresh.con.execute("SELECT pos, id FROM items").fetchall())
        assert {ids_at[p]: fresh.classes[c] for p, c in zip(pos.tolist(), y.tolist())} == expected
        # the seeded campaign's first round is model-chosen from the seed's neighbours
        assert fresh.stats()["rounds"][0]["strategy"] == "entropy"
        assert not set(ids) & {it["id"] for it in fresh.lease_batch("x", 100)["items"]}


def test_label_files_as_other_tools_write_them(tmp_path):
    from datascout.campaign.formats import read_label_file

    # Excel's "CSV UTF-8" (a byte-order mark) and a space after each comma read as the plain file
    (tmp_path / "bom.csv").write_text("id,label,annotator\na,cat,bo\nb,,bo\n", encoding="utf-8-sig")
    (tmp_path / "spaced.csv").write_text("id, label\na, cat\n")
    assert read_label_file(tmp_path / "bom.csv") == [("a", "cat", "bo"), ("b", None, "bo")]
    assert read_label_file(tmp_path / "spaced.csv") == [("a", "cat", None)]
    (tmp_path / "latin1.csv").write_bytes("id,label\na,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValidationError, match="latin1.csv must be UTF-8 text"):
        read_label_file(tmp_path / "latin1.csv")
    # Label Studio: results other than choices are skipped; malformed tasks are one-line errors
    ok = [{"data": {"item_id": "a"}, "annotations": [{"completed_by": {"email": "x@y"}, "result": [
        {"type": "rectanglelabels", "value": {"x": 1}}, {"type": "choices", "value": {"choices": ["dog"]}}]}]},
        {"data": {"item_id": "b"}, "annotations": None}]
    (tmp_path / "ok.json").write_text(json.dumps(ok))
    assert read_label_file(tmp_path / "ok.json") == [("a", "dog", "x@y")]
    for bad, message in (([{"data": "x"}], "task 1 has no data.item_id"),
                         ([{"data": {"item_id": "a"}, "annotations": "yes"}], "task 1's annotations must be"),
                         ([{"data": {"item_id": "a"}, "annotations": [{"result": [{"type": "choices", "value": "a"}]}]}],
                          "holds no labels")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValidationError, match=message):
            read_label_file(tmp_path / "bad.json")


def test_a_create_killed_before_round_0_leaves_no_campaign(tmp_path):
    """A kill -9 (or an out-of-memory kill) while the graph is built or round 0 selected must not
    leave a campaign that has no round and cannot advance: init again simply works."""
    import subprocess
    import sys

    items, X, y, classes = fortunes_items()
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    script = (
        "import os, sys\n"
        "from datascout.campaign import Campaign\n"
        "Campaign.select_round = lambda self, **kw: os._exit(137)\n"
        f"Campaign.create({str(tmp_path / 'camp')!r}, embeddings={str(emb)!r}, items={str(items_path)!r}, "
        f"classes={classes!r}, batch_size=5, k=5, index='Flat')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True)
    assert done.returncode == 137, done.stderr.decode()
    assert not (tmp_path / "camp" / "campaign.db").exists()
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes,
                           batch_size=5, k=5, index="Flat")
    assert camp.current_round() == 0 and len(camp.lease_batch("a", 10)["items"]) == 5
    with pytest.raises(ValidationError, match="lease_seconds must be a finite number > 0 but is nan"):
        Campaign.create(tmp_path / "other", embeddings=emb, items=items_path, classes=classes,
                        lease_seconds=float("nan"))


def test_positive_class_campaign_starts_from_a_like_query(tmp_path):
    items, X, y, classes = fortunes_items()
    emb, items_path = write_inputs(tmp_path, items, X)
    camp = Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, positive_class="art",
                           batch_size=8, k=10, like=items[-1]["id"], audit_fraction=0)
    assert camp.classes == ["not art", "art"] and camp.config["strategy"] == "most-likely-positive"
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    exact = np.argsort(-(U @ U[-1]), kind="stable")[:8]
    got = [p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE round = 0 ORDER BY rank")]
    assert got == exact.tolist()
    ids = [it["id"] for it in camp.lease_batch("a", 8)["items"]]
    camp.submit("a", [(i, "art" if i.startswith("art:") else "not art") for i in ids])
    assert camp.stats()["positives_found"] == sum(i.startswith("art:") for i in ids) == 8


def test_cli_init_status_export_import_and_errors(tmp_path, capsys):
    items, X, y, classes = fortunes_items()
    emb, items_path = write_inputs(tmp_path, items, X)
    d = tmp_path / "camp"
    bad_seed = tmp_path / "seed.csv"
    bad_seed.write_text(f"id,label\n{items[0]['id']},not-a-class\n")
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(items_path),
                 "--classes", ",".join(classes), "--seed-labels", str(bad_seed)]) == 2
    assert "unknown class 'not-a-class'" in capsys.readouterr().err
    assert not list(d.glob("campaign.db*"))  # nothing half-made
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"id": items[i]["id"], "label": classes[y[i]]}) + "\n"
                            for i in (0, 1, 60, 61, 120, 121)))
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(items_path),
                 "--classes", ",".join(classes), "--seed-labels", str(seed), "--batch-size", "10"]) == 0
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(items_path),
                 "--classes", "a,b"]) == 2
    capsys.readouterr()
    assert main(["campaign", "status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "round 0: 0/10 answered" in out
    assert f"{classes[0]}=2, {classes[1]}=2, {classes[2]}=2" in out
    assert "model (2-fold CV on 6 actively chosen labels" in out
    assert main(["campaign", "next", str(d)]) == 2  # round 0 not answered yet
    out_file = tmp_path / "x" / "tasks.json"
    assert main(["campaign", "export", str(d), "--format", "label-studio", "--out", str(out_file)]) == 0
    assert len(json.loads(out_file.read_text())) == 16
    more = tmp_path / "more.csv"
    more.write_text(f"id,label,annotator\n{items[2]['id']},{classes[0]},bob\n")
    assert main(["campaign", "import", str(d), str(more)]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", str(d), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["class_counts"][classes[0]] == 3 and [a["name"] for a in s["annotators"]] == ["bob", "import"]
    assert main(["campaign", "import", str(d), str(tmp_path / "missing.csv")]) == 2
