"""The live loop with a Label Studio project: push the current round's items as tasks with the
model's predictions, pull every new annotation into the campaign, and when a round is complete
let the campaign retrain and select the next, and push it.

Safe to kill at any moment: the state is in the campaign database. Before tasks are posted their
items are recorded as ``sending``; every pass first lists the project's tasks and records each
item it finds there (by ``data.item_id``), so a restart after a kill between Label Studio taking
the tasks and us recording them finds them and posts nothing twice; items still ``sending`` and
not in the project are posted again. Each annotation is stored in the same transaction as the
record that it was taken in, so none is lost and none counted twice.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from datascout.campaign import labelstudio as ls
from datascout.exceptions import DatascoutError, ValidationError
from datascout.labelstudio.client import Client, LabelStudioError

log = logging.getLogger("datascout.labelstudio")


def project_title(camp) -> str:
    """The title of the project the sync creates for a campaign (found again by it on a restart)."""
    return f"datascout {camp.directory.resolve().name}"[:50]


def check_config(config: str, kind: str) -> None:
    """A project's labeling config must have the ``<Choices>`` our tasks and predictions name."""
    to = ls.TO_NAME[kind]
    tags = re.findall(r"<Choices\b[^>]*>", config or "")
    ok = any(re.search(rf'\bname="{ls.FROM_NAME}"', t) and re.search(rf'\btoName="{to}"', t) for t in tags)
    if not ok:
        raise ValidationError(f'the project\'s labeling config has no <Choices name="{ls.FROM_NAME}" toName="{to}">: '
                              "its tasks would show no pre-annotation; set it to what "
                              "'datascout label-studio config' prints")


class Sync:
    """One campaign and one Label Studio project (``project=None``: the campaign's own, found by
    its title or created with the matching config). ``image_base_url``: where image items are
    served (see :class:`datascout.campaign.labelstudio.ImageValues`; default: inline)."""

    def __init__(self, camp, client: Client, project: int | None = None, *, image_base_url: str | None = None,
                 out=None):
        self.camp = camp
        self.image_base_url = image_base_url
        self.client = client
        self.project = project
        self.out = out or sys.stdout
        self.target: str | None = None

    def connect(self) -> int:
        """Check the project (or find or create the campaign's own) and its config; returns its id."""
        kind = ls.item_kind(self.camp.con)
        if self.project is None:
            title = project_title(self.camp)
            found = self.client.find_projects(title)
            if found:
                self.project = int(min(p["id"] for p in found))
            else:
                config = ls.label_config(self.camp.classes, kind)
                self.project = int(self.client.create_project(title, config)["id"])
                print(f"datascout: created Label Studio project {self.project} ({title!r})", file=self.out, flush=True)
        info = self.client.project(self.project)
        check_config(info.get("label_config", ""), kind)
        self.target = ls.target(self.client.url, self.project)
        return self.project

    # -- one pass -------------------------------------------------------------------------------

    def scan(self) -> tuple[dict, list, int]:
        """The project's tasks: ``({pos: task_id}, annotation records, tasks of items not in the
        campaign)``, matched by ``data.item_id``; an item's first task is its task."""
        users = ls.known_users(self.camp, self.client.url)
        aliases = ls.member_aliases(self.camp)
        tasks = list(self.client.tasks(self.project))
        ids = sorted({str((t.get("data") or {}).get(ls.ITEM_ID)) for t in tasks
                      if (t.get("data") or {}).get(ls.ITEM_ID) is not None})
        pos_of = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            pos_of.update(self.camp.con.execute(
                f"SELECT id, pos FROM items WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        found, records, foreign = {}, [], 0
        for t in sorted(tasks, key=lambda t: t["id"]):
            item_id = (t.get("data") or {}).get(ls.ITEM_ID)
            p = pos_of.get(str(item_id)) if item_id is not None else None
            if p is None:
                foreign += 1
                continue
            found.setdefault(p, t["id"])
            for ann in t.get("annotations") or []:
                has, label = ls.annotation_answer(ann)
                who = ls.annotator_name(ann.get("completed_by"), users, aliases)
                if has and who:
                    records.append({"annotation_id": ann["id"], "updated": ann.get("updated_at") or "",
                                    "pos": p, "annotator": who, "label": label})
        records.sort(key=lambda r: (r["updated"], r["annotation_id"]))
        return found, records, foreign

    def pull(self) -> int:
        """Record the project's tasks and take in its new annotations; returns labels added."""
        ls.record_users(self.camp, self.client.url, self.client.users())
        found, records, foreign = self.scan()
        ls.mark_pushed(self.camp, self.target, found)
        if foreign:
            log.info("%d tasks of project %s name no item of this campaign", foreign, self.project)
        return ls.take_annotations(self.camp, self.target, records)

    def push(self) -> int:
        """Post the current round's items that the project does not hold yet; returns how many."""
        camp = self.camp
        rnd = camp.current_round()
        have = ls.task_map(camp, self.target)
        rows = camp.con.execute(
            """SELECT s.pos, i.id, i.kind, i.payload, s.pred_class, s.pred_prob FROM selections s
               JOIN items i ON i.pos = s.pos WHERE s.round = ? ORDER BY s.rank""", (rnd,)).fetchall()
        todo = [r for r in rows if have.get(r[0], (None, "sending"))[1] != "pushed"]
        if not todo:
            return 0
        kind = ls.item_kind(camp.con)
        images = ls.ImageValues(camp.con, self.image_base_url) if kind == "image" else None
        tasks = []
        for p, item_id, _, payload, pred, prob in todo:
            task = {"data": ls.task_data(item_id, kind, payload, images)}
            if pred is not None:
                task["predictions"] = [{"model_version": ls.model_version(rnd), "score": float(prob),
                                        "result": ls.choice_result(kind, camp.classes[pred])}]
            tasks.append(task)
        ls.mark_sending(camp, self.target, [r[0] for r in todo], rnd)
        self.client.import_tasks(self.project, tasks)
        if any("predictions" in t for t in tasks):  # the project pre-labels with this round's model
            self.client.update_project(self.project, {"model_version": ls.model_version(rnd)})
        found, _, _ = self.scan()
        ls.mark_pushed(camp, self.target, found)
        missing = [r[1] for r in todo if r[0] not in found]
        if missing:
            raise LabelStudioError(f"Label Studio took the tasks but the project does not list {len(missing)} of them "
                                   f"(first: {missing[0]!r})")
        return len(todo)

    def run_once(self) -> dict:
        """One pass: pull, advance the campaign when its round is complete, push. Returns what it did."""
        if self.target is None:
            self.connect()
        before = self.camp.current_round()
        added = self.pull()
        advanced = False
        if added:
            try:
                advanced = self.camp.maybe_advance(background=False)
            except DatascoutError as exc:  # the labels are in; the next round can wait
                print(f"datascout: note: the next round was not selected: {exc}", file=self.out, flush=True)
        pushed = self.push()
        prog = self.camp.round_progress()
        summary = {"project": self.project, "labels_added": added, "round_before": before,
                   "round": prog["round"], "selected": prog["selected"], "done": prog["done"],
                   "advanced": advanced, "pushed": pushed, "exhausted": self.camp.exhausted}
        print(f"datascout: project {self.project}: {added} new labels, round {prog['round']} "
              f"{prog['done']}/{prog['selected']} answered"
              + (f" (round {before} complete: round {prog['round']} selected)" if prog["round"] != before else "")
              + f", {pushed} tasks pushed" + ("; the campaign is complete" if summary["exhausted"] else ""),
              file=self.out, flush=True)
        return summary

    def watch(self, interval: float = 5.0, passes: int | None = None) -> None:
        """Repeat :meth:`run_once` every ``interval`` seconds (``passes`` times, or until stopped);
        Label Studio down or answering an error is one line and a retry."""
        n = 0
        while passes is None or n < passes:
            try:
                self.run_once()
            except LabelStudioError as exc:
                print(f"datascout: {exc}; retrying in {interval:g} s", file=self.out, flush=True)
            n += 1
            if passes is None or n < passes:
                time.sleep(interval)
