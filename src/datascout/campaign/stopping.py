"""Stopping in a campaign: the rules of :mod:`datascout.stopping`, measured every round.

At each retraining (``select_round``) :func:`round_measurements` compares the new model with the
previous one on a fixed *stop set* (``STOP_SET`` items drawn once from the campaign's seed, so it
needs no storage) and records the measurements in the round's ``metrics`` JSON; the previous
model's predictions on the stop set are kept in ``meta`` (key ``stop_set_predictions``). The
accuracy of a model on the batch it selected comes from the tables: ``selections.pred_class``
against the labels the items got. :func:`stopping_status` reads it all back: which rules have
fired, at which round, and what the audit metric was then. No table changes.
"""

from __future__ import annotations

import json

import numpy as np

from datascout.labels import calibrated_positive_probs

from datascout.stopping import (
    RULES,
    add_gain,
    normalized_entropy,
    recall_estimate,
    remaining_from_sample,
    round_signals,
    stopping_report,
    stopping_rounds,
)

STOP_SET = 1000
META_KEY = "stop_set_predictions"


def calibrated_sum(X, learner, positive_probs) -> float:
    """The expected number of positives among items whose model probabilities are
    ``positive_probs``: their sum after Platt scaling on the learner's labeled items
    (:func:`datascout.labels.calibrated_positive_probs`), the raw sum when that cannot be fitted."""
    lab = np.sort(learner.labeled_positions)
    cal = calibrated_positive_probs(np.asarray(X[lab], dtype=np.float32), learner.labels_[lab], positive_probs,
                                    model=learner.model, random_state=0)
    return float(np.sum(positive_probs if cal is None else cal))


def stop_set(n_items: int, random_state: int) -> np.ndarray:
    rng = np.random.default_rng([random_state, 0x73746F70])
    return np.sort(rng.choice(n_items, size=min(STOP_SET, n_items), replace=False))


def round_measurements(con, X, learner, labeled_pos, chosen_strategy, cfg, audit_metrics=None,
                       found_positives=None):
    """``(measurements for the round's metrics, the value to keep under META_KEY)``.

    ``labeled_pos``: the positions labeled now; ``chosen_strategy``: the items the strategy picked
    this round (not the audit items); ``audit_metrics``: the round's audit figures, if any."""
    stop = stop_set(int(cfg["n_items"]), int(cfg["random_state"]))
    probs = learner.predict_proba(np.asarray(X[stop], dtype=np.float32))
    row = con.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    previous = np.asarray(json.loads(row[0])["pred"], dtype=np.int64) if row else None
    if previous is not None and len(previous) != len(stop):
        previous = None
    unl = ~np.isin(stop, labeled_pos)
    sig = round_signals(stop_probs=probs, previous_stop_pred=previous, unlabeled_mask=unl,
                        n_classes=len(cfg["classes"]))
    sig.pop("selected_accuracy")  # read from the tables (see stopping_status)
    if len(chosen_strategy):
        sig["max_uncertainty"] = float(normalized_entropy(
            learner.predict_proba(np.asarray(X[np.sort(chosen_strategy)], dtype=np.float32))).max())
    if cfg["positive_class"] is not None and found_positives is not None:
        rem = (audit_metrics or {}).get("positives_remaining")
        if rem is not None:
            est, source = recall_estimate(found_positives, rem["value"], rem["ci"]), "audit"
        else:
            n_unl = int(cfg["n_items"]) - len(labeled_pos)
            r, ci = remaining_from_sample(float(calibrated_sum(X, learner, probs[unl, 1])), int(unl.sum()), n_unl)
            est, source = (recall_estimate(found_positives, r, ci) if r is not None else None), "scores"
        if est is not None:
            sig.update({"recall_estimate": est["value"], "recall_lower": est["ci"][0],
                        "recall_upper": est["ci"][1], "recall_source": source})
    return sig, json.dumps({"pred": probs.argmax(axis=1).tolist()})


def _selected_accuracy(con, resolved: dict) -> dict:
    """``{round r: accuracy of round r-1's model on the items it selected (not audit), as labeled}``."""
    got: dict[int, list] = {}
    for pos, rnd, pred in con.execute(
            "SELECT pos, round, pred_class FROM selections WHERE audit = 0 AND pred_class IS NOT NULL"):
        if pos in resolved:
            got.setdefault(rnd + 1, []).append(pred == resolved[pos])
    return {r: float(np.mean(v)) for r, v in got.items()}


def stopping_status(camp, con=None) -> dict:
    """Which stopping rules have fired (``fired``: rule -> round or ``None``), with per rule the
    round, labels, audit metric then and now (``rules``), the latest measurements (``latest``),
    and a one-line ``message``."""
    con = con or camp.con
    cfg = camp.config
    positive = cfg["positive_class"] is not None
    pos, y = camp.resolved_labels(con)
    sel_acc = _selected_accuracy(con, dict(zip(pos.tolist(), y.tolist())))
    history = []
    for rnd, metrics in con.execute("SELECT round, metrics FROM rounds ORDER BY round"):
        m = json.loads(metrics)
        audit = m.get("audit") or {}
        history.append({"round": rnd, "labeled": int(m.get("n_labels", 0)), "audit": audit.get("value"),
                        "audit_ci": audit.get("ci"), **(m.get("stopping") or {}),
                        "selected_accuracy": sel_acc.get(rnd)})
    rules = {n: r.threshold for n, r in RULES.items() if positive or not n.startswith("recall")}
    budget = cfg.get("label_budget")
    out = {"rules": {}, "fired": {}, "latest": None, "label_budget": budget, "stop_set": None,
           "metric": "average_precision" if positive else "accuracy"}
    if not history:
        out["message"] = "no round yet"
        return out
    add_gain(history, "audit", ci_key="audit_ci")
    idx = stopping_rounds(history, rules=rules, budget=budget)
    detail = stopping_report(history, idx, metric="audit", rules=rules)
    for name, i in idx.items():
        d = detail[name]
        if i is not None:
            d["audit_ci"] = history[i].get("audit_ci")
        out["rules"][name] = d
        out["fired"][name] = None if i is None else history[i]["round"]
    keys = ("kappa", "changed", "uncertainty", "max_uncertainty", "selected_accuracy", "gain",
            "recall_estimate", "recall_lower", "recall_upper", "recall_source")
    last = history[-1]
    out["latest"] = {"round": last["round"], "labeled": last["labeled"], "audit": last["audit"],
                     **{k: last.get(k) for k in keys if k in last or not k.startswith("recall")}}
    out["stop_set"] = int(min(STOP_SET, int(cfg["n_items"])))
    out["message"] = _message(out)
    return out


def _fmt(v):
    return "n/a" if v is None else f"{v:.3f}"


def _message(s: dict) -> str:
    fired = sorted((r, n) for n, r in s["fired"].items() if r is not None)
    metric = s["metric"].replace("_", " ")
    if not fired:
        lat = s["latest"]
        return ("labeling still pays: no stopping rule has fired (round "
                f"{lat['round']}: kappa {_fmt(lat.get('kappa'))}, change {_fmt(lat.get('changed'))}, uncertainty "
                f"{_fmt(lat.get('uncertainty'))}, next-round gain {_fmt(lat.get('gain'))}"
                + (f", recall {_fmt(lat.get('recall_estimate'))} [{_fmt(lat.get('recall_lower'))}-"
                   f"{_fmt(lat.get('recall_upper'))}]" if "recall_estimate" in lat else "") + ")")
    rnd, name = fired[0]
    d = s["rules"][name]
    ci = d.get("audit_ci")
    then = f"audit {metric} {_fmt(d['metric'])}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else "")
    others = ", ".join(f"{n} (round {r})" for r, n in fired[1:])
    return (f"labeling more stops paying: rule {name} fired at round {rnd} ({d['labeled']} labels; {then}; "
            f"now {_fmt(d['final_metric'])} at {d['final_labeled']} labels)"
            + (f"; also fired: {others}" if others else ""))
