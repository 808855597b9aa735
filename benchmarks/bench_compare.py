"""Before / after a code change, in one run: the same data scored by two source trees alternately.

Two checks, each run in fresh processes that import ``datascout`` from ``--base`` or ``--new``
(a ``src/`` folder each), alternating which goes first so both see the same machine load:

* *scoring*: bench_scoring.py's child (1,000 labels, ``ActiveLearner.query(100)`` over the whole
  pool versus one ``X @ W`` pass) per strategy; the figure is new / base of query / matmul.
* *seals*: 20 rounds x 100 of ``ActiveLearner.query`` / ``teach`` on one synthetic clustered pool
  and one saved kNN graph (IVF1024,Flat, k = 100), per strategy and ``explore``; mean selection and
  neighbour-lookup ms per round, positives found.

    python benchmarks/bench_compare.py --base REV [--n-scoring 1000000] [--n-seals 200000]

``--base`` is a git revision (checked out into a temporary worktree for the run) or a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import markdown_table, write_section  # noqa: E402

SEALS_CASES = [("entropy", 0, True), ("entropy", 10000, True), ("density:candidates", 0, True),
               ("density", 0, True), ("density", 0, False)]


def seals_child(path: str, graph_dir: str, strategy: str, explore: int, seals: bool) -> None:
    """One tree's rounds (runs in a fresh process; the API of either tree)."""
    from datascout.loop import ActiveLearner
    from datascout.seals import CandidatePool, KNNGraph

    X = np.ascontiguousarray(np.load(path))
    y = np.load(path.replace(".npy", ".labels.npy"))
    rng = np.random.default_rng(0)
    test = np.sort(rng.choice(len(X), len(X) // 10, replace=False))
    name, _, ref = strategy.partition(":")
    cp = CandidatePool(X, graph=KNNGraph.load(graph_dir), k=100, explore=explore) if seals else None
    al = ActiveLearner(X, 2, name, candidates=cp, holdout=test, random_state=0,
                       density_reference=ref if (ref and seals) else "pool")
    al.prepare()
    mask = np.zeros(len(X), bool)
    mask[test] = True
    seed = np.r_[rng.choice(np.flatnonzero((y == 1) & ~mask), 5, replace=False),
                 rng.choice(np.flatnonzero((y == 0) & ~mask), 95, replace=False)]
    al.teach(seed, y[seed])
    al.fit()

    def lookups():  # the learner's own candidate set (new tree) or the pool it changed (old tree)
        return (getattr(al, "candidates_", None) or cp).neighbor_seconds if seals else 0.0

    sel, look = [], []
    for _ in range(20):
        t0 = time.perf_counter()
        ids = al.query(100)
        sel.append(time.perf_counter() - t0)
        l0 = lookups()
        al.teach(ids, y[ids])
        look.append(lookups() - l0)
        al.fit()
    print(json.dumps({"select_ms": 1000 * float(np.mean(sel)), "lookup_ms": 1000 * float(np.mean(look)),
                      "found": int((al.labels_ == 1).sum())}))


def run(tree: Path, argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run([sys.executable, *argv], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def both(i: int, base: Path, new: Path, argv_of, repeats: int = 1) -> dict:
    """Each tree's result (the smallest of ``repeats`` runs per figure), runs alternating trees."""
    got = {"base": [], "new": []}
    for r in range(repeats):
        order = [("base", base), ("new", new)] if (i + r) % 2 == 0 else [("new", new), ("base", base)]
        for tag, tree in order:
            got[tag].append(run(tree, argv_of(tree)))
    return {tag: {k: min(x[k] for x in runs) for k in runs[0]} for tag, runs in got.items()}


def scoring(args, base: Path, new: Path) -> str:
    import bench_scoring

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.npy"
        bench_scoring.make_pool(path, args.n_scoring, 256)
        for i, strategy in enumerate(args.strategies.split(",")):
            r = both(i, base, new, lambda tree: [str(tree / "benchmarks" / "bench_scoring.py"), "--child",
                                                 str(path), strategy, "--repeats", "5", "--batch", "100"])
            rb, rn = (r[t]["query_s"] / r[t]["matmul_s"] for t in ("base", "new"))
            rows.append([strategy, f"{r['base']['query_s']:.3f}", f"{rb:.2f}x", f"{r['new']['query_s']:.3f}",
                         f"{rn:.2f}x", f"{rn / rb:.2f}", f"{r['base']['peak_rss'] / 2**20:.0f}",
                         f"{r['new']['peak_rss'] / 2**20:.0f}"])
            print(rows[-1], flush=True)
    return (f"Full-pool scoring, {args.n_scoring:,} x 256 float32 in memory, 10 classes, best of 5 per "
            "process:\n\n" + markdown_table(
                ["strategy", "base query s", "base / X @ W", "new query s", "new / X @ W",
                 "new / base (normalised)", "base peak MiB", "new peak MiB"], rows))


def seals(args, base: Path, new: Path) -> str:
    import bench_seals_scale

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"synth-{args.n_seals}x256-f32.npy"
    X, y = bench_seals_scale.make_pool(path, args.n_seals, 256, np.float32)
    gdir = data / f"synth-{args.n_seals}x256-f32.knn-IVF1024-Flat-k100"
    if not gdir.is_dir():  # built once with the new tree (the graph's format is the same in both)
        sys.path.insert(0, str(new / "src"))
        from datascout.index import SimilarityIndex
        from datascout.seals import KNNGraph

        idx = SimilarityIndex("IVF1024,Flat", nprobe=16).build(np.ascontiguousarray(X))
        KNNGraph.build(X, 100, idx, out_dir=gdir)
    rows = []
    for i, (strategy, explore, on) in enumerate(SEALS_CASES):
        r = both(i, base, new, lambda tree: [str(HERE / "bench_compare.py"), "--seals-child", str(path),
                                             str(gdir), strategy, str(explore), "1" if on else "0"],
                 repeats=args.seals_repeats)
        rows.append(["SEALS" if on else "full pool", strategy, f"{explore:,}",
                     f"{r['base']['select_ms']:.2f}", f"{r['new']['select_ms']:.2f}",
                     f"{r['new']['select_ms'] / r['base']['select_ms']:.2f}",
                     f"{r['base']['lookup_ms']:.2f}", f"{r['new']['lookup_ms']:.2f}",
                     f"{r['base']['found']} / {r['new']['found']}"])
        print(rows[-1], flush=True)
    return (f"SEALS rounds, {args.n_seals:,} x 256 float32 (bench_seals_scale's clustered pool, 0.1% "
            "positives), kNN graph IVF1024,Flat k = 100, 20 rounds x 100 from 5 + 95 seed labels, a "
            f"random 10% held out; mean ms per round, the smallest of {args.seals_repeats} runs per tree:\n\n" + markdown_table(
                ["arm", "strategy", "explore", "base select ms", "new select ms", "new / base",
                 "base lookup ms", "new lookup ms", "found base / new"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="the tree before the change: a git revision or a folder (with src/, benchmarks/)")
    ap.add_argument("--new", default=str(HERE.parent), help="source tree after the change")
    ap.add_argument("--n-scoring", type=int, default=1_000_000)
    ap.add_argument("--n-seals", type=int, default=200_000)
    ap.add_argument("--strategies", default="entropy,margin,least-confidence")
    ap.add_argument("--seals-repeats", type=int, default=3, help="runs per tree and SEALS case (alternating)")
    ap.add_argument("--parts", default="scoring,seals")
    ap.add_argument("--data-dir", default=None, help="where the SEALS pool and graph are kept")
    ap.add_argument("--section", default="before-after")
    ap.add_argument("--title", default="Before / after a change")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--seals-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seals_child:
        path, gdir, strategy, explore, on = args.seals_child
        seals_child(path, gdir, strategy, int(explore), on == "1")
        return
    if not args.base:
        ap.error("--base is required")
    if args.data_dir is None:
        from datascout.datasets import cache_dir

        args.data_dir = str(cache_dir() / "bench")
    new = Path(args.new).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.base).is_dir():
            base, what = Path(args.base).resolve(), "a folder"
        else:
            base = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(new), "worktree", "add", "--detach", str(base), args.base],
                           check=True, capture_output=True)
            what = "commit " + subprocess.run(["git", "-C", str(base), "rev-parse", "--short", "HEAD"],
                                              check=True, capture_output=True, text=True).stdout.strip()
        try:
            parts = [{"scoring": scoring, "seals": seals}[p](args, base, new) for p in args.parts.split(",")]
        finally:
            if not Path(args.base).is_dir():
                subprocess.run(["git", "-C", str(new), "worktree", "remove", "--force", str(base)], check=False)
    body = (f"## {args.title}\n\nThe same data run by the tree before (*base*: {what}) and after (*new*) "
            "the change, in fresh processes, alternating which goes first. Ratios in one run are the "
            "figures to read; absolute times follow the machine's load "
            f"(load average at the end: {os.getloadavg()[0]:.1f}).\n\n" + "\n\n".join(parts))
    print(body)
    if not args.no_write:
        write_section(args.section, body, " ".join(["python", "benchmarks/bench_compare.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
