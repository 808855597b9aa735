"""The k = 100 kNN graph of a whole pool, built every way the project knows, in one run.

Methods (each in its own fresh process, so its peak memory is its own; BLAS, OpenMP, faiss and
numba threads all set to ``--threads``):

* ``exact``: faiss ``Flat`` (exact inner products by BLAS, every item a query), through
  ``KNNGraph.build``. With ``--exact-queries M`` only M items are queried and the time is
  scaled to the pool (exact search costs the same for every query; labelled as such).
* ``hnsw``: faiss ``HNSW32``, efConstruction 40, efSearch 128.
* ``ivf``: faiss ``IVF{nlist},Flat``; the smallest nprobe of 4..256 whose recall@100 on the
  sample reaches ``--target-recall`` is found first (not timed), then the graph is built at it.
* ``pynndescent``: ``NNDescent(metric="cosine")``, when the package is importable (numba's
  compilation included: a user pays it).
* ``blocks``: ``KNNGraph.build(index="blocks")`` (datascout.graph_build) at its defaults, plus
  any ``--blocks-variant ROWS:BLOCKS:PROBE`` (block rows : nearest blocks searched per block :
  each row's nearest blocks probed, 0 = by block).

Recall@10 and @100 against exact search on 1,000 random items (their exact neighbours from
``faiss.knn``); SEALS quality with each graph against the full pool (20 rounds x 100, seed set 5
positives + 95 negatives, logistic regression; AP on a held-out 20% and positives found) where the
data has a rare class.

Data: ``fmnist-bag`` (Fashion-MNIST pixel PCA-64, Bag cut to 0.5%: 63,317 x 64, real),
``fortunes`` (MiniLM, 384-d, real; the rarest class is the positive), ``synth`` (bench_seals_scale's
clustered generator, ``--n`` x ``--d``, ``--center-scale`` 0.5 = one connected graph, 1.0 = split).

    python benchmarks/bench_graph.py --data fmnist-bag --threads 2
    python benchmarks/bench_graph.py --data synth --n 200000 --d 256 --exact-queries 20000 --threads 2
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

K = 100
SAMPLE = 1000


def set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


# --------------------------------------------------------------------------- data


def prepare(args) -> tuple[Path, np.ndarray | None, str]:
    """The embeddings as a .npy file (read memory-mapped by every method), their labels (1 =
    the rare positive class) or None, and a description."""
    from datascout.datasets import cache_dir

    folder = cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    if args.data == "fmnist-bag":
        from bench_seals_quality import cut_class

        from datascout.datasets import fashion_mnist_pixel_embeddings
        X, ds = fashion_mnist_pixel_embeddings(64)
        keep = cut_class(ds.labels, 8, 0.005, np.random.default_rng(0))
        path = folder / "graph-fmnist-pca64-bag0.005.npy"
        if not path.is_file():
            np.save(path, np.ascontiguousarray(X[keep], dtype=np.float32))
        y = (ds.labels[keep] == 8).astype(np.int64)
        return path, y, f"Fashion-MNIST pixel PCA-64, Bag cut to 0.5% ({len(keep):,} x 64, real)"
    if args.data == "fortunes":  # the pool folder of `datascout embed` (MiniLM), not re-embedded here
        pool = cache_dir() / "pools" / "fortunes"
        if not (pool / "embeddings.npy").is_file():
            raise SystemExit(f"expected the fortunes MiniLM pool in {pool} (datascout embed fortunes)")
        labels = np.load(pool / "labels.npy")
        counts = np.bincount(labels[labels >= 0])
        rare = int(np.argmin(np.where(counts >= 20, counts, 10**9)))
        n = len(labels)
        return pool / "embeddings.npy", (labels == rare).astype(np.int64), f"fortunes, MiniLM ({n:,} x 384, real)"
    from bench_seals_scale import make_pool
    tag = "connected" if args.center_scale < 1 else "split"
    path = folder / f"graph-synth-{args.n}x{args.d}-c{args.center_scale}.npy"
    _, y = make_pool(path, args.n, args.d, np.float32, center_scale=args.center_scale)
    return path, y, (f"synthetic clustered ({args.n:,} x {args.d}, 1,000 clusters, centre scale "
                     f"{args.center_scale}: the {tag} generator of bench_seals_scale)")


def exact_sample(path: Path, threads: int):
    import faiss

    from datascout.pool import normalize_rows
    faiss.omp_set_num_threads(threads)
    X = np.load(path, mmap_mode="r")
    n = X.shape[0]
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(SAMPLE, n), replace=False))
    Q = normalize_rows(X[sample])
    best_s = np.full((len(sample), K + 1), -np.inf, np.float32)
    best_p = np.full((len(sample), K + 1), -1, np.int64)
    for start in range(0, n, 131072):  # the pool in chunks: exact, never whole in memory
        s, p = faiss.knn(Q, normalize_rows(X[start: start + 131072]), K + 1, metric=faiss.METRIC_INNER_PRODUCT)
        s = np.concatenate([best_s, s], axis=1)
        p = np.concatenate([best_p, p + start], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, : K + 1]
        best_s, best_p = np.take_along_axis(s, top, 1), np.take_along_axis(p, top, 1)
    from datascout.index import drop_self
    _, gt = drop_self(best_s, best_p, sample, K)
    return sample, gt


# --------------------------------------------------------------------------- one method (a worker)


def vm_hwm_mib() -> float:
    """This process's own peak resident memory (VmHWM; getrusage's maximum survives exec, so
    a worker would report its parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    set_threads(args.threads)
    import faiss
    faiss.omp_set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    from datascout.graph_build import plan
    from datascout.index import SimilarityIndex, recall_at_k
    from datascout.seals import KNNGraph

    X = np.load(args.path, mmap_mode="r")
    n = X.shape[0]
    out = Path(args.out)
    info: dict = {}
    t0 = time.perf_counter()
    method = args.worker
    if method == "exact" and args.exact_queries and args.exact_queries < n:
        from datascout.pool import normalize_rows
        index = SimilarityIndex("Flat").build(X)
        t_build = time.perf_counter() - t0
        rows = np.sort(np.random.default_rng(1).choice(n, size=args.exact_queries, replace=False))
        t1 = time.perf_counter()
        for s in range(0, len(rows), 4096):
            index.search(normalize_rows(X[rows[s: s + 4096]]), K + 1)
        t_q = time.perf_counter() - t1
        info = {"seconds": t_build + t_q * n / len(rows), "extrapolated_from": int(len(rows)), "graph": False}
    elif method == "exact":
        KNNGraph.build(X, K, "Flat", out_dir=out)
        info = {"seconds": time.perf_counter() - t0}
    elif method == "hnsw":
        index = SimilarityIndex("HNSW32", ef_construction=40, ef_search=128).build(X)
        KNNGraph.build(X, K, index, out_dir=out)
        info = {"seconds": time.perf_counter() - t0, "setting": "efConstruction 40, efSearch 128"}
    elif method == "ivf":
        nlist = int(args.nlist) or int(4 * np.sqrt(n))
        index = SimilarityIndex(f"IVF{nlist},Flat").build(X)
        t_build = time.perf_counter() - t0
        gt = np.load(args.gt)
        sample = np.load(args.sample)
        from datascout.index import drop_self
        chosen, tried = None, []
        for nprobe in (4, 8, 16, 32, 64, 128, 256):
            if nprobe > nlist:
                break
            index.nprobe = nprobe
            s, p = index.search(np.asarray(X[sample]), K + 1)
            _, p = drop_self(s, p, sample, K)
            r = recall_at_k(p, gt)
            tried.append((nprobe, round(r, 4)))
            chosen = nprobe
            if r >= args.target_recall:
                break
        index.nprobe = chosen
        t1 = time.perf_counter()
        KNNGraph.build(X, K, index, out_dir=out)
        info = {"seconds": t_build + time.perf_counter() - t1, "setting": f"nlist {nlist}, nprobe {chosen}",
                "nprobe_tried": tried}
    elif method == "pynndescent":
        from pynndescent import NNDescent
        nnd = NNDescent(np.asarray(X, dtype=np.float32), n_neighbors=K + 1, metric="cosine", random_state=0,
                        n_jobs=args.threads, low_memory=True, compressed=True)
        p, d = nnd.neighbor_graph
        from datascout.index import drop_self
        sims, pos = drop_self((1 - d).astype(np.float32), p.astype(np.int64), np.arange(n), K)
        t = time.perf_counter() - t0
        KNNGraph(pos.astype(np.int32), sims, {"version": 1, "index": "pynndescent", "k": K, "n": n,
                                               "dim": X.shape[1], "fingerprint": ""}).save(out)
        info = {"seconds": t}
    elif method.startswith("blocks"):
        settings = None
        if ":" in method:
            rows, blocks, probe = map(int, method.split(":")[1:4])
            settings = plan(n, K, block_rows=rows, search_blocks=blocks, probe=probe)
        g = KNNGraph.build(X, K, "blocks", out_dir=out, blocks=settings)
        info = {"seconds": time.perf_counter() - t0, "record": g.meta["blocks"]}
    else:
        raise SystemExit(f"unknown method {method!r}")
    info["peak_rss_mib"] = vm_hwm_mib()
    print("RESULT " + json.dumps(info), flush=True)


# --------------------------------------------------------------------------- the run


def seals_quality(X, y, graph, rounds: int, full_cache: dict) -> dict:
    """Per strategy (MaxEnt, most-likely-positive; one seed): the AP and positives-found ratios of
    SEALS over ``graph`` to the full pool, and each arm's mean seconds per round: ``wall`` = from
    one round's end to the next (selection, the new labels' neighbour lookups, fitting, and the
    held-out evaluation, which both arms pay alike), ``select`` and ``fit`` alone."""
    from datascout.simulate import SimulationConfig, simulate
    out = {}
    for strategy in ("entropy", "most-likely-positive"):
        def run(seals):
            cfg = SimulationConfig(strategy=strategy, positive_class=1, seals=seals, k=K, index="blocks",
                                   initial_positives=5, initial_negatives=95, batch_size=100, rounds=rounds,
                                   test_size=0.2, seed=0)
            stamps = []
            res = simulate(X, y, cfg, graph=graph if seals else None,
                           progress=lambda rec: stamps.append(time.perf_counter()))
            rs = res["rounds"][1:]
            last = rs[-1]
            return {"ap": last["average_precision"], "found": last["positives_found"],
                    "wall": float(np.mean(np.diff(stamps))),
                    "select": float(np.mean([r["select_seconds"] for r in rs])),
                    "fit": float(np.mean([r["fit_seconds"] for r in rs]))}
        if strategy not in full_cache:
            full_cache[strategy] = run(False)
        f = full_cache[strategy]
        sl = run(True)
        out[strategy] = {"ap_ratio": sl["ap"] / f["ap"] if f["ap"] else float("nan"),
                         "found_ratio": sl["found"] / f["found"] if f["found"] else float("nan"),
                         "seals": sl, "full": f}
    return out


def bill(rows, label, rounds: int) -> str:
    """The whole bill of a campaign of ``rounds`` rounds: graph build + every round for SEALS,
    every round for the full pool; the break-even number of rounds (build / saving per round),
    and the same for 10 concepts searched over the one graph (built once, its cost shared)."""
    table = []
    for r in rows:
        if "seals" not in r:
            continue
        for strategy, name in (("entropy", "MaxEnt"), ("most-likely-positive", "most-likely-positive")):
            q = r["seals"][strategy]
            full, seals = q["full"]["wall"], q["seals"]["wall"]
            saving = full - seals
            even = r["seconds"] / saving if saving > 0 else float("inf")
            table.append([label(r), name, f"{r['seconds']:.1f}", f"{1e3 * full:.0f}", f"{1e3 * seals:.0f}",
                          f"{rounds * full:.1f}", f"{r['seconds'] + rounds * seals:.1f}",
                          f"{even:.0f}" if np.isfinite(even) else "never", f"{even / 10:.0f}" if np.isfinite(even) else "never"])
    from _report import markdown_table
    return (f"The whole bill of one {rounds}-round campaign (100 labels a round) on this pool, seconds: the full "
            f"pool pays every round; SEALS pays the graph once, then cheaper rounds. *round ms* = mean wall time "
            "per round (selection, the new labels' neighbour lookups, fitting, and a held-out evaluation that both "
            "arms pay alike). *break-even* = graph seconds / (full round - SEALS round): the number of rounds "
            "after which SEALS has paid for its graph; *10 concepts* = the same when 10 concepts are searched "
            "over the one graph (built once).\n\n" + markdown_table(
                ["graph", "strategy", "graph s", "full round ms", "SEALS round ms", f"full pool, {rounds} rounds s",
                 f"SEALS incl. graph, {rounds} rounds s", "break-even rounds", "break-even rounds, 10 concepts"],
                table))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["fmnist-bag", "fortunes", "synth"], default="fmnist-bag")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--center-scale", type=float, default=0.5)
    ap.add_argument("--methods", default="exact,hnsw,ivf,pynndescent,blocks")
    ap.add_argument("--blocks-variant", action="append", default=[], help="ROWS:BLOCKS:PROBE, e.g. 1024:8:0 or 256:1:8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exact-queries", type=int, default=0, help="time exact search on this many items only")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default 4 sqrt(n))")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-seals", action="store_true")
    ap.add_argument("--no-doc", action="store_true")
    # worker mode (internal)
    for flag in ("--worker", "--path", "--out", "--gt", "--sample"):
        ap.add_argument(flag, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    set_threads(args.threads)
    from _report import markdown_table, write_section

    from datascout.index import recall_at_k
    from datascout.seals import KNNGraph

    load = os.getloadavg()
    path, y, what = prepare(args)
    X = np.load(path, mmap_mode="r")
    n, d = X.shape
    sample, gt = exact_sample(path, args.threads)
    methods = [m for m in args.methods.split(",") if m]
    if "pynndescent" in methods:
        try:
            import pynndescent  # noqa: F401
        except ImportError:
            print("pynndescent is not installed: skipped", file=sys.stderr)
            methods.remove("pynndescent")
    methods += [f"blocks:{v}" for v in args.blocks_variant]
    rows, full_cache = [], {}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        np.save(Path(tmp) / "gt.npy", gt)
        np.save(Path(tmp) / "sample.npy", sample)
        for m in methods:
            out = Path(tmp) / m.replace(":", "-")
            cmd = [sys.executable, __file__, "--worker", m, "--path", str(path), "--out", str(out),
                   "--threads", str(args.threads), "--gt", str(Path(tmp) / "gt.npy"),
                   "--sample", str(Path(tmp) / "sample.npy"), "--nlist", str(args.nlist),
                   "--target-recall", str(args.target_recall), "--exact-queries", str(args.exact_queries)]
            print(f"[{time.strftime('%H:%M:%S')}] {m} ...", file=sys.stderr, flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if res.returncode or not line:
                print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{m} failed")
            info = json.loads(line[0][7:])
            row = {"method": m, **info}
            if info.get("graph", True):
                g = KNNGraph.load(out)
                nb = np.asarray(g.neighbors[sample], dtype=np.int64)
                row["r100"] = recall_at_k(nb, gt)
                row["r10"] = recall_at_k(nb[:, :10], gt[:, :10])
                if y is not None and not args.no_seals:
                    row["seals"] = seals_quality(X, y, g, args.rounds, full_cache)
                del g
            else:
                row["r100"] = row["r10"] = 1.0
            print(json.dumps(row), flush=True)
            rows.append(row)
    load_end = os.getloadavg()

    def label(r):
        m = r["method"]
        names = {"exact": "exact (faiss Flat, BLAS)", "hnsw": "faiss HNSW32", "ivf": "faiss IVF-Flat",
                 "pynndescent": "pynndescent", "blocks": "datascout blocks (default)"}
        if m.startswith("blocks:"):
            br, sb, pr = m.split(":")[1:4]
            return (f"datascout blocks ({br} rows, probe {pr})" if int(pr) else
                    f"datascout blocks ({br} rows, {sb} nearest blocks)")
        return names.get(m, m)

    competitors = [r for r in rows if not r["method"].startswith("blocks") and r["r100"] >= args.target_recall]
    fastest = min(competitors, key=lambda r: r["seconds"]) if competitors else None
    graph_mib = n * K * 8 / 2**20
    emb_mib = n * d * X.dtype.itemsize / 2**20
    header = ["method", "setting", "seconds", f"vs fastest other (>= {args.target_recall} recall)",
              "recall@10", "recall@100", "peak RSS MiB"]
    has_seals = any("seals" in r for r in rows)
    if has_seals:
        header += ["MaxEnt AP / found ratio", "most-likely-positive AP / found ratio"]
    table = []
    for r in rows:
        setting = r.get("setting", "")
        if "extrapolated_from" in r:
            setting = f"time scaled from {r['extrapolated_from']:,} queries"
        if "record" in r:
            rec = r["record"]
            setting = (f"{rec['blocks']} blocks, {100 * rec['pairs_fraction']:.1f}% of all pairs multiplied, "
                       f"{rec['reverse_edges_added']:,} reverse edges added")
        speed = f"{fastest['seconds'] / r['seconds']:.2f}x" if fastest else "-"
        line = [label(r), setting, f"{r['seconds']:.1f}", speed, f"{r['r10']:.4f}", f"{r['r100']:.4f}",
                f"{r['peak_rss_mib']:.0f}"]
        if has_seals:
            s = r.get("seals")
            line += [f"{s[k]['ap_ratio']:.3f} / {s[k]['found_ratio']:.3f}" if s else "-"
                     for k in ("entropy", "most-likely-positive")]
        table.append(line)
    body = (f"## kNN graph builders, k = {K}: {what}\n\n"
            f"Every item's {K} nearest neighbours by cosine (self excluded), each method in its own process "
            f"with {args.threads} BLAS / OpenMP / faiss / numba threads, graph written memory-mapped. Recall "
            f"against exact search on {len(sample):,} random items. *vs fastest other*: the fastest of the "
            f"other methods that reach recall@100 >= {args.target_recall} divided by this one's time "
            f"(> 1: faster). Embeddings {emb_mib:.0f} MiB, graph {graph_mib:.0f} MiB (int32 + float32). "
            f"Load average (1 min) at start {load[0]:.1f}, at end {load_end[0]:.1f}: the machine was shared "
            "with other jobs; compare ratios within this table.\n\n" + markdown_table(header, table))
    if has_seals:
        body += (f"\n\nSEALS quality with each graph: AP (held-out 20%) and positives found after "
                 f"{args.rounds} rounds x 100 from 5 + 95 seed labels, SEALS over that graph / the full pool "
                 "(same seed, one seed).")
    if has_seals:
        body += "\n\n" + bill(rows, label, args.rounds)
    ivf = [r for r in rows if r["method"] == "ivf"]
    if ivf:
        body += f"\n\nIVF nprobe tried (recall@100 on the sample): {ivf[0]['nprobe_tried']}."
    print(body)
    if not args.no_doc:
        argv = " ".join(a for a in sys.argv[1:])
        write_section(f"graph-build-{args.data}" + (f"-{args.n}x{args.d}-c{args.center_scale}" if args.data == "synth" else ""),
                      body, f"python benchmarks/bench_graph.py {argv}")


if __name__ == "__main__":
    main()
