"""What one campaign round costs, and how much of it is checking the embeddings file.

A campaign over N x d float32 memory-mapped embeddings (clustered synthetic data, a saved
IVF kNN graph built once with one probe and reused by every run): each round answers the batch with the true class and
times ``select_round`` (retrain + SEALS selection + storing the round), and how long
``datascout.seals.fingerprint`` ran inside it. Run it with one checkout's ``src`` on
PYTHONPATH, then another's, to compare two versions on the same files:

    PYTHONPATH=src python benchmarks/bench_campaign_round.py --n 500000 --dim 256 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--index", default="IVF1024,Flat", help="an IVF factory string (built with nprobe 1)")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "datascout-bench-campaign"),
                    help="folder for the embeddings and their graph (kept between runs)")
    args = ap.parse_args()

    import datascout
    from datascout import seals
    from datascout.campaign import Campaign

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    emb = data / f"emb-{args.n}x{args.dim}.npy"
    n_cls = 10
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_cls, args.dim)).astype(np.float32) * 3
    y = rng.integers(0, n_cls, size=args.n)
    if not emb.is_file():
        X = np.lib.format.open_memmap(emb, mode="w+", dtype=np.float32, shape=(args.n, args.dim))
        for a in range(0, args.n, 65536):
            b = min(a + 65536, args.n)
            X[a:b] = centres[y[a:b]] + rng.normal(size=(b - a, args.dim)).astype(np.float32)
        X.flush()
        del X
    from datascout.index import SimilarityIndex
    from datascout.seals import KNNGraph, graph_dir

    gdir = graph_dir(emb, args.index, 30)
    if not (gdir / "graph.json").is_file():  # a cheap graph (one probe): this measures rounds, not graphs
        t = time.perf_counter()
        X = np.load(emb, mmap_mode="r")
        KNNGraph.build(X, 30, SimilarityIndex(args.index, nprobe=1).build(X), out_dir=gdir)
        print(f"graph {args.index} (nprobe 1) built in {time.perf_counter() - t:.1f} s")
    items = data / "items.jsonl"
    if not items.is_file():
        items.write_text("".join(json.dumps({"id": str(i), "text": f"item {i}"}) + "\n" for i in range(args.n)))
    classes = [f"c{i}" for i in range(n_cls)]

    spent = {"fingerprint": 0.0}
    real = seals.fingerprint

    def timed(X, *a, **kw):
        t = time.perf_counter()
        try:
            return real(X, *a, **kw)
        finally:
            spent["fingerprint"] += time.perf_counter() - t

    seals.fingerprint = timed
    camp_dir = Path(tempfile.mkdtemp(prefix="camp-", dir=data))
    try:
        t0 = time.perf_counter()
        camp = Campaign.create(camp_dir / "c", embeddings=emb, items=items, classes=classes,
                               batch_size=args.batch_size, k=30, index=args.index)
        print(f"datascout from {Path(datascout.__file__).parent}: create {time.perf_counter() - t0:.1f} s "
              f"(graph {args.index} reused or built)")
        pos_of = {}
        for r in range(args.rounds):
            rows = camp.con.execute("SELECT s.pos, i.id FROM selections s JOIN items i ON i.pos = s.pos "
                                    "WHERE s.round = ?", (camp.current_round(),)).fetchall()
            pos_of.update(rows)
            lab = [(item_id, classes[y[p]]) for p, item_id in rows]
            camp.lease_batch("bench", 100)
            camp.con.executemany("INSERT INTO labels (pos, class, annotator, time, round, source) "
                                 "VALUES (?, ?, 'bench', ?, ?, 'web')",
                                 [(p, classes.index(c), time.time(), camp.current_round())
                                  for (p, _), (_, c) in zip(rows, lab)])
            spent["fingerprint"] = 0.0
            t = time.perf_counter()
            camp.select_round()
            total = time.perf_counter() - t
            print(f"round {r + 1}: select_round {total:.3f} s, of which fingerprint {spent['fingerprint']:.3f} s")
        camp.close()
    finally:
        seals.fingerprint = real
        shutil.rmtree(camp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
