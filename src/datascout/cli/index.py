"""``datascout index build``: the kNN graph of an embeddings file, written beside it."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.index import SimilarityIndex, check_factory, drop_self, recall_at_k
from datascout.io import load_embeddings
from datascout.progress import ProgressBar
from datascout.graph_build import BLOCKS, plan
from datascout.seals import KNNGraph, check_graph_index, find_graph, graph_dir

EXAMPLE = "datascout index build --embeddings E.npy --k 100"


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
                   help="'blocks' (no index: blocks of nearby items multiplied with their nearest "
                        "blocks) or a faiss factory string: Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32, LSH")
    p.add_argument("--k", type=int, default=100, help="neighbours per item (self excluded)")
    p.add_argument("--batch-rows", type=int, default=4096, help="items queried per batch")
    p.add_argument("--ef-construction", type=int, default=80, help="HNSW build depth")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW search depth (default max(2k, 64))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    p.add_argument("--block-rows", type=int, default=256, help="blocks: items per block (about)")
    p.add_argument("--probe", type=int, default=4,
                   help="blocks: each block is compared with its items' PROBE nearest blocks (0: by --search-blocks)")
    p.add_argument("--search-blocks", type=int, default=12,
                   help="blocks with --probe 0: each block is compared with its nearest blocks, this many blocks' worth")
    p.add_argument("--recall-sample", type=int, default=0,
                   help="also measure recall@k against exact search on this many random items")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching graph exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(p, what="build the index and the graph")


def _usage(parser) -> int:
    parser.print_help()
    return 2


def run_build(args) -> int:
    factory = check_graph_index(args.index)
    if factory == BLOCKS and args.ray:
        raise ValidationError("--index blocks builds the graph in one process: on Ray use --index IVF1024,Flat "
                              "or another faiss factory string")
    if args.probe < 0:
        raise ValidationError(f"--probe must be >= 0 but is {args.probe}")
    for flag in ("block_rows", "search_blocks"):
        if getattr(args, flag) < 1:
            raise ValidationError(f"--{flag.replace('_', '-')} must be >= 1 but is {getattr(args, flag)}")
    if args.k < 1:
        raise ValidationError(f"--k must be >= 1 but is {args.k}")
    if args.batch_rows < 1:
        raise ValidationError(f"--batch-rows must be >= 1 but is {args.batch_rows}")
    if args.recall_sample < 0:
        raise ValidationError(f"--recall-sample must be >= 0 but is {args.recall_sample}")
    if check_ray_arguments(args):  # the same checks hold on Ray
        return _run_build_on_ray(args)
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
    if factory == BLOCKS:
        index = BLOCKS
        settings = plan(X.shape[0], args.k, block_rows=args.block_rows, search_blocks=args.search_blocks,
                        probe=args.probe)
    else:
        settings = None
        index = SimilarityIndex(factory, ef_search=args.ef_search, ef_construction=args.ef_construction,
                                nprobe=args.nprobe)
        with ProgressBar(X.shape[0], "index", enabled=not args.no_progress) as bar:
            index.build(X, progress=bar)
    t_index = time.perf_counter() - t0
    graph = KNNGraph.build(X, args.k, index, batch_rows=args.batch_rows,
                           progress=not args.no_progress, out_dir=out, blocks=settings)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({X.shape[0]} items x k={args.k}, {size:.1f} MiB)")
    if factory == BLOCKS:
        rec = graph.meta["blocks"]
        print(f"{rec['blocks']} blocks, {rec['search_rows']} items compared per block; graph {t_total:.2f} s; "
              f"peak memory {peak:.0f} MiB")
    else:
        print(f"index build {t_index:.2f} s, graph queries {graph.meta['graph_seconds']:.2f} s, "
              f"total {t_total:.2f} s; peak memory {peak:.0f} MiB")
    if args.recall_sample:
        rng = np.random.default_rng(0)
        m = min(args.recall_sample, X.shape[0])
        sample = np.sort(rng.choice(X.shape[0], size=m, replace=False))
        exact = SimilarityIndex("Flat").build(X)
        _, e = exact.search(np.asarray(X[sample]), args.k + 1)
        _, e = drop_self(np.zeros(e.shape, np.float32), e, sample, args.k)
        r = recall_at_k(np.asarray(graph.neighbors[sample], dtype=np.int64), e)
        print(f"recall@{args.k} against exact search on {m} items: {r:.4f}")
    return 0


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


# --------------------------------------------------------------------------- on Ray


def add_ray_arguments(parser, *, what: str) -> None:
    """The ``--ray`` flags shared by commands that can run over a Ray cluster."""
    g = parser.add_argument_group("scale-out over Ray (the [ray] extra)")
    g.add_argument("--ray", action="store_true", help=f"{what} with Ray, shard by shard")
    g.add_argument("--ray-address", default=None,
                   help="a running cluster ('auto', 'ray://host:10001'); default: start a local one")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    g.add_argument("--num-shards", type=int, default=None,
                   help="split a single .npy pool into this many shards first (written beside it as "
                        "NAME.shards/, reused); a shard directory is used as it is")
    g.add_argument("--num-tasks", type=int, default=None,
                   help="Ray tasks per step (default: one per shard; more splits shards into row blocks)")


def check_ray_arguments(args) -> bool:
    """True when the command should run on Ray; rejects Ray flags given without ``--ray``."""
    if not args.ray:
        for flag in ("ray_address", "num_cpus", "num_shards", "num_tasks"):
            if getattr(args, flag, None) is not None:
                raise ValidationError(f"--{flag.replace('_', '-')} needs --ray")
        return False
    from datascout.ray import require_ray

    require_ray()
    for flag in ("num_cpus", "num_shards", "num_tasks"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            raise ValidationError(f"--{flag.replace('_', '-')} must be >= 1 but is {v}")
    return True


def _run_build_on_ray(args) -> int:
    """``datascout index build --ray``: the index (Ray tasks + faiss merge, or one process for
    HNSW) and the kNN graph (Ray tasks), saved where the single-machine build saves it."""
    from datascout.ray import build_graph, build_index, init_ray, shards_for
    from datascout.shards import ShardedArray, is_shard_dir

    factory = check_factory(args.index)
    init_ray(args.ray_address, args.num_cpus)
    if args.num_shards is None and not is_shard_dir(args.embeddings):
        raise ValidationError(f"{args.embeddings!r} is a single file: pass --num-shards N to split it for Ray")
    shard_dir = shards_for(args.embeddings, args.num_shards)
    view = ShardedArray(shard_dir)
    if args.k >= view.shape[0]:
        raise ValidationError(f"--k must be below the pool size {view.shape[0]} but is {args.k}")
    out = graph_dir(args.embeddings, factory, args.k)
    t0 = time.perf_counter()
    if factory.startswith("HNSW"):
        index = SimilarityIndex(factory, ef_search=args.ef_search, ef_construction=args.ef_construction,
                                nprobe=args.nprobe).build(view)
        how = "one process (HNSW cannot be merged)"
    else:
        index = build_index(view, factory, nprobe=args.nprobe, ef_search=args.ef_search,
                            num_tasks=args.num_tasks)
        how = f"{view.num_shards} shards on Ray + faiss merge"
    t_index = time.perf_counter() - t0
    graph = build_graph(view, index, args.k, out, num_tasks=args.num_tasks, batch_rows=args.batch_rows)
    print(f"wrote {out} ({view.shape[0]} items x k={args.k}, {view.num_shards} shards)")
    print(f"index build {t_index:.2f} s ({how}), graph queries {graph.meta['graph_seconds']:.2f} s on Ray")
    return 0
