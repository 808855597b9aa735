"""Label Studio's formats without a server (the real server's walk is in test_label_studio.py):
the config's names and escaping, its exports as Label Studio 1.23 writes them (shapes copied from
a real export), the annotator map, and the ML backend and webhook routes with their auth."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest

from datascout.campaign import labelstudio as ls
from datascout.exceptions import ValidationError
from test_campaign_support import make_campaign


def test_config_names_what_the_tasks_point_at_and_escapes_class_names():
    xml = ls.label_config(['say "hi"', "a&b", "<c>"], "image")
    root = ET.fromstring(xml)
    (image,) = root.iter("Image")
    (choices,) = root.iter("Choices")
    assert image.get("name") == "image" and image.get("value") == "$image"
    assert choices.get("name") == ls.FROM_NAME and choices.get("toName") == "image"
    assert [c.get("value") for c in choices.iter("Choice")] == ['say "hi"', "a&b", "<c>"]
    result = ls.choice_result("image", "a&b")[0]
    assert (result["from_name"], result["to_name"]) == (choices.get("name"), choices.get("toName"))


def test_annotator_map():
    assert ls.parse_annotator_map("alice=alice@x.org, bob=3") == {"alice": "alice@x.org", "bob": 3}
    for bad in ("alice", "alice=", "alice=someone"):
        with pytest.raises(ValidationError):
            ls.parse_annotator_map(bad)


# what Label Studio 1.23.2 exported for two tasks: annotations 2 (user 1) and 4 (user 2) on task 1,
# annotation 1 (user 1) and a cancelled one, 3, on task 2
JSON_MIN = [
    {"text": "hello", "item_id": "x1", "id": 1, "label": "a", "annotator": 2, "annotation_id": 4,
     "created_at": "2026-12-02T00:30:47.902438Z", "updated_at": "2026-12-02T00:30:47.902511Z", "lead_time": None},
    {"text": "hello", "item_id": "x1", "id": 1, "label": "a", "annotator": 1, "annotation_id": 2,
     "created_at": "2026-12-02T00:30:47.046907Z", "updated_at": "2026-12-02T00:30:47.046956Z", "lead_time": None},
    {"text": "world", "item_id": "x2", "id": 2, "label": "b", "annotator": 1, "annotation_id": 1,
     "created_at": "2026-12-02T00:30:41.423541Z", "updated_at": "2026-12-02T00:30:41.423586Z", "lead_time": None}]
CSV = ('"annotation_id","annotator","created_at","id","item_id","label","lead_time","text","updated_at"\n'
       '4,"2","2026-12-02T00:30:47.902438Z",1,"x1","a","","hello","2026-12-02T00:30:47.902511Z"\n'
       '2,"1","2026-12-02T00:30:47.046907Z",1,"x1","a","","hello","2026-12-02T00:30:47.046956Z"\n'
       '1,"1","2026-12-02T00:30:41.423541Z",2,"x2","b","","world","2026-12-02T00:30:41.423586Z"\n')
JSON = [{"id": 1, "data": {"text": "hello", "item_id": "x1"}, "annotations": [
            {"id": 2, "completed_by": 1, "was_cancelled": False, "updated_at": "2026-12-02T00:30:47.046956Z",
             "result": ls.choice_result("text", "a")},
            {"id": 4, "completed_by": 2, "was_cancelled": False, "updated_at": "2026-12-02T00:30:47.902511Z",
             "result": ls.choice_result("text", "a")}]},
        {"id": 2, "data": {"text": "world", "item_id": "x2"}, "annotations": [
            {"id": 1, "completed_by": 1, "was_cancelled": False, "updated_at": "2026-12-02T00:30:41.423586Z",
             "result": ls.choice_result("text", "b")},
            {"id": 3, "completed_by": 1, "was_cancelled": True, "updated_at": "2026-12-02T00:30:47.476291Z",
             "result": []}]}]


def test_label_studio_exports_are_read_by_item_id_whatever_their_names(tmp_path):
    from datascout.campaign.formats import read_label_file

    users = {1: "admin@x.org"}
    files = {"a.json": json.dumps(JSON), "b.txt": json.dumps(JSON_MIN), "c.csv": CSV, "d": CSV}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    want = {("x1", "a", "admin@x.org"), ("x1", "a", "ls-2"), ("x2", "b", "admin@x.org")}
    assert ls.sniff(tmp_path / "a.json") == "json" and ls.sniff(tmp_path / "b.txt") == "json-min"
    assert ls.sniff(tmp_path / "c.csv") == ls.sniff(tmp_path / "d") == "csv"
    # JSON holds the cancelled annotation: a skip, the admin's latest answer on x2
    rows = read_label_file(tmp_path / "a.json", users=users)
    assert set(rows) == want | {("x2", None, "admin@x.org")}
    assert rows.index(("x2", None, "admin@x.org")) > rows.index(("x2", "b", "admin@x.org"))  # by updated_at
    for name in ("b.txt", "c.csv", "d"):  # never Label Studio's task id ("1", "2")
        assert set(read_label_file(tmp_path / name, users=users)) == want, name
    # a task without the datascout id is named, in one line
    (tmp_path / "e.json").write_text(json.dumps([{"id": 9, "data": {"text": "x"}, "annotations": []}]))
    with pytest.raises(ValidationError, match="task 1 has no data.item_id"):
        read_label_file(tmp_path / "e.json")


def test_import_of_label_studio_exports_into_a_campaign_twice_adds_nothing(tmp_path):
    camp, truth = make_campaign(tmp_path, batch_size=4, audit_fraction=0.0)
    ids = list(truth)[:2]
    data = json.loads(json.dumps(JSON).replace('"x1"', json.dumps(ids[0])).replace('"x2"', json.dumps(ids[1]))
                      .replace('"a"', json.dumps(camp.classes[0])).replace('"b"', json.dumps(camp.classes[1])))
    f = tmp_path / "export.json"
    f.write_text(json.dumps(data))
    assert camp.import_labels(f) == 3  # ls-1 on both, ls-2 on the first
    got = sorted(camp.con.execute("SELECT i.id, l.annotator, l.class FROM labels l JOIN items i ON i.pos = l.pos"
                                  " ORDER BY l.label_id").fetchall())
    assert got == sorted([(ids[0], "ls-1", 0), (ids[0], "ls-2", 0), (ids[1], "ls-1", None)])  # cancelled last
    assert camp.import_labels(f) == 0


def test_ml_backend_routes_take_the_token_as_bearer_or_basic_password_and_refuse_other_sites(tmp_path):
    from fastapi.testclient import TestClient

    from datascout.server.app import create_app

    camp, truth = make_campaign(tmp_path, batch_size=6, audit_fraction=0.0)
    items = camp.lease_batch("alice", 6)["items"]
    camp.submit("alice", [(it["id"], truth[it["id"]]) for it in items])
    camp.wait_idle(60)
    camp.close()
    token = "t" * 24
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:" + token.encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"anyone:" + b"x" * 24).decode()}
    with TestClient(create_app(tmp_path / "camp", token=token, select_in="thread")) as c:
        assert c.get("/ml/health").status_code == 401
        assert c.get("/ml/health", headers=wrong).status_code == 401
        assert c.get("/api/config", headers=basic).status_code == 401  # Basic only where Label Studio needs it
        health = c.get("/ml/health", headers=basic).json()
        assert health["status"] == "UP" and health["model_version"] == "datascout-round-1"
        assert c.post("/ml/setup", headers=basic, json={"project": "1.1", "schema": "<View/>"}).json() == {
            "model_version": "datascout-round-1"}
        tasks = [{"id": 5, "data": {"item_id": it["id"]}} for it in items] + [{"id": 6, "data": {"text": "?"}}]
        got = c.post("/ml/predict", headers={"Authorization": f"Bearer {token}"}, json={"tasks": tasks}).json()
        assert len(got["results"]) == len(tasks) and got["results"][-1]["result"] == []
        right = sum(r["result"][0]["value"]["choices"] == [truth[it["id"]]] for r, it in zip(got["results"], items))
        assert right >= 5  # the model trained on these very labels (separable clusters)
        # a browser on another site cannot post to the webhook, even with the header
        r = c.post("/ml/webhook", headers={**basic, "Origin": "http://evil.example"}, json={"action": "x"})
        assert r.status_code == 403
        # a webhook for a project this campaign never synced with is taken in by nobody
        r = c.post("/ml/webhook", headers=basic, json={"action": "ANNOTATION_CREATED", "project": {"id": 3},
                                                       "annotation": {"id": 1, "task": 1}, "task": {"id": 1}})
        assert r.json() == {"accepted": 0, "selecting": False}
