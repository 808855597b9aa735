"""SEALS speed and scale on synthetic clustered pools (a rare cluster = the positives).

Part 1 (``--n``, default 1,000,000 x 256 float32): graph build time and recall@k of HNSW32 and
IVF against exact search; per-round selection time of full-pool MaxEnt vs SEALS in the same
run (20 rounds x 100, same seeds), the SEALS round against the cost model
``(|C| / N) * full-pool round + the new labels' neighbour lookups``; AP and positives found.

Part 2 (``--n-big``, e.g. 10,000,000 x 256 float16, memory-mapped from disk): an IVF-PQ index,
on-the-fly neighbour queries (no graph), index build time, per-round selection time of SEALS vs
full-pool MaxEnt over the same memory map, peak memory.

Data files go to ``--data-dir`` (default: ``datascout.datasets.cache_dir() / "bench"``), never
the repository. Figures are printed and written to docs/benchmarks.md as they come.

    python benchmarks/bench_seals_scale.py --n 1000000 --n-big 10000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout.datasets import cache_dir  # noqa: E402
from datascout.index import SimilarityIndex, drop_self, recall_at_k  # noqa: E402
from datascout.loop import ActiveLearner  # noqa: E402
from datascout.pool import iter_row_chunks, normalize_rows  # noqa: E402
from datascout.seals import CandidatePool, KNNGraph, find_graph, graph_dir  # noqa: E402

SECTION = "seals-scale"


def make_pool(path: Path, n: int, d: int, dtype, *, n_clusters=1000, intrinsic=16, rare_frac=0.001,
              seed=0, center_scale=1.0):
    """Clustered embeddings written in chunks to a .npy memory map; labels: 1 for the rare cluster.

    Each cluster is a random centre (standard normal times ``center_scale``) plus a point on a
    random ``intrinsic``-dimensional subspace plus a little isotropic noise (embeddings of real data
    have a low intrinsic dimension). At scale 1 the clusters barely touch: the kNN graph falls
    apart into hundreds of components. At 0.5 they overlap at their edges, and the graph is one
    component, as it is for every real pool measured here."""
    ypath = path.with_suffix(".labels.npy")
    if path.is_file() and ypath.is_file():
        X = np.load(path, mmap_mode="r")
        if X.shape == (n, d) and X.dtype == dtype:
            return X, np.load(ypath)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d)).astype(np.float32) * np.float32(center_scale)
    bases = rng.normal(size=(n_clusters, intrinsic, d)).astype(np.float32) * 0.35
    p = np.full(n_clusters, (1 - rare_frac) / (n_clusters - 1))
    p[0] = rare_frac
    cl = rng.choice(n_clusters, size=n, p=p)
    tmp = path.with_name(path.name + ".tmp.npy")
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, d))
    for rows in iter_row_chunks(n, 131072):
        c = cl[rows]
        z = rng.normal(size=(len(c), intrinsic)).astype(np.float32)
        x = centers[c] + 0.15 * rng.normal(size=(len(c), d)).astype(np.float32)
        order = np.argsort(c, kind="stable")
        bounds = np.flatnonzero(np.diff(c[order])) + 1
        for grp in np.split(order, bounds):  # one matrix product per cluster, not per row
            x[grp] += z[grp] @ bases[c[grp[0]]]
        X[rows] = x.astype(dtype)
    X.flush()
    del X
    tmp.replace(path)
    y = (cl == 0).astype(np.int64)
    np.save(ypath, y)
    return np.load(path, mmap_mode="r"), y


def graph_components(graph, y) -> dict:
    """Weakly connected components of the kNN graph (scipy), and the share of the positives'
    neighbours that are negatives."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    nb = np.asarray(graph.neighbors)
    n, k = nb.shape
    ok = nb >= 0
    A = sp.csr_matrix((np.ones(int(ok.sum()), np.int8), (np.repeat(np.arange(n), k)[ok.ravel()], nb[ok])),
                      shape=(n, n))
    count, lab = connected_components(A, directed=True, connection="weak")
    pos = np.flatnonzero(y == 1)
    pnb = nb[pos][ok[pos]]
    return {"components": int(count), "largest": float(np.bincount(lab).max() / n),
            "cross": float((y[pnb] == 0).mean())}


def exact_knn(X, queries_pos, k):
    """Exact k nearest pool positions of the given items (self excluded), by chunked numpy."""
    Q = normalize_rows(np.asarray(X[queries_pos]))
    best_s = np.full((len(Q), k + 1), -np.inf, np.float32)
    best_p = np.full((len(Q), k + 1), -1, np.int64)
    for rows in iter_row_chunks(X.shape[0], 131072):
        S = Q @ normalize_rows(np.asarray(X[rows])).T
        s = np.concatenate([best_s, S], axis=1)
        p = np.concatenate([best_p, np.broadcast_to(np.arange(rows.start, rows.stop), S.shape)], axis=1)
        top = np.argpartition(-s, k, axis=1)[:, : k + 1]
        best_s, best_p = np.take_along_axis(s, top, 1), np.take_along_axis(p, top, 1)
    order = np.argsort(-best_s, axis=1)
    best_s, best_p = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_p, order, 1)
    return drop_self(best_s, best_p, np.asarray(queries_pos), k)[1]


def seed_set(y, test_mask, n_pos, n_neg, rng):
    pos = np.flatnonzero((y == 1) & ~test_mask)
    neg = np.flatnonzero((y == 0) & ~test_mask)
    return np.r_[rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]


def run_loop(X, y, test_pos, strategy, candidates, seed, rounds, batch, X_test):
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), bool)
    test_mask[test_pos] = True
    name, _, ref = strategy.partition(":")  # "density:candidates": that density reference in SEALS
    al = ActiveLearner(X, 2, name, candidates=candidates, holdout=test_pos, random_state=seed,
                       density_reference=ref if (ref and candidates is not None) else "pool")
    t0 = time.perf_counter()
    al.prepare()  # density: the one-time pass over the pool, not part of any round
    prepare_s = time.perf_counter() - t0
    s = seed_set(y, test_mask, 5, 95, rng)
    al.teach(s, y[s])
    al.fit()
    out = []
    for r in range(rounds):
        t0 = time.perf_counter()
        ids = al.query(batch)
        sel = time.perf_counter() - t0
        n_cand = al.last_query_["candidates"]
        look0 = al.candidates_.neighbor_seconds if candidates is not None else 0.0
        al.teach(ids, y[ids])
        look = (al.candidates_.neighbor_seconds - look0) if candidates is not None else 0.0
        al.fit()
        out.append({"select": sel, "lookup": look, "candidates": n_cand, "prepare": prepare_s})
    p = al.model_.predict_proba(X_test)[:, 1]
    ap = float(average_precision_score(y[test_pos], p))
    found = int((al.labels_ == 1).sum())
    return out, ap, found


def part1(args, lines):
    n, d = args.n, args.dim
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    tag = "" if args.center_scale == 1.0 else f"-cs{args.center_scale:g}"
    path = data / f"synth-{n}x{d}{tag}-f32.npy"
    t0 = time.perf_counter()
    Xm, y = make_pool(path, n, d, np.float32, center_scale=args.center_scale)
    print(f"data {n}x{d}: {time.perf_counter() - t0:.1f} s, {int(y.sum())} positives", flush=True)
    X = np.ascontiguousarray(np.load(path))  # in memory: a fair full-pool baseline
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=args.recall_queries, replace=False))
    t0 = time.perf_counter()
    exact = exact_knn(X, sample, args.k)
    print(f"exact kNN of {len(sample)} items: {time.perf_counter() - t0:.1f} s", flush=True)

    rows = []
    graph = None
    for factory in _split_factories(args.factories):
        t0 = time.perf_counter()
        idx = SimilarityIndex(factory, ef_construction=args.ef_construction, nprobe=args.nprobe).build(X)
        t_index = time.perf_counter() - t0
        _, got = idx.search(X[sample], args.k + 1, exact_embeddings=X)
        got = drop_self(np.zeros(got.shape, np.float32), got, sample, args.k)[1]
        rec = recall_at_k(got, exact)
        t_graph = None
        gdir = graph_dir(path, factory, args.k)
        if graph is None or args.all_graphs:
            found = find_graph(X, path, factory, args.k)
            if found is not None:
                g = KNNGraph.load(found)
                t_graph = g.meta["graph_seconds"]  # as measured when it was built (reused)
            else:
                g = KNNGraph.build(X, args.k, idx, batch_rows=4096, out_dir=gdir)
                t_graph = g.meta["graph_seconds"]
            if graph is None:
                graph = g
        del idx
        rows.append([factory, round(t_index, 1), "-" if t_graph is None else round(t_graph, 1),
                     round(rec, 4), round(peak_rss_mib())])
        print(f"{factory}: index {t_index:.1f} s, graph {t_graph} s, recall@{args.k} {rec:.4f}, peak {peak_rss_mib():.0f} MiB",
              flush=True)
    comps = graph_components(graph, y)
    print(f"graph components: {comps}", flush=True)
    lines["graphs"] = (f"### 1. {n:,} x {d} float32, k = {args.k}, cluster centre scale {args.center_scale:g}\n\n"
                       f"Index and kNN graph (recall@{args.k} "
                       f"on {len(sample)} random items against exact search; graph = every item's "
                       f"k neighbours, in batches of 4096, written memory-mapped):\n\n"
                       + markdown_table(["index", "index build s", "graph queries s", f"recall@{args.k}",
                                         "peak RSS MiB"], rows)
                       + f"\n\nThe graph (first factory) has {comps['components']:,} weakly connected "
                       f"component{'s' if comps['components'] != 1 else ''}; the largest holds {comps['largest']:.1%} of the pool; "
                       f"{comps['cross']:.2%} of the positives' neighbours are negatives. SEALS only ever "
                       f"reaches a component through a labeled item in it.")
    report(args, lines)

    test_pos = np.sort(rng.choice(n, size=n // 10, replace=False))
    X_test = X[test_pos]
    explores = [int(e) for e in str(args.explore).split(",")]
    res_rows, round_rows, sums = [], [], {}
    n_unl = n - len(test_pos)
    for strategy in args.strategies.split(","):
        for seed in range(args.seeds):
            full, ap_f, found_f = run_loop(X, y, test_pos, strategy, None, seed, args.rounds, args.batch, X_test)
            tf = np.array([r["select"] for r in full])
            for explore in explores:
                cp = CandidatePool(X, graph=graph, k=args.k, explore=explore)
                seals, ap_s, found_s = run_loop(X, y, test_pos, strategy, cp, seed, args.rounds, args.batch, X_test)
                ts = np.array([r["select"] for r in seals])
                tl = np.array([r["lookup"] for r in seals])
                c = np.array([r["candidates"] for r in seals])  # rows scored: C (+ explore)
                model = c / n_unl * tf.mean() + tl
                res_rows.append([strategy, f"{explore:,}", seed, f"{tf.mean() * 1e3:.1f}", f"{ts.mean() * 1e3:.2f}",
                                 f"{tl.mean() * 1e3:.2f}", f"{tf.mean() / ts.mean():.1f}x",
                                 f"{tf.mean() / (ts + tl).mean():.1f}x",
                                 f"{(ts + tl).mean() / model.mean():.2f}", f"{((ts + tl) / model).max():.2f}",
                                 f"{c.max() / n_unl:.4%}",
                                 f"{ap_f:.4f}", f"{ap_s:.4f}", f"{ap_s / ap_f:.3f}", found_f, found_s,
                                 f"{found_s / max(found_f, 1):.3f}"])
                acc = sums.setdefault((strategy, explore), [0, 0, 0.0, 0.0, 0, [], 0.0])
                acc[6] = max(acc[6], seals[0]["prepare"], full[0]["prepare"])
                acc[0] += found_f
                acc[1] += found_s
                acc[2] += ap_f
                acc[3] += ap_s
                acc[4] += 1
                acc[5].append(found_s / max(found_f, 1))
                if seed == 0 and strategy == args.strategies.split(",")[0] and explore == explores[0]:
                    round_rows = [[i + 1, f"{tf[i] * 1e3:.1f}", f"{ts[i] * 1e3:.2f}", f"{tl[i] * 1e3:.2f}",
                                   int(c[i]), f"{model[i] * 1e3:.2f}"] for i in range(len(c))]
                print(res_rows[-1], flush=True)
            summary = [[st, f"{e:,}", a[4], f"{a[3] / a[2]:.3f}", f"{a[1] / max(a[0], 1):.3f}",
                        f"{min(a[5]):.3f}", f"{max(a[5]):.3f}", f"{a[6]:.2f}"] for (st, e), a in sums.items()]
            lines["rounds"] = (
                f"Full pool vs SEALS, same seeds, {args.rounds} rounds x {args.batch}, seed set 5 positives + "
                f"95 negatives, logistic regression, test = a random 10% held out (AP on it). "
                f"*density* = Information Density with the exact full-pool density term in both arms; "
                f"*density:candidates* / *density:neighbors*: inside SEALS the density term is the mean cosine "
                f"to the candidate set C / to the item's unlabeled graph neighbours (`density_reference`), "
                f"the full-pool arm keeps the exact term. "
                f"*explore* = random items outside C scored with it each round (`CandidatePool(explore=...)`, "
                f"redrawn every round; 0 = the candidate set alone, as in the paper). "
                f"*full ms* / *SEALS ms* = mean selection time per round (`ActiveLearner.query`); "
                f"*lookup ms* = the new labels' neighbour lookups in the graph (in `teach`: their graph rows, and "
                f"the new candidates' embeddings copied into the contiguous buffer that SEALS scores); "
                f"*select speed-up* = full / SEALS (selection time, the floor's >= 10x); *speed-up incl. lookup* = full / (SEALS + lookup); *vs model* = mean (SEALS + lookup) / mean "
                f"((|C| / N) x full + lookup) over the rounds, with |C| the rows scored (explore included), floor 1.5 (*worst round*: the largest "
                f"per-round ratio, noisy on a shared machine); *max C/N* = largest "
                f"fraction of the pool scored in a round. Peak RSS so far: {peak_rss_mib():.0f} MiB.\n\n"
                + markdown_table(["strategy", "explore", "seed", "full ms", "SEALS ms", "lookup ms", "select speed-up",
                                  "speed-up incl. lookup", "vs model", "worst round", "max C/N", "AP full",
                                  "AP SEALS", "AP ratio", "found full", "found SEALS", "found ratio"], res_rows)
                + "\n\nOver the seeds (ratios of the sums over seeds; min / max of the per-seed found ratio; "
                "*one-time pass s*: `ActiveLearner.prepare()`, the exact density term's pass over the pool before "
                "the seed set, outside every round; the larger of the two arms, and the SEALS arm of "
                "density:candidates makes none):\n\n"
                + markdown_table(["strategy", "explore", "seeds", "AP ratio", "found ratio", "min seed", "max seed",
                                  "one-time pass s"], summary)
                + "\n\nPer round (first strategy, seed 0, explore " + f"{explores[0]:,}" + "):\n\n"
                + markdown_table(["round", "full ms", "SEALS ms", "lookup ms", "|C|", "model ms"], round_rows))
            report(args, lines)
    del X


def part2(args, lines):
    n, d = args.n_big, args.dim
    data = Path(args.data_dir)
    path = data / f"synth-{n}x{d}-f16.npy"
    t0 = time.perf_counter()
    X, y = make_pool(path, n, d, np.float16)
    t_data = time.perf_counter() - t0
    print(f"data {n}x{d} float16 memmap: {t_data:.1f} s", flush=True)
    t0 = time.perf_counter()
    idx = SimilarityIndex(args.big_index, nprobe=args.nprobe).build(X)
    t_index = time.perf_counter() - t0
    print(f"{args.big_index}: build {t_index:.1f} s, peak {peak_rss_mib():.0f} MiB", flush=True)
    rng = np.random.default_rng(0)
    test_pos = np.sort(rng.choice(n, size=min(100_000, n // 10), replace=False))
    X_test = np.asarray(X[test_pos], dtype=np.float32)
    rows = []
    for seed in range(args.seeds):
        cp = CandidatePool(X, index=idx, k=args.k)
        seals, ap_s, found_s = run_loop(X, y, test_pos, "entropy", cp, seed, args.rounds, args.batch, X_test)
        full, ap_f, found_f = run_loop(X, y, test_pos, "entropy", None, seed, args.big_full_rounds,
                                       args.batch, X_test)
        tf = np.array([r["select"] for r in full])
        ts = np.array([r["select"] for r in seals])
        tl = np.array([r["lookup"] for r in seals])
        c = np.array([r["candidates"] for r in seals])
        rows.append([seed, f"{tf.mean():.2f}", f"{ts.mean() * 1e3:.1f}", f"{tl.mean() * 1e3:.1f}",
                     f"{tf.mean() / ts.mean():.0f}x", f"{tf.mean() / (ts + tl).mean():.0f}x",
                     f"{c.max() / n:.4%}", f"{ap_s:.4f}", found_s])
        print(rows[-1], flush=True)
    lines["big"] = (
        f"### 2. {n:,} x {d} float16, memory-mapped ({path.stat().st_size / 2**30:.1f} GiB on disk)\n\n"
        f"Index `{args.big_index}` (nprobe {args.nprobe}, trained on 100k rows, PQ codes re-ranked by exact "
        f"cosine over refine x (k + 1) = {4 * (args.k + 1)} candidates per query), no graph: each round's new labels query the index on the fly. "
        f"Data generation {t_data:.0f} s; index build {t_index:.0f} s. Full-pool MaxEnt is timed over "
        f"{args.big_full_rounds} rounds (streaming the memory map in 65,536-row chunks), SEALS over "
        f"{args.rounds} rounds; same seed sets. *on-the-fly ms* = the new labels' index queries (in `teach`). "
        f"Peak RSS: {peak_rss_mib():.0f} MiB.\n\n"
        + markdown_table(["seed", "full s/round", "SEALS ms/round", "on-the-fly ms", "select speed-up",
                          "incl. queries", "max C/N", "AP SEALS", "found SEALS"], rows))
    report(args, lines)


def _split_factories(text: str) -> list[str]:
    """'IVF1024,Flat,HNSW32' -> ['IVF1024,Flat', 'HNSW32'] (a factory may contain commas)."""
    out: list[str] = []
    for part in text.split(","):
        if out and (out[-1].startswith(("IVF", "OPQ")) and out[-1].count(",") == 0
                    or out[-1].startswith("OPQ") and out[-1].count(",") == 1):
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def report(args, lines):
    body = "\n\n".join(lines[k] for k in ("graphs", "rounds", "big") if k in lines)
    if args.no_doc:
        return
    write_section(SECTION + args.section, "## SEALS speed and scale (synthetic clustered pools)\n\n" + body, args.command)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-big", type=int, default=0, help="size of the float16 memory-mapped run (0 = skip)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--strategies", default="entropy,most-likely-positive,density,density:candidates",
                    help="comma list; density:REF = Information Density with that density reference in SEALS")
    ap.add_argument("--center-scale", type=float, default=1.0,
                    help="spread of the cluster centres (1: clusters barely touch; 0.5: a connected kNN graph)")
    ap.add_argument("--explore", default="0,10000",
                    help="comma list: random items outside C scored each round in the 1M runs (0 = SEALS alone)")
    ap.add_argument("--factories", default="IVF1024,Flat,HNSW32",
                    help="the first one's graph drives the SEALS loop")
    ap.add_argument("--all-graphs", action="store_true", help="time the full graph of every factory")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--big-index", default="IVF1024,PQ32")
    ap.add_argument("--big-full-rounds", type=int, default=3)
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--no-doc", action="store_true", help="print only (a smoke run)")
    ap.add_argument("--section", default="", help="suffix of the docs/benchmarks.md section name")
    ap.add_argument("--data-dir", default=str(cache_dir() / "bench"))
    args = ap.parse_args()
    args.command = "python benchmarks/bench_seals_scale.py " + " ".join(sys.argv[1:])
    lines: dict = {}
    if not args.skip_part1:
        part1(args, lines)
    if args.n_big:
        part2(args, lines)


if __name__ == "__main__":
    main()
