"""Stopping in a campaign: each round records the stopping measurements (kappa and change
against the previous model on the stop set, uncertainty), the status and /api/stats say which
rules fired, and the figures agree with what is recomputed here from the tables."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from datascout.campaign import Campaign
from datascout.campaign.stopping import META_KEY, stop_set
from datascout.cli import main
from datascout.stopping import kappa
from test_campaign_support import Server, make_campaign


def answer_round(camp, truth):
    batch = camp.lease_batch("alice", 100)["items"]
    camp.submit("alice", [(it["id"], truth[it["id"]]) for it in batch])
    camp.wait_idle(120)


def stored_predictions(camp):
    row = camp.con.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    return None if row is None else np.asarray(json.loads(row[0])["pred"])


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stopcamp")
    camp, truth = make_campaign(tmp, select_ahead=False, label_budget=40, audit_fraction=0.2)
    preds = {}
    for _ in range(5):
        before = stored_predictions(camp)
        answer_round(camp, truth)
        preds[camp.current_round()] = (before, stored_predictions(camp))
    return camp, truth, preds, tmp


def test_each_round_records_kappa_against_the_previous_model(campaign):
    camp, _, preds, _ = campaign
    n = camp.config["n_items"]
    for rnd, (before, after) in preds.items():
        m = json.loads(camp.con.execute("SELECT metrics FROM rounds WHERE round = ?", (rnd,)).fetchone()[0])
        st = m.get("stopping")
        if after is None:
            assert st is None  # no model yet
            continue
        assert len(after) == len(stop_set(n, camp.config["random_state"])) == min(1000, n)
        if before is None:
            assert st["kappa"] is None and st["changed"] is None
        else:
            assert st["kappa"] == pytest.approx(kappa(before, after, len(camp.classes)))
            assert st["changed"] == pytest.approx(np.mean(before != after))
        assert 0 <= st["uncertainty"] <= 1 and 0 <= st["max_uncertainty"] <= 1


def test_status_says_which_rules_fired_with_figures_from_the_tables(campaign):
    camp, truth, _, _ = campaign
    s = camp.stopping()
    rounds = [(r, json.loads(m)) for r, m in camp.con.execute("SELECT round, metrics FROM rounds ORDER BY round")]
    # the budget (40 labels) fires at the first round selected with 40 labels or more
    expect = next(r for r, m in rounds if m["n_labels"] >= 40)
    assert s["fired"]["budget"] == expect and s["label_budget"] == 40
    assert s["rules"]["budget"]["labeled"] == rounds[expect][1]["n_labels"]
    assert s["rules"]["budget"]["metric"] == rounds[expect][1]["audit"]["value"]
    assert "recall" not in s["fired"]  # not a rare-concept campaign
    # the previous round's model on the items it selected (not the audit items), as labeled
    last = rounds[-1][0]
    rows = camp.con.execute("""SELECT i.id, s.pred_class FROM selections s JOIN items i ON i.pos = s.pos
                               WHERE s.round = ? AND s.audit = 0 AND s.pred_class IS NOT NULL""",
                            (last - 1,)).fetchall()
    manual = np.mean([camp.classes[p] == truth[i] for i, p in rows])
    assert s["latest"]["selected_accuracy"] == pytest.approx(manual)
    first = min((r, n) for n, r in s["fired"].items() if r is not None)
    assert s["message"].startswith(f"labeling more stops paying: rule {first[1]} fired at round {first[0]}")


def test_cli_status_and_api_stats_show_stopping(campaign, capsys):
    camp, _, _, tmp = campaign
    assert main(["campaign", "status", str(tmp / "camp")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("stopping: "))
    assert line == "stopping: " + camp.stopping()["message"]
    assert main(["campaign", "status", str(tmp / "camp"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stopping"]["fired"] == camp.stopping()["fired"]
    srv = Server(tmp / "camp")
    try:
        s = httpx.get(srv.url + "/api/stats", timeout=30).json()
    finally:
        srv.stop()
    assert s["stopping"]["fired"] == camp.stopping()["fired"] and s["stopping"]["message"]


def test_a_new_campaign_has_not_stopped(tmp_path):
    camp, _ = make_campaign(tmp_path, select_ahead=False)
    s = camp.stopping()
    assert all(v is None for v in s["fired"].values()) and s["label_budget"] is None
    assert s["message"].startswith("labeling still pays: no stopping rule has fired")
    with pytest.raises(ValueError, match="label_budget must be > 0"):
        Campaign.create(tmp_path / "c2", embeddings=camp.config["embeddings"], items=None, classes=["a", "b"],
                        label_budget=0)


def test_the_dashboard_says_whether_labeling_still_pays(campaign):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from test_browser import launch

    camp, _, _, tmp = campaign
    srv = Server(tmp / "camp")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            page.goto(srv.url + "/?annotator=carol")
            line = page.locator("#stopping", has_text="Stopping:")
            line.wait_for(timeout=30000)
            assert line.text_content() == "Stopping: " + camp.stopping()["message"] + "."
            browser.close()
    finally:
        srv.stop()
