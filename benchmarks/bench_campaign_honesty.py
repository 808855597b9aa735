"""Is the campaign honest about its model, and what does "nobody waits" cost?

A real campaign (``datascout.campaign.Campaign``, SQLite, SEALS rounds) on an offline data set,
answered by a simulated annotator who gives the true class:

* **Audit coverage.** After every round, the audit estimate (macro-F1 of the model trained on the
  training labels, measured on the uniform random audit sample, with its 95% interval) is set
  against the truth: the same model's macro-F1 on every item it was not trained on. Over seeds
  and rounds, the share of intervals that hold the truth should be about 95%; the biased
  cross-validated figure on the actively chosen labels is shown beside it.
* **The one-round lag.** With "nobody waits", round r + 1 is selected once round r is handed out
  and a quarter answered, so it is chosen without the last three quarters of round r. Same seeds, both ways:
  the test accuracy and macro-F1 at the end (a held-out test split the campaign never sees).

    python benchmarks/bench_campaign_honesty.py --dataset satellite --rounds 10 --batch-size 100 --seeds 5
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def run(X, y, Xt, yt, classes, *, seed: int, rounds: int, batch: int, lag: bool, work: Path, audit: float):
    from sklearn.metrics import accuracy_score, f1_score

    from datascout.campaign import Campaign
    from datascout.models import FittedModel, default_model

    d = work / f"camp-{seed}-{int(lag)}"
    emb = work / "emb.npy"
    items = work / "items.jsonl"
    camp = Campaign.create(d, embeddings=emb, items=items, classes=classes, batch_size=batch, k=20,
                           index="HNSW32", random_state=seed, audit_fraction=audit, review_fraction=0.0)
    truth = {str(i): classes[c] for i, c in enumerate(y)}
    checks = []
    for _ in range(rounds):
        rnd = camp.current_round()
        got = camp.lease_batch("oracle", 100)["items"]
        while len(got) < camp.round_progress(rnd)["selected"]:
            more = camp.lease_batch("oracle", 100)["items"]
            got += [it for it in more if it["id"] not in {g["id"] for g in got}]
        answers = [(it["id"], truth[it["id"]]) for it in got]
        if lag:  # a quarter, then the early selection runs from those, then the rest
            q = (len(answers) + 3) // 4
            camp.submit("oracle", answers[:q])
            camp.wait_idle(300)
            camp.submit("oracle", answers[q:])
        else:
            camp.submit("oracle", answers)
        camp.wait_idle(300)
        # the honest figure against the truth, for the model trained on the training labels now
        q = camp.quality_now()
        pos, lab = camp.resolved_labels()
        audit_pos = {p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE audit = 1")}
        train = np.asarray([p for p in pos.tolist() if p not in audit_pos], dtype=np.int64)
        train_y = lab[np.isin(pos, train)]
        if q["audit"]["value"] is not None and len(np.unique(train_y)) >= 2:
            model = FittedModel(default_model(seed), len(classes)).fit(X[train], train_y)
            rest = np.setdiff1d(np.arange(len(y)), train)
            pred_rest = model.predict_proba(X[rest]).argmax(1)
            true_f1 = f1_score(y[rest], pred_rest, average="macro")
            f1 = q["audit"]["macro_f1"]
            lo, hi = f1["ci"] or (0.0, 1.0)  # too few audit labels for an interval: none is claimed
            acc = q["audit"]["accuracy"]
            checks.append({"labels": int(len(pos)), "audit": f1["value"], "lo": lo, "hi": hi,
                           "truth": float(true_f1), "cv": (q["cv"] or {}).get("macro_f1"),
                           "n_audit": q["audit"]["labels"], "acc": acc["value"], "acc_lo": acc["ci"][0],
                           "acc_hi": acc["ci"][1], "acc_truth": float(np.mean(pred_rest == y[rest]))})
    pos, lab = camp.resolved_labels()
    audit_pos = {p for (p,) in camp.con.execute("SELECT pos FROM selections WHERE audit = 1")}
    keep = np.asarray([p not in audit_pos for p in pos.tolist()])
    model = FittedModel(default_model(seed), len(classes)).fit(X[pos[keep]], lab[keep])
    pred = model.predict_proba(Xt).argmax(1)
    camp.close()
    shutil.rmtree(d, ignore_errors=True)
    return {"accuracy": accuracy_score(yt, pred), "macro_f1": f1_score(yt, pred, average="macro"),
            "labels": int(len(pos)), "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="satellite")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--audit-fraction", type=float, default=0.1)
    ap.add_argument("--test-size", type=float, default=0.25)
    args = ap.parse_args()

    import json

    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from datascout.datasets import load

    ds = load(args.dataset)
    Xall = np.asarray(ds.data, dtype=np.float32)
    yall = np.asarray(ds.labels, dtype=np.int64)
    tr, te = train_test_split(np.arange(len(yall)), test_size=args.test_size, random_state=0, stratify=yall)
    scaler = StandardScaler().fit(Xall[tr])
    X, Xt = scaler.transform(Xall[tr]).astype(np.float32), scaler.transform(Xall[te]).astype(np.float32)
    y, yt = yall[tr], yall[te]
    classes = [str(c) for c in ds.classes]
    work = Path(tempfile.mkdtemp(prefix="datascout-honesty-"))
    try:
        np.save(work / "emb.npy", X)
        (work / "items.jsonl").write_text("".join(json.dumps({"id": str(i), "text": f"item {i}"}) + "\n"
                                                  for i in range(len(y))))
        t0 = time.perf_counter()
        results = {False: [], True: []}
        for seed in range(args.seeds):
            for lag in (False, True):
                results[lag].append(run(X, y, Xt, yt, classes, seed=seed, rounds=args.rounds,
                                        batch=args.batch_size, lag=lag, work=work, audit=args.audit_fraction))
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = [c for r in results[False] + results[True] for c in r["checks"]]
    inside = sum(c["lo"] <= c["truth"] <= c["hi"] for c in checks)
    err_audit = np.mean([abs(c["audit"] - c["truth"]) for c in checks])
    cv = [c for c in checks if c["cv"] is not None]
    err_cv = np.mean([abs(c["cv"] - c["truth"]) for c in cv]) if cv else float("nan")
    bias_cv = np.mean([c["cv"] - c["truth"] for c in cv]) if cv else float("nan")
    print(f"{args.dataset}: {len(y)} pool / {len(yt)} test items, {len(classes)} classes; {args.rounds} rounds of "
          f"{args.batch_size} ({args.audit_fraction:.0%} audit), {args.seeds} seeds; {seconds:.0f} s\n")
    print("| figure | value |\n|---|---|")
    print(f"| audit 95% (bootstrap) intervals holding the true macro-F1 | {inside} of {len(checks)} "
          f"({inside / len(checks):.1%}) |")
    print(f"| mean abs. error, audit macro-F1 vs truth | {err_audit:.3f} |")
    acc_in = sum(c["acc_lo"] <= c["acc_truth"] <= c["acc_hi"] for c in checks)
    print(f"| audit 95% (Wilson) intervals holding the true accuracy | {acc_in} of {len(checks)} "
          f"({acc_in / len(checks):.1%}) |")
    print(f"| mean abs. error, cross-validated on chosen labels vs truth | {err_cv:.3f} (mean signed {bias_cv:+.3f}) |")
    print(f"| audit labels at the last round | {checks[-1]['n_audit']} |")
    for lag in (False, True):
        acc = [r["accuracy"] for r in results[lag]]
        f1 = [r["macro_f1"] for r in results[lag]]
        name = "next round selected early (a quarter answered)" if lag else "next round after the last label"
        print(f"| test accuracy / macro-F1, {name} | {np.mean(acc):.4f} ± {np.std(acc):.4f} / "
              f"{np.mean(f1):.4f} ± {np.std(f1):.4f} |")
    diff = np.asarray([b["accuracy"] - a["accuracy"] for a, b in zip(results[False], results[True])])
    print(f"| accuracy cost of the lag, paired by seed | {-diff.mean():+.4f} (seeds {', '.join(f'{-d:+.4f}' for d in diff)}) |")
    print(f"\n*Machine:* {platform.processor() or platform.machine()}, Python {platform.python_version()}. "
          f"*Command:* `python benchmarks/bench_campaign_honesty.py --dataset {args.dataset} --rounds {args.rounds} "
          f"--batch-size {args.batch_size} --seeds {args.seeds}`")


if __name__ == "__main__":
    main()
