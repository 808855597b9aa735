"""The web app on a real uvicorn server (subprocess, free port) through httpx: API, bad requests,
tokens, image serving, and durability across SIGKILL."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from urllib.parse import quote

import httpx
import pytest

from datascout.cli import main
from test_campaign_support import Server, fortunes_items, make_campaign, write_inputs


def db_labels(directory):
    con = sqlite3.connect(directory / "campaign.db")
    try:
        return con.execute("SELECT l.label_id, i.id, l.class, l.annotator FROM labels l "
                           "JOIN items i ON i.pos = l.pos ORDER BY l.label_id").fetchall()
    finally:
        con.close()


@pytest.fixture()
def served(tmp_path, request):
    camp, truth = make_campaign(tmp_path)
    camp.close()
    srv = Server(tmp_path / "camp", cli=request.node.name == "test_api_flow_and_openapi")
    yield srv, tmp_path / "camp", truth
    srv.stop()


def test_api_flow_and_openapi(served):
    srv, d, truth = served
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/api/batch", "/api/labels", "/api/stats", "/api/export"} <= set(paths)
        assert c.get("/docs").status_code == 200
        b = c.post("/api/batch", json={"annotator": "alice", "n": 4}).json()
        assert b["round"] == 0 and len(b["items"]) == 4 and b["progress"] == {"round": 0, "selected": 12, "done": 0}
        ids = [it["id"] for it in b["items"]]
        assert all(it["text"] for it in b["items"])
        r = c.post("/api/labels", json={"annotator": "alice", "labels": [{"id": i, "label": truth[i]} for i in ids[:3]]
                                        + [{"id": ids[3], "label": None}]})
        assert r.status_code == 200 and r.json()["accepted"] == 4
        assert [(row[1], row[3]) for row in db_labels(d)] == [(i, "alice") for i in ids]
        s = c.get("/api/stats").json()
        assert s["labels"]["answers"] == 3 and s["labels"]["skips"] == 1 and s["progress"]["done"] == 4
        csv_text = c.get("/api/export", params={"format": "csv"}).text
        assert sorted(line.split(",")[0] for line in csv_text.splitlines()[1:]) == sorted(ids[:3])
        assert c.get("/api/export", params={"format": "xml"}).status_code == 422


def test_bad_requests_get_4xx_json_and_change_nothing(served):
    srv, d, truth = served
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        mine = [it["id"] for it in c.post("/api/batch", json={"annotator": "alice", "n": 2}).json()["items"]]
        theirs = c.post("/api/batch", json={"annotator": "bob", "n": 1}).json()["items"][0]["id"]
        before = db_labels(d)
        cases = [
            (404, {"annotator": "alice", "labels": [{"id": "nope:1", "label": truth[mine[0]]}]}),
            (400, {"annotator": "alice", "labels": [{"id": mine[0], "label": "no-such-class"}]}),
            (409, {"annotator": "alice", "labels": [{"id": mine[0], "label": truth[mine[0]]},
                                                    {"id": theirs, "label": truth[theirs]}]}),
            (422, {"annotator": "alice", "labels": []}),
            (422, {"annotator": "alice", "labels": [{"id": mine[0], "label": truth[mine[0]], "x": 1}]}),
            (422, {"annotator": "bad name!", "labels": [{"id": mine[0], "label": truth[mine[0]]}]}),
        ]
        for status, body in cases:
            r = c.post("/api/labels", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["error"]
        r = c.post("/api/labels", content=b'{"annotator": "alice", "labels": [', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]
        big = json.dumps({"annotator": "alice", "labels": [{"id": mine[0], "label": "x" * 300_000}]})
        r = c.post("/api/labels", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "at most" in r.json()["error"]
        assert c.post("/api/batch", json={"annotator": "alice", "n": 0}).status_code == 422
        assert c.post("/api/batch", json={}).status_code == 422
        assert c.get("/api/batch", params={"annotator": "alice"}).status_code == 405  # a GET never leases
        assert db_labels(d) == before == []
        # served on loopback, the app answers to loopback names only (a rebinding page's name is refused)
        r = c.get("/api/stats", headers={"host": f"rebound.example:{srv.port}"})
        assert r.status_code == 400 and "rebound.example" in r.json()["error"]
        assert c.get("/api/stats", headers={"host": f"localhost:{srv.port}"}).status_code == 200


def test_images_only_for_registered_items(tmp_path):
    from PIL import Image

    items, X, y, classes = fortunes_items(n_per_class=10)
    (tmp_path / "img").mkdir()
    for k in range(len(items)):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / "img" / f"{k}.png")
    # image ids are often relative paths: "/", " ", "#" and "?" must survive the URL
    ids = [f"train/im {k}#?.png" for k in range(len(items))]
    items = [{"id": ids[k], "image": f"img/{k}.png"} for k in range(len(items))]
    (tmp_path / "secret.txt").write_text("do-not-serve")
    emb, items_path = write_inputs(tmp_path, items, X)
    from datascout.campaign import Campaign

    Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=4, k=5).close()
    srv = Server(tmp_path / "camp")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.get(f"/api/items/{quote(ids[3], safe='')}/image")  # as the page's encodeURIComponent
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content == (tmp_path / "img" / "3.png").read_bytes()
            for bad in ("../secret.txt", "..%2Fsecret.txt", "nope", "%2Fetc%2Fpasswd"):
                r = c.get(f"/api/items/{bad}/image")
                assert r.status_code == 404 and b"do-not-serve" not in r.content
            b = c.post("/api/batch", json={"annotator": "a", "n": 2}).json()["items"]
            assert b[0]["kind"] == "image" and "text" not in b[0] and "image" not in b[0]
            # the Label Studio export carries each item's image inline (a data: URL Label Studio's
            # page loads without our token)
            tasks = c.get("/api/export", params={"format": "label-studio"}).json()
            assert len(tasks) >= 4
            for t in tasks:
                head, _, b64 = t["data"]["image"].partition(",")
                k = ids.index(t["data"]["item_id"])
                assert head == "data:image/png;base64"
                assert base64.b64decode(b64) == (tmp_path / "img" / f"{k}.png").read_bytes()
            # a file deleted after init: a 404 that names the item, not a 500
            (tmp_path / "img" / "5.png").unlink()
            r = c.get(f"/api/items/{quote(ids[5], safe='')}/image")
            assert r.status_code == 404 and ids[5] in r.json()["error"] and str(tmp_path) not in r.text
    finally:
        srv.stop()


def test_token_required_beyond_localhost(tmp_path, capsys, monkeypatch):
    camp, _ = make_campaign(tmp_path)
    camp.close()
    monkeypatch.delenv("DATASCOUT_TOKEN", raising=False)
    assert main(["serve", str(tmp_path / "camp"), "--host", "0.0.0.0"]) == 2
    assert "needs a token" in capsys.readouterr().err
    srv = Server(tmp_path / "camp", token="s3cret-0123456789", host="0.0.0.0")
    http = httpx.Client(timeout=60)  # a loaded machine may take seconds for a first round
    try:
        assert http.get(srv.url + "/api/stats").status_code == 401
        assert http.get(srv.url + "/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get(srv.url + "/api/stats", headers={"Authorization": "Bearer s3cret-0123456789"}).status_code == 200
        assert http.get(srv.url + "/").status_code == 200  # the page itself; it sends the token
        # the token is accepted only as a bearer header, never from a URL or another scheme
        for headers, params in [({"Authorization": "s3cret-0123456789"}, {}), ({"Authorization": "Token s3cret-0123456789"}, {}),
                                ({"Authorization": "Basic s3cret-0123456789"}, {}), ({"Authorization": "Bearer"}, {}),
                                ({"Authorization": "Bearer s3cret-01234567892"}, {}), ({}, {"token": "s3cret-0123456789"})]:
            r = http.get(srv.url + "/api/stats", headers=headers, params=params)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (headers, params)
            assert r.json() == {"error": "a valid token is required (header 'Authorization: Bearer TOKEN')"}
    finally:
        http.close()
        srv.stop()


def test_sigkill_mid_burst_keeps_every_acknowledged_label(tmp_path):
    camp, truth = make_campaign(tmp_path, batch_size=40)
    camp.close()
    d = tmp_path / "camp"
    srv = Server(d)
    acked, stop = [], threading.Event()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        ids = [it["id"] for it in c.post("/api/batch", json={"annotator": "alice", "n": 40}).json()["items"]]

    def burst():
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in ids:
                try:
                    r = c.post("/api/labels", json={"annotator": "alice", "labels": [{"id": i, "label": truth[i]}]})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(i)
                if len(acked) >= 15:
                    stop.set()

    t = threading.Thread(target=burst)
    t.start()
    stop.wait(60)
    srv.kill()  # SIGKILL while the burst is still posting
    t.join()
    assert 15 <= len(acked) < 40
    stored = [row[1] for row in db_labels(d)]
    assert set(acked) <= set(stored) and len(stored) == len(set(stored))
    srv = Server(d)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            b = c.post("/api/batch", json={"annotator": "alice", "n": 40}).json()
            # round 1 may already exist (selected once round 0 was handed out and half answered);
            # round 0's unanswered items come first: it resumes exactly where it was
            rest = sorted(set(ids) - set(stored))
            got = [it["id"] for it in b["items"]]
            assert sorted(got[: len(rest)]) == rest and not set(got[len(rest):]) & set(ids)
            assert b["round"] in (0, 1) and (b["round"] == 1 or b["progress"]["done"] == len(stored))
            assert c.post("/api/labels", json={"annotator": "alice", "labels": [
                {"id": i, "label": truth[i]} for i in rest]}).status_code == 200
            for _ in range(300):
                if c.get("/api/stats").json()["progress"]["round"] >= 1:
                    break
                threading.Event().wait(0.1)
            nxt = [it["id"] for it in c.post("/api/batch", json={"annotator": "alice", "n": 40}).json()["items"]]
            assert len(nxt) == 40 and not set(nxt) & set(ids)
    finally:
        srv.stop()
    con = sqlite3.connect(d / "campaign.db")
    n_sel, n_distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT pos) FROM selections").fetchone()
    assert n_sel == n_distinct and n_sel in (80, 120)  # no item twice (a third round may be selected ahead)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT pos) FROM labels").fetchone() == (40, 40)


def test_serve_checks_the_port_before_it_starts(tmp_path, capsys):
    import socket

    camp, _ = make_campaign(tmp_path)
    camp.close()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["serve", str(tmp_path / "camp"), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "serving" not in out
    assert err.strip().splitlines() == [f"datascout: error: port {port} on 127.0.0.1 is already in use: "
                                        "stop what holds it or choose another with --port"]
    assert main(["serve", str(tmp_path / "camp"), "--port", "70000"]) == 2
    assert "port must be an integer in 0..65535 but is 70000" in capsys.readouterr().err


def test_serve_without_the_server_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    camp, _ = make_campaign(tmp_path)
    camp.close()

    def expected(missing):
        return [f"datascout: error: the web server needs the 'server' extra ({missing} is not installed): "
                "pip install 'datascout[server]'"]

    # a fresh interpreter without fastapi: nothing on the way to the check imports it
    code = "import sys; sys.modules['fastapi'] = None; from datascout.cli import main; sys.exit(main(['serve', sys.argv[1]]))"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "camp")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "serving" not in r.stdout and r.stderr.strip().splitlines() == expected("fastapi"), r.stderr
    for missing in ("uvicorn", "fastapi_offline"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, missing, None)  # what an import of a package that is not installed does
            assert main(["serve", str(tmp_path / "camp")]) == 2
        out, err = capsys.readouterr()
        assert "serving" not in out and err.strip().splitlines() == expected(missing)


def test_exhausted_campaign_leaves_no_traceback_in_the_server_log(tmp_path):
    from datascout.campaign import Campaign

    items, X, y, classes = fortunes_items(n_per_class=4)  # 12 items, all in round 0
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=12, k=5).close()
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    srv = Server(tmp_path / "camp")  # rounds are selected in a separate process, as served
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            ids = [it["id"] for it in c.post("/api/batch", json={"annotator": "alice", "n": 12}).json()["items"]]
            assert sorted(ids) == sorted(truth)
            for i in ids + ids[:3]:  # every item, then relabels once nothing is left to select
                r = c.post("/api/labels", json={"annotator": "alice", "labels": [{"id": i, "label": truth[i]}]})
                assert r.status_code == 200
            for _ in range(300):  # a selection started anyway would end (and log) within this
                s = c.get("/api/stats").json()
                if not s["selecting"]:
                    break
                threading.Event().wait(0.1)
            assert s["exhausted"] is True and s["last_error"] is None and len(s["rounds"]) == 1
            b = c.post("/api/batch", json={"annotator": "alice", "n": 12}).json()
            assert b["items"] == [] and b["exhausted"] is True
        log = srv.output()
    finally:
        srv.stop()
    assert "Traceback" not in log and "nothing left to select" not in log, log
