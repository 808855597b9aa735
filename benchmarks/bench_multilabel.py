"""Multi-label active learning: label efficiency on Debian's debtags, and the cost of a round.

``efficiency``: Debian package descriptions (short + long, ``datascout.datasets``' ``debian``)
as all-MiniLM-L6-v2 embeddings, the pool ``datascout datasets embed debian`` builds (read from
its cache folder; a ``--limit`` pool is a seeded random subset), each package's label set = its
debtags among the ``--labels`` most frequent tags of the pool (matched to the pool by package
name). Each run is :func:`datascout.multilabel_simulate.simulate_multilabel`: an iteratively
stratified 20% test split, 100 random seed labels, batches of ``--batch`` up to ``--budget``
labels, binary relevance over balanced logistic regression. "Labels needed" is where the
strategy's mean micro-F1 curve over seeds first reaches random's mean at the budget (linear
interpolation between rounds; "> budget" when it never does). SEALS runs (kNN graph k = 100,
exact search) are compared with the same strategy on the whole pool at the budget (floor: 0.98x
micro-F1) and report the candidate-set size. The ceiling is the same model fitted on the whole
pool (seed 0's split). ``--runs-cache DIR`` keeps every run's result.

``cost``: one selection round's scoring at ``--n`` x ``--d`` with ``--labels`` labels (synthetic,
float32): the strategy's whole ``score_rows`` pass (probabilities + score) against one ``X @ W``
pass alone, the floor being 3x for the entropy-type scores.

    python benchmarks/bench_multilabel.py efficiency [--seeds 3] [--budget 1000] [--batch 100]
        [--labels 20] [--strategies mean-entropy,...] [--seals mean-entropy,...] [--runs-cache DIR]
    python benchmarks/bench_multilabel.py cost [--n 1000000] [--d 256] [--labels 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout.multilabel import supported_labels  # noqa: E402
from datascout.multilabel_loop import MultiLabelLearner  # noqa: E402
from datascout.multilabel_models import BinaryRelevance, FittedMultiLabel  # noqa: E402
from datascout.multilabel_simulate import MultiLabelSimulationConfig, evaluate_sets, simulate_multilabel  # noqa: E402
from datascout.registry import MULTILABEL_STRATEGY_NAMES  # noqa: E402
from datascout.seals import KNNGraph  # noqa: E402
from datascout.seeds import iterative_stratification_seed  # noqa: E402
from datascout.simulate import learning_curves_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FEATURES = {"minilm": "all-MiniLM-L6-v2 embeddings (the `datascout datasets embed debian` pool)",
            "tfidf": "TF-IDF (sublinear, words in >= 3 descriptions) + truncated SVD to 256 dimensions"}
DEFAULT_STRATEGIES = ("random", "mean-entropy", "max-entropy", "min-margin", "mmc", "lci", "adaptive",
                      "max-loss", "mean-max-loss", "kcenter", "hybrid-mean-entropy")
FIGURES = ROOT / "docs" / "figures"


def debtags_pool(n_labels: int, features: str = "minilm"):
    """(X, Y, tag names, pool info): ``minilm`` reads the cached debian pool (``datascout
    datasets embed debian``) and matches the apt lists' debtags to it by package name; ``tfidf``
    embeds every tagged package's description as TF-IDF (words in >= 3 descriptions, sublinear)
    reduced to 256 dimensions by truncated SVD, L2-normalised."""
    from datascout.datasets import cache_dir, load_debian_packages

    pk = load_debian_packages()
    if features == "tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        T = TfidfVectorizer(min_df=3, sublinear_tf=True).fit_transform(pk.texts)
        X = TruncatedSVD(256, random_state=0).fit_transform(T).astype(np.float32)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        ids, sets, subset = pk.ids.tolist(), pk.tags, None
    else:
        from datascout.embed.pipeline import load_pool_dir

        pool = load_pool_dir(cache_dir() / "pools" / "debian")
        tags_of = dict(zip(pk.ids.tolist(), pk.tags))
        ids = np.asarray(pool.ids).astype(str).tolist()
        missing = [i for i in ids if i not in tags_of]
        if missing:
            raise SystemExit(f"{len(missing)} pool ids are not in the apt lists (e.g. {missing[0]!r}): rebuild the pool")
        sets = [tags_of[i] for i in ids]
        X = np.ascontiguousarray(np.asarray(pool.embeddings, dtype=np.float32))
        subset = pool.manifest.get("subset") or pool.manifest.get("source", {}).get("subset")
    Y, names = supported_labels(sets, max_labels=n_labels)
    info = {"n": len(ids), "support_min": int(Y.sum(axis=0).min()), "support_max": int(Y.sum(axis=0).max()),
            "cardinality": float(Y.sum(axis=1).mean()), "empty": float((~Y.any(axis=1)).mean()),
            "subset": subset, "features": features}
    return X, Y, names, info


def run_one(X, Y, names, strategy, seed, args, seals: bool, cache: Path | None, graph=None):
    key = (f"{args.features}-{strategy}-{'seals' if seals else 'full'}-s{seed}-b{args.budget}-m{args.batch}"
           f"-L{len(names)}-n{len(X)}")
    if cache is not None and (cache / f"{key}.json").is_file():
        return json.loads((cache / f"{key}.json").read_text())
    rounds = (args.budget - 100) // args.batch
    cfg = MultiLabelSimulationConfig(strategy=strategy, seals=seals, k=100, index="Flat", initial=100,
                                     batch_size=args.batch, rounds=rounds, seed=seed)
    t0 = time.perf_counter()
    res = simulate_multilabel(X, Y, cfg, classes=names, graph=graph() if seals else None)
    res["wall_seconds"] = time.perf_counter() - t0
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{key}.json").write_text(json.dumps(res))
    print(f"{key}: micro-F1 {res['rounds'][-1]['micro_f1']:.4f} in {res['wall_seconds']:.0f} s", flush=True)
    return res


def curve(results, metric="micro_f1"):
    x = np.asarray([r["labeled"] for r in results[0]["rounds"]], dtype=float)
    v = np.asarray([[r[metric] for r in res["rounds"]] for res in results], dtype=float)
    return x, v.mean(axis=0), v.std(axis=0)


def labels_needed(x, mean, target):
    hit = np.flatnonzero(mean >= target)
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], mean[i - 1], mean[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def ceiling(X, Y):
    """Micro-F1 of the model fitted on the whole pool of seed 0's split."""
    n_test = int(np.ceil(len(X) * 0.2))
    test = iterative_stratification_seed(Y, n_test, np.random.default_rng([0, 1]))
    pool = np.setdiff1d(np.arange(len(X)), test)
    m = FittedMultiLabel(BinaryRelevance(random_state=0), Y.shape[1]).fit(X[pool], Y[pool])
    return evaluate_sets(Y[test], m.predict_proba(X[test]))


def efficiency(args) -> None:
    X, Y, names, info = debtags_pool(args.labels, args.features)
    cache = Path(args.runs_cache) if args.runs_cache else None
    strategies = args.strategies.split(",")
    seals = [s for s in args.seals.split(",") if s]
    for s in strategies + seals:
        if s not in MULTILABEL_STRATEGY_NAMES:
            raise SystemExit(f"unknown strategy {s!r}")
    seeds = range(args.seeds)
    runs = {s: [run_one(X, Y, names, s, k, args, False, cache) for k in seeds] for s in strategies}
    built = {}

    def graph():  # the exact kNN graph (k = 100), built once for every SEALS run
        if "g" not in built:
            built["g"] = KNNGraph.build(X, k=100, index="Flat")
        return built["g"]

    seal_runs = {s: [run_one(X, Y, names, s, k, args, True, cache, graph) for k in seeds] for s in seals}
    top = ceiling(X, Y)
    target = float(curve(runs["random"])[1][-1])
    target_ap = float(curve(runs["random"], "average_precision")[1][-1])
    rows = []
    for s, res in list(runs.items()) + [(f"{s} + SEALS", r) for s, r in seal_runs.items()]:
        x, m, sd = curve(res)
        need = labels_needed(x, m, target)
        xa, ma, _ = curve(res, "average_precision")
        need_ap = labels_needed(xa, ma, target_ap)
        last = [r["rounds"][-1] for r in res]
        row = [s, f"{m[-1]:.4f} ± {sd[-1]:.4f}",
               f"{np.mean([r['macro_f1'] for r in last]):.4f}",
               f"{np.mean([r['average_precision'] for r in last]):.4f}",
               f"{np.mean([r['hamming_loss'] for r in last]):.4f}",
               f"{np.mean([r['aulc'] for r in res]):.4f}",
               "> budget" if need is None else f"{need:.0f}",
               "> budget" if need_ap is None else f"{need_ap:.0f}",
               f"{np.mean([np.mean([q['select_seconds'] for q in r['rounds'][1:]]) for r in res]):.3f}"]
        if s.endswith(" + SEALS"):
            base = s[: -len(" + SEALS")]
            ratio = m[-1] / curve(runs[base])[1][-1] if base in runs else float("nan")
            cands = np.mean([np.mean([q["candidates"] for q in r["rounds"][1:]]) for r in res])
            row += [f"{ratio:.3f}", f"{cands:.0f} ({cands / res[0]['n_pool']:.0%})"]
        else:
            row += ["", f"{res[0]['n_pool']} (100%)"]
        rows.append(row)
    tag = args.features + ("" if args.budget == 1000 else f"-b{args.budget}")
    figure = FIGURES / f"multilabel-debtags-{tag}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in runs.items() if k in ("random", "mean-entropy", "min-margin", "adaptive", "mmc",
                                                      "max-loss", "lci", "kcenter")}
    shown.update({f"{k} + SEALS": v for k, v in seal_runs.items()})
    figure.write_bytes(learning_curves_png(
        shown, title=f"debtags, {len(names)} labels, {info['n']} packages: micro-F1 ({args.seeds} seeds)"))
    figure_ap = figure.with_name(figure.stem + "-map.png")
    figure_ap.write_bytes(learning_curves_png(
        {k: [{**r, "metric": "average_precision"} for r in v] for k, v in shown.items()},
        title=f"debtags, {len(names)} labels, {info['n']} packages: mAP ({args.seeds} seeds)"))
    sub = info["subset"]
    body = (f"## Multi-label active learning on Debian debtags ({args.features}, to {args.budget:,} labels)\n\n"
            f"{info['n']:,} Debian package descriptions"
            f"{' (a seeded random subset of ' + str(sub['limit']) + ')' if sub else ''} as "
            f"{FEATURES[args.features]}; label set = the package's debtags among the {len(names)} most frequent tags of the pool "
            f"(support {info['support_min']}..{info['support_max']} packages; mean {info['cardinality']:.2f} labels "
            f"per package, {info['empty']:.0%} with none of them). Binary relevance over balanced logistic "
            f"regression; iteratively stratified 20% test split; 100 random seed labels, batches of {args.batch} "
            f"to {args.budget} labels; {args.seeds} seeds (mean ± std). Random reaches micro-F1 **{target:.4f}** and "
            f"mAP **{target_ap:.4f}** at {args.budget} labels; the same model on the whole pool ({runs['random'][0]['n_pool']:,} labels) "
            f"reaches micro-F1 {top['micro_f1']:.4f}, macro-F1 {top['macro_f1']:.4f}, mAP "
            f"{top['average_precision']:.4f}.\n\n"
            + markdown_table(["strategy", f"micro-F1 @ {args.budget}", "macro-F1", "mAP", "Hamming", "AULC",
                              "labels to random's micro-F1", "labels to random's mAP", "select s/round", "SEALS / full micro-F1",
                              "candidates scored"], rows)
            + f"\n\n![micro-F1 learning curves](figures/{figure.name})\n"
            f"![mAP learning curves](figures/{figure_ap.name})\n\n"
            "Micro-F1 is read at the 0.5 threshold of balanced logistic regressions, whose calibration "
            "moves with the labeled set (it need not rise with the model's ranking quality; the whole "
            "pool can score below a small sample); mAP (mean over labels of each label's average "
            "precision) is threshold-free.\n\n"
            f"Labels: {', '.join(names)}. Peak RSS {peak_rss_mib():.0f} MiB. The machine was shared with other "
            f"jobs (load {os.getloadavg()[0]:.1f} at the end): the seconds are noisy.")
    cmd = "python benchmarks/bench_multilabel.py efficiency " + " ".join(sys.argv[2:])
    write_section(f"multilabel-debtags-{tag}", body, cmd.strip())
    print(body)


def cost(args) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d), dtype=np.float32)
    W = rng.standard_normal((args.d, args.labels), dtype=np.float32) * 0.1
    n_fit = 2000
    Yfit = (X[:n_fit] @ W + rng.standard_normal((n_fit, args.labels), dtype=np.float32) * 0.3) > 0.3
    rows = []

    def best(fn, reps=3):
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return min(out)

    base = best(lambda: X @ W)
    for name in args.strategies.split(","):
        L = MultiLabelLearner(X, args.labels, name, random_state=0)
        L.teach(np.arange(n_fit), Yfit)
        L.fit()
        t = best(lambda: L.score_rows(X, np.arange(args.n)))
        rows.append([name, f"{t:.3f}", f"{t / base:.2f}x"])
    body = (f"## Multi-label selection cost ({args.n:,} x {args.d} x {args.labels} labels)\n\n"
            f"One round's scoring of the whole pool (binary relevance's float32 `sigmoid(X @ W + b)` and the "
            f"score, in 65,536-row chunks, best of 3) against one `X @ W` pass alone: {base:.3f} s. Synthetic "
            f"float32 rows; the model is fitted on 2,000 of them. The machine was shared (load "
            f"{os.getloadavg()[0]:.1f}).\n\n" + markdown_table(["strategy", "seconds", "vs X @ W"], rows))
    cmd = "python benchmarks/bench_multilabel.py cost " + " ".join(sys.argv[2:])
    write_section(f"multilabel-cost-{args.n}", body, cmd.strip())
    print(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    e = sub.add_parser("efficiency")
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--budget", type=int, default=1000)
    e.add_argument("--batch", type=int, default=100)
    e.add_argument("--labels", type=int, default=20)
    e.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    e.add_argument("--seals", default="mean-entropy,adaptive")
    e.add_argument("--runs-cache", default=None)
    e.add_argument("--features", choices=("minilm", "tfidf"), default="minilm",
                   help="minilm: the cached 'datasets embed debian' pool; tfidf: TF-IDF + SVD-256 of every package")
    c = sub.add_parser("cost")
    c.add_argument("--n", type=int, default=1_000_000)
    c.add_argument("--d", type=int, default=256)
    c.add_argument("--labels", type=int, default=50)
    c.add_argument("--strategies", default="random,mean-entropy,max-entropy,min-margin,mmc,lci,adaptive,"
                                           "max-loss,mean-max-loss")
    args = ap.parse_args()
    efficiency(args) if args.part == "efficiency" else cost(args)


if __name__ == "__main__":
    main()
