"""Label efficiency on real data: how many labels margin and entropy sampling need to match the
test accuracy that random sampling reaches with 2,000 labels (multiclass, several seeds).

Data sets (offline, see DESIGN.md):
* Fashion-MNIST, 70,000 images as PCA-64 embeddings of the pixels
  (:func:`datascout.datasets.fashion_mnist_pixel_embeddings`, cached after the first run);
* Letter (UCI, 20,000 x 16, 26 classes), features standardised;
* ``fashion-mnist-effnet``: the same 70,000 images as EfficientNet-Lite0 features (1280-d, the pool
  that ``datascout datasets embed fashion-mnist`` builds), the embedding the product intends;
* ``satellite`` (UCI Statlog Landsat, 6,435 x 36, 6 classes) and ``shuttle`` (UCI Statlog Shuttle,
  58,000 x 9, 7 classes, 78% one class), features standardised;
* ``fortunes``: the Debian fortunes quotes (the file is the class) as all-MiniLM-L6-v2
  embeddings, the pool ``datascout datasets embed fortunes`` builds;
* ``debian``: Debian's package descriptions with their sections as classes (45 sections of at
  least 50 tagged packages) as all-MiniLM-L6-v2 embeddings, the pool ``datascout datasets embed
  debian`` builds (``--limit 12000`` for the figures: a seeded slice, embedding all 29k takes
  long on a shared machine);
* ``digits`` (scikit-learn's 1,797 x 64, 10 classes): a smoke check (its pool holds 1,437 items).

Each run is :func:`datascout.simulate.simulate`: a stratified 20% test split, 100 random seed
labels, batches of 100 up to ``--budget`` labels (2,000), the model each ``--models`` entry names
(:func:`datascout.models.make_model`; default logistic regression). "Labels needed" is where
the strategy's mean curve over seeds first reaches random's mean accuracy at 1,000, 2,000 and
5,000 labels, those within the budget (linear interpolation between rounds). The worst budget
of each strategy (mean accuracy minus random's, against random's seed spread) says whether it
ever falls below random beyond noise. ``--runs-cache DIR`` keeps every run's result, so a rerun
with more strategies reruns none of the others. Each data set's line also gives the accuracy of the
same model fitted on the whole pool (seed 0's split): how close 2,000 labels come to the ceiling.
A pair is marked *void* when random's mean curve at the seed already reaches its own value at
2,000 labels: the data then gives no target for labels to reach.

    python benchmarks/bench_label_efficiency.py [--seeds 3] [--datasets fashion-mnist,letter]
        [--models logreg,random-forest] [--strategies margin,typiclust,auto] [--budget 2000]
        [--runs-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout.datasets import fashion_mnist_pixel_embeddings, load  # noqa: E402
from datascout.models import MODEL_NAMES, make_model  # noqa: E402
from datascout.simulate import SimulationConfig, simulate  # noqa: E402

BUDGET = 2000
INITIAL = 100
SHORT = {"fashion-mnist": "Fashion-MNIST PCA-64", "letter": "Letter",
         "fashion-mnist-effnet": "Fashion-MNIST EfficientNet-Lite0", "satellite": "Satellite",
         "shuttle": "Shuttle", "digits": "digits", "fortunes": "fortunes MiniLM",
         "debian": "Debian sections MiniLM"}
UCI_TITLES = {"letter": "Letter (UCI, 20,000 x 16 standardised, 26 classes)",
              "satellite": "Satellite (UCI Statlog Landsat, 6,435 x 36 standardised, 6 classes)",
              "shuttle": "Shuttle (UCI Statlog, 58,000 x 9 standardised, 7 classes, 78% one class)"}


def labels_to_reach(labeled: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """First labeled count where ``curve`` reaches ``target`` (linear interpolation)."""
    above = np.flatnonzero(curve >= target)
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(labeled[0])
    x0, x1, v0, v1 = labeled[i - 1], labeled[i], curve[i - 1], curve[i]
    return float(x0 + (target - v0) / (v1 - v0) * (x1 - x0))


def embedded_pool(dataset: str):
    """(embeddings, labels, manifest) of the pool ``datascout datasets embed DATASET`` built."""
    from datascout.embed import dataset_pool, load_pool_dir

    path = dataset_pool(dataset)
    if path is None:
        raise SystemExit(f"the {dataset} pool is not built: datascout datasets embed {dataset}")
    pf = load_pool_dir(path)
    return np.asarray(pf.embeddings, dtype=np.float32), pf.labels, pf.manifest


def data(name: str):
    if name == "fashion-mnist":
        X, ds = fashion_mnist_pixel_embeddings(64)
        return X, ds.labels, "Fashion-MNIST (PCA-64 of pixels, 70,000 x 64, 10 classes)"
    if name in UCI_TITLES:
        ds = load(name)
        X = (ds.data - ds.data.mean(axis=0)) / ds.data.std(axis=0)
        return X.astype(np.float32), ds.labels, UCI_TITLES[name]
    if name == "digits":
        ds = load("digits")
        return (ds.data / 16.0).astype(np.float32), ds.labels, "digits (scikit-learn, 1,797 x 64 / 16, 10 classes)"
    if name == "fortunes":
        X, y, m = embedded_pool("fortunes")
        return X, y, f"fortunes (all-MiniLM-L6-v2, {m['count']:,} x {m['dimension']}, {len(np.unique(y))} classes)"
    if name == "debian":
        X, y, m = embedded_pool("debian")
        sub = m["source"].get("subset") or {}
        part = f", a seeded slice of {sub['limit']:,}" if sub else ""
        return X, y, (f"Debian package descriptions (all-MiniLM-L6-v2, {m['count']:,} x {m['dimension']}"
                      f"{part}, {len(np.unique(y))} sections)")
    if name == "fashion-mnist-effnet":
        X, y, m = embedded_pool("fashion-mnist")
        sub = m["source"].get("subset") or {}
        part = f", a seeded slice of {sub['limit']:,}" if sub else ""
        return X, y, f"Fashion-MNIST (EfficientNet-Lite0, {m['count']:,} x {m['dimension']}{part}, 10 classes)"
    raise SystemExit(f"unknown data set {name!r}")


def whole_pool_accuracy(X: np.ndarray, y: np.ndarray, model: str) -> float:
    """Test accuracy of ``model`` fitted on every item of seed 0's pool (simulate's split)."""
    pool, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    est = make_model(model, random_state=0).fit(X[pool], y[pool])
    return float(np.mean(est.predict(X[test]) == y[test]))


def cached_ceiling(X, y, model: str, cache, key: str) -> float:
    """:func:`whole_pool_accuracy`, or the value an earlier run saved under ``cache``."""
    path = None if cache is None else Path(cache) / f"{key}.json"
    if path is not None and path.is_file():
        return float(json.loads(path.read_text())["accuracy"])
    acc = whole_pool_accuracy(X, y, model)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"accuracy": acc}))
        tmp.replace(path)
    return acc


def run_cached(X, y, cfg: SimulationConfig, cache, key: str) -> dict:
    """:func:`simulate`, or its result saved under ``cache`` (a folder) by an earlier run."""
    path = None if cache is None else Path(cache) / f"{key}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    res = simulate(X, y, cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(res))
        tmp.replace(path)
    return res


def auto_switch(res: dict):
    """(labels before the query, why) of the first round where ``auto`` left coverage, None if
    it never did, "unrecorded" for a run whose rounds do not record the phase."""
    if not any("auto" in r for r in res["rounds"]):
        return "unrecorded"
    for r in res["rounds"]:
        a = r.get("auto")
        if a and a["auto"] not in ("typiclust", "probcover"):
            why = ("confidence %.2f" % a["confidence"] if a.get("confidence") is not None else "")
            if a.get("agreement") is not None:
                why = (why + ", " if why else "") + "agreement %.3f" % a["agreement"]
            return int(r["labeled"]) - (int(res["rounds"][1]["labeled"]) - int(res["rounds"][0]["labeled"])), why
    return None


def fmt_need(v: float | None, budget: int) -> str:
    return f"> {budget}" if v is None else f"{v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", default="fashion-mnist,letter")
    ap.add_argument("--strategies", default="margin,entropy")
    ap.add_argument("--models", default="logreg", help=f"comma-separated, of {', '.join(MODEL_NAMES)}")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--budget", type=int, default=BUDGET,
                    help="labels at the end (random's accuracy at 1000, 2000 and 5000 labels, where "
                         "reached, are the targets)")
    ap.add_argument("--runs-cache", default=None,
                    help="folder keeping each run's result: a rerun with other strategies reuses them")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", default="label-efficiency", help="section of docs/benchmarks.md")
    args = ap.parse_args()
    budget = args.budget
    if args.batch_size <= 0 or budget <= INITIAL or (budget - INITIAL) % args.batch_size:
        raise SystemExit(f"--batch-size must divide {budget - INITIAL} (the labels after the seed) "
                         f"but is {args.batch_size}")
    rounds = (budget - INITIAL) // args.batch_size
    targets_at = [t for t in (1000, 2000, 5000) if t <= budget]
    t_start = time.perf_counter()
    rows, sections, class_rows, gap_rows = [], [], [], []
    switches = {}
    run_seconds = 0.0  # the runs' own query + fit time, from their records (cached ones included)
    models = args.models.split(",")
    strategies = args.strategies.split(",")
    for name in models:
        if name not in MODEL_NAMES:
            raise SystemExit(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    for name in args.datasets.split(","):
        X, y, title = data(name)
        n_pool = len(y) - int(np.ceil(0.2 * len(y)))
        if budget > n_pool:
            raise SystemExit(f"--budget {budget} is more than {name}'s pool of {n_pool} items")
        for model in models:
            curves = {}
            for strategy in ["random"] + strategies:
                runs = []
                for seed in range(args.seeds):
                    cfg = SimulationConfig(strategy=strategy, initial=INITIAL, batch_size=args.batch_size,
                                           rounds=rounds, test_size=0.2, seed=seed, model=model)
                    t0 = time.perf_counter()
                    res = run_cached(X, y, cfg, args.runs_cache,
                                     f"{name}-{model}-{strategy}-b{args.batch_size}-n{budget}-s{seed}")
                    runs.append(res)
                    run_seconds += sum((r["select_seconds"] or 0.0) + r["fit_seconds"] for r in res["rounds"])
                    print(f"{name} {model} {strategy} seed {seed}: acc@{res['rounds'][-1]['labeled']} = "
                          f"{res['rounds'][-1]['accuracy']:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
                labeled = np.asarray([r["labeled"] for r in runs[0]["rounds"]], dtype=float)
                acc = np.asarray([[r["accuracy"] for r in res["rounds"]] for res in runs])
                f1 = np.asarray([[r["macro_f1"] for r in res["rounds"]] for res in runs])
                curves[strategy] = (labeled, acc, f1)
                if strategy == "auto":
                    switches[(name, model)] = [auto_switch(res) for res in runs]
                per_class = np.mean([res["labeled_per_class"] for res in runs], axis=0)
                spread = (" / ".join(f"{v:.0f}" for v in per_class) if len(per_class) <= 10
                          else f"min {per_class.min():.0f}, max {per_class.max():.0f}")
                class_rows.append([SHORT[name], model, strategy, spread])
            labeled, racc, rf1 = curves["random"]
            at = {t: int(np.flatnonzero(labeled == t)[0]) for t in targets_at}
            targets = {t: float(racc[:, i].mean()) for t, i in at.items()}
            void = float(racc[:, 0].mean()) >= targets[targets_at[-1]]
            noise = racc.std(axis=0, ddof=1) if args.seeds > 1 else np.zeros(len(labeled))
            for strategy in strategies:
                lab, acc, f1 = curves[strategy]
                needs = []
                for t in targets_at:
                    need = labels_to_reach(lab, acc.mean(axis=0), targets[t])
                    needs.append("void" if void else fmt_need(need, budget)
                                 + ("" if need is None else f" ({100 * need / t:.0f}%)"))
                per_seed = [labels_to_reach(lab, a, targets[targets_at[-1]]) for a in acc]
                rows.append([SHORT[name], model, strategy, *needs,
                             f"{acc[:, -1].mean():.4f} ± {acc[:, -1].std(ddof=1) if args.seeds > 1 else 0:.4f}",
                             f"{racc[:, -1].mean():.4f}",
                             f"{f1[:, -1].mean():.4f}", f"{rf1[:, -1].mean():.4f}",
                             ", ".join(fmt_need(v, budget) for v in per_seed)])
                # worst gap to random over every measured budget, against random's seed spread
                gap = acc.mean(axis=0) - racc.mean(axis=0)
                i = int(np.argmin(gap[1:])) + 1
                gap_rows.append([SHORT[name], model, strategy, f"{gap[i]:+.4f}", f"{int(lab[i])}",
                                 f"{noise[i]:.4f}", "yes" if gap[i] < -2 * noise[i] / np.sqrt(args.seeds) * np.sqrt(2)
                                 else "no", int((gap[1:] < 0).sum()), len(gap) - 1])
                print(rows[-1], gap_rows[-1], flush=True)
            t0 = time.perf_counter()
            ceiling = cached_ceiling(X, y, model, args.runs_cache, f"{name}-{model}-n{len(y)}-whole-pool")
            print(f"{name} {model} whole pool: {ceiling:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
            sections.append(f"- {title}, {model}: random reaches "
                            + ", ".join(f"{targets[t]:.4f} at {t}" for t in targets_at)
                            + f" labels (seeds at {budget}: {', '.join(f'{v:.4f}' for v in racc[:, -1])}); "
                            f"the whole pool of {n_pool:,} labels gives {ceiling:.4f}."
                            + ("" if (name, model) not in switches else
                               " `auto` switched to uncertainty after "
                               + ", ".join("never" if v is None else "(not recorded)" if v == "unrecorded"
                                           else f"{v[0]} labels ({v[1]})"
                                           for v in switches[(name, model)]) + f" (seeds 0 to {args.seeds - 1}).")
                            + (f" **Void:** random's accuracy at the {INITIAL} seed labels, "
                               f"{racc[:, 0].mean():.4f}, already reaches its accuracy at {budget}."
                               if void else ""))
    elapsed = time.perf_counter() - t_start
    table = markdown_table(
        ["data", "model", "strategy", *[f"labels to match random @ {t}" for t in targets_at],
         f"acc @ {budget} (± sd over seeds)", "random acc", f"macro-F1 @ {budget}", "random macro-F1",
         f"per seed, to random @ {targets_at[-1]}"], rows)
    gap_table = markdown_table(
        ["data", "model", "strategy", "worst mean gap to random", "at labels", "random's sd there",
         "beyond noise", "budgets below random", "budgets"], gap_rows)
    class_table = markdown_table(["data", "model", "strategy",
                                  f"labels per class at {budget} (mean over seeds, class 0 first)"],
                                 class_rows)
    body = ("## Label efficiency on real data\n\n"
            f"Multiclass, {args.seeds} seeds, stratified 20% test split, {INITIAL} random seed labels, "
            f"batches of {args.batch_size} up to {budget}, full-pool scoring. Models "
            "(`datascout.models.make_model`): *logreg* = logistic regression "
            "(`class_weight=\"balanced\"`), *random-forest* = 200 trees (balanced), *mlp* = one "
            "hidden layer of 128; each is refitted every round and compared with random sampling "
            "under the same model. \"Labels to match random @ t\" is "
            "where the strategy's mean accuracy curve first reaches random's mean accuracy at t "
            "labels (linear interpolation between rounds; in brackets, as a share of t); *void* "
            "where random's curve does not rise from the seed to the budget, so there is nothing to "
            "reach.\n\n"
            + "\n".join(sections) + "\n\n" + table +
            "\n\nThe worst budget for each strategy: the most negative difference of mean accuracy "
            "(strategy - random) over every measured budget after the seed, with random's standard "
            "deviation over seeds at that budget. *Beyond noise* when the gap is larger than twice "
            "the standard error of a difference of two means of that spread "
            f"(2 sd sqrt(2 / {args.seeds})).\n\n" + gap_table +
            "\n\nWhich classes each strategy asked for: the labeled set at the end, per class "
            f"({INITIAL} random seed labels included).\n\n" + class_table +
            f"\n\nThe runs' own query and fit time, summed from their records: {run_seconds:.0f} s. "
            f"Wall time of this invocation {elapsed:.0f} s (load average {os.getloadavg()[0]:.1f}, shared machine); "
            f"peak RSS {peak_rss_mib():.0f} MiB.")
    print(body)
    if not args.no_write:
        write_section(args.section, body,
                      " ".join(["python", "benchmarks/bench_label_efficiency.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
