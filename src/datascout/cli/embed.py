"""``datascout embed text|images|vectors``: turn raw inputs into a pool folder, resumably."""

from __future__ import annotations

import argparse

from pathlib import Path

from datascout.cli import command
from datascout.exceptions import ValidationError

TEXT_EXAMPLE = "datascout embed text quotes.csv --id-column id --text-column text --out pool/"
IMAGES_EXAMPLE = "datascout embed images photos/ --labels-from-folders --image-size 112 --out pool/"
VECTORS_EXAMPLE = "datascout embed vectors vectors.parquet --id-column id --vector-column embedding --out pool/"


def _common(p, kind: str) -> None:
    p.add_argument("--out", required=True, help="pool folder (embeddings.npy, ids.npy, manifest.json, ...)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    if kind == "vectors":
        p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    else:
        p.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the vectors")
        p.add_argument("--batch-size", type=int, default=64, help="items per forward pass")
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="items per written chunk (the unit of resumption)")
    p.add_argument("--overwrite", action="store_true", help="replace a pool made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _ray_group(parser) -> None:
    g = parser.add_argument_group("scale-out over Ray (the [ray] extra)")
    g.add_argument("--ray", action="store_true",
                   help="read with Ray Data, embed in an actor pool, write a shard directory to --out")
    g.add_argument("--ray-address", default=None, help="a running cluster; default: start a local one")
    g.add_argument("--concurrency", type=int, default=None, help="embedding actors (default 1)")
    g.add_argument("--shard-rows", type=int, default=None, help="items per shard (default 100000)")


def _wants_ray(args) -> bool:
    return args.ray or any(getattr(args, f) is not None for f in ("ray_address", "concurrency", "shard_rows"))


def register(sub) -> None:
    p = sub.add_parser("embed", help="Embed text, images or vectors into a pool folder (offline, resumable).",
                       description="Embed text, images or vectors into a pool folder (offline, resumable). "
                                   "Run the same command again after an interruption to resume.",
                       epilog=f"Example:\n  {TEXT_EXAMPLE}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    inner = p.add_subparsers(dest="embed_command", metavar="KIND", parser_class=type(p))
    t = command(inner, "text", "Embed texts from CSV / JSONL / Parquet or a plain text file "
                "(one item a line, ids = line numbers from 1).", TEXT_EXAMPLE, run_text)
    t.add_argument("input", help=".csv, .jsonl, .parquet or a text file")
    t.add_argument("--id-column", default="id")
    t.add_argument("--text-column", default="text")
    t.add_argument("--format", choices=("csv", "jsonl", "parquet", "txt"), default=None,
                   help="input format (default: from the file's suffix; anything else is plain text)")
    t.add_argument("--model", default=None,
                   help="a local sentence-transformers folder (default: bundled all-MiniLM-L6-v2)")
    _common(t, "text")
    _ray_group(t)
    i = command(inner, "images", "Embed images from a folder tree (ids = relative paths) or a list file.",
                IMAGES_EXAMPLE, run_images)
    i.add_argument("input", help="a folder of images, or a file with one image path a line")
    i.add_argument("--labels-from-folders", action="store_true",
                   help="class = first-level sub-folder name (writes labels.npy, classes.json)")
    i.add_argument("--model", default="efficientnet-lite0",
                   help="efficientnet-lite0 (default) or torchvision:ARCH with --weights")
    i.add_argument("--weights", default=None, help="local weights file")
    i.add_argument("--image-size", type=int, default=112, help="pixels per side (default 112)")
    _common(i, "images")
    _ray_group(i)
    v = command(inner, "vectors", "Validate precomputed vectors (.npy, .npz, Parquet) into a pool folder.",
                VECTORS_EXAMPLE, run_vectors)
    v.add_argument("input", help=".npy, .npz or .parquet")
    v.add_argument("--id-column", default=None,
                   help="Parquet: the id column (default: 'id' when the file has one, else row numbers)")
    v.add_argument("--vector-column", default="embedding")
    _common(v, "vectors")


def _chunk_size(args, default: int) -> int:
    """``--chunk-size``, or the kind's default when it is not given (0 is refused, not replaced)."""
    if args.chunk_size is None:
        return default
    if args.chunk_size < 1:
        raise ValidationError(f"--chunk-size must be >= 1 but is {args.chunk_size}")
    return args.chunk_size


def _finish(out) -> int:
    from datascout.embed import load_pool_dir

    m = load_pool_dir(out).manifest
    print(f"wrote {m['count']} x {m['dimension']} {m['dtype']} ({m['model']}, {m['skipped']} skipped) to {out}")
    return 0


def run_text(args) -> int:
    if _wants_ray(args):
        return _run_text_on_ray(args)
    from datascout.embed import TextEmbedder, TextSource, embed_to_dir, set_threads

    source = TextSource(args.input, id_column=args.id_column, text_column=args.text_column,
                        format=args.format).open()
    embedder = TextEmbedder(model=args.model, batch_size=args.batch_size).load()
    set_threads(args.threads)
    embed_to_dir(source, embedder, args.out, dtype=args.dtype, normalize=not args.no_normalize,
                 chunk_size=_chunk_size(args, 2048), progress=not args.quiet, overwrite=args.overwrite)
    return _finish(args.out)


def run_images(args) -> int:
    if _wants_ray(args):
        return _run_images_on_ray(args)
    from datascout.embed import ImageEmbedder, ImageSource, embed_to_dir, set_threads

    source = ImageSource(args.input, labels_from_folders=args.labels_from_folders,
                         image_size=args.image_size).open()
    embedder = ImageEmbedder(model=args.model, image_size=args.image_size, batch_size=args.batch_size,
                             weights=args.weights).load()
    set_threads(args.threads)
    embed_to_dir(source, embedder, args.out, dtype=args.dtype, normalize=not args.no_normalize,
                 chunk_size=_chunk_size(args, 512), progress=not args.quiet, overwrite=args.overwrite)
    return _finish(args.out)


def run_vectors(args) -> int:
    from datascout.embed import VectorSource, embed_to_dir

    source = VectorSource(args.input, id_column=args.id_column, vector_column=args.vector_column).open()
    embed_to_dir(source, None, args.out, dtype=args.dtype, normalize=args.normalize,
                 chunk_size=_chunk_size(args, 65536), progress=not args.quiet, overwrite=args.overwrite)
    return _finish(args.out)


# --------------------------------------------------------------------------- on Ray


def _ray_setup(args) -> None:
    """Checks shared by ``datascout embed text|images --ray``; starts or joins Ray. Nothing is
    removed before the cluster is reached: ``--overwrite`` clears the output folder only then."""
    from datascout.ray import init_ray, require_ray

    for flag in ("ray_address", "concurrency", "shard_rows"):
        if getattr(args, flag) is not None and not args.ray:
            raise ValidationError(f"--{flag.replace('_', '-')} needs --ray")
    require_ray()
    for flag in ("concurrency", "shard_rows", "batch_size"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValidationError(f"--{flag.replace('_', '-')} must be >= 1 but is {v}")
    if args.chunk_size is not None:
        raise ValidationError("--chunk-size does not apply with --ray (a shard is the unit of resumption): "
                              "use --shard-rows")
    init_ray(args.ray_address)
    if args.overwrite and Path(args.out).exists():
        import shutil

        shutil.rmtree(args.out)


def _shard_progress(args):
    """The ``progress(done, total)`` callback of the Ray embedders: the library's progress bar."""
    if args.quiet:
        return None
    from datascout.progress import ProgressBar

    bars = []

    def advance(done: int, total: int) -> None:
        if not bars:
            bars.append(ProgressBar(total, "shards written").start())
        bars[0].update(done)
        if done == total:
            bars[0].close()

    return advance


def _run_images_on_ray(args) -> int:
    """``datascout embed images --ray``: :func:`datascout.ray.embed_images` from the arguments."""
    from datascout.ray import embed_images
    from datascout.shards import ShardedArray

    if args.labels_from_folders and args.ray:
        raise ValidationError("--labels-from-folders is not available with --ray (shards hold no labels): "
                              "embed without --ray, or label the items in a campaign")
    _ray_setup(args)
    out = embed_images(args.input, args.out, model=args.model, image_size=args.image_size,
                       batch_size=args.batch_size, weights=args.weights,
                       concurrency=1 if args.concurrency is None else args.concurrency,
                       shard_rows=100_000 if args.shard_rows is None else args.shard_rows,
                       normalize=not args.no_normalize, progress=_shard_progress(args))
    view = ShardedArray(out)
    n_skipped = sum(1 for line in (out / "skipped.jsonl").read_text().splitlines() if line)
    print(f"wrote {view.shape[0]} x {view.shape[1]} float32 in {view.num_shards} shards to {out} "
          f"({n_skipped} skipped)")
    return 0


def _run_text_on_ray(args) -> int:
    """``datascout embed text --ray``: :func:`datascout.ray.embed_text` from the arguments (the
    default torch backend, as without ``--ray``)."""
    from datascout.ray import embed_text
    from datascout.shards import ShardedArray

    _ray_setup(args)
    out = embed_text(args.input, args.out, fmt=args.format, id_column=args.id_column,
                     text_column=args.text_column, model=args.model,
                     batch_size=args.batch_size, concurrency=1 if args.concurrency is None else args.concurrency,
                     shard_rows=100_000 if args.shard_rows is None else args.shard_rows,
                     normalize=not args.no_normalize, progress=_shard_progress(args))
    view = ShardedArray(out)
    print(f"wrote {view.shape[0]} x {view.shape[1]} float32 in {view.num_shards} shards to {out}")
    return 0
