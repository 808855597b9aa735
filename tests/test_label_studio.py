"""Against a real Label Studio (PyPI ``label-studio``, pinned in scripts/setup.sh, in its own
virtual environment ``.venv-ls``): started once per test session (for this module's tests) on 127.0.0.1 with a throwaway
data folder, a user and a token. The walk: export -> import into a project -> tasks and
predictions read back through its API -> annotations made through its API -> ``sync --once``
brings them in and the round advances -> the next round's tasks appear, none twice -> a SIGKILL of
``sync --watch`` and a restart, none twice and none lost -> its JSON, JSON-MIN and CSV exports
imported back.

Without Label Studio installed these tests fail (CI installs it); ``DATASCOUT_SKIP_LABEL_STUDIO=1``
skips them, saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from datascout.campaign import labelstudio as ls
from datascout.cli import main
from test_campaign_support import free_port, make_campaign

ROOT = Path(__file__).resolve().parents[1]
EMAIL, PASSWORD, TOKEN = "admin@example.com", "datascout-test-pass", "datascout0123456789abcdef0123456789"


def label_studio_binary() -> Path | None:
    given = os.environ.get("DATASCOUT_LABEL_STUDIO")
    path = Path(given) if given else ROOT / ".venv-ls" / "bin" / "label-studio"
    return path if path.is_file() else None


class LabelStudio:
    """A real ``label-studio start`` in a subprocess (output to a file), with its REST API."""

    def __init__(self, binary: Path, data_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, ML_BLOCK_LOCAL_IP="false", SSRF_PROTECTION_ENABLED="false",
                   LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false", LABEL_STUDIO_BASE_DATA_DIR=str(data_dir))
        self.log = open(data_dir / "label-studio.log", "wb")
        self.proc = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--port", str(self.port), "--internal-host", "127.0.0.1",
             "--data-dir", str(data_dir), "--username", EMAIL, "--password", PASSWORD, "--user-token", TOKEN,
             "--enable-legacy-api-token"], stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)
        deadline = time.monotonic() + 900  # its first start migrates a database: minutes on a busy machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("label-studio exited: " + Path(self.log.name).read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:  # not listening yet: poll again
                pass
            time.sleep(1)
        else:
            self.stop()
            raise RuntimeError("label-studio did not answer /health in 900 s")
        self.admin_id = self.get("/api/current-user/whoami")["id"]

    def get(self, path, **params):
        r = self.http.get(path, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        return r.json()

    def post(self, path, body, status=201):
        r = self.http.post(path, json=body)
        assert r.status_code == status, (path, r.status_code, r.text[:800])
        return r.json()

    def tasks(self, project: int) -> list[dict]:
        out, page = [], 1
        while True:
            got = self.get("/api/tasks", project=project, fields="all", page=page, page_size=100)
            out += got["tasks"]
            if len(out) >= got["total"] or not got["tasks"]:
                return out
            page += 1

    def new_project(self, title: str, config: str) -> int:
        return self.post("/api/projects", {"title": title, "label_config": config})["id"]

    def annotate(self, task_id: int, label, *, kind="text", user=None, cancelled=False) -> dict:
        body = {"result": [] if label is None else ls.choice_result(kind, label), "was_cancelled": cancelled}
        if user is not None:
            body["completed_by"] = user
        return self.post(f"/api/tasks/{task_id}/annotations", body)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.http.close()
        self.log.close()


@pytest.fixture(scope="module")  # one server for the session's Label Studio tests, stopped right after them
def label_studio(tmp_path_factory):
    binary = label_studio_binary()
    if binary is None:
        why = ("Label Studio is not installed (expected .venv-ls/bin/label-studio, made by scripts/setup.sh, "
               "or $DATASCOUT_LABEL_STUDIO)")
        if os.environ.get("DATASCOUT_SKIP_LABEL_STUDIO") == "1":
            pytest.skip(f"SKIPPED ON PURPOSE (DATASCOUT_SKIP_LABEL_STUDIO=1): {why}")
        pytest.fail(f"{why}: run scripts/setup.sh, or set DATASCOUT_SKIP_LABEL_STUDIO=1 to skip these tests")
    server = LabelStudio(binary, tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


def labels_by_item(camp, source=None):
    """``{(item id, annotator): class name or None}`` of each annotator's latest answer."""
    rows = camp.con.execute(
        """SELECT i.id, l.annotator, l.class, l.source FROM labels l JOIN items i ON i.pos = l.pos
           JOIN (SELECT MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last ON l.label_id = last.m""")
    return {(i, a): (None if c is None else camp.classes[c]) for i, a, c, s in rows if source in (None, s)}


def sync_once(camp_dir, server, project, capsys=None):
    code = main(["label-studio", "sync", str(camp_dir), "--url", server.url, "--project", str(project),
                 "--token", TOKEN, "--once"])
    assert code == 0
    return code


def test_export_imports_into_label_studio_with_predictions_and_member_annotations(tmp_path, label_studio, caplog,
                                                                                 capsys):
    srv = label_studio
    camp, truth = make_campaign(tmp_path, batch_size=6, audit_fraction=0.0)
    first = camp.lease_batch("alice", 4)["items"]
    camp.submit("alice", [(it["id"], truth[it["id"]]) for it in first])
    first += camp.lease_batch("carol", 2)["items"]
    camp.submit("carol", [(first[4]["id"], truth[first[4]["id"]]), (first[5]["id"], None)])  # carol skips one
    camp.wait_idle(60)
    assert camp.current_round() == 1
    # alice is the project's admin; carol is no member: her label travels as a prediction
    out = tmp_path / "tasks.json"
    assert main(["campaign", "export", str(tmp_path / "camp"), "--format", "label-studio", "--out", str(out),
                 "--annotator-map", f"alice={EMAIL}"]) == 0
    assert "carol (1) went out as predictions" in caplog.text
    tasks = json.loads(out.read_text())
    capsys.readouterr()
    assert main(["label-studio", "config", str(tmp_path / "camp")]) == 0
    config = capsys.readouterr().out
    assert '<Choices name="label" toName="text"' in config and '<Choice value="education"/>' in config
    pid = srv.new_project("export walk", config)
    got = srv.post(f"/api/projects/{pid}/import", tasks)
    assert got["task_count"] == len(tasks) == 12 and got["annotation_count"] == 4
    back = {t["data"]["item_id"]: t for t in srv.tasks(pid)}
    assert set(back) == {t["data"]["item_id"] for t in tasks}
    sent = {t["data"]["item_id"]: t for t in tasks}
    for item_id, t in back.items():
        assert t["data"]["text"] == sent[item_id]["data"]["text"]
        model = [p for p in t["predictions"] if p["model_version"] == "datascout-round-1"]
        assert len(model) == 1 and model[0]["result"] == sent[item_id]["predictions"][0]["result"]
        assert model[0]["score"] == pytest.approx(sent[item_id]["predictions"][0]["score"])
    for it in first[:4]:  # alice's labels are annotations completed by the admin
        ann = back[it["id"]]["annotations"]
        assert [(a["completed_by"], a["result"][0]["value"]["choices"]) for a in ann] == [
            (srv.admin_id, [truth[it["id"]]])]
    carol = [p for p in back[first[4]["id"]]["predictions"] if p["model_version"] == "datascout-label-carol"]
    assert carol[0]["result"][0]["value"]["choices"] == [truth[first[4]["id"]]]
    # the export as it was before (completed_by a datascout name) is what Label Studio refused
    bad = [dict(tasks[0], annotations=[{"completed_by": "alice", "result": ls.choice_result("text", "art")}])]
    r = srv.http.post(f"/api/projects/{pid}/import", json=bad)
    assert r.status_code == 400 and "completed_by=alice" in r.text
    # a project whose config names the choices otherwise is refused by the sync, in one line
    other = srv.new_project("other names", config.replace('name="label"', 'name="sentiment"'))
    code = main(["label-studio", "sync", str(tmp_path / "camp"), "--url", srv.url, "--project", str(other),
                 "--token", TOKEN, "--once"])
    assert code == 2


def test_sync_advances_rounds_pushes_each_item_once_and_reads_exports_back(tmp_path, label_studio, capsys):
    srv = label_studio
    camp, truth = make_campaign(tmp_path, batch_size=6, audit_fraction=0.0, review_fraction=0.0)
    d = tmp_path / "camp"
    # no --project: the sync creates the campaign's own with the config, and finds it again
    assert main(["label-studio", "sync", str(d), "--url", srv.url, "--token", TOKEN, "--once"]) == 0
    pid = int(capsys.readouterr().out.split("created Label Studio project ")[1].split()[0])
    tasks = srv.tasks(pid)
    round0 = {it[0] for it in camp.con.execute("SELECT i.id FROM selections s JOIN items i ON i.pos = s.pos "
                                                "WHERE s.round = 0")}
    assert {t["data"]["item_id"] for t in tasks} == round0 and len(tasks) == 6
    bob = srv.post("/api/users", {"email": "bob@example.com", "username": "bob", "password": "bob-pass-123456"})["id"]
    # annotations through the API: the admin answers all, bob two, one answer is cancelled (a skip)
    made = {}
    for k, t in enumerate(tasks):
        item_id = t["data"]["item_id"]
        if k == 0:
            srv.annotate(t["id"], None, cancelled=True)
            made[(item_id, EMAIL)] = None
        else:
            srv.annotate(t["id"], truth[item_id])
            made[(item_id, EMAIL)] = truth[item_id]
        if k in (1, 2):
            srv.annotate(t["id"], truth[item_id], user=bob)
            made[(item_id, "bob@example.com")] = truth[item_id]
    sync_once(d, srv, pid)
    assert labels_by_item(camp, "label-studio") == made  # users by email, the cancelled one a skip
    assert camp.current_round() == 1  # the round was complete: retrained, the next selected
    tasks = srv.tasks(pid)
    ids = [t["data"]["item_id"] for t in tasks]
    selected = {it[0] for it in camp.con.execute("SELECT i.id FROM selections s JOIN items i ON i.pos = s.pos")}
    assert len(ids) == len(set(ids)) == 12 and set(ids) == selected
    new = [t for t in tasks if t["data"]["item_id"] not in round0]
    preds = {r[0]: (camp.classes[r[1]], r[2]) for r in camp.con.execute(
        "SELECT i.id, s.pred_class, s.pred_prob FROM selections s JOIN items i ON i.pos = s.pos WHERE s.round = 1")}
    for t in new:  # the new round's tasks carry the model's guess, model_version = the round
        (p,) = t["predictions"]
        assert p["model_version"] == "datascout-round-1"
        assert p["result"][0]["value"]["choices"] == [preds[t["data"]["item_id"]][0]]
        assert p["score"] == pytest.approx(preds[t["data"]["item_id"]][1])
    # a pass with nothing new adds nothing and pushes nothing
    n_labels = camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    sync_once(d, srv, pid)
    assert camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == n_labels and len(srv.tasks(pid)) == 12
    # a changed answer is a relabel, kept as history
    t0 = next(t for t in tasks if t["data"]["item_id"] == ids[1])
    ann = next(a for a in t0["annotations"] if a["completed_by"] == srv.admin_id)
    other = next(c for c in camp.classes if c != truth[ids[1]])
    r = srv.http.patch(f"/api/annotations/{ann['id']}", json={"result": ls.choice_result("text", other)})
    assert r.status_code == 200, r.text
    sync_once(d, srv, pid)
    assert labels_by_item(camp)[(ids[1], EMAIL)] == other
    made[(ids[1], EMAIL)] = other
    # Label Studio's own exports, read back by item id (never its task id), whatever their names
    for fmt, name in (("JSON", "ls.json"), ("JSON_MIN", "ls-min.txt"), ("CSV", "ls.csv")):
        f = tmp_path / name
        f.write_bytes(srv.http.get(f"/api/projects/{pid}/export", params={"exportType": fmt}).content)
        assert camp.import_labels(f) == 0, fmt  # the synced campaign has them all: nothing twice
        fresh, _ = make_campaign(tmp_path / fmt, batch_size=6, audit_fraction=0.0)
        fresh.import_labels(f)
        got = labels_by_item(fresh, "import")
        want = {(i, f"ls-{srv.admin_id}" if a == EMAIL else f"ls-{bob}"): c for (i, a), c in made.items()}
        if fmt != "JSON":  # JSON-MIN and CSV leave cancelled annotations out
            want = {k: c for k, c in want.items() if c is not None}
        assert got == want, fmt


def test_a_crash_after_label_studio_took_the_tasks_duplicates_none(tmp_path, label_studio):
    """The worst moment: Label Studio created the tasks, the sync died before recording them."""
    from datascout.labelstudio import Client, Sync

    srv = label_studio
    camp, truth = make_campaign(tmp_path, batch_size=6, audit_fraction=0.0)
    pid = srv.new_project("crash walk", ls.label_config(camp.classes, "text"))
    sync = Sync(camp, Client(srv.url, TOKEN), pid)
    sync.connect()
    rows = camp.con.execute("SELECT s.pos, i.id, i.payload FROM selections s JOIN items i ON i.pos = s.pos").fetchall()
    ls.mark_sending(camp, sync.target, [r[0] for r in rows], 0)
    sync.client.import_tasks(pid, [{"data": ls.task_data(r[1], "text", r[2], None)} for r in rows])
    # ... killed here. The restart finds them by item id and posts none again
    sync_once(tmp_path / "camp", srv, pid)
    ids = [t["data"]["item_id"] for t in srv.tasks(pid)]
    assert sorted(ids) == sorted(r[1] for r in rows)
    assert ls.sync_counts(camp, sync.target)["pushed"] == 6


def test_sigkill_of_sync_watch_loses_nothing_and_duplicates_nothing(tmp_path, label_studio):
    srv = label_studio
    camp, truth = make_campaign(tmp_path, batch_size=5, audit_fraction=0.0, review_fraction=0.0)
    d = tmp_path / "camp"
    pid = srv.new_project("kill walk", ls.label_config(camp.classes, "text"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               LABEL_STUDIO_API_KEY=TOKEN, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "datascout", "label-studio", "sync", str(d), "--url", srv.url, "--project", str(pid),
           "--watch", "--interval", "0.2"]
    answered = {}
    logs = []
    for delay in (0.0, 0.4, 0.9, 1.6):
        log = tmp_path / f"watch-{delay}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and "datascout: project" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)  # its first pass is done
            for t in srv.tasks(pid):  # answer what is there: its next pass pulls, selects, pushes ...
                if not t["annotations"] and t["data"]["item_id"] not in answered:
                    srv.annotate(t["id"], truth[t["data"]["item_id"]])
                    answered[t["data"]["item_id"]] = truth[t["data"]["item_id"]]
            time.sleep(delay)  # ... and is killed somewhere in it
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        logs.append(log.read_text())
        assert "Traceback" not in logs[-1], logs[-1]
    assert main(["label-studio", "sync", str(d), "--url", srv.url, "--project", str(pid), "--token", TOKEN,
                 "--once"]) == 0
    ids = [t["data"]["item_id"] for t in srv.tasks(pid)]
    assert len(ids) == len(set(ids)), "a task was pushed twice"
    selected = {r[0] for r in camp.con.execute(
        "SELECT i.id FROM selections s JOIN items i ON i.pos = s.pos WHERE s.round <= ?", (camp.current_round(),))}
    assert set(ids) == selected
    assert labels_by_item(camp, "label-studio") == {(i, EMAIL): c for i, c in answered.items()}, logs
    n_ann = sum(len(t["annotations"]) for t in srv.tasks(pid))
    assert camp.con.execute("SELECT COUNT(*) FROM labels WHERE source = 'label-studio'").fetchone()[0] == n_ann
    assert camp.current_round() >= 1, logs


def test_datascout_as_the_projects_ml_backend_and_webhook(tmp_path, label_studio):
    """Settings -> Model: Label Studio calls datascout's health/setup/predict with Basic auth (the
    token as password); its annotation webhook, given the bearer header, brings labels in at once."""
    from test_campaign_support import Server

    srv = label_studio
    camp, truth = make_campaign(tmp_path, batch_size=6, audit_fraction=0.0, review_fraction=0.0)
    d = tmp_path / "camp"
    pid = srv.new_project("ml walk", ls.label_config(camp.classes, "text"))
    sync_once(d, srv, pid)
    for t in srv.tasks(pid):
        srv.annotate(t["id"], truth[t["data"]["item_id"]])
    sync_once(d, srv, pid)  # round 0 in, round 1 pushed
    assert camp.current_round() == 1
    token = "ds-token-0123456789abcdef"
    ds = Server(d, token=token)
    try:
        ml = {"url": f"{ds.url}/ml", "project": pid, "title": "datascout", "auth_method": "BASIC_AUTH",
              "basic_auth_user": "datascout"}
        r = srv.http.post("/api/ml", json={**ml, "basic_auth_pass": "not-the-token-at-all"})
        assert r.status_code == 400 and "authentication" in r.text  # our server refused LS's health check
        backend = srv.post("/api/ml", {**ml, "basic_auth_pass": token})
        assert backend["state"] == "CO" or backend.get("readable_state") == "Connected", backend
        # predictions on demand for the round-0 tasks (they were pushed before there was a model)
        round0 = [t for t in srv.tasks(pid) if not t["predictions"]]
        assert len(round0) == 6
        r = srv.http.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                          json={"selectedItems": {"all": False, "included": [t["id"] for t in round0]}})
        assert r.status_code == 200, r.text
        direct = httpx.post(f"{ds.url}/ml/predict", headers={"Authorization": f"Bearer {token}"},
                            json={"tasks": [{"data": t["data"]} for t in round0]}, timeout=60).json()["results"]
        back = {t["id"]: t for t in srv.tasks(pid)}
        for t, want in zip(round0, direct):
            (p,) = back[t["id"]]["predictions"]
            assert p["result"] == want["result"] and p["model_version"] == "datascout-round-1"
            assert p["result"][0]["value"]["choices"][0] in camp.classes and 0 < p["score"] <= 1
        # the webhook Label Studio made for the backend, given our bearer token
        hooks = [h for h in srv.get("/api/webhooks", project=pid) if h["url"] == f"{ds.url}/ml/webhook"]
        assert len(hooks) == 1
        r = srv.http.patch(f"/api/webhooks/{hooks[0]['id']}", json={"headers": {"Authorization": f"Bearer {token}"}})
        assert r.status_code == 200, r.text
        task = next(t for t in srv.tasks(pid) if not t["annotations"])
        srv.annotate(task["id"], truth[task["data"]["item_id"]])
        deadline = time.monotonic() + 60
        want = {(task["data"]["item_id"], EMAIL): truth[task["data"]["item_id"]]}
        while time.monotonic() < deadline and not (want.items() <= labels_by_item(camp, "label-studio").items()):
            time.sleep(0.2)
        assert want.items() <= labels_by_item(camp, "label-studio").items(), ds.output()
        n = camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        sync_once(d, srv, pid)  # the sync finds it taken in already: nothing twice
        assert camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == n
    finally:
        ds.stop()


def test_label_studio_shows_the_pre_annotation_in_chromium(tmp_path, label_studio):
    """The task a labeler opens in Label Studio's page (headless Chromium, logged in) comes
    pre-labeled with the model's guess, under its model_version; an image task's inline image loads."""
    import shutil

    from test_browser import DOCS, launch, playwright, watch
    from test_campaign_support import make_image_campaign

    sync_api = playwright()
    srv = label_studio
    camp, truth = make_campaign(tmp_path / "text", batch_size=6, audit_fraction=0.0, review_fraction=0.0)
    d = tmp_path / "text" / "camp"
    pid = srv.new_project("datascout quotes", ls.label_config(camp.classes, "text"))
    sync_once(d, srv, pid)
    for t in srv.tasks(pid):
        srv.annotate(t["id"], truth[t["data"]["item_id"]])
    sync_once(d, srv, pid)
    task = next(t for t in srv.tasks(pid) if t["predictions"])
    guess = task["predictions"][0]["result"][0]["value"]["choices"][0]
    icamp, _, _ = make_image_campaign(tmp_path / "img")
    ipid = srv.new_project("datascout images", ls.label_config(icamp.classes, "image"))
    itasks = json.loads(icamp.export("label-studio"))
    srv.post(f"/api/projects/{ipid}/import", itasks)
    itask = srv.tasks(ipid)[0]
    log = []
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        watch(page, log)
        try:
            page.goto(srv.url + "/user/login/")
            page.fill("input[name=email]", EMAIL)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/user/login" not in u)
            page.goto(f"{srv.url}/projects/{ipid}/data?task={itask['id']}")
            page.wait_for_function("() => [...document.querySelectorAll('img')].some("
                                   "(i) => i.src.startsWith('data:image/png') && i.naturalWidth === 8)")
            page.goto(f"{srv.url}/projects/{pid}/data?task={task['id']}")
            page.get_by_text("datascou", exact=False).first.wait_for()  # the prediction's tab (name shortened)
            box = page.get_by_role("checkbox", name=guess)
            box.wait_for()
            deadline = time.monotonic() + 60
            while not box.is_checked() and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            page.wait_for_timeout(1500)  # let the editor settle for the picture
            assert box.is_checked(), "the model's guess is not pre-selected"
            others = [c for c in camp.classes if c != guess]
            assert not any(page.get_by_role("checkbox", name=c).is_checked() for c in others)
            page.screenshot(path=str(tmp_path / "label-studio.png"))
        except Exception as exc:
            raise AssertionError("browser:\n" + "\n".join(log[-40:])) from exc
        finally:
            browser.close()
    assert (tmp_path / "label-studio.png").stat().st_size > 10_000
    if os.environ.get("DATASCOUT_UPDATE_SCREENSHOT") == "1":  # a test leaves the checkout alone
        shutil.copyfile(tmp_path / "label-studio.png", DOCS / "label-studio.png")
