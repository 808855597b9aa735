"""Scale-out over Ray on this machine: 2 shards on a local Ray cluster vs 1 process.

The same synthetic clustered pool (default 2,000,000 x 256 float32, 2 GB) is written once as one
``.npy`` file and once as a 2-shard directory; then, each phase timed in the same run:

* index build (train on the same sample; single process ``SimilarityIndex.build`` vs Ray add
  tasks + faiss merge); the two indexes are compared byte for byte;
* kNN graph (single ``KNNGraph.build`` vs Ray graph tasks), compared row by row;
* full-pool scoring (logistic regression ``predict_proba`` + entropy + top-100), compared
  exactly; plus the same with 1 Ray task, to isolate Ray's own overhead.

Prints a table and writes the ``ray`` section of docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_ray.py                   # 2,000,000 x 256
    .venv/bin/python benchmarks/bench_ray.py --rows 200000     # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout import ray as dist  # noqa: E402
from datascout.index import SimilarityIndex  # noqa: E402
from datascout.models import FittedModel, default_model  # noqa: E402
from datascout.seals import KNNGraph  # noqa: E402
from datascout.shards import ShardedArray, write_shards  # noqa: E402
from datascout.strategies import top_b  # noqa: E402


def make_pool(path: Path, n: int, d: int, n_clusters: int = 1000, seed: int = 0) -> np.ndarray:
    """Clustered Gaussian data written chunk by chunk into a .npy memory map; returns the labels."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = centers[labels[lo:hi]] + 0.6 * rng.standard_normal((hi - lo, d), dtype=np.float32)
    out.flush()
    del out
    return labels


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--index", default="IVF1024,PQ32")
    ap.add_argument("--train-size", type=int, default=50_000)
    ap.add_argument("--nprobe", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--graph-rows", type=int, default=200_000,
                    help="the graph phase runs on the first this many rows (default 200,000)")
    ap.add_argument("--b", type=int, default=100)
    ap.add_argument("--workdir", default=None, help="where the pool is written (default: a temp dir)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    n, d = args.rows, args.dim
    labels, t_gen = timed(lambda: make_pool(work / "pool.npy", n, d))
    X = np.load(work / "pool.npy", mmap_mode="r")
    _, t_shard = timed(lambda: write_shards(work / "pool.shards", X, num_shards=args.shards, overwrite=True))
    view = ShardedArray(work / "pool.shards")
    print(f"pool {n} x {d} written in {t_gen:.1f} s, split into {args.shards} shards in {t_shard:.1f} s", flush=True)

    ray = dist.require_ray()
    _, t_init = timed(lambda: dist.init_ray(num_cpus=args.shards))
    noop = ray.remote(num_cpus=1)(lambda: 0)
    ray.get([noop.remote() for _ in range(args.shards)])  # warm the workers
    _, t_noop = timed(lambda: ray.get([noop.remote() for _ in range(20)]))
    print(f"ray init {t_init:.1f} s; 20 empty tasks {t_noop * 1000:.0f} ms", flush=True)

    rows = []

    # -- index -------------------------------------------------------------------------
    single_idx, t_idx1 = timed(lambda: SimilarityIndex(args.index, train_size=args.train_size,
                                                       nprobe=args.nprobe).build(X))
    print(f"index, 1 process: {t_idx1:.1f} s", flush=True)
    tm: dict = {}
    ray_idx, t_idx2 = timed(lambda: dist.build_index(view, args.index, train_size=args.train_size,
                                                     nprobe=args.nprobe, timings=tm))
    import faiss

    same_index = bool(np.array_equal(faiss.serialize_index(single_idx.index_),
                                     faiss.serialize_index(ray_idx.index_)))
    print(f"index, Ray {args.shards} shards: {t_idx2:.1f} s (train {tm['train']:.1f}, add {tm['add']:.1f}, "
          f"merge {tm['merge']:.1f}); identical bytes: {same_index}", flush=True)
    rows.append([f"index build ({args.index}, train on {args.train_size:,})", round(t_idx1, 1), round(t_idx2, 1),
                 round(t_idx1 / t_idx2, 2), "same bytes" if same_index else "DIFFERENT"])
    del single_idx

    # -- graph -------------------------------------------------------------------------
    g = min(n, args.graph_rows)
    if g < n:  # the graph phase runs on the first g rows (a pool of its own), see --graph-rows
        gX = X[:g]
        gview = ShardedArray(write_shards(work / "graph.shards", gX, num_shards=args.shards, overwrite=True))
        gidx = dist.build_index(gview, args.index, train_size=min(args.train_size, g), nprobe=args.nprobe)
    else:
        gX, gview, gidx = X, view, ray_idx
    g1, t_g1 = timed(lambda: KNNGraph.build(gX, args.k, gidx, out_dir=work / "g1"))
    print(f"graph on {g} rows, 1 process: {t_g1:.1f} s", flush=True)
    g2, t_g2 = timed(lambda: dist.build_graph(gview, gidx, args.k, work / "g2"))
    same_rows = float((np.asarray(g1.neighbors) == np.asarray(g2.neighbors)).all(axis=1).mean())
    print(f"graph, Ray: {t_g2:.1f} s; identical rows {same_rows:.4f}", flush=True)
    rows.append([f"kNN graph of {g:,} rows (k={args.k}, nprobe={args.nprobe}, exact re-rank)", round(t_g1, 1),
                 round(t_g2, 1), round(t_g1 / t_g2, 2), f"{same_rows:.2%} rows identical"])
    del g1, g2

    # -- scoring -----------------------------------------------------------------------
    rng = np.random.default_rng(0)
    seed = rng.choice(n, 2000, replace=False)
    model = FittedModel(default_model(0), 10).fit(np.asarray(X[np.sort(seed)]), labels[np.sort(seed)] % 10)
    scorer = dist.ShardScorer(model, "entropy")

    def single_score():
        s = scorer(X)
        s[seed] = -np.inf
        return top_b(s, args.b, np.random.default_rng(1))

    _, t_cold = timed(lambda: dist.score_top_b(view, scorer, args.b, random_state=1, exclude=seed))
    want, t_s1 = timed(single_score)
    (got, _), t_s2 = timed(lambda: dist.score_top_b(view, scorer, args.b, random_state=1, exclude=seed))
    one = write_shards(work / "pool1.shards", X, num_shards=1, overwrite=True)  # 1 task: Ray's overhead alone
    (got1, _), t_s3 = timed(lambda: dist.score_top_b(one, scorer, args.b, random_state=1, exclude=seed))
    same_top = bool(np.array_equal(want, got)) and bool(np.array_equal(want, got1))
    print(f"scoring: 1 process {t_s1:.2f} s, Ray {args.shards} tasks {t_s2:.2f} s, Ray 1 shard/1 task "
          f"{t_s3:.2f} s; same top-{args.b}: {same_top}", flush=True)
    rows.append([f"full-pool scoring (LR + entropy + top-{args.b})", round(t_s1, 2), round(t_s2, 2),
                 round(t_s1 / t_s2, 2), "same top-b" if same_top else "DIFFERENT"])

    header = ["phase", "1 process (s)", f"Ray, {args.shards} shards (s)", "speed-up (1 proc / Ray)", "result"]
    table = markdown_table(header, rows)
    body = (f"### Ray scale-out: {args.shards} shards vs 1 process, {n:,} x {d} float32 synthetic clustered pool\n\n"
            f"{table}\n\n"
            f"Ray overhead on this machine: `ray.init` (local, {args.shards} CPUs) {t_init:.1f} s; "
            f"20 empty tasks {t_noop * 1000:.0f} ms ({t_noop / 20 * 1000:.1f} ms per task). "
            f"Full-pool scoring on Ray costs {t_s2 / t_s1:.2f}x the single process with {args.shards} shards "
            f"and {t_s3 / t_s1:.2f}x with 1 shard in 1 task (Ray's overhead alone); its first call, while "
            f"the workers import the model's libraries, took {t_cold:.1f} s. "
            f"Index build on Ray: train {tm['train']:.1f} s (driver), add {tm['add']:.1f} s (tasks), "
            f"merge {tm['merge']:.1f} s (driver). "
            f"Each Ray task gets 1 CPU (Ray sets OMP_NUM_THREADS=1), while the single process runs "
            f"faiss's OpenMP search on every core but its exact re-rank and bookkeeping on one; a Ray "
            f"speed-up on one machine can only come from running those serial parts side by side. "
            f"Ray brings no extra cores here: its real speed-up comes from more machines (see "
            f"docs/scaling.md). "
            f"Peak RSS of the driver {peak_rss_mib():.0f} MiB; load average {os.getloadavg()[0]:.1f} at the end "
            f"(2 cores).")
    print(table)
    if not args.no_write:
        argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--workdir" and (i == 0 or sys.argv[i] != "--workdir")]
        cmd = "python " + " ".join(["benchmarks/bench_ray.py"] + argv)
        write_section("ray", body, cmd)
    ray.shutdown()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
