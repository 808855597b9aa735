"""Full-pool scoring throughput: what the loop really runs for a full-pool query, versus one
``X @ W`` pass over the same data, in the same run.

Pool: N x d float32 (default 1,000,000 x 256, clustered, 10 classes). The learner is fitted on a
labeled seed; then ``ActiveLearner.query(b)`` is timed (chunked predict_proba -> score -> top-b,
exactly the code path of a full-pool round) against ``X @ W`` with W the model's (d, C) weights.
Floor: query time <= 2x the matmul pass. Memory: the query runs in a fresh subprocess that holds
the embeddings in memory; its peak RSS (ru_maxrss) and the growth over the state just before the
query are compared with the embeddings' size (floor: peak <= 1.5x).

    python benchmarks/bench_scoring.py [--n 1000000] [--d 256] [--strategies entropy,margin]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

N_CLASSES = 10
SCORES = {"entropy", "margin", "least-confidence", "random", "most-likely-positive"}


def make_pool(path: Path, n: int, d: int, seed: int = 0) -> None:
    """Clustered float32 embeddings written chunk by chunk (no float64 copy of the pool)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((N_CLASSES, d)).astype(np.float32)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    y = np.empty(n, dtype=np.int64)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        lab = rng.integers(0, N_CLASSES, stop - start)
        X[start:stop] = centers[lab] + 1.5 * rng.standard_normal((stop - start, d), dtype=np.float32)
        y[start:stop] = lab
    X.flush()
    del X
    np.save(path.with_name("labels.npy"), y)


def child(path: str, strategy: str, repeats: int, batch: int) -> None:
    """Runs in a fresh process: load the pool into memory, fit, time query vs X @ W."""
    import resource

    from datascout.loop import ActiveLearner

    X = np.load(path)  # in memory, read straight into one float32 buffer
    y = np.load(Path(path).with_name("labels.npy"))
    learner = ActiveLearner(X, N_CLASSES, strategy, random_state=0)
    rng = np.random.default_rng(0)
    seed = rng.choice(len(X), 1000, replace=False)
    learner.teach(seed, y[seed])
    learner.fit()
    W, b = learner.model_._linear
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mm, qq = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        logits = X @ W
        mm.append(time.perf_counter() - t0)
        del logits
        t0 = time.perf_counter()
        ids = learner.query(batch)
        qq.append(time.perf_counter() - t0)
        assert len(ids) == batch
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"matmul_s": min(mm), "query_s": min(qq), "matmul_med": float(np.median(mm)),
                      "query_med": float(np.median(qq)), "base_rss": base_rss, "peak_rss": peak,
                      "emb_bytes": X.nbytes, "classes": W.shape[1]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--strategies", default="entropy,margin,least-confidence")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", default="scoring", help="section of docs/benchmarks.md")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.repeats, args.batch)
        return
    rows, ok = [], True
    scores_only = all(s in SCORES for s in args.strategies.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.npy"
        make_pool(path, args.n, args.d)
        for strategy in args.strategies.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), strategy,
                                  "--repeats", str(args.repeats), "--batch", str(args.batch)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = r["query_s"] / r["matmul_s"]
            peak = r["peak_rss"] / r["emb_bytes"]
            growth = (r["peak_rss"] - r["base_rss"]) / r["emb_bytes"]
            ok &= ratio <= 2.0 and peak <= 1.5
            rows.append([strategy, f"{r['matmul_s']:.3f}", f"{r['query_s']:.3f}", f"{ratio:.2f}x",
                         f"{r['peak_rss'] / 2**20:.0f}", f"{peak:.2f}x", f"{growth:.3f}x"])
            print(rows[-1], flush=True)
    table = markdown_table(
        ["strategy", "X @ W (s)", "query: score + top-b (s)", "ratio", "peak RSS (MiB)",
         "peak / embeddings", "growth during query / embeddings"], rows)
    gib = args.n * args.d * 4 / 2**30
    body = (f"## Full-pool scoring throughput" + ("" if args.section == "scoring" else f" ({args.strategies})")
            + "\n\n"
            f"{args.n:,} x {args.d} float32 in memory ({gib:.2f} GiB), {N_CLASSES} classes, logistic "
            f"regression fitted on 1,000 labels; `ActiveLearner.query({args.batch})` (chunked "
            f"predict_proba -> score -> top-b, the code path of a full-pool round) versus one `X @ W` "
            f"pass of the same data. Best of {args.repeats}, interleaved. Each strategy runs in a fresh "
            f"process; peak RSS (ru_maxrss) includes the embeddings themselves.\n\n{table}\n\n"
            + (f"Floors (ratio <= 2x, peak <= 1.5x the embeddings): **{'met' if ok else 'NOT met'}**. "
               if scores_only else
               "Not every row here is a per-item score: k-center greedy picks the b items one at a time, "
               "each pick a pass over the pool's distances (O(N b d) in all); BALD and the committee fit "
               "and query several models (5 here); hybrid runs k-center over its 10 b best. The figures "
               "say what a full-pool round of each costs next to one `X @ W`. ")
            + f"Load average during the run: {os.getloadavg()[0]:.1f} (shared machine).")
    print(body)
    if not args.no_write:
        write_section(args.section, body, " ".join(["python", "benchmarks/bench_scoring.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
