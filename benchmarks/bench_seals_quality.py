"""SEALS vs full pool on real data: rare concepts, as in the SEALS paper.

Seed set 5 positives + 95 negatives, 20 rounds x 100, logistic regression, k = 100 (and a
smaller k), same seeds for SEALS and the full pool. Strategies: MaxEnt (``entropy``),
Information Density (``density``; inside SEALS with the exact full-pool density term, plus the
``candidates`` / ``neighbors`` references for comparison) and most-likely-positive.

Data:
* Fashion-MNIST, PCA-64 pixel embeddings (``datascout.datasets.fashion_mnist_pixel_embeddings``),
  the target class cut to 0.5% of the pool (a kNN graph is built for each cut pool);
* fortunes, MiniLM (all-MiniLM-L6-v2) embeddings of the quotes (cached), classes under 1%.

    python benchmarks/bench_seals_quality.py --seeds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fortunes_minilm import fortunes_minilm_embeddings  # noqa: E402
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout.datasets import fashion_mnist_pixel_embeddings  # noqa: E402
from datascout.seals import KNNGraph  # noqa: E402
from datascout.simulate import SimulationConfig, simulate  # noqa: E402

SECTION = "seals-quality"
# "density:candidates": Information Density whose density term inside SEALS is the mean cosine to
# the candidate set C; its full-pool arm is the exact full-pool ID (the same run as "density")
STRATEGIES = ("entropy", "density", "density:candidates", "most-likely-positive")
READING = (
    "*Reading.* SEALS scores only items that are among the k nearest neighbours of a labeled item. "
    "Where a concept's positives form several separate modes in the embedding space that the "
    "neighbourhoods of the labeled items do not reach (pixel PCA embeddings of a visually diverse "
    "class), uncertainty sampling under SEALS explores less than over the full pool and can fall "
    "short of the floors; most-likely-positive, which exploits the neighbourhoods of the positives, "
    "suffers least. ID with its density term on C does better than with the exact full-pool term "
    "there (and than the full pool): the exact term favours items near the whole pool's mean, which "
    "a rare class is not. With semantic embeddings (MiniLM) the neighbourhoods follow the concept. A "
    "smaller k shrinks C and widens the gap. On pools of 12k-63k items, labels x k approaches the "
    "pool, so the candidate fraction grows large late in the campaign (the paper's < 10% holds at "
    "ImageNet scale, see the scale benchmark).")

READING_EFFNET = (
    "*Reading.* With EfficientNet-Lite0 features the neighbourhoods follow the concept far better "
    "than with pixel PCA. For Bag every strategy meets both floors at k = 100, and all but "
    "most-likely-positive also meet them at k = 20. Shirt is the hard case: even over the full pool "
    "its AP stays near 0.2, because shirts share their neighbourhoods with T-shirts, pullovers and "
    "coats. Over 3 seeds only ID with the exact density term meets both floors at k = 100. MaxEnt "
    "gets a higher AP than the full pool but finds 0.93x the positives. ID with density on C finds "
    "as many but reaches 0.93x the AP. Most-likely-positive exploits the neighbourhoods of the "
    "shirts it has found, which are full of confusable items, and reaches 0.91x the AP. With an AP "
    "near 0.2, a few test items move these ratios (the seeds are in the tables). A smaller k "
    "shrinks C and widens every gap.")


def cut_class(labels, cls, frac, rng):
    """Positions kept when class ``cls`` is cut to ``frac`` of the result."""
    other = np.flatnonzero(labels != cls)
    mine = np.flatnonzero(labels == cls)
    m = int(round(frac * len(other) / (1 - frac)))
    keep = np.sort(np.r_[other, rng.choice(mine, size=m, replace=False)])
    return keep


def run_config(X, y, cls, strategy, seals, k, seed, graph, rounds, density_reference="pool"):
    strategy, _, ref = strategy.partition(":")
    if ref and seals:
        density_reference = ref
    cfg = SimulationConfig(strategy=strategy, positive_class=int(cls), seals=seals, k=k, index="HNSW32",
                           density_reference=density_reference, initial_positives=5,
                           initial_negatives=95, batch_size=100, rounds=rounds, test_size=0.2, seed=seed)
    res = simulate(X, y, cfg, graph=graph if seals else None)
    last = res["rounds"][-1]
    cand = [r["candidates"] / res["n_pool"] for r in res["rounds"][1:]]
    return {"ap": last["average_precision"], "found": last["positives_found"],
            "pool_pos": last["pool_positives"], "cand": cand,
            "sel": float(np.mean([r["select_seconds"] for r in res["rounds"][1:]]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--small-k", type=int, default=20)
    ap.add_argument("--fashion-classes", default="8,6", help="Fashion-MNIST classes to cut to 0.5%%")
    ap.add_argument("--fortunes-classes", type=int, default=3, help="how many fortunes classes under 1%%")
    ap.add_argument("--fashion-embedding", choices=["pca", "effnet"], default="pca",
                    help="pca: PCA-64 of the pixels; effnet: the EfficientNet-Lite0 pool "
                         "(datascout datasets embed fashion-mnist)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    section = SECTION if args.fashion_embedding == "pca" else f"{SECTION}-{args.fashion_embedding}"
    command = "python benchmarks/bench_seals_quality.py " + " ".join(sys.argv[1:])

    tasks = []  # (dataset name, class name, X, y, class id)
    if args.fashion_embedding == "pca":
        emb, ds = fashion_mnist_pixel_embeddings(64)
        fname, flabels, fclasses = "Fashion-MNIST PCA-64", ds.labels, ds.classes
    else:
        from datascout.embed import dataset_pool, load_pool_dir

        path = dataset_pool("fashion-mnist")
        if path is None:
            raise SystemExit("the Fashion-MNIST EfficientNet pool is not built: datascout datasets embed fashion-mnist")
        pf = load_pool_dir(path)
        emb, flabels, fclasses = pf.embeddings, pf.labels, pf.manifest["classes"]
        fname = f"Fashion-MNIST EfficientNet-Lite0 ({pf.manifest['dimension']}-d)"
    for c in [int(v) for v in args.fashion_classes.split(",") if v]:
        keep = cut_class(flabels, c, 0.005, np.random.default_rng(0))
        tasks.append((fname, fclasses[c], np.ascontiguousarray(emb[keep], dtype=np.float32), flabels[keep], c))
    femb, fds = fortunes_minilm_embeddings()
    counts = np.bincount(fds.labels, minlength=len(fds.classes))
    share = counts / counts.sum()
    rare = [c for c in np.argsort(-share) if 0.004 <= share[c] < 0.01][: args.fortunes_classes]
    for c in rare:
        tasks.append(("fortunes MiniLM", fds.classes[c], femb, fds.labels, int(c)))

    rows, cand_rows, dens_rows = [], [], []
    graphs = {}
    t_start = time.perf_counter()
    for dname, cname, X, y, c in tasks:
        key = (dname, id(X) if dname.startswith("fortunes") else cname)
        if key not in graphs:
            t0 = time.perf_counter()
            graphs[key] = KNNGraph.build(X, 100, "HNSW32")
            print(f"graph {dname} {X.shape}: {time.perf_counter() - t0:.1f} s", flush=True)
        g = graphs[key]
        share_c = float((y == c).mean())
        full_runs = {}
        for strategy in STRATEGIES:
            res = {"full": [], "k100": [], f"k{args.small_k}": []}
            for seed in range(args.seeds):
                key_full = (strategy.partition(":")[0], seed)  # density:REF shares density's full run
                if key_full not in full_runs:
                    full_runs[key_full] = run_config(X, y, c, strategy, False, 100, seed, None, args.rounds)
                res["full"].append(full_runs[key_full])
                res["k100"].append(run_config(X, y, c, strategy, True, 100, seed, g, args.rounds))
                res[f"k{args.small_k}"].append(run_config(X, y, c, strategy, True, args.small_k, seed, g, args.rounds))
                if strategy == "density":
                    for ref in ("candidates", "neighbors"):
                        r = run_config(X, y, c, strategy, True, 100, seed, g, args.rounds, ref)
                        dens_rows.append([dname, cname, seed, ref, f"{r['ap']:.4f}",
                                          f"{res['k100'][-1]['ap']:.4f}", f"{res['full'][-1]['ap']:.4f}",
                                          r["found"], res["k100"][-1]["found"], res["full"][-1]["found"]])
            full_ap = np.mean([r["ap"] for r in res["full"]])
            full_found = np.mean([r["found"] for r in res["full"]])
            for variant in ("k100", f"k{args.small_k}"):
                s_ap = np.mean([r["ap"] for r in res[variant]])
                s_found = np.mean([r["found"] for r in res[variant]])
                cand = np.array([r["cand"] for r in res[variant]]).mean(axis=0)
                ok = s_ap >= 0.98 * full_ap and s_found >= 0.95 * full_found
                rows.append([dname, cname, f"{share_c:.2%}", strategy, variant.replace("k", "k="),
                             f"{full_ap:.4f}", f"{s_ap:.4f}", f"{s_ap / full_ap:.3f}",
                             f"{full_found:.1f}", f"{s_found:.1f}", f"{s_found / max(full_found, 1e-9):.3f}",
                             f"{cand[0]:.1%} / {cand[len(cand) // 2]:.1%} / {cand[-1]:.1%}",
                             "yes" if ok else "**no**"])
                if variant == "k100" and strategy == "most-likely-positive":
                    cand_rows.append([dname, cname] + [f"{v:.1%}" for v in cand[:: max(1, len(cand) // 10)]])
            print(rows[-2], rows[-1], f"{time.perf_counter() - t_start:.0f} s", flush=True)
            body = (
                "## SEALS quality on real data (rare concepts)"
                + ("" if section == SECTION else f", Fashion-MNIST as {args.fashion_embedding} embeddings")
                + "\n\n"
                f"Seed set 5 positives + 95 negatives, {args.rounds} rounds x 100, logistic regression "
                f"(balanced), HNSW32 kNN graph with k = 100 (k = {args.small_k} uses its first "
                f"neighbours); test = a stratified 20% split; {args.seeds} seeds (0..{args.seeds - 1}), "
                "the same for SEALS and the full pool; figures are means over seeds. Floors: AP ratio "
                ">= 0.98, found ratio >= 0.95. *C/N* = candidates / pool after rounds 1, 10 and 20. "
                "*density*: ID inside SEALS with the exact full-pool density term (`density_reference=\"pool\"`); "
                "*density:candidates*: ID inside SEALS with the density term measured against C (mean cosine to "
                "the candidates); both compared with the same full-pool ID runs.\n\n"
                + markdown_table(["data", "class", "share", "strategy", "SEALS", "AP full", "AP SEALS",
                                  "AP ratio", "found full", "found SEALS", "found ratio", "C/N r1 / r10 / r20",
                                  "floors met"], rows)
                + "\n\nCandidate fraction per round (most-likely-positive, k = 100, every 2nd round):\n\n"
                + markdown_table(["data", "class"] + [f"r{i + 1}" for i in range(0, args.rounds, max(1, args.rounds // 10))],
                                 cand_rows)
                + "\n\nInformation Density inside SEALS (k = 100): density measured against the "
                "candidate set C (mean cosine to C) or the item's unlabeled graph neighbours, vs the "
                "exact full-pool term (`pool`, kept exact through a maintained sum of unit vectors) "
                "and the full-pool run:\n\n"
                + markdown_table(["data", "class", "seed", "reference", "AP", "AP (pool term)", "AP full",
                                  "found", "found (pool term)", "found full"], dens_rows)
                + f"\n\nPeak RSS {peak_rss_mib():.0f} MiB; total {time.perf_counter() - t_start:.0f} s.\n\n"
                + (READING if args.fashion_embedding == "pca" else READING_EFFNET)
            )
            if not args.no_doc:
                write_section(section, body, command)


if __name__ == "__main__":
    main()
