"""Label Studio's side of the campaign: its labeling config, its task JSON (what we export and
push), what it exports (JSON, JSON-MIN, CSV) read back, and the sync state it shares with the
campaign database (which item is which task, which annotations were taken in, members' emails).

Identity: every task carries the campaign's item id as ``data.item_id``; everything read back is
matched by that id, never by Label Studio's task id. The labeling config and the tasks name the
one ``<Choices>`` ``label`` pointed at ``text`` or ``image``, as :func:`label_config` prints it:
a project with other names would import the tasks and silently show no pre-annotation.

Images: Label Studio loads an image in the annotator's browser from ``data.image``. By default it
is the image itself, inline (``data:image/png;base64,...``): nothing to host, no token to give
the browser, right for the small images active learning usually labels (a 28x28 PNG is ~1 KB; a
large photo makes a large task). ``image_base_url`` instead names where the files are served
(Label Studio's local-files storage, a bucket, any static server): the task holds that URL plus
the image's path relative to the folder that holds all the campaign's images.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from datascout.exceptions import ValidationError

log = logging.getLogger("datascout.campaign")

FROM_NAME = "label"        # the <Choices> name, and the column LS's CSV / JSON-MIN exports use for it
ITEM_ID = "item_id"        # the datascout id in every task's data
TO_NAME = {"text": "text", "image": "image"}
ANNOTATOR_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


def model_version(rnd: int) -> str:
    """The ``model_version`` of the predictions made by the model that selected round ``rnd``."""
    return f"datascout-round-{rnd}"


def item_kind(con) -> str:
    """The one kind (``text`` or ``image``) of the campaign's items; a mix has no single config."""
    kinds = [r[0] for r in con.execute("SELECT DISTINCT kind FROM items")]
    if len(kinds) != 1:
        raise ValidationError(f"a Label Studio project shows one kind of item but this campaign holds {kinds}")
    return kinds[0]


def label_config(classes, kind: str) -> str:
    """The labeling config whose ``<Choices>`` the exported tasks and predictions name."""
    to = TO_NAME[kind]
    obj = (f'  <Text name="{to}" value="${to}"/>' if kind == "text"
           else f'  <Image name="{to}" value="${to}" zoom="true"/>')
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n{obj}\n  <Choices name="{FROM_NAME}" toName="{to}" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def choice_result(kind: str, label: str) -> list:
    return [{"from_name": FROM_NAME, "to_name": TO_NAME[kind], "type": "choices", "value": {"choices": [label]}}]


class ImageValues:
    """``data.image`` of each image item: inline (a ``data:`` URL of the raster file), or
    ``base_url`` + its path relative to the folder that holds every image of the campaign (the
    same for the export and each push of the sync)."""

    def __init__(self, con, base_url: str | None = None):
        self.base_url = base_url
        self.root = None
        if base_url is not None:
            parents = {str(Path(r[0]).parent) for r in con.execute("SELECT payload FROM items WHERE kind = 'image'")}
            self.root = Path(os.path.commonpath(sorted(parents))) if parents else None

    def __call__(self, item_id: str, path: str) -> str:
        from datascout.io import raster_media_type

        if self.base_url is not None:
            rel = Path(path).relative_to(self.root).as_posix()
            return self.base_url + quote(rel)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ValidationError(f"the image of item {item_id!r} cannot be read ({exc.strerror}): "
                                  "restore it, or give the URL the images are served at") from None
        media = raster_media_type(data[:16])
        if media is None:
            raise ValidationError(f"the file of item {item_id!r} is not a PNG, JPEG, GIF or WebP image")
        return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


def task_data(item_id: str, kind: str, payload: str, images: ImageValues | None) -> dict:
    return {TO_NAME[kind]: payload if kind == "text" else images(item_id, payload), ITEM_ID: item_id}


def parse_annotator_map(text) -> dict:
    """``alice=alice@example.com,bob=3`` (or a dict) -> ``{"alice": "alice@example.com", "bob": 3}``:
    each datascout annotator's Label Studio member, by email or user id."""
    if text is None:
        return {}
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            name, eq, member = part.partition("=")
            if not eq or not name.strip() or not member.strip():
                raise ValidationError(f"expected annotator=EMAIL_OR_ID pairs separated by commas but got {part!r}")
            pairs.append((name.strip(), member.strip()))
    out = {}
    for name, member in pairs:
        member = str(member)
        out[str(name)] = int(member) if member.isdigit() else member
        if not member.isdigit() and "@" not in member:
            raise ValidationError(f"annotator {name!r} must map to a Label Studio member's email or user id "
                                  f"but maps to {member!r}")
    return out


def export_tasks(camp, *, annotators=None, image_base_url: str | None = None) -> list:
    """Label Studio tasks for every selected or labeled item: ``data`` (the text or the image,
    and ``item_id``), the current model's prediction (``model_version`` = the current round) and
    each annotator's answer: an annotation where ``annotators`` maps the annotator to a member of
    the project (email or user id: Label Studio refuses any other ``completed_by``), else a
    prediction of model_version ``datascout-label-NAME`` (and a note says so)."""
    from datascout.models import FittedModel, default_model

    con = camp.con
    classes = camp.classes
    members = parse_annotator_map(annotators)
    if members:  # remembered, so that what comes back from these members is theirs again
        known = camp.config.get("label_studio_members", {})
        if any(known.get(k) != v for k, v in members.items()):
            camp._set_meta({"label_studio_members": {**known, **members}})
    rows = con.execute("""SELECT pos, id, kind, payload FROM items
                          WHERE pos IN (SELECT pos FROM selections UNION SELECT pos FROM labels)
                          ORDER BY pos""").fetchall()
    if not rows:
        return []
    kind = item_kind(con)
    images = ImageValues(con, image_base_url) if kind == "image" else None
    pos, y = camp.resolved_labels(con)
    proba = None
    if len(set(y.tolist())) >= 2:
        X, _ = camp.embeddings()
        model = FittedModel(default_model(0), len(classes)).fit(np.asarray(X[pos], dtype=np.float32), y)
        proba = model.predict_proba(np.asarray(X[np.asarray([r[0] for r in rows])], dtype=np.float32))
    answers: dict[int, list] = {}
    for p, who, c in con.execute(
            """SELECT l.pos, l.annotator, l.class FROM labels l
               JOIN (SELECT MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last ON l.label_id = last.m
               ORDER BY l.pos, l.label_id"""):
        answers.setdefault(p, []).append((who, c))
    version = model_version(camp.current_round())
    as_predictions: dict[str, int] = {}
    tasks = []
    for i, (p, item_id, _, payload) in enumerate(rows):
        task = {"data": task_data(item_id, kind, payload, images), "annotations": [], "predictions": []}
        if proba is not None:
            c = int(proba[i].argmax())
            task["predictions"].append({"model_version": version, "score": float(proba[i, c]),
                                        "result": choice_result(kind, classes[c])})
        for who, c in answers.get(p, []):
            member = members.get(who)
            if member is not None:
                task["annotations"].append({
                    "completed_by": member if isinstance(member, int) else {"email": member},
                    "result": [] if c is None else choice_result(kind, classes[c]), "was_cancelled": c is None})
            elif c is not None:
                as_predictions[who] = as_predictions.get(who, 0) + 1
                task["predictions"].append({"model_version": f"datascout-label-{who}",
                                            "result": choice_result(kind, classes[c])})
        tasks.append(task)
    if as_predictions:
        names = ", ".join(f"{w} ({n})" for w, n in sorted(as_predictions.items()))
        log.warning("datascout: note: the labels of %s went out as predictions (model_version "
                    "datascout-label-NAME), not annotations: Label Studio takes annotations only from members "
                    "of the project; map each annotator to a member's email or user id to send them as "
                    "annotations", names)
    return tasks


# -- what Label Studio exports, read back --------------------------------------------------------

def sniff(path) -> str | None:
    """Which of Label Studio's exports ``path`` holds, by its content: ``json`` (tasks with
    ``data`` and ``annotations``), ``json-min`` (one flat object per annotation, with
    ``item_id``) or ``csv`` (columns ``item_id`` and ``annotation_id``); ``None`` for anything else."""
    from datascout.io import open_text

    with open_text(path) as fh:
        head = fh.read(1 << 16)
    start = head.lstrip()[:1]
    if start == "[":
        try:
            with open_text(path) as fh:
                obj = json.load(fh)
        except json.JSONDecodeError:
            return None
        if isinstance(obj, list) and obj and all(isinstance(t, dict) for t in obj):
            if all("data" in t for t in obj):
                return "json"
            if all(ITEM_ID in t for t in obj):
                return "json-min"
        return None
    if start in ("{", ""):
        return None
    header = next(csv.reader(io.StringIO(head), skipinitialspace=True), [])
    return "csv" if {ITEM_ID, "annotation_id"} <= {h.strip() for h in header} else None


def annotator_name(who, users: dict, aliases: dict | None = None) -> str | None:
    """A Label Studio user (an id, an ``{"email"}`` object, an email or a digit string) as a
    campaign annotator: the annotator an export mapped to that member (``aliases``: email or id
    -> name), else the member's email where known (``users``: id -> email), else ``ls-ID``."""
    aliases = aliases or {}
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if isinstance(who, str) and who.strip().isdigit():
        who = int(who.strip())
    if isinstance(who, int) and not isinstance(who, bool):
        who = aliases.get(who) or users.get(who, f"ls-{who}")
    if not isinstance(who, str) or not who:
        return None
    who = aliases.get(who, who)
    clean = "".join(ch if ch in ANNOTATOR_CHARS else "_" for ch in who)[:64]
    return clean


def annotation_answer(ann: dict):
    """``(found, label)`` of one Label Studio annotation: a cancelled one is a skip (``True,
    None``); one without a ``choices`` result says nothing (``False, None``)."""
    if ann.get("was_cancelled"):
        return True, None
    for r in ann.get("result") or []:
        if isinstance(r, dict) and r.get("type") == "choices" and isinstance(r.get("value"), dict):
            choices = r["value"].get("choices")
            if isinstance(choices, list) and choices:
                return True, choices[0]
    return False, None


def read_export(path, users: dict | None = None, aliases: dict | None = None) -> tuple[str, list]:
    """``(format, records)`` of a Label Studio export: records ``{"item_id", "label" (None =
    skipped), "annotator", "annotation_id", "updated"}`` in the order the answers were given. JSON
    carries cancelled annotations (skips); JSON-MIN and CSV leave them out (Label Studio's own
    converter does)."""
    from datascout.io import open_text

    path = Path(path)
    users = users or {}
    fmt = sniff(path)
    records = []
    if fmt == "json":
        with open_text(path) as fh:
            tasks = json.load(fh)
        for n, t in enumerate(tasks, 1):
            data = t.get("data")
            item_id = data.get(ITEM_ID, data.get("id")) if isinstance(data, dict) else None
            if item_id is None:
                raise ValidationError(f"{path.name}: task {n} has no data.{ITEM_ID}: expected tasks exported "
                                      "from a project fed by datascout")
            annotations = t.get("annotations") or []
            if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
                raise ValidationError(f"{path.name}: task {n}'s annotations must be a list of objects "
                                      f"but is {annotations!r:.60}")
            for ann in annotations:
                found, label = annotation_answer(ann)
                who = annotator_name(ann.get("completed_by"), users, aliases)
                if found:
                    records.append({"item_id": str(item_id), "label": label, "annotator": who,
                                    "annotation_id": ann.get("id"), "updated": ann.get("updated_at") or ""})
    elif fmt in ("json-min", "csv"):
        if fmt == "json-min":
            with open_text(path) as fh:
                rows = json.load(fh)
        else:
            with open_text(path) as fh:
                rows = list(csv.DictReader(fh, skipinitialspace=True))
        for n, r in enumerate(rows, 1):
            label = r.get(FROM_NAME)
            if isinstance(label, dict):  # several choices: {"choices": [...]}
                label = (label.get("choices") or [None])[0]
            if label in (None, ""):
                continue  # no answer in this row (a task without annotations)
            if not r.get(ITEM_ID):
                raise ValidationError(f"{path.name}: row {n} has no {ITEM_ID}")
            records.append({"item_id": str(r[ITEM_ID]), "label": label,
                            "annotator": annotator_name(r.get("annotator"), users, aliases),
                            "annotation_id": r.get("annotation_id"), "updated": r.get("updated_at") or ""})
    else:
        raise ValidationError(f"{path.name} is not a Label Studio export (JSON, JSON-MIN or CSV with {ITEM_ID})")
    records.sort(key=lambda r: r["updated"])  # the latest answer of an annotator wins
    return fmt, records


# -- the sync state ------------------------------------------------------------------------------

def target(url: str, project: int) -> str:
    return f"{url.rstrip('/')}#{int(project)}"


def member_aliases(camp) -> dict:
    """Member email or user id -> the annotator an export mapped to it."""
    return {v: k for k, v in camp.config.get("label_studio_members", {}).items()}


def known_users(camp, server: str | None = None) -> dict:
    """Label Studio user id -> email, as the sync recorded them (of ``server``, or of every server
    where the ids agree)."""
    rows = camp.con.execute("SELECT server, user_id, email FROM ls_users").fetchall()
    out: dict[int, str] = {}
    clash = set()
    for srv, uid, email in rows:
        if server is not None and srv != server.rstrip("/"):
            continue
        if uid in out and out[uid] != email:
            clash.add(uid)
        out[uid] = email
    return {k: v for k, v in out.items() if k not in clash}


def record_users(camp, server: str, users) -> None:
    with camp._write() as con:
        con.executemany("INSERT OR REPLACE INTO ls_users VALUES (?, ?, ?)",
                        [(server.rstrip("/"), int(u["id"]), u["email"]) for u in users
                         if isinstance(u, dict) and u.get("email") and isinstance(u.get("id"), int)])


def task_map(camp, tgt: str) -> dict:
    """``{pos: (task_id or None, state)}`` of the items pushed (or being pushed) to ``tgt``."""
    return {p: (t, s) for p, t, s in camp.con.execute(
        "SELECT pos, task_id, state FROM ls_tasks WHERE target = ?", (tgt,))}


def mark_sending(camp, tgt: str, positions, rnd: int) -> None:
    """Record, before the tasks are posted, that these items are being pushed: a restart finds
    them and looks for their tasks in the project before posting again."""
    now = time.time()
    with camp._write() as con:
        con.executemany("INSERT OR IGNORE INTO ls_tasks VALUES (?, ?, NULL, ?, 'sending', ?)",
                        [(tgt, int(p), int(rnd), now) for p in positions])


def mark_pushed(camp, tgt: str, found: dict) -> int:
    """Record the tasks the project holds (``{pos: task_id}``, found by their ``item_id``):
    'sending' rows become 'pushed'; tasks nobody recorded (imported by hand) are recorded too.
    An item's first recorded task stays its task. Returns how many rows changed."""
    if not found:
        return 0
    now = time.time()
    with camp._write() as con:
        before = con.total_changes
        rnd = dict(con.execute("SELECT pos, round FROM selections").fetchall())
        con.executemany("UPDATE ls_tasks SET task_id = ?, state = 'pushed' WHERE target = ? AND pos = ? "
                        "AND state = 'sending'", [(int(t), tgt, int(p)) for p, t in found.items()])
        con.executemany("INSERT OR IGNORE INTO ls_tasks VALUES (?, ?, ?, ?, 'pushed', ?)",
                        [(tgt, int(p), int(t), rnd.get(p), now) for p, t in found.items()])
        return con.total_changes - before


def take_annotations(camp, tgt: str, records) -> int:
    """Store Label Studio annotations (``{"annotation_id", "updated", "pos", "annotator",
    "label"}``) as labels, each in the same transaction as the record that it was taken in: one
    seen before (same id, same ``updated_at``) adds nothing; one changed since adds the new answer
    (a relabel, kept as history); a cancelled one is a skip. An answer the annotator already gave
    (e.g. from a file import) is recorded as seen and not added twice. Returns the labels added."""
    if not records:
        return 0
    rows = []
    for r in records:
        who = r["annotator"]
        if not isinstance(who, str) or not (1 <= len(who) <= 64) or not set(who) <= ANNOTATOR_CHARS:
            raise ValidationError(f"annotator must be 1-64 characters of letters, digits, _-.@ but is {who!r}")
        c = None if r["label"] is None else camp.class_id(r["label"])
        rows.append((int(r["annotation_id"]), str(r["updated"]), int(r["pos"]), r["annotator"], c))
    now = time.time()
    added = 0
    with camp._write() as con:
        seen = {a: u for a, u in con.execute("SELECT annotation_id, updated FROM ls_annotations WHERE target = ?",
                                             (tgt,))}
        rnd = dict(con.execute("SELECT pos, round FROM selections").fetchall())
        for aid, updated, p, who, c in rows:
            if seen.get(aid) == updated:
                continue
            current = con.execute(
                "SELECT class FROM labels WHERE pos = ? AND annotator = ? ORDER BY label_id DESC LIMIT 1",
                (p, who)).fetchone()
            if current is None or current[0] != c:
                con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (who, now))
                con.execute("INSERT INTO labels (pos, class, annotator, time, round, source) "
                            "VALUES (?, ?, ?, ?, ?, 'label-studio')", (p, c, who, now, rnd.get(p)))
                added += 1
            con.execute("INSERT OR REPLACE INTO ls_annotations VALUES (?, ?, ?, ?, ?, ?)",
                        (tgt, aid, updated, p, who, c))
            seen[aid] = updated
    return added


def sync_counts(camp, tgt: str) -> dict:
    con = camp.con
    tasks = dict(con.execute("SELECT state, COUNT(*) FROM ls_tasks WHERE target = ? GROUP BY state", (tgt,)))
    last = con.execute("SELECT MAX(annotation_id), MAX(updated), COUNT(*) FROM ls_annotations WHERE target = ?",
                       (tgt,)).fetchone()
    return {"pushed": int(tasks.get("pushed", 0)), "sending": int(tasks.get("sending", 0)),
            "annotations": int(last[2]), "last_annotation": last[0], "last_updated": last[1]}
