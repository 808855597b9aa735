"""``datascout datasets list`` and ``datascout datasets embed NAME``: ready pools of the offline sets."""

from __future__ import annotations

import argparse

from datascout.cli import command
from datascout.datasets import DATASETS

LIST_EXAMPLE = "datascout datasets list"
EMBED_EXAMPLE = "datascout datasets embed fortunes   # -> $DATASCOUT_CACHE/pools/fortunes"


def register(sub) -> None:
    p = sub.add_parser("datasets", help="List the offline data sets and embed them into ready pools.",
                       description="List the offline data sets and embed them into ready pools.",
                       epilog=f"Example:\n  {EMBED_EXAMPLE}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    inner = p.add_subparsers(dest="datasets_command", metavar="COMMAND", parser_class=type(p))
    command(inner, "list", "List the offline data sets, whether each is installed and its pool.",
            LIST_EXAMPLE, run_list)
    e = command(inner, "embed", "Embed an offline data set into a pool folder with ground-truth labels.",
                EMBED_EXAMPLE, run_embed)
    e.add_argument("name", choices=DATASETS, metavar="NAME", help=", ".join(DATASETS))
    e.add_argument("--out", default=None, help="pool folder (default: cache_dir()/pools/NAME)")
    e.add_argument("--model", default=None,
                   help="text: a sentence-transformers folder; images: efficientnet-lite0 or torchvision:ARCH")
    e.add_argument("--image-size", type=int, default=112, help="images: pixels per side (default 112)")
    e.add_argument("--batch-size", type=int, default=None, help="items per forward pass (default 64)")
    e.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    e.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    e.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the vectors")
    e.add_argument("--limit", type=int, default=None,
                   help="embed a seeded random subset of this many items (kept in data set order)")
    e.add_argument("--overwrite", action="store_true", help="replace a pool made with other settings")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def run_list(args) -> int:
    from datascout.datasets import DATASETS
    from datascout.embed import dataset_pool

    print(f"{'name':<14} {'kind':<8} {'model':<19} {'installed':<10} {'items':<27} pool")
    for name, info in DATASETS.items():
        ok = info.installed()
        pool = dataset_pool(name)
        print(f"{name:<14} {info.kind:<8} {info.model:<19} {'yes' if ok else 'no':<10} "
              f"{info.items:<27} {pool if pool else '-'}"
              + ("" if ok else f"   (install: {info.package})"))
    return 0


def run_embed(args) -> int:
    from datascout.embed import embed_dataset, load_pool_dir, set_threads

    set_threads(args.threads)
    out = embed_dataset(args.name, args.out, model=args.model, image_size=args.image_size,
                        batch_size=args.batch_size, dtype=args.dtype,
                        normalize=False if args.no_normalize else None, limit=args.limit,
                        progress=not args.quiet, overwrite=args.overwrite)
    m = load_pool_dir(out).manifest
    print(f"wrote {m['count']} x {m['dimension']} {m['dtype']} ({m['model']}, {m['skipped']} skipped) to {out}")
    return 0
