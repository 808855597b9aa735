"""A real headless Chromium (Debian ``chromium``, driven by Playwright, no browser download) labels
a batch with the keyboard; the test reads the labels back from the database."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from test_campaign_support import Server, make_campaign

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_keyboard_labeling_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    camp, truth = make_campaign(tmp_path, batch_size=6)
    classes = camp.classes
    # an item whose text looks like HTML must be shown as text
    html_id = camp.lease_batch("probe", 1)["items"][0]["id"]
    camp.con.execute("UPDATE items SET payload = '<b>bold?</b> <img src=x onerror=alert(1)>' WHERE id = ?", (html_id,))
    camp.con.execute("DELETE FROM leases")
    camp.close()
    srv = Server(tmp_path / "camp")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.set_default_timeout(90_000)  # the CPU is shared: be patient, never flaky
            console = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.method} {r.url} {r.failure}"))
            page.on("response", lambda r: console.append(f"{r.status} {r.request.method} {r.url}"))
            try:
                page.goto(f"{srv.url}/?annotator=alice")
                item = page.locator("#item-id")
                page.wait_for_function("document.getElementById('item-id').textContent.length > 0")
                answers, seen = {}, []
                for step in range(6):
                    shown = item.text_content()
                    seen.append(shown)
                    if shown == html_id:
                        assert page.locator("#item-text").text_content().startswith("<b>bold?</b>")
                        assert page.locator("#item-text b").count() == 0 and page.locator("#item-text img").count() == 0
                    if step == 2:
                        page.keyboard.press("s")  # skip
                        answers[shown] = None
                    else:
                        key = classes.index(truth[shown]) + 1
                        wrong = key % len(classes) + 1
                        page.keyboard.press(str(wrong if step == 4 else key))
                        answers[shown] = classes[(wrong if step == 4 else key) - 1]
                    page.wait_for_function(f"document.getElementById('last').textContent.includes({shown!r})")
                    if step == 4:  # undo the wrong answer and relabel it correctly
                        page.keyboard.press("u")
                        page.wait_for_function(f"document.getElementById('item-id').textContent === {shown!r}")
                        page.keyboard.press(str(classes.index(truth[shown]) + 1))
                        page.wait_for_function("document.getElementById('last').textContent === "
                                               + repr(f"Saved {shown} as \u201c{truth[shown]}\u201d."))
                        answers[shown] = truth[shown]
                assert len(set(seen)) == 6
                # the batch is done; the next round is selected in the background and shown
                page.wait_for_function("document.getElementById('round-label').textContent === 'Round 1'", timeout=60000)
                page.wait_for_function("document.getElementById('item-id').textContent.length > 0", timeout=60000)
                page.wait_for_function("document.getElementById('t-labels').textContent === '6'", timeout=15000)
            except Exception as exc:  # say what the page showed and what the server printed
                state = page.evaluate("['item-id', 'last', 'status', 'round-label', 't-labels']"
                                      ".map((k) => k + '=' + document.getElementById(k).textContent)")
                raise AssertionError(f"page: {state}\nbrowser:\n" + "\n".join(console[-40:])
                                     + f"\nserver:\n{srv.output()[-4000:]}") from exc
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
        if os.environ.get("DATASCOUT_UPDATE_SCREENSHOT") == "1":  # a test leaves the checkout alone
            shutil.copyfile(shot, DOCS / "screenshot.png")
    finally:
        srv.stop()
    con = sqlite3.connect(tmp_path / "camp" / "campaign.db")
    rows = con.execute("SELECT i.id, l.class, l.annotator FROM labels l JOIN items i ON i.pos = l.pos "
                       "ORDER BY l.label_id").fetchall()
    latest = {}
    for item_id, c, who in rows:
        assert who == "alice"
        latest[item_id] = None if c is None else classes[c]
    assert latest == answers and len(rows) == 7  # 6 answers + 1 relabel kept as history
