"""The app in process (FastAPI's TestClient): security headers on every response, the bearer
token, no state change from another site or without JSON, image files confined to their registered
path and served only as the raster type their bytes are, one error shape, a complete OpenAPI
document, offline /docs, and an exhausted campaign that logs no traceback."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from datascout.server.app import create_app  # noqa: E402
from datascout.io import raster_media_type as sniff_raster  # noqa: E402
from datascout.server.security import CSP, cross_site_reason, same_origin  # noqa: E402
from test_campaign_support import fortunes_items, make_campaign, make_image_campaign, write_inputs  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(directory, token=None):
    return TestClient(create_app(directory, token=token, select_in="thread"))


def counts(directory):
    con = sqlite3.connect(directory / "campaign.db")
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("leases", "labels", "annotators")}
    finally:
        con.close()


@pytest.fixture()
def text_camp(tmp_path):
    camp, truth = make_campaign(tmp_path)
    camp.close()
    return tmp_path / "camp", truth


def assert_secured(r):
    h = r.headers
    assert h["x-content-type-options"] == "nosniff", r.request.url
    assert h["referrer-policy"] == "no-referrer", r.request.url
    csp = {d.split()[0]: d.split()[1:] for d in h["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
    for directive in ("object-src", "base-uri", "form-action", "frame-ancestors"):
        assert csp[directive] == ["'none'"], directive
    assert not any("unsafe" in v for vals in csp.values() for v in vals)


def test_security_headers_on_every_response(text_camp):
    d, _ = text_camp
    with client(d, token=TOKEN) as c:
        responses = [c.get("/"), c.get("/docs"), c.get("/static/app.js"), c.get("/static/swagger/swagger-ui.css"),
                     c.get("/openapi.json"), c.get("/static/nope.js"), c.get("/nope"), c.get("/api/stats"),
                     c.get("/api/stats", headers=AUTH), c.get("/api/batch", headers=AUTH),
                     c.post("/api/batch", headers={**AUTH, "content-type": "text/plain"}, content=b"{}"),
                     c.post("/api/batch", headers={**AUTH, "origin": "http://evil.example"}, json={"annotator": "a"}),
                     c.post("/api/labels", headers={**AUTH, "content-type": "application/json"}, content=b"{"),
                     c.get("/api/items/nope/image", headers=AUTH),
                     c.get("/api/export", params={"format": "xml"}, headers=AUTH)]
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 404, 401, 200, 405, 415,
                                                      403, 422, 404, 422]
        for r in responses:
            assert_secured(r)
        assert responses[7].headers["cache-control"] == "no-store"


def test_a_bug_is_a_500_in_the_error_shape_with_the_headers(text_camp):
    d, _ = text_camp
    app = create_app(d, select_in="thread")

    def broken():
        raise RuntimeError("a bug")

    app.state.campaign.stats = broken
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/stats")
    assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError); the server log has the details"}
    assert_secured(r)


def test_token_only_as_bearer_header(text_camp):
    d, _ = text_camp
    with client(d, token=TOKEN) as c:
        for headers in [{}, {"Authorization": TOKEN}, {"Authorization": f"Token {TOKEN}"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}]:
            r = c.get("/api/config", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert c.get("/api/config", params={"token": TOKEN}).status_code == 401  # never from a URL
        assert c.get("/api/config", headers=AUTH).status_code == 200
        assert c.get("/api/config", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    from datascout.server.app import STATIC

    js = (STATIC / "app.js").read_text()  # the page never puts the token in a URL
    assert "?token" not in js and "&token" not in js and "encodeURIComponent(token)" not in js


def test_state_changes_only_by_json_from_this_site(text_camp):
    d, truth = text_camp
    before = counts(d)
    with client(d) as c:
        item = next(iter(truth))
        label = {"annotator": "mallory", "labels": [{"id": item, "label": truth[item]}]}
        lease = {"annotator": "mallory", "n": 100}
        for path, body in [("/api/batch", lease), ("/api/labels", label)]:
            raw = json.dumps(body).encode()
            refused = [
                (403, {"sec-fetch-site": "cross-site", "content-type": "application/json"}),
                (403, {"sec-fetch-site": "same-site", "content-type": "application/json"}),
                (403, {"origin": "http://127.0.0.1:1", "content-type": "application/json"}),
                (403, {"origin": "http://attacker.example", "content-type": "application/json"}),
                (403, {"origin": "null", "content-type": "application/json"}),
                (415, {"content-type": "text/plain"}),  # what a no-cors fetch or a form can send
                (415, {"content-type": "application/x-www-form-urlencoded"}),
                (415, {"content-type": "multipart/form-data; boundary=x"}),
                (415, {}),
            ]
            for status, headers in refused:
                r = c.post(path, content=raw, headers=headers)
                assert r.status_code == status and r.json()["error"], (path, headers, r.text)
            assert c.get(path, params=body if path == "/api/batch" else {}).status_code == 405
        assert counts(d) == before  # nothing leased, labeled or registered
        # the page's own requests: same origin, or no browser headers at all
        ok = c.post("/api/batch", json={"annotator": "alice", "n": 2},
                    headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"})
        assert ok.status_code == 200 and len(ok.json()["items"]) == 2
        assert c.post("/api/batch", json={"annotator": "bob", "n": 1}).status_code == 200


@pytest.mark.parametrize("origin,host,same", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
    ("http://localhost:8000", "127.0.0.1:8000", False),
    ("http://example.com", "example.com", True),
    ("https://example.com", "example.com", True),  # behind a TLS proxy that keeps Host
    ("http://example.com:80", "example.com", True),
    ("http://example.com:8080", "example.com", False),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("null", "127.0.0.1:8000", False),
    ("http://127.0.0.1:99999", "127.0.0.1:8000", False),
    ("http://127.0.0.1:8000", None, False),
])
def test_same_origin(origin, host, same):
    assert same_origin(origin, host) is same


@pytest.mark.parametrize("headers,refused", [
    ({}, False),  # curl, scripts: no browser, no other site
    ({"sec-fetch-site": "same-origin", "origin": "http://h:1"}, False),
    ({"sec-fetch-site": "none"}, False),
    ({"sec-fetch-site": "cross-site"}, True),
    ({"sec-fetch-site": "same-site", "origin": "http://h:1"}, True),
    ({"origin": "http://h:2"}, True),
    ({"origin": "null"}, True),  # an opaque origin (a sandboxed frame) without the browser's word
    ({"origin": "null", "sec-fetch-site": "same-origin"}, False),  # a browser hiding the origin (no-referrer)
    ({"origin": "http://other:1", "sec-fetch-site": "same-origin"}, True),
])
def test_cross_site_reason(headers, refused):
    assert (cross_site_reason({"host": "h:1", **headers}) is not None) is refused


def test_only_the_served_host_names(text_camp):
    d, _ = text_camp
    app = create_app(d, select_in="thread", hosts=frozenset({"127.0.0.1", "localhost"}))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/config").status_code == 200
        assert c.get("/api/config", headers={"host": "localhost:8000"}).status_code == 200
        for host in ("rebound.example:8000", "127.0.0.1.nip.example", ""):
            for r in (c.get("/api/config", headers={"host": host}), c.get("/", headers={"host": host}),
                      c.post("/api/batch", json={"annotator": "a"}, headers={"host": host, "origin": f"http://{host}"})):
                assert r.status_code == 400 and "this server answers to 127.0.0.1, localhost" in r.json()["error"]
                assert_secured(r)
        assert counts(d)["leases"] == 0
        assert "400" in c.get("/openapi.json").json()["paths"]["/api/stats"]["get"]["responses"]


def test_bearer_ok():
    from datascout.server.security import bearer_ok

    assert bearer_ok("Bearer abc", "abc") and bearer_ok("bearer abc", "abc")
    assert not any(bearer_ok(h, "abc") for h in (None, "", "abc", "Bearer", "Bearer ", "Bearer abcd", "Bearer  abc",
                                                 "Token abc", "Basic abc", "Bearer ab"))
    token = "jeton-été"  # a non-ASCII token arrives as its UTF-8 bytes read as latin-1
    assert bearer_ok("Bearer " + token.encode().decode("latin-1"), token)


def test_sniff_raster():
    assert sniff_raster(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_raster(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_raster(b"GIF89a..") == sniff_raster(b"GIF87a..") == "image/gif"
    assert sniff_raster(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    for active in (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
                   b"<?xml version='1.0'?><svg/>", b"<!doctype html><script>1</script>", b"", b"RIFF\0\0\0\0WAVE"):
        assert sniff_raster(active) is None


def test_images_confined_and_served_as_sniffed_raster(tmp_path):
    from PIL import Image

    camp, ids, paths = make_image_campaign(tmp_path)
    camp.close()
    d = tmp_path / "camp"
    secret = tmp_path / "secret.png"  # a real PNG outside the registered files
    Image.new("RGB", (4, 4), (1, 2, 3)).save(secret)
    Image.new("RGB", (8, 8)).save(paths[1], format="JPEG")  # a .png path holding a JPEG: served as JPEG
    os.replace(paths[2], tmp_path / "moved.png")
    paths[2].symlink_to(secret)  # a file replaced by a link after init
    paths[3].unlink()
    paths[3].symlink_to("/etc/passwd")
    paths[4].write_text("<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><script>alert(2)</script></svg>")
    paths[5].write_text("<!doctype html><script>alert(1)</script>")
    os.mkfifo(tmp_path / "fifo")
    paths[6].unlink()
    paths[6].symlink_to(tmp_path / "fifo")
    paths[7].unlink()
    os.mkfifo(paths[7])  # not a regular file: refused without blocking
    url = lambda k: f"/api/items/{quote(ids[k], safe='')}/image"  # noqa: E731
    with client(d) as c:
        r = c.get(url(0))
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == paths[0].read_bytes()
        r = c.get(url(1))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        for k, why in [(2, "symbolic link"), (3, "symbolic link"), (4, "not a PNG, JPEG, GIF or WebP"),
                       (5, "not a PNG, JPEG, GIF or WebP"), (6, "symbolic link"), (7, "not a regular file")]:
            r = c.get(url(k))
            assert r.status_code == 404 and why in r.json()["error"] and ids[k] in r.json()["error"], (k, r.text)
            assert b"root:" not in r.content and secret.read_bytes() not in r.content and "svg" not in r.headers["content-type"]
            assert str(tmp_path) not in r.text
        # a folder on the registered path replaced by a link to another folder: refused too
        os.replace(tmp_path / "img", tmp_path / "img-real")
        (tmp_path / "img").symlink_to(tmp_path / "img-real")
        r = c.get(url(0))
        assert r.status_code == 404 and "symbolic link" in r.json()["error"]


def test_errors_share_one_shape(text_camp):
    d, truth = text_camp
    with client(d) as c:
        cases = [c.get("/nope"), c.get("/api/nope"), c.get("/api/batch"), c.delete("/api/labels", headers={}),
                 c.put("/api/stats", json={}), c.post("/api/labels", content=b"[1,", headers={"content-type": "application/json"}),
                 c.post("/api/labels", json=["not", "an", "object"]), c.post("/api/batch", json={"annotator": "a", "n": "x"}),
                 c.post("/api/batch", json={"annotator": "a", "extra": 1}), c.get("/api/export?format=xml"),
                 c.post("/api/labels", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"}),
                 c.post("/api/labels", json={"annotator": "a", "labels": [{"id": "nope", "label": None}]}),
                 c.get("/static/none.css")]
        assert [r.status_code for r in cases] == [404, 404, 405, 415, 405, 422, 422, 422, 422, 422, 413, 404, 404]
        for r in cases:
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], r.text
            assert "\n" not in body["error"] and "Traceback" not in body["error"]
        assert "POST" in cases[2].json()["error"] and cases[2].headers["allow"] == "POST"
        assert "JSON" in cases[5].json()["error"]


def test_openapi_says_what_each_route_does(text_camp):
    d, _ = text_camp
    for token in (None, TOKEN):
        with client(d, token=token) as c:
            spec = c.get("/openapi.json").json()
        ops = {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}
        assert set(ops) == {("GET", "/api/config"), ("POST", "/api/batch"), ("POST", "/api/labels"),
                            ("GET", "/api/stats"), ("GET", "/api/export"), ("GET", "/api/items/{item_id}/image")}
        schemas = spec["components"]["schemas"]
        assert set(schemas["ErrorOut"]["properties"]) == {"error"}
        assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
        for (method, path), op in ops.items():
            ok = op["responses"]["200"]["content"]
            assert ok and all(m.get("schema") for m in ok.values()), path
            for status, resp in op["responses"].items():
                if status != "200":
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
            statuses = set(op["responses"])
            assert ("401" in statuses) == (token is not None), path
            if method == "POST":
                assert {"400", "403", "413", "415", "422"} <= statuses, path
        assert set(ops["POST", "/api/labels"]["responses"]) >= {"404", "409"}
        for name, path in [("BatchOut", "/api/batch"), ("LabelsOut", "/api/labels")]:
            assert ops["POST", path]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(name)
        assert ops["GET", "/api/stats"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("StatsOut")
        assert ops["GET", "/api/config"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ConfigOut")
        assert set(ops["GET", "/api/export"]["responses"]["200"]["content"]) == {
            "text/csv", "application/x-ndjson", "application/json"}
        assert set(ops["GET", "/api/items/{item_id}/image"]["responses"]["200"]["content"]) == {
            "image/png", "image/jpeg", "image/gif", "image/webp"}
        if token:
            assert spec["components"]["securitySchemes"] == {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
            assert all(op["security"] == [{"HTTPBearer": []}] for op in ops.values())
        else:
            assert "securitySchemes" not in spec.get("components", {})


def test_export_media_types(text_camp):
    d, _ = text_camp
    with client(d) as c:
        for fmt, media in [("csv", "text/csv"), ("jsonl", "application/x-ndjson"), ("label-studio", "application/json")]:
            r = c.get("/api/export", params={"format": fmt})
            assert r.status_code == 200 and r.headers["content-type"].split(";")[0] == media


def test_docs_work_offline(text_camp):
    d, _ = text_camp
    with client(d) as c:
        html = c.get("/docs").text
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(ref.startswith("/static/") or ref == "data:," for ref in refs), refs
        assert "<script>" not in html.replace("<script src=", "")  # no inline script: the CSP forbids it
        for ref in refs:
            if ref.startswith("/static/"):
                r = c.get(ref)
                assert r.status_code == 200 and len(r.content) > 100, ref
        assert "SwaggerUIBundle" in c.get("/static/swagger/swagger-ui-bundle.js").text
    assert "CDN" not in CSP and "http" not in CSP


def test_exhausted_campaign_is_a_state_without_traceback(tmp_path, caplog):
    from datascout.campaign import Campaign

    items, X, y, classes = fortunes_items(n_per_class=4)  # 12 items: rounds of 8 and 4, then complete
    emb, items_path = write_inputs(tmp_path / "inputs", items, X)
    Campaign.create(tmp_path / "camp", embeddings=emb, items=items_path, classes=classes, batch_size=8, k=5).close()
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    caplog.set_level(logging.INFO)
    app = create_app(tmp_path / "camp", select_in="thread")
    camp = app.state.campaign
    with TestClient(app) as c:
        done = []
        for _ in range(2):
            b = c.post("/api/batch", json={"annotator": "alice", "n": 100}).json()
            assert b["items"] and not b["exhausted"]
            ids = [it["id"] for it in b["items"]]
            r = c.post("/api/labels", json={"annotator": "alice", "labels": [{"id": i, "label": truth[i]} for i in ids]})
            assert r.status_code == 200
            done += ids
            camp.wait_idle(60)
        assert sorted(done) == sorted(truth)
        for i in done[:3]:  # relabels after the end: ordinary requests
            assert c.post("/api/labels", json={"annotator": "alice", "labels": [{"id": i, "label": None}]}).status_code == 200
            camp.wait_idle(60)
        b = c.post("/api/batch", json={"annotator": "alice", "n": 10}).json()
        assert b["items"] == [] and b["exhausted"] is True and b["selecting"] is False
        s = c.get("/api/stats").json()
        assert s["exhausted"] is True and s["last_error"] is None and len(s["rounds"]) == 2
        assert s == {**camp.stats(), "exhausted": True}  # the response model passes the library's figures as they are
        assert isinstance(s["rounds"][1]["cv"]["folds"], int)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records]


def test_a_token_too_short_or_with_spaces_is_refused():
    from datascout.exceptions import DatascoutError
    from datascout.server import check_bind

    for bad in (" ", "x", "short-token", "has a space in it ok", " leading-space-token-123"):
        with pytest.raises(DatascoutError, match="at least 16 characters without spaces"):
            check_bind("0.0.0.0", bad)
    check_bind("0.0.0.0", "a-long-enough-token-0123")


def test_a_second_server_on_one_campaign_is_refused(tmp_path):
    import subprocess
    import sys

    from datascout.exceptions import DatascoutError
    from datascout.server import hold_campaign

    held = hold_campaign(tmp_path)
    try:
        with pytest.raises(DatascoutError, match=f"already being served \\(pid {os.getpid()}\\)"):
            hold_campaign(tmp_path)
        # another process too
        out = subprocess.run([sys.executable, "-c", "import sys; from datascout.server import hold_campaign; "
                              "hold_campaign(sys.argv[1])", str(tmp_path)], capture_output=True, text=True)
        assert out.returncode != 0 and "already being served" in out.stderr
    finally:
        held.close()
    hold_campaign(tmp_path).close()  # free again once the first is gone


def test_bodies_that_do_not_parse_all_answer_422_in_the_one_shape(text_camp):
    d, _ = text_camp
    with client(d) as c:
        for body in (b'{"annotator":"\xff\xfe","n":1}', b'{"annotator": "a", "n": 1', b"[" * 5000 + b"]" * 5000):
            r = c.post("/api/batch", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (body[:20], r.status_code, r.text)
            assert set(r.json()) == {"error"} and "does not parse" in r.json()["error"]
