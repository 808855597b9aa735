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
    leased = [it["id"] for it in camp.lease_batch("alice", 10)["items"]]
    assert sorted(leased) == sorted(round0[4:])  # the imported ones are not handed out again
    assert main(["campaign", "import", str(d), str(f)]) == 0
    assert "imported 0 new labels" in capsys.readouterr().out
    assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 4
    # importing the rest completes round 0: round 1 is selected
    f.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in round0[4:]))
    assert main(["campaign", "import", str(d), str(f)]) == 0
    assert "round 0 complete: round 1 selected" in capsys.readouterr().out
    assert Campaign(d).round_progress()["round"] == 1


def test_concurrent_graph_writers_leave_one_whole_graph(tmp_path):
    """Two ``datascout index build`` runs of one graph at once: each stages apart and waits for
    the other's lock; both succeed and the graph is exact (it crashed, or kept zero rows)."""
    import subprocess
    import sys

    from datascout.index import SimilarityIndex
    from datascout.seals import KNNGraph, _drop_self, graph_dir

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
    _, exact = _drop_self(np.zeros(exact.shape, np.float32), exact, np.arange(len(X)), 8)
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
