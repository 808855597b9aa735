"""Full-pool scoring throughput: what the loop really runs for a full-pool query, versus one
``X @ W`` pass over the same data, in the same run.

Pool: N x d float32 (default 1,000,000 x 256, clustered, 10 classes). The learner is fitted on a
labeled seed; then ``ActiveLearner.query(b)`` is timed (chunked predict_proba -> score -> top-b,
exactly the code path of a full-pool round) against ``X @ W`` with W the model's (d, C) weights.
Floor: query time <= 2x the matmul pass. Memory: the query runs in a fresh subprocess that holds
the embeddings in memory; its peak RSS (ru_maxrss) and the growth over the state just before the
query are compared with the embeddings' size (floor: peak <= 1.5x).

    python benchmarks/bench_scoring.py [--n 1000000] [--d 256] [--strategies entropy,margin]

With ``--float16-memmap`` the pool is a float16 memory map with a held-out test split
(``--test-size`` rows, random), binary logistic regression, entropy, top-b, and every arm runs
in one process, interleaved: a plain numpy round on a float32 copy of the pool rows in memory
(``X @ w + b``, sigmoid, entropy, ``argpartition``); the round as it was before
``datascout.convert`` (every row cast by numpy, chunk by chunk, scored, then masked); the
round now without a float32 copy (budget 0, the default) and with one (budget large enough);
and one sequential read of the file from the page cache.

    python benchmarks/bench_scoring.py --float16-memmap --n 117659 --d 384 --test-size 23532
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


def make_float16_pool(path: Path, n: int, d: int, seed: int = 0) -> None:
    """Clustered unit-norm float16 rows (like sentence embeddings), written chunk by chunk;
    labels: 1 for the rows of one cluster in twenty (a rare concept), else 0."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)).astype(np.float32)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    y = np.empty(n, dtype=np.int64)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        lab = rng.integers(0, 20, stop - start)
        rows = centers[lab] + 2.0 * rng.standard_normal((stop - start, d), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        X[start:stop] = rows
        y[start:stop] = lab == 0
    X.flush()
    del X
    np.save(path.with_name("labels.npy"), y)


def _read_file(path: str, buf: bytearray) -> int:
    """One sequential read of the whole file (from the page cache once it is warm)."""
    total = 0
    with open(path, "rb", buffering=0) as fh:
        view = memoryview(buf)
        while (got := fh.readinto(view)) > 0:
            total += got
    return total


def _memory() -> dict:
    """This process's peak resident set (VmHWM) and its anonymous and file-backed parts now
    (RssAnon: memory of its own; RssFile: pages of mapped files, e.g. the page cache of a memory
    map), in bytes, from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    """Start VmHWM afresh (a child inherits its parent's peak across exec)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child_float16(path: str, n_test: int, repeats: int, batch: int, blas_threads: int,
                  arms_wanted: str) -> None:
    """Runs in a fresh process: every arm of the float16 memory-map comparison, interleaved."""
    from threadpoolctl import threadpool_info, threadpool_limits


    from datascout.convert import Float32Rows, as_float32
    from datascout.loop import ActiveLearner
    from datascout.pool import iter_row_chunks
    from datascout.strategies import entropy, top_b

    limits = threadpool_limits(blas_threads, user_api="blas") if blas_threads else None  # noqa: F841 (kept)
    X = np.load(path, mmap_mode="r")
    y = np.load(Path(path).with_name("labels.npy"))
    n, d = X.shape
    buf = bytearray(4 << 20)
    _read_file(path, buf)  # warm the page cache
    rng = np.random.default_rng(0)
    test = np.sort(rng.choice(n, n_test, replace=False))
    pool = np.setdiff1d(np.arange(n), test)
    pos, neg = pool[y[pool] == 1], pool[y[pool] == 0]
    seed = np.concatenate([rng.choice(pos, 5, replace=False), rng.choice(neg, 95, replace=False)])

    def learner(budget):
        lr = ActiveLearner(X, 2, "entropy", holdout=test, random_state=0)
        lr._pool_rows = Float32Rows(X, budget=budget, finite=True)
        lr.teach(seed, y[seed])
        lr.fit()
        return lr

    streamed = learner(0)
    streamed.query(batch)
    per_round = streamed.pool_rows().converted_rows_
    _reset_peak()  # what a round holds, once the learner exists and the file's pages are mapped
    base = _memory()
    streamed.query(batch)
    after = _memory()
    model = streamed.model_
    w, b = model._linear
    exclude = streamed.labels_ != -1
    copied, first_copy_s, X32 = None, None, None
    if "copy" in arms_wanted:
        copied = learner(len(pool) * d * 4)
        t0 = time.perf_counter()
        copied.query(batch)
        first_copy_s = time.perf_counter() - t0
    if "plain" in arms_wanted:
        X32 = np.empty((len(pool), d), dtype=np.float32)  # the plain arm's float32 copy in memory
        for rows in iter_row_chunks(len(pool)):
            as_float32(X[pool[rows]], out=X32[rows])

    def plain():
        z = X32 @ w
        z += b
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        s = entropy(np.stack([1.0 - p, p], axis=1))
        s[np.isin(pool, seed)] = -np.inf
        return pool[np.argpartition(-s, batch)[:batch]]

    def before():  # the round as it was: numpy's cast of every row, then masked
        out = np.empty(n, dtype=np.float64)
        for rows in iter_row_chunks(n):
            out[rows] = entropy(model.predict_proba(np.asarray(X[rows], dtype=np.float32)))
        out[exclude] = -np.inf
        return top_b(out, batch, np.random.default_rng(0))

    arms = {"read": lambda: _read_file(path, buf), "plain": plain, "before": before,
            "stream": lambda: streamed.query(batch), "copy": lambda: copied.query(batch)}
    arms = {k: f for k, f in arms.items() if k in arms_wanted}
    times = {k: [] for k in arms}
    for _ in range(repeats):  # interleaved, so every arm sees the same machine load
        for k, f in arms.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    blas = [(i["internal_api"], i["num_threads"], i.get("architecture")) for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(json.dumps({**{k: min(v) for k, v in times.items()},
                      **{k + "_med": float(np.median(v)) for k, v in times.items()},
                      "first_copy_s": first_copy_s, "file_bytes": os.path.getsize(path),
                      "base": base, "after": after, "n_pool": len(pool),
                      "n_test": n_test, "blas": blas,
                      "copy_bytes": copied.pool_rows().copy_.nbytes if copied is not None else 0,
                      "stream_converted": per_round}))


def main_float16(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "emb16.npy"
        t0 = time.perf_counter()
        make_float16_pool(path, args.n, args.d)
        gen_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, __file__, "--child-float16", str(path), str(args.test_size),
                              "--repeats", str(args.repeats), "--batch", str(args.batch),
                              "--blas-threads", str(args.blas_threads), "--arms", args.arms],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(r))
    a, b = r["after"], r["base"]
    names = {"read": "one sequential read of the file (page cache)",
             "plain": "plain numpy, float32 copy of the pool rows in memory",
             "before": "before: numpy's cast of every row, then masked",
             "stream": "now, no float32 copy (budget 0, the default)",
             "copy": "now, float32 copy held (budget >= copy)"}
    p, rd = r.get("plain"), r.get("read")
    rows = [[names[k], f"{r[k]:.4f}", f"{r[k] / p:.2f}x" if p else "-", f"{r[k] / rd:.2f}x" if rd else "-"]
            for k in names if k in r]
    meds = ", ".join(f"{k} {r[k + '_med']:.4f}" for k in names if k in r)
    table = markdown_table(["full-pool round (entropy, top-%d)" % args.batch, "s (best)",
                            "/ plain", "/ read"], rows)
    mib = 2**20
    body = (f"## Full-pool rounds on a float16 memory map ({args.n:,} x {args.d})\n\n"
            f"Synthetic clustered unit-norm float16 rows ({r['file_bytes'] / mib:.0f} MiB file, made in "
            f"{gen_s:.0f} s), memory-mapped and warm in the page cache; {r['n_test']:,} random rows held out "
            f"as a test split, {r['n_pool']:,} in the pool; binary logistic regression fitted on 100 labels "
            f"(5 positive); `ActiveLearner.query({args.batch})`. Every arm in one process, interleaved, best "
            f"of {args.repeats} (medians, s: {meds}). BLAS: "
            f"{r['blas']}.\n\n{table}\n\n"
            f"A round without the copy converts only the {r['stream_converted']:,} scored rows "
            f"(labeled and held-out rows are neither read nor converted). Memory: file-backed pages (the memory "
            f"map's, from the page cache, and the libraries') {b['RssFile'] / mib:.0f} MiB; a round's peak adds {(a['VmHWM'] - b['RssAnon'] - b['RssFile']) / mib:.0f} MiB to what "
            f"the process held ({(a['VmHWM'] - b['RssAnon'] - b['RssFile']) / r['file_bytes']:.2f}x the file: "
            f"chunk buffers and the round's per-row arrays). "
            + (f"With a budget the first round makes the float32 copy ({r['copy_bytes'] / mib:.0f} MiB) in "
               f"{r['first_copy_s']:.3f} s; later rounds read it. " if r["first_copy_s"] is not None else "")
            + f"Load average during the run: {os.getloadavg()[0]:.1f} (shared machine).")
    print(body)
    if not args.no_write:
        write_section(args.section if args.section != "scoring" else f"scoring-float16-{args.n}", body,
                      " ".join(["python", "benchmarks/bench_scoring.py", *sys.argv[1:]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--strategies", default="entropy,margin,least-confidence")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", default="scoring", help="section of docs/benchmarks.md")
    ap.add_argument("--float16-memmap", action="store_true",
                    help="float16 memory-mapped pool with a test split; every arm in one process")
    ap.add_argument("--test-size", type=int, default=0, help="held-out rows (with --float16-memmap)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="BLAS threads in the float16 child (0: as the environment sets them)")
    ap.add_argument("--arms", default="read,plain,before,stream,copy",
                    help="arms of the float16 comparison (plain and copy hold a float32 copy in memory)")
    ap.add_argument("--tmp", default=None, help="folder for the pool file (default: the system's)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-float16", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_float16:
        child_float16(args.child_float16[0], int(args.child_float16[1]), args.repeats, args.batch,
                      args.blas_threads, args.arms.split(","))
        return
    if args.float16_memmap:
        main_float16(args)
        return
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
