"""Import and export in the formats people use (CSV, JSONL, Label Studio task JSON), and the
campaign's statistics."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from datascout.exceptions import ValidationError
from datascout.io import iter_jsonl, open_text

# the one table of export formats: name -> (what it holds, media type, file extension); the CLI,
# the server and the docs read it
EXPORT_FORMATS = {
    "csv": ("CSV: id, resolved label, answers, agreement", "text/csv", "csv"),
    "jsonl": ("JSON Lines: the resolved label and every annotator's answer", "application/x-ndjson", "jsonl"),
    "label-studio": ("Label Studio tasks, with the model's predictions", "application/json", "json"),
}


def _latest_answers(con):
    """Latest answer of each annotator for each item: rows (pos, id, annotator, class, time, source)."""
    return con.execute(
        """SELECT l.pos, i.id, l.annotator, l.class, l.time, l.source FROM labels l
           JOIN (SELECT MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last ON l.label_id = last.m
           JOIN items i ON i.pos = l.pos ORDER BY l.pos, l.label_id""").fetchall()


def _content_kind(path: Path) -> str:
    """What a labels file holds, by its content (the name's extension is only a hint):
    ``label-studio`` (any of Label Studio's exports), ``jsonl`` or ``csv``."""
    from datascout.campaign.labelstudio import sniff

    if sniff(path) is not None:
        return "label-studio"
    with open_text(path) as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        return "label-studio"  # a JSON list: read as Label Studio tasks (which names what is wrong)
    if head.startswith("{"):
        return "jsonl"
    return "csv"


def is_resolved_export(path) -> bool:
    """Whether ``path`` is datascout's CSV export: one resolved label per item (columns
    ``n_answers`` and ``agreement``), not any annotator's own answers."""
    path = Path(path)
    if not path.is_file() or _content_kind(path) != "csv":
        return False
    with open_text(path) as fh:
        header = next(csv.reader(fh, skipinitialspace=True), [])
    return {"id", "label", "n_answers", "agreement"} <= {h.strip() for h in header}


def label_file_kind(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected a labels file at {str(path)!r} but none exists")
    return _content_kind(path)


def read_label_file(path, *, users: dict | None = None, aliases: dict | None = None) -> list[tuple]:
    """``[(item id, class name or None, annotator or None)]`` from CSV (columns ``id``, ``label``,
    optional ``annotator``), JSONL (``{"id", "label"}``) or any of Label Studio's exports (JSON,
    JSON-MIN, CSV: matched by ``item_id``, never by its task id; a cancelled annotation is a row
    with label ``None``; ``users`` maps its user ids to emails, ``aliases`` members to annotators). The format is told by the content,
    whatever the file is named."""
    from datascout.campaign.labelstudio import read_export

    path = Path(path)
    kind = label_file_kind(path)
    rows = []
    if kind == "label-studio":
        try:
            _, records = read_export(path, users, aliases)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{path.name}: expected Label Studio task JSON: {exc.msg}") from None
        rows = [(r["item_id"], r["label"], r["annotator"]) for r in records]
    elif kind == "csv":
        with open_text(path) as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            if reader.fieldnames is None or not {"id", "label"} <= set(reader.fieldnames):
                raise ValidationError(f"{path.name} must have columns id and label but has "
                                      f"{reader.fieldnames or 'no header'}")
            for r in reader:
                lab = r["label"]
                rows.append((r["id"], lab if lab != "" else None, r.get("annotator") or None))
    else:
        for lineno, obj in iter_jsonl(path):
            if isinstance(obj, dict) and "id" in obj and isinstance(obj.get("answers"), list):
                # datascout's own JSONL export: each annotator's answer, not the resolved label
                for a in obj["answers"]:
                    if not isinstance(a, dict) or "label" not in a:
                        raise ValidationError(f"{path.name} line {lineno}: expected answers of {{annotator, label}}")
                    if a["label"] is not None:
                        rows.append((str(obj["id"]), a["label"], a.get("annotator")))
                continue
            if not isinstance(obj, dict) or "id" not in obj or "label" not in obj:
                raise ValidationError(f"{path.name} line {lineno}: expected an object with id and label")
            rows.append((str(obj["id"]), obj["label"], obj.get("annotator")))
    for r in rows:
        if r[1] is not None and not isinstance(r[1], str):
            raise ValidationError(f"{path.name}: label of item {r[0]!r} must be a class name but is {r[1]!r}")
    if not rows:
        raise ValidationError(f"{path.name} holds no labels" + (
            " (Label Studio predictions are not labels)" if kind == "label-studio" else ""))
    if kind == "label-studio":
        return rows  # in the order they were given: an annotator's latest answer wins
    given: dict = {}
    for item_id, label, who in rows:  # one answer per item and annotator in one file
        key = (str(item_id), who)
        if key in given and given[key] != label:
            raise ValidationError(f"{path.name} gives item {item_id!r} two different labels "
                                  f"({given[key]!r} and {label!r}){'' if who is None else ' by ' + repr(who)}: "
                                  "expected one label per item and annotator")
        given[key] = label
    return rows


def export(camp, fmt: str, *, annotators=None, image_base_url: str | None = None) -> str:
    """The campaign's labels in ``fmt``; for ``label-studio``, ``annotators`` maps annotators to
    project members and ``image_base_url`` says where images are served (see
    :func:`datascout.campaign.labelstudio.export_tasks`)."""
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "label-studio":
        from datascout.campaign.labelstudio import export_tasks

        return json.dumps(export_tasks(camp, annotators=annotators, image_base_url=image_base_url), indent=1)
    con = camp.con
    classes = camp.classes
    pos, y = camp.resolved_labels(con)
    resolved = dict(zip(pos.tolist(), y.tolist()))
    answers: dict[int, list] = {}
    for p, item_id, who, c, t, src in _latest_answers(con):
        answers.setdefault(p, []).append({"annotator": who, "label": None if c is None else classes[c],
                                          "time": t, "source": src})
    ids = dict(con.execute("SELECT pos, id FROM items WHERE pos IN (SELECT pos FROM labels)").fetchall())
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "label", "n_answers", "agreement"])
        for p in sorted(resolved):
            got = [a["label"] for a in answers[p] if a["label"] is not None]
            w.writerow([ids[p], classes[resolved[p]], len(got), f"{got.count(classes[resolved[p]]) / len(got):.3f}"])
        return buf.getvalue()
    return "".join(json.dumps({"id": ids[p], "label": classes[resolved[p]], "answers": answers[p]}) + "\n"
                   for p in sorted(resolved))


def stats(camp) -> dict:
    con = camp.con
    classes = camp.classes
    cfg = camp.config
    pos, y = camp.resolved_labels(con)
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), np.int64)
    total, skips, items_answered = con.execute(
        "SELECT COUNT(*), COALESCE(SUM(class IS NULL), 0), COUNT(DISTINCT pos) FROM labels").fetchone()
    relabels = con.execute("""SELECT COALESCE(SUM(n - 1), 0) FROM
                              (SELECT COUNT(*) AS n FROM labels GROUP BY pos, annotator)""").fetchone()[0]
    latest = [r for r in _latest_answers(con) if r[3] is not None]
    by_item: dict[str, dict] = {}
    for p, item_id, who, c, t, src in latest:
        by_item.setdefault(item_id, {})[who] = classes[c]
    disagreements = [{"id": i, "answers": a} for i, a in by_item.items() if len(set(a.values())) > 1]
    annotators = [{"name": n, "answers": int(a), "skips": int(s), "last": t} for n, a, s, t in con.execute(
        """SELECT annotator, SUM(class IS NOT NULL), SUM(class IS NULL), MAX(time) FROM labels
           GROUP BY annotator ORDER BY annotator""")]
    rounds = []
    for r, strategy, settings, metrics, created in con.execute(
            "SELECT round, strategy, settings, metrics, created FROM rounds ORDER BY round"):
        m = json.loads(metrics)
        prog = camp.round_progress(r, con)
        labeled_in_round = con.execute("SELECT COUNT(DISTINCT pos) FROM labels WHERE round = ? AND class IS NOT NULL",
                                       (r,)).fetchone()[0]
        positives = None
        if cfg["positive_class"] is not None:
            positives = con.execute(
                """SELECT COUNT(DISTINCT l.pos) FROM labels l WHERE l.round = ? AND l.class = 1""", (r,)).fetchone()[0]
        rounds.append({"round": r, "strategy": strategy, "settings": json.loads(settings),
                       "selected": prog["selected"], "answered": prog["done"], "labeled": int(labeled_in_round),
                       "positives": positives, "labels_before": m["n_labels"], "cv": m["cv"],
                       "audit": m.get("audit"), "created": created})
    curve = [{"n_labels": r["labels_before"], **(r["cv"] or {}),
              **({"audit": r["audit"]} if r["audit"] and r["audit"].get("value") is not None else {})}
             for r in rounds if r["cv"] or (r["audit"] and r["audit"].get("value") is not None)]
    now = time.time()
    leases = [{"annotator": a, "items": int(k), "until": float(u)} for a, k, u in con.execute(
        """SELECT annotator, COUNT(*), MAX(expires) FROM leases WHERE done = 0 AND expires > ?
           AND pos NOT IN (SELECT pos FROM labels l WHERE l.annotator = leases.annotator)
           GROUP BY annotator ORDER BY annotator""", (now,))]
    audit = next((r["audit"] for r in reversed(rounds) if r["audit"] and r["audit"].get("labels")), None)
    review = _review_stats(con, resolved_latest=dict(zip(pos.tolist(), y.tolist())))
    return {
        "classes": classes,
        "positive_class": cfg["positive_class"],
        "strategy": cfg["strategy"],
        "progress": camp.round_progress(),
        "selecting": camp.selecting,
        "last_error": camp.last_error_,
        "labels": {"answers": int(total - skips), "skips": int(skips), "items_answered": int(items_answered),
                   "items_labeled": int(len(pos)), "relabels": int(relabels), "items_total": cfg["n_items"]},
        "class_counts": {c: int(n) for c, n in zip(classes, counts)},
        "positives_found": int(counts[1]) if cfg["positive_class"] is not None else None,
        "annotators": annotators,
        "disagreements": {"items": len(disagreements), "examples": disagreements[:20]},
        "rounds": rounds,
        "learning_curve": curve,
        "model": rounds[-1]["cv"] if rounds else None,
        "audit": audit or {"labels": 0, "metric": "average_precision" if cfg["positive_class"] is not None
                           else "accuracy", "value": None, "ci": None},
        "leases": {"live": sum(x["items"] for x in leases), "by_annotator": leases},
        "review": review,
        "agreement": agreement(latest, classes),
        "annotator_quality": camp._annotator_quality(con),
    }


def _review_stats(con, resolved_latest: dict) -> dict:
    """The review queue: items still open (one answer, or two that disagree), done, and how
    many of the done ones now resolve to another class than the label under suspicion."""
    rows = con.execute("SELECT pos, first_class FROM reviews").fetchall()
    got: dict[int, dict] = {}
    for p, who, c in con.execute(
            """SELECT l.pos, l.annotator, l.class FROM labels l
               JOIN (SELECT MAX(label_id) AS m FROM labels WHERE pos IN (SELECT pos FROM reviews)
                     GROUP BY pos, annotator) last ON l.label_id = last.m WHERE l.class IS NOT NULL"""):
        got.setdefault(p, {})[who] = c

    def is_done(p):  # as the queue decides: two answers that agree, or a third
        answers = got.get(p, {})
        return len(answers) >= 3 or (len(answers) == 2 and len(set(answers.values())) == 1)

    done = [(p, first) for p, first in rows if is_done(p)]
    changed = sum(resolved_latest.get(p) != first for p, first in done)
    return {"queued": len(rows), "open": len(rows) - len(done), "done": len(done), "changed": int(changed)}


def agreement(latest, classes) -> dict:
    """Inter-annotator agreement on the latest answers: Cohen's kappa for each pair of annotators
    with at least 2 items in common, and Krippendorff's alpha (nominal) over everyone (``None``
    without the ``labels`` extra or without overlap)."""
    from sklearn.metrics import cohen_kappa_score

    by_annotator: dict[str, dict] = {}
    for p, _, who, c, _, _ in latest:
        by_annotator.setdefault(who, {})[p] = c
    names = sorted(by_annotator)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(by_annotator[a]) & set(by_annotator[b]))
            if len(common) >= 2:
                ya = [by_annotator[a][p] for p in common]
                yb = [by_annotator[b][p] for p in common]
                kappa = 1.0 if ya == yb else float(cohen_kappa_score(ya, yb, labels=list(range(len(classes)))))
                pairs.append({"a": a, "b": b, "items": len(common), "kappa": kappa})
    alpha = None
    shared = sorted({p for per in by_annotator.values() for p in per
                     if sum(p in other for other in by_annotator.values()) >= 2})
    if len(names) >= 2 and shared:
        try:
            import krippendorff
        except ImportError:
            krippendorff = None
        if krippendorff is not None:
            data = np.full((len(names), len(shared)), np.nan)
            col = {p: j for j, p in enumerate(shared)}
            for i, a in enumerate(names):
                for p, c in by_annotator[a].items():
                    if p in col:
                        data[i, col[p]] = c
            values = np.unique(data[~np.isnan(data)])
            alpha = 1.0 if len(values) == 1 else float(krippendorff.alpha(reliability_data=data,
                                                                          level_of_measurement="nominal"))
    return {"pairs": pairs, "alpha": alpha, "items_with_several_answers": len(shared)}
