"""Label quality and stopping on real data: noisy oracles, several annotators, stopping rules.

Three parts, each its own section of docs/benchmarks.md:

* ``noise``: ``simulate --label-noise R`` (uniform flips, and class confusion: a wrong answer is
  the class whose centroid is nearest), R = 5%, 10%, 20%, margin sampling versus random, on each
  data set. Per cell: the final test accuracy (and its drop from the clean run of the same
  strategy), the precision and recall of the label audit's flags and its precision at the number
  of true flips (the labels wrong at the end; there precision = recall), and the accuracy after
  re-asking the audit's flagged labels versus as many random labeled labels (the campaign's review:
  a second answer, a third when they disagree). One more row per data set: margin at R = 10% with
  the review run every round (``--review-fraction 0.2``).
* ``annotators``: ``--n-items`` random items each answered by every simulated annotator (accuracy
  profile ``--profile``, uniform errors, independent draws); the accuracy against the truth of the
  majority vote, of CROWDLAB's consensus (cleanlab, with out-of-fold probabilities of the default
  model trained on the majority labels) and of the best single annotator.
* ``stopping``: clean margin runs to a full budget; for each rule of
  :mod:`datascout.stopping`, the round it fires at, the labels saved relative to the full budget
  and the test metric lost there (final minus at stop), over seeds. A rule firing with a loss
  above 0.01 is counted as *early*. A rare-concept task (Letter's "A" vs the rest, 5 positives +
  95 negatives seed, most-likely-positive) adds the ``recall`` rule and the true recall at its stop.

    python benchmarks/bench_label_quality.py [--parts noise,annotators,stopping]
        [--datasets digits,satellite,letter,fortunes] [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402
from bench_label_efficiency import SHORT, data  # noqa: E402

from datascout.labels import NoisyOracle, crowdlab_consensus, majority_vote, out_of_fold_probs  # noqa: E402
from datascout.simulate import SimulationConfig, simulate  # noqa: E402
from datascout.stopping import RULE_NAMES, RULES, rule_round, stopping_report  # noqa: E402

# labels per data set: (initial, batch, rounds) for the noise runs and the stopping runs
NOISE_PLAN = {"digits": (50, 50, 10), "satellite": (100, 100, 10), "letter": (100, 100, 10),
              "fortunes": (100, 100, 10)}
STOP_PLAN = {"digits": (50, 50, 20), "satellite": (100, 100, 20), "letter": (100, 100, 30),
             "fortunes": (100, 100, 30)}
RATES = (0.05, 0.10, 0.20)


LOADS = []


def load_range() -> str:
    """The 1-minute load averages seen so far (sampled at each data set), as 'lo-hi'."""
    LOADS.append(os.getloadavg()[0])
    return f"{min(LOADS):.1f}-{max(LOADS):.1f}"


def mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def part_noise(datasets, seeds, command):
    rows = []
    t0 = time.perf_counter()
    for name in datasets:
        LOADS.append(os.getloadavg()[0])
        X, y, _ = data(name)
        initial, batch, rounds = NOISE_PLAN[name]
        clean = {}
        for strategy in ("margin", "random"):
            clean[strategy] = mean([simulate(X, y, SimulationConfig(
                strategy=strategy, initial=initial, batch_size=batch, rounds=rounds, seed=s))["rounds"][-1]["accuracy"]
                for s in range(seeds)])
            rows.append([SHORT[name], strategy, "clean", "-", fmt(clean[strategy]), "-", "-", "-", "-", "-", "-", "-"])
        cells = [(k, r, st, 0.0) for k in ("uniform", "confusion") for r in RATES for st in ("margin", "random")]
        cells.append(("uniform", 0.10, "margin", 0.2))
        for kind, rate, strategy, review in cells:
            res = [simulate(X, y, SimulationConfig(strategy=strategy, initial=initial, batch_size=batch,
                                                   rounds=rounds, seed=s, label_noise=rate, noise_kind=kind,
                                                   review_fraction=review)) for s in range(seeds)]
            acc = mean([r["rounds"][-1]["accuracy"] for r in res])
            nz = [r["noise"] for r in res]
            au = [n.get("audit", {}) for n in nz]
            rel = [n.get("relabel", {}) for n in nz]
            rows.append([
                SHORT[name], strategy + (" + review 0.2" if review else ""), f"{kind} {rate:.0%}",
                fmt(mean([n["wrong_labels"] / n["labeled"] for n in nz])),
                fmt(acc), fmt(None if acc is None else acc - clean[strategy]),
                fmt(mean([a.get("precision") for a in au]), 2), fmt(mean([a.get("recall") for a in au]), 2),
                fmt(mean([a.get("precision_at_true_flips") for a in au]), 2),
                fmt(mean([x.get("flagged", {}).get("accuracy") for x in rel])),
                fmt(mean([x.get("random", {}).get("accuracy") for x in rel])),
                f"{mean([n['answers'] for n in nz]):.0f}",
            ])
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - t0
    body = ("## Noisy oracles: how much label noise hurts, and what the audit and review recover\n\n"
            f"`simulate --label-noise R` on each data set, {seeds} seeds, logistic regression; a seed set, "
            "batches and rounds per data set: " + ", ".join(f"{SHORT[d]} {NOISE_PLAN[d][0]} + {NOISE_PLAN[d][2]} x "
                                                           f"{NOISE_PLAN[d][1]}" for d in datasets) + ". "
            "*wrong* = share of the final labels that are wrong; *acc* = final test accuracy, *vs clean* its "
            "difference from the clean run of the same strategy; *audit P / R* = precision and recall of the "
            "audit's flags against the truly wrong labels; *P@flips* = precision of the audit's ranking at "
            "the number of wrong labels (= recall there); *re-ask flagged / random* = test accuracy after "
            "re-asking the flagged labels (second answer, a third on disagreement, the majority wins) versus "
            "as many random labeled ones, from the same final labels (acc is the figure before). "
            "*answers* = oracle answers spent by the run (review answers included).\n\n"
            + markdown_table(["data", "strategy", "noise", "wrong", "acc", "vs clean", "audit P", "audit R",
                              "P@flips", "re-ask flagged", "re-ask random", "answers"], rows)
            + f"\n\n{seconds:.0f} s in all, peak RSS {peak_rss_mib():.0f} MiB; the 2 cores were shared with "
            f"other jobs (load average {load_range()}).\n")
    write_section("label-noise", body, command)


def part_annotators(datasets, seeds, command, n_items=1000,
                    profiles=((0.9, 0.75, 0.6), (0.95, 0.7, 0.6, 0.55, 0.5))):
    rows = []
    t0 = time.perf_counter()
    for name in datasets:
        X, y, _ = data(name)
        K = int(y.max()) + 1
        for prof in profiles:
            acc = {"majority": [], "crowdlab": [], "best single": []}
            dropped = []
            for s in range(seeds):
                rng = np.random.default_rng(s)
                items = np.sort(rng.choice(len(y), size=min(n_items, len(y)), replace=False))
                truth = y[items].astype(np.int64)
                A = np.column_stack([NoisyOracle(truth, K, 1 - a, random_state=1000 * s + j).answer(np.arange(len(items)))
                                     for j, a in enumerate(prof)])
                mv = majority_vote(A)
                # cross-validation needs 2 labels of a class: leave out items whose majority class has one
                keep = np.bincount(mv, minlength=K)[mv] >= 2
                dropped.append(int((~keep).sum()))
                items, truth, A, mv = items[keep], truth[keep], A[keep], mv[keep]
                probs = out_of_fold_probs(X[items], mv, K, random_state=s)
                cl, _ = crowdlab_consensus(A, probs)
                acc["majority"].append(np.mean(mv == truth))
                acc["crowdlab"].append(np.mean(cl == truth))
                acc["best single"].append(max(np.mean(A[:, j] == truth) for j in range(A.shape[1])))
            rows.append([SHORT[name], "/".join(f"{a:.2f}" for a in prof),
                         *(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in acc.values()), f"{np.mean(dropped):.1f}"])
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - t0
    body = ("## Several annotators: CROWDLAB versus majority vote\n\n"
            f"{n_items} random items of each data set, every item answered by every simulated annotator "
            "(accuracy profile: each annotator's chance of a right answer; wrong answers uniform over the other "
            f"classes, independent draws), {seeds} seeds (mean ± std). Accuracy against the truth of the "
            "majority vote (ties: the last annotator's answer among the tied), of CROWDLAB's consensus "
            "(`datascout.labels.crowdlab_consensus`, cleanlab's `get_label_quality_multiannotator` with "
            "5-fold out-of-fold probabilities of the default logistic regression trained on the majority "
            "labels) and of the best single annotator. *left out*: items whose majority class holds a single item "
            "(cross-validation needs 2), mean per seed.\n\n"
            + markdown_table(["data", "annotators", "majority vote", "CROWDLAB", "best single",
                              "left out"], rows)
            + f"\n\n{seconds:.0f} s in all; the 2 cores were shared with other jobs (load average {load_range()}).\n")
    write_section("label-annotators", body, command)


def part_stopping(datasets, seeds, command):
    rows, early_notes = [], []
    t0 = time.perf_counter()
    tasks = [(d, None) for d in datasets] + ([("letter", 0)] if "letter" in datasets else [])
    for name, positive in tasks:
        LOADS.append(os.getloadavg()[0])
        X, y, _ = data(name)
        initial, batch, rounds = STOP_PLAN[name]
        if positive is None:
            cfgs = [SimulationConfig(strategy="margin", initial=initial, batch_size=batch, rounds=rounds, seed=s,
                                     label_budget=initial + batch * rounds // 2) for s in range(seeds)]
            label = SHORT[name]
        else:
            cfgs = [SimulationConfig(strategy="most-likely-positive", positive_class=positive, initial_positives=5,
                                     initial_negatives=95, batch_size=50, rounds=30, seed=s, label_budget=800)
                    for s in range(seeds)]
            label = f"{SHORT[name]} 'A' vs rest (AP)"
        res = [simulate(X, y, c) for c in cfgs]
        full = res[0]["rounds"][-1]["labeled"]
        if positive is not None:  # the recall rule read from the model's scores instead of the audit sample
            scored = replace(RULES["recall"], signal="recall_scores_lower")
            for r in res:
                i = rule_round(r["rounds"], scored)
                r["stopping_detail"]["recall (scores)"] = stopping_report(
                    r["rounds"], {"recall (scores)": i}, metric=r["metric"])["recall (scores)"]
        for rule in (*RULE_NAMES, *(["recall (scores)"] if positive is not None else [])):
            if rule.startswith("recall") and positive is None:
                continue
            det = [r["stopping_detail"].get(rule) for r in res]
            fired = [d for d in det if d and d["round"] is not None]
            lost = [d["metric_lost"] for d in fired]
            early = sum(x > 0.01 for x in lost)
            extra = ""
            if rule.startswith("recall") and fired:
                true = [r["rounds"][d["round"]]["recall_true"] for r, d in zip(res, det) if d["round"] is not None]
                extra = f"true recall at stop {np.mean(true):.3f} (min {np.min(true):.3f})"
            rows.append([label, rule, f"{len(fired)}/{len(res)}",
                         fmt(mean([d["round"] for d in fired]), 1), fmt(mean([d["labeled"] for d in fired]), 0),
                         fmt(mean([d["labels_saved"] for d in fired]), 2), fmt(mean(lost)),
                         fmt(max(lost) if lost else None), str(early), extra])
            if early:
                early_notes.append(f"{rule} on {label} ({early} of {len(fired)} seeds lose more than 0.01)")
            print(rows[-1], flush=True)
        rows.append([label, "(full budget)", "-", str(len(res[0]["rounds"]) - 1), str(full), "0", "0", "0", "-",
                     f"final {res[0]['metric']} {mean([r['rounds'][-1][res[0]['metric']] for r in res]):.3f}"])
    seconds = time.perf_counter() - t0
    body = ("## Stopping rules: labels saved and quality lost where each fires\n\n"
            f"Clean runs (no label noise), margin sampling with logistic regression, {seeds} seeds; budgets "
            + ", ".join(f"{SHORT[d]} {STOP_PLAN[d][0]} + {STOP_PLAN[d][2]} x {STOP_PLAN[d][1]}" for d in datasets)
            + "; the rare-concept task: Letter 'A' vs the rest (3.9% positives), 5 + 95 seed, most-likely-positive, "
            "30 x 50, the test split playing the audit sample for `recall` (a uniform sample never trained on, "
            "larger than a campaign's: a tighter interval); `recall (scores)` is `recall` with the positives "
            "remaining estimated from the model's probabilities on the stop set instead. "
            "The rules and their thresholds are `datascout.stopping.RULES` (stop set: 2,000 pool items, or the "
            "pool when smaller); `budget` is set to half the rounds (Letter 'A': 800 labels). *fired* = seeds where the rule fired "
            "within the budget; *round*, *labels* = mean where it fired; *saved* = labels saved relative to "
            "the full budget; *lost* = final test metric minus the metric at the stop (mean, max; negative = "
            "better at the stop); *early* = seeds losing more than 0.01. `gain` reads the test metric here "
            "(a campaign's audit metric there: noisier).\n\n"
            + markdown_table(["task", "rule", "fired", "round", "labels", "saved", "lost", "max lost", "early",
                              "note"], rows)
            + "\n\nRules that stop too early somewhere: " + ("; ".join(early_notes) or "none") + ".\n\n"
            f"{seconds:.0f} s in all; the 2 cores were shared with other jobs (load average {load_range()}).\n")
    write_section("label-stopping", body, command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="noise,annotators,stopping")
    ap.add_argument("--datasets", default="digits,satellite,letter,fortunes")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    datasets = args.datasets.split(",")
    command = "python benchmarks/bench_label_quality.py " + " ".join(sys.argv[1:])
    for part in args.parts.split(","):
        {"noise": part_noise, "annotators": part_annotators, "stopping": part_stopping}[part](
            datasets, args.seeds, command.strip())


if __name__ == "__main__":
    main()
