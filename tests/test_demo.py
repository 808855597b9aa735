"""``datascout demo`` end to end on a slice of the real fortunes quotes (MiniLM, embedded in the
test's own cache folder): the pool is embedded once and reused, the table, the CSV, the JSON and
the plot are written and agree with the runs they summarise, and the campaign it leaves is one
that ``Campaign`` opens, started from the query, kept (labels and all) by the next run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from datascout.cli import main
from datascout.cli import demo

pytest.importorskip("torch")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
CONCEPT, QUERY = "computers", "my computer crashed and the program lost all my files"
SLICE = ["--limit", "200", "--concepts", CONCEPT, "--query", QUERY, "--seeds", "2", "--rounds", "2",
         "--batch-size", "10", "--small-k", "5", "--jobs", "1"]
COLUMNS = ["concept", "pool_share", "strategy", "seals_k", "seeds", "final_ap_mean", "final_ap_min", "final_ap_max",
           "found_mean", "found_min", "found_max", "pool_positives", "ap_vs_full_worst", "found_vs_full_worst",
           "seeds_below_full", "scored_first", "scored_last", "select_ms"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASCOUT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def _final(res, key):
    return res["rounds"][-1][key]


def test_demo_on_a_slice_then_again_with_the_cache(cache, tmp_path, capsys):
    from datascout.campaign import Campaign
    from datascout.embed import load_pool_dir

    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *SLICE]) == 0
    text = capsys.readouterr().out
    pool = cache / "pools" / "fortunes-200"
    assert "first run: embedding 200 quotes once" in text and (pool / "manifest.json").is_file()
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    arms = [label for label, _, _ in demo._arms(100, 5)]
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS and [r["strategy"] for r in rows] == arms
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"][CONCEPT]
    assert set(runs) == set(arms) and all(len(runs[a]) == 2 for a in arms)
    # the summary is what the runs say (recomputed here from the per-seed results)
    for row, summary in zip(rows, res["summary"]):
        mine = runs[row["strategy"]]
        aps = [_final(r, "average_precision") for r in mine]
        assert float(row["final_ap_mean"]) == pytest.approx(np.mean(aps))
        assert summary["found_min"] == min(_final(r, "positives_found") for r in mine)
        assert {r["config"]["seed"] for r in mine} == {0, 1}
        k = summary["seals_k"]
        assert all(r["config"]["seals"] == bool(k) and (not k or r["config"]["k"] == k) for r in mine)
        if k:  # each SEALS run against the full-pool run of the same seed
            full = runs[row["strategy"].split(",")[0] + ", full pool"]
            d_found = [_final(a, "positives_found") - _final(b, "positives_found") for a, b in zip(mine, full)]
            d_ap = [_final(a, "average_precision") - _final(b, "average_precision") for a, b in zip(mine, full)]
            assert summary["found_vs_full_worst"] == min(d_found)
            assert summary["ap_vs_full_worst"] == pytest.approx(min(d_ap))
            assert summary["seeds_below_full"] == sum(a < 0 or f < 0 for a, f in zip(d_ap, d_found))
        else:  # the full pool scores every unlabeled pool item
            for r in mine:
                labeled = [x["labeled"] for x in r["rounds"]]
                assert [x["candidates"] for x in r["rounds"][1:]] == [r["n_pool"] - n for n in labeled[:-1]]
    assert res["graph"]["k"] == 100 and res["graph"]["built_now_seconds"] is not None

    # the campaign: opened by Campaign, round 0 from the query, its ground truth counted by id
    camp = Campaign(out / "campaign")
    try:
        assert camp.classes == [f"not {CONCEPT}", CONCEPT]
        settings = json.loads(camp.con.execute("SELECT settings FROM rounds WHERE round = 0").fetchone()[0])
        assert settings["query"] == f"text: {QUERY}"
        picks = camp.con.execute("SELECT i.id FROM selections s JOIN items i ON i.pos = s.pos "
                                 "WHERE s.round = 0 AND s.audit = 0").fetchall()
        first = camp.lease_batch("tester", 1)["items"][0]
        camp.submit("tester", [(first["id"], CONCEPT)])
    finally:
        camp.close()
    pf = load_pool_dir(pool)
    truth = dict(zip(pf.ids.astype(str).tolist(), pf.labels.tolist()))
    want = pf.manifest["classes"].index(CONCEPT)
    c = res["campaign"]
    assert c["created"] and c["round0_query_picks"] == len(picks) > 0
    assert c["round0_query_picks_positive"] == sum(truth[i] == want for (i,) in picks)
    assert f"serve {out / 'campaign'}" in text and "http://127.0.0.1:8000" in text
    assert "token=" not in text

    # again: the pool and the graph come from the cache, the campaign and its label are kept
    again = ["--limit", "200", "--concepts", CONCEPT, "--query", QUERY, "--seeds", "1", "--rounds", "1",
             "--batch-size", "10", "--small-k", "5", "--jobs", "1"]
    assert main(["demo", "--out", str(out), *again]) == 0
    text = capsys.readouterr().out
    assert "first run" not in text and f"cached in {pool}" in text and "kept as it is" in text
    res = json.loads((out / "results.json").read_text())
    assert res["pool"]["embedded_now"] is False and res["graph"]["built_now_seconds"] is None
    assert res["campaign"] == {"dir": str(out / "campaign"), "created": False, "round": 0, "labels": 1}
    assert all(len(v) == 1 for v in res["runs"][CONCEPT].values())

    # a concept too rare for a seed set in this pool: one line, before any run, results untouched
    n_pratchett = int((pf.labels == pf.manifest["classes"].index("pratchett")).sum())
    before = (out / "results.json").read_bytes()
    assert main(["demo", "--out", str(out), "--limit", "200", "--concepts", "pratchett", "--campaign-concept",
                 CONCEPT, "--query", QUERY]) == 2
    err = capsys.readouterr().err
    assert f"'pratchett' has {n_pratchett} quotes in this pool but the demo needs at least 7" in err
    assert (out / "results.json").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["--concepts", "startrek,nosuch"], "--concepts must name fortunes files"),
    (["--campaign-concept", "love"], "the campaign for 'love' needs a starting text: pass --query TEXT"),
    (["--small-k", "100"], "--small-k must be smaller than --k (100) but is 100"),
    (["--limit", "50"], "--limit must be >= 200 quotes but is 50"),
])
def test_bad_arguments_are_one_line_before_any_work(cache, tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not cache.exists()  # nothing embedded, nothing written


def test_cost_lines_say_what_the_graph_costs_and_when_it_pays():
    meta = {"index": "HNSW32", "k": 100, "n": 15000, "index_seconds": 4.0, "graph_seconds": 6.0}
    rows = [{"strategy": "random", "seals_k": "", "select_ms": 1.0, "scored_last": 0.95},
            {"strategy": "MaxEnt, full pool", "seals_k": "", "select_ms": 20.0, "scored_last": 0.95},
            {"strategy": "MaxEnt, SEALS k=100", "seals_k": 100, "select_ms": 10.0, "scored_last": 0.7},
            {"strategy": "MaxEnt, SEALS k=10", "seals_k": 10, "select_ms": 2.0, "scored_last": 0.1}]
    text = "\n".join(demo.cost_lines(meta, None, rows, 100))
    # 10 s once, 20 - 10 = 10 ms saved a round (random and the small k are not the comparison)
    assert "it took 10.0 s to build" in text and "saves 10.0 ms a round" in text
    assert "pays for itself after ~1,000 rounds" in text and "scored up to 70% of the pool" in text
    rows[2]["select_ms"] = 25.0
    text = "\n".join(demo.cost_lines(meta, 12.5, rows, 100))
    assert "built now in 12.5 s" in text and "it saves nothing a round here" in text


def test_the_quoted_scale_figures_are_still_in_the_benchmarks():
    doc = DOCS.read_text()
    for q in demo.SCALE_QUOTES:
        assert q["row"] in doc, f"docs/benchmarks.md no longer holds {q['row']!r}: update demo.SCALE_QUOTES"
