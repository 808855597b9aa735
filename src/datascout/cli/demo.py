"""``datascout demo``: the main job on real, offline data.

Rare-concept search on Fashion-MNIST (Debian ``dataset-fashion-mnist``): one class is cut to 0.5%
of the pool, the seed set is 5 positives + 95 negatives, and 20 rounds of 100 labels compare
random sampling, full-pool MaxEnt / most-likely-positive, and the same strategies restricted to
SEALS candidates (k = 100 over an HNSW32 kNN graph). Embeddings are a PCA of the pixels (no torch
needed); with the Embeddings extra, ``--embeddings``/``--labels`` run it on any pool.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.io import atomic_write_text
from datascout.seals import build_or_load_graph
from datascout.simulate import SimulationConfig, plot_learning_curves, simulate

EXAMPLE = "datascout demo --out demo-run --positive-class 8 --seeds 2"

RUNS = [  # (label, strategy, SEALS?)
    ("random", "random", False),
    ("MaxEnt, full pool", "entropy", False),
    ("MaxEnt, SEALS", "entropy", True),
    ("most-likely-pos., full pool", "most-likely-positive", False),
    ("most-likely-pos., SEALS", "most-likely-positive", True),
]


def register(sub) -> None:
    p = command(sub, "demo", "Rare-concept active learning on Fashion-MNIST: random vs full pool vs SEALS.",
                EXAMPLE, run)
    p.add_argument("--out", default="demo-run", help="folder for results.json, results.csv and the plot")
    p.add_argument("--positive-class", type=int, default=8, help="Fashion-MNIST class to find (8 = Bag)")
    p.add_argument("--rare-fraction", type=float, default=0.005, help="share of the pool the class is cut to")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--index", default="HNSW32")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (repeats) per strategy")
    p.add_argument("--dim", type=int, default=64, help="PCA dimensions of the pixel embeddings")


def rare_subset(labels: np.ndarray, positive: int, fraction: float, rng) -> np.ndarray:
    """Positions keeping every non-positive item and enough positives to make ``fraction``."""
    pos = np.flatnonzero(labels == positive)
    neg = np.flatnonzero(labels != positive)
    n_pos = max(10, int(round(fraction * len(neg) / (1 - fraction))))
    if n_pos > len(pos):
        raise ValidationError(f"class {positive} has {len(pos)} items, fewer than the {n_pos} needed")
    return np.sort(np.concatenate([neg, rng.choice(pos, n_pos, replace=False)]))


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from datascout.datasets import cache_dir, fashion_mnist_pixel_embeddings

    if not 0 < args.rare_fraction < 0.5:
        raise ValidationError(f"--rare-fraction must be in (0, 0.5) but is {args.rare_fraction}")
    if not 0 <= args.positive_class <= 9:
        raise ValidationError(f"--positive-class must be a Fashion-MNIST class 0..9 but is {args.positive_class}")
    if args.seeds < 1:
        raise ValidationError(f"--seeds must be >= 1 but is {args.seeds}")
    console = Console(width=110)
    out = Path(args.out)
    t_start = time.perf_counter()
    console.print(f"[bold]datascout demo[/]: loading Fashion-MNIST and its PCA-{args.dim} pixel embeddings ...")
    emb, ds = fashion_mnist_pixel_embeddings(args.dim)
    keep = rare_subset(ds.labels, args.positive_class, args.rare_fraction, np.random.default_rng(0))
    X = np.ascontiguousarray(emb[keep])
    y = ds.labels[keep]
    name = ds.classes[args.positive_class]
    sub_path = cache_dir() / f"demo-fmnist-pca{args.dim}-c{args.positive_class}-r{args.rare_fraction}.npy"
    if not sub_path.is_file():
        sub_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(sub_path, X)
    t0 = time.perf_counter()
    graph = build_or_load_graph(X, sub_path, args.index, args.k)
    console.print(f"pool: {len(y):,} images, {int((y == args.positive_class).sum())} of class "
                  f"{name!r} ({100 * np.mean(y == args.positive_class):.2f}%); kNN graph "
                  f"({args.index}, k={args.k}) ready in {time.perf_counter() - t0:.1f} s")

    results: dict[str, list[dict]] = {}
    for label, strategy, seals in RUNS:
        results[label] = []
        for seed in range(args.seeds):
            cfg = SimulationConfig(strategy=strategy, positive_class=args.positive_class, seals=seals,
                                   k=args.k, index=args.index, initial_positives=5,
                                   initial_negatives=95, batch_size=args.batch_size,
                                   rounds=args.rounds, seed=seed)
            res = simulate(X, y, cfg, graph=graph if seals else None)
            results[label].append(res)
        last = results[label][-1]["rounds"][-1]
        console.print(f"  {label:<28} AP={last['average_precision']:.3f}  positives "
                      f"{last['positives_found']}/{last['pool_positives']}")

    table = Table(title=f"Find {name!r} (0.5% of the pool): {args.rounds} rounds x {args.batch_size} labels, "
                        f"{args.seeds} seed(s)")
    for col in ("strategy", "final test AP", "positives found", "AULC (AP)", "candidates / pool",
                "select s / round"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    rows = []
    for label, runs in results.items():
        ap = np.mean([r["rounds"][-1]["average_precision"] for r in runs])
        found = np.mean([r["rounds"][-1]["positives_found"] for r in runs])
        pool_pos = runs[0]["rounds"][-1]["pool_positives"]
        au = np.mean([r["aulc"] for r in runs])
        cand = np.mean([np.mean([x["candidates"] for x in r["rounds"][1:]]) / r["n_pool"] for r in runs])
        sel = np.mean([np.mean([x["select_seconds"] for x in r["rounds"][1:]]) for r in runs])
        rows.append({"strategy": label, "final_ap": ap, "positives_found": found, "pool_positives": pool_pos,
                     "aulc": au, "candidate_fraction": cand, "select_seconds": sel})
        table.add_row(label, f"{ap:.3f}", f"{found:.0f}/{pool_pos}", f"{au:.3f}", f"{100 * cand:.1f}%",
                      f"{sel:.4f}")
    console.print(table)

    out.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(results, out / "learning_curves.png",
                         title=f"Fashion-MNIST, find {name!r} at 0.5%: test AP")
    atomic_write_text(out / "results.json", json.dumps({"summary": rows, "runs": results}, indent=1))
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    console.print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'learning_curves.png'} "
                  f"in {time.perf_counter() - t_start:.0f} s")
    return 0
