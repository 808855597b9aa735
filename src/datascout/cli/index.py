"""``datascout index build``: the kNN graph of an embeddings file, written beside it."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.distributed import add_ray_arguments, check_ray_arguments, run_index_build
from datascout.exceptions import ValidationError
from datascout.index import SimilarityIndex, check_factory, recall_at_k
from datascout.io import load_embeddings
from datascout.seals import KNNGraph, _drop_self, _progress, find_graph, graph_dir

EXAMPLE = "datascout index build --embeddings E.npy --index HNSW32 --k 100"


def register(sub) -> None:
    group = sub.add_parser("index", help="Similarity indexes and kNN graphs for SEALS.",
                           description="Similarity indexes and kNN graphs for SEALS.",
                           epilog=f"Example:\n  {EXAMPLE}")
    isub = group.add_subparsers(dest="index_command", metavar="SUBCOMMAND", parser_class=type(group))
    group.set_defaults(func=lambda args: _usage(group))
    p = command(isub, "build", "Build the k-nearest-neighbour graph of an embeddings file (saved beside "
                "it, reused by 'datascout simulate --seals').", EXAMPLE, run_build)
    p.add_argument("--embeddings", required=True, help=".npy (memory-mapped), .npz or .parquet")
    p.add_argument("--index", default="HNSW32",
                   help="faiss factory string: Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32, LSH")
    p.add_argument("--k", type=int, default=100, help="neighbours per item (self excluded)")
    p.add_argument("--batch-rows", type=int, default=4096, help="items queried per batch")
    p.add_argument("--ef-construction", type=int, default=80, help="HNSW build depth")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW search depth (default max(2k, 64))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    p.add_argument("--recall-sample", type=int, default=0,
                   help="also measure recall@k against exact search on this many random items")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching graph exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(p, what="build the index and the graph")


def _usage(parser) -> int:
    parser.print_help()
    return 2


def run_build(args) -> int:
    factory = check_factory(args.index)
    if args.k < 1:
        raise ValidationError(f"--k must be >= 1 but is {args.k}")
    if args.batch_rows < 1:
        raise ValidationError(f"--batch-rows must be >= 1 but is {args.batch_rows}")
    if args.recall_sample < 0:
        raise ValidationError(f"--recall-sample must be >= 0 but is {args.recall_sample}")
    if check_ray_arguments(args):  # the same checks hold on Ray
        return run_index_build(args)
    if Path(args.embeddings).suffix.lower() != ".npy":
        raise ValidationError(f"--embeddings must be a .npy file (the graph is saved beside it) but is {args.embeddings!r}")
    X, _ = load_embeddings(args.embeddings)
    if args.k >= X.shape[0]:
        raise ValidationError(f"--k must be below the pool size {X.shape[0]} but is {args.k}")
    out = graph_dir(args.embeddings, factory, args.k)
    if not args.force:
        found = find_graph(X, args.embeddings, factory, args.k)
        if found is not None:
            print(f"a matching graph already exists: {found} (use --force to rebuild)")
            return 0
    if not out.parent.exists() or not _writable(out.parent):
        raise ValidationError(f"cannot write the graph beside the embeddings: {str(out.parent)!r} is not writable")
    t0 = time.perf_counter()
    index = SimilarityIndex(factory, ef_search=args.ef_search, ef_construction=args.ef_construction,
                            nprobe=args.nprobe)
    bar = None if args.no_progress else _progress(X.shape[0], "index    ")
    index.build(X, progress=bar)
    if bar is not None:
        bar(0, done=True)
    t_index = time.perf_counter() - t0
    graph = KNNGraph.build(X, args.k, index, batch_rows=args.batch_rows,
                           progress=not args.no_progress, out_dir=out)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({X.shape[0]} items x k={args.k}, {size:.1f} MiB)")
    print(f"index build {t_index:.2f} s, graph queries {graph.meta['graph_seconds']:.2f} s, "
          f"total {t_total:.2f} s; peak memory {peak:.0f} MiB")
    if args.recall_sample:
        rng = np.random.default_rng(0)
        m = min(args.recall_sample, X.shape[0])
        sample = np.sort(rng.choice(X.shape[0], size=m, replace=False))
        exact = SimilarityIndex("Flat").build(X)
        _, e = exact.search(np.asarray(X[sample]), args.k + 1)
        _, e = _drop_self(np.zeros(e.shape, np.float32), e, sample, args.k)
        r = recall_at_k(np.asarray(graph.neighbors[sample], dtype=np.int64), e)
        print(f"recall@{args.k} against exact search on {m} items: {r:.4f}")
    return 0


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)
