"""Label Studio's machine-learning backend protocol, answered from a campaign: ``health``,
``setup`` and ``predict`` as label-studio-ml defines them (a project adds datascout under
Settings -> Model and gets the current model's prediction for any task that carries an
``item_id``), and the ``webhook`` its annotations are posted to, so the loop advances without
polling. The web app (:mod:`datascout.server.app`) serves these under ``/ml/``."""

from __future__ import annotations

import threading

import numpy as np

from datascout.campaign import labelstudio as ls


class Predictor:
    """The current model of a campaign: refitted on the resolved labels whenever they change."""

    def __init__(self, camp):
        self.camp = camp
        self._lock = threading.Lock()
        self._key = None
        self._model = None

    def model_version(self) -> str:
        return ls.model_version(max(self.camp.current_round(), 0))

    def _current(self):
        from datascout.models import FittedModel, default_model

        con = self.camp.con
        key = con.execute("SELECT COUNT(*), MAX(label_id) FROM labels").fetchone()
        with self._lock:
            if key != self._key:
                pos, y = self.camp.resolved_labels(con)
                model = None
                if len(set(y.tolist())) >= 2:
                    X, _ = self.camp.embeddings()
                    model = FittedModel(default_model(self.camp.config["random_state"]), len(self.camp.classes))
                    model.fit(np.asarray(X[pos], dtype=np.float32), y)
                self._key, self._model = key, model
            return self._model

    def predict(self, tasks: list) -> list[dict]:
        """One prediction per task, in order: the model's class and its probability, or an empty
        result for a task that names no item of the campaign (or before the model has 2 classes)."""
        version = self.model_version()
        ids = [str((t.get("data") or {}).get(ls.ITEM_ID)) if isinstance(t, dict) and isinstance(t.get("data"), dict)
               and (t.get("data") or {}).get(ls.ITEM_ID) is not None else None for t in tasks]
        known = [i for i in ids if i is not None]
        pos_of = {}
        for chunk in range(0, len(known), 500):
            part = known[chunk:chunk + 500]
            pos_of.update(self.camp.con.execute(
                f"SELECT id, pos FROM items WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        model = self._current() if pos_of else None
        out = [{"result": [], "score": 0.0, "model_version": version} for _ in tasks]
        rows = [(k, pos_of[i]) for k, i in enumerate(ids) if i in pos_of]
        if model is None or not rows:
            return out
        kind = ls.item_kind(self.camp.con)
        X, _ = self.camp.embeddings()
        proba = model.predict_proba(np.asarray(X[np.asarray([p for _, p in rows])], dtype=np.float32))
        for (k, _), pr in zip(rows, proba):
            c = int(pr.argmax())
            out[k] = {"result": ls.choice_result(kind, self.camp.classes[c]), "score": float(pr[c]),
                      "model_version": version}
        return out


def webhook_annotations(camp, payload: dict) -> tuple[str | None, list]:
    """``(target, records)`` of the annotations in a Label Studio webhook (``ANNOTATION_CREATED``,
    ``ANNOTATIONS_CREATED``, ``ANNOTATION_UPDATED``): matched to items by their task's
    ``data.item_id``, to the project the sync pushed the task to. Anything else: ``(None, [])``."""
    if payload.get("action") not in ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"):
        return None, []
    anns, tasks = payload.get("annotation"), payload.get("task")
    anns = anns if isinstance(anns, list) else [anns]
    tasks = tasks if isinstance(tasks, list) else [tasks]
    by_task = {t.get("id"): t for t in tasks if isinstance(t, dict)}
    project = payload.get("project")
    pid = project.get("id") if isinstance(project, dict) else None
    targets = [r[0] for r in camp.con.execute("SELECT DISTINCT target FROM ls_tasks")
               if pid is not None and r[0].endswith(f"#{pid}")]
    if len(targets) != 1:
        return None, []  # not a project this campaign syncs with (or not told which)
    target = targets[0]
    server = target.rsplit("#", 1)[0]
    users, aliases = ls.known_users(camp, server), ls.member_aliases(camp)
    records = []
    for ann in anns:
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            continue
        task = by_task.get(ann.get("task"))
        data = task.get("data") if isinstance(task, dict) else None
        item_id = data.get(ls.ITEM_ID) if isinstance(data, dict) else None
        if item_id is None:
            continue
        row = camp.con.execute("SELECT pos FROM items WHERE id = ?", (str(item_id),)).fetchone()
        has, label = ls.annotation_answer(ann)
        who = ls.annotator_name(ann.get("completed_by"), users, aliases)
        if row is None or not has or not who or (label is not None and label not in camp.classes):
            continue
        records.append({"annotation_id": ann["id"], "updated": str(ann.get("updated_at") or ""), "pos": row[0],
                        "annotator": who, "label": label})
    return target, records


def take_webhook(camp, payload: dict) -> dict:
    """Take in a webhook's annotations (none twice: the sync's own records) and let the round
    advance; returns ``{"accepted", "selecting"}``."""
    target, records = webhook_annotations(camp, payload)
    added = ls.take_annotations(camp, target, records) if records else 0
    selecting = camp.maybe_advance() if added else False
    return {"accepted": added, "selecting": bool(selecting or camp.selecting)}
