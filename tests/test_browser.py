"""A real headless Chromium (Debian ``chromium``, driven by Playwright, no browser download) labels
a batch with the keyboard; the test reads the labels back from the database. An attacker page on a
second loopback origin tries to lease and label through the visitor's browser, an SVG item's URL
is opened directly, the page runs in token mode, and /docs renders offline under the CSP."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from test_campaign_support import Server, free_port, make_campaign, make_image_campaign

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    return sync_api


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def watch(page, log):
    """Record what the page printed, failed and received, to explain a failure."""
    page.set_default_timeout(90_000)  # the CPU is shared: be patient, never flaky
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: log.append(f"requestfailed: {r.method} {r.url} {r.failure}"))
    page.on("response", lambda r: log.append(f"{r.status} {r.request.method} {r.url}"))


def db_rows(directory, sql):
    con = sqlite3.connect(directory / "campaign.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_keyboard_labeling_in_chromium(tmp_path):
    sync_api = playwright()
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
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            console = []
            watch(page, console)
            try:
                page.goto(f"{srv.url}/?annotator=alice")
                item = page.locator("#item-id")
                page.wait_for_function("() => document.getElementById('item-id').textContent.length > 0")
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
                    page.wait_for_function(f"() => document.getElementById('last').textContent.includes({shown!r})")
                    if step == 4:  # undo the wrong answer and relabel it correctly
                        page.keyboard.press("u")
                        page.wait_for_function(f"() => document.getElementById('item-id').textContent === {shown!r}")
                        page.keyboard.press(str(classes.index(truth[shown]) + 1))
                        page.wait_for_function("() => document.getElementById('last').textContent === "
                                               + repr(f"Saved {shown} as \u201c{truth[shown]}\u201d."))
                        answers[shown] = truth[shown]
                assert len(set(seen)) == 6
                # the batch is done; the next round is selected in the background and shown
                page.wait_for_function("() => document.getElementById('round-label').textContent === 'Round 1'", timeout=60000)
                page.wait_for_function("() => document.getElementById('item-id').textContent.length > 0", timeout=60000)
                page.wait_for_function("() => document.getElementById('t-labels').textContent === '5'", timeout=15000)  # items labeled: 6 answers, 1 a skip
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


ATTACK = """<!doctype html><html><body><iframe name="sink"></iframe>
<form id="f" method="POST" target="sink" enctype="text/plain" action="TARGET/api/labels">
<input name='LABEL_HEAD' value='LABEL_TAIL'></form>
<form id="g" method="POST" target="sink" action="TARGET/api/batch"><input name="annotator" value="mallory"></form>
<img src="TARGET/api/batch?annotator=mallory&n=100">
<script>
const T = "TARGET", lease = JSON.stringify({annotator: "mallory", n: 100}), label = LABEL_JSON;
async function attempt(f) { try { await f(); } catch (e) {} }
(async () => {
  await attempt(() => fetch(T + "/api/batch", {method: "POST", mode: "no-cors", body: lease}));
  await attempt(() => fetch(T + "/api/batch", {method: "POST", mode: "no-cors", credentials: "include",
                                              headers: {"Content-Type": "text/plain"}, body: lease}));
  await attempt(() => fetch(T + "/api/batch", {method: "POST", headers: {"Content-Type": "application/json"}, body: lease}));
  await attempt(() => fetch(T + "/api/labels", {method: "POST", mode: "no-cors", body: label}));
  await attempt(() => fetch(T + "/api/labels", {method: "POST", headers: {"Content-Type": "application/json"}, body: label}));
  navigator.sendBeacon(T + "/api/labels", new Blob([label], {type: "text/plain"}));
  navigator.sendBeacon(T + "/api/batch", lease);
  const sink = document.querySelector("iframe");
  for (const id of ["f", "g"]) {
    await new Promise((done) => { sink.onload = done; document.getElementById(id).submit(); setTimeout(done, 20000); });
  }
  document.title = "attacked";
})();
</script></body></html>"""


class _Attacker(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):  # noqa: N802  (the name http.server calls)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        """Quiet: the test reads what the browser and the campaign did, not this server's log."""


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-port"])
def test_attacker_page_cannot_lease_or_label(tmp_path, attacker_host):
    sync_api = playwright()
    camp, truth = make_campaign(tmp_path, batch_size=6)
    camp.close()
    d = tmp_path / "camp"
    srv = Server(d)
    # alice holds a lease: the attacker page tries to answer it in her name through her browser
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        held = c.post("/api/batch", json={"annotator": "alice", "n": 2}).json()["items"]
    label = json.dumps({"annotator": "alice", "labels": [{"id": it["id"], "label": truth[it["id"]]} for it in held]})
    head, tail = label[:-3] + ',"x":"', '"}]}'  # a text/plain form body that reads as this JSON
    page_html = (ATTACK.replace("TARGET", srv.url).replace("LABEL_JSON", json.dumps(label))
                 .replace("LABEL_HEAD", head.replace("'", "&#39;")).replace("LABEL_TAIL", tail))
    handler = type("Attacker", (_Attacker,), {"page": page_html.encode()})
    evil = ThreadingHTTPServer((attacker_host, free_port()), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    leases_before = db_rows(d, "SELECT pos, annotator, expires FROM leases ORDER BY pos")
    log, reached = [], []
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            watch(page, log)
            page.on("response", lambda r: reached.append((r.request.method, r.url.split("?")[0], r.status))
                    if r.url.startswith(srv.url) else None)
            try:
                page.goto(f"http://{attacker_host}:{evil.server_address[1]}/")
                page.wait_for_function("() => document.title === 'attacked'")
                page.wait_for_timeout(500)  # the beacons are sent after the page asked for them
            except Exception as exc:
                raise AssertionError("browser:\n" + "\n".join(log[-40:]) + f"\nserver:\n{srv.output()[-3000:]}") from exc
            browser.close()
    finally:
        evil.shutdown()
        srv.stop()
    posts = [r for r in reached if r[0] == "POST"]
    assert len(posts) >= 5, reached  # the browser did send them: the server is what refused
    assert all(status in (403, 405, 415) for _, _, status in reached), reached
    assert db_rows(d, "SELECT COUNT(*) FROM labels") == [(0,)]
    assert db_rows(d, "SELECT pos, annotator, expires FROM leases ORDER BY pos") == leases_before
    assert db_rows(d, "SELECT name FROM annotators") == [("alice",)]


def test_svg_item_url_runs_no_script(tmp_path):
    sync_api = playwright()
    camp, ids, paths = make_image_campaign(tmp_path)
    camp.close()
    # an item file replaced by an SVG after init: opened directly, its script would run on the app's origin
    paths[0].write_text("<svg xmlns='http://www.w3.org/2000/svg' onload=\"document.title='pwned'\">"
                        "<script>fetch('/api/batch', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                        "body: JSON.stringify({annotator: 'svg', n: 100})}).then(() => document.title = 'pwned')"
                        "</script></svg>")
    srv = Server(tmp_path / "camp")
    log = []
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            watch(page, log)
            r = page.goto(f"{srv.url}/api/items/{quote(ids[0], safe='')}/image")
            assert r.status == 404 and r.headers["content-type"] == "application/json"
            assert "not a PNG, JPEG, GIF or WebP" in page.locator("body").text_content()
            page.wait_for_timeout(500)
            assert page.title() != "pwned" and page.locator("svg").count() == 0, log
            r = page.goto(f"{srv.url}/api/items/{quote(ids[1], safe='')}/image")  # a real PNG still shows
            assert r.status == 200 and r.headers["content-type"] == "image/png"
            browser.close()
    finally:
        srv.stop()
    assert db_rows(tmp_path / "camp", "SELECT COUNT(*) FROM leases WHERE annotator = 'svg'") == [(0,)]


def test_token_mode_keeps_the_token_out_of_urls(tmp_path):
    sync_api = playwright()
    camp, ids, paths = make_image_campaign(tmp_path, batch_size=12)  # alice leases 10, bob the other 2
    classes = camp.classes
    camp.close()
    token = "tok-" + "x" * 20
    srv = Server(tmp_path / "camp", token=token)
    log, urls = [], []
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            watch(page, log)
            page.on("request", lambda r: urls.append(r.url))
            try:
                page.goto(f"{srv.url}/?annotator=alice#token={token}")
                page.wait_for_function("() => document.getElementById('item-id').textContent.length > 0")
                assert token not in page.evaluate("location.href")  # the fragment is cleared at once
                assert page.evaluate("sessionStorage.getItem('datascout-token')") == token
                page.wait_for_function("() => document.getElementById('item-image').naturalWidth === 8")
                assert page.evaluate("document.getElementById('item-image').src").startswith("blob:")
                shown = page.locator("#item-id").text_content()
                page.keyboard.press("1")
                page.wait_for_function(f"() => document.getElementById('last').textContent.includes({shown!r})")
                # a new tab without the token asks for it, and works once it is typed in
                other = browser.new_page()
                watch(other, log)
                other.on("request", lambda r: urls.append(r.url))
                other.goto(f"{srv.url}/?annotator=bob")
                other.wait_for_selector("#token-form:not([hidden])")
                other.fill("#token", token)
                other.press("#token", "Enter")
                other.wait_for_function("() => document.getElementById('item-id').textContent.length > 0")
            except Exception as exc:
                raise AssertionError("browser:\n" + "\n".join(log[-40:]) + f"\nserver:\n{srv.output()[-3000:]}") from exc
            browser.close()
    finally:
        srv.stop()
    assert urls and not [u for u in urls if token in u]
    rows = db_rows(tmp_path / "camp", "SELECT i.id, l.class, l.annotator FROM labels l JOIN items i ON i.pos = l.pos")
    assert rows == [(shown, 0, "alice")] and classes


def test_docs_render_offline_under_the_csp(tmp_path):
    sync_api = playwright()
    camp, _ = make_campaign(tmp_path)
    camp.close()
    srv = Server(tmp_path / "camp", token="docs-token-0123456789")
    log, outside = [], []
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            watch(page, log)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((srv.url, "data:", "blob:")) else None)
            page.goto(f"{srv.url}/docs")
            page.wait_for_selector(".opblock-summary-path")
            paths = {t.strip().replace("\u200b", "") for t in page.locator(".opblock-summary-path").all_text_contents()}
            assert {"/api/batch", "/api/labels", "/api/stats", "/api/export", "/api/config"} <= paths, paths
            assert page.locator(".btn.authorize").count() == 1  # the bearer scheme is offered
            browser.close()
    finally:
        srv.stop()
    assert not outside, outside  # nothing from a CDN
    assert not [m for m in log if "Content Security Policy" in m or m.startswith("pageerror")], log
