"""``datascout label-studio ...``: the labeling config that matches the export, and the live sync
with a Label Studio project."""

from __future__ import annotations

import argparse
import os

from datascout.cli import command

SYNC_EXAMPLE = ("LABEL_STUDIO_API_KEY=TOKEN datascout label-studio sync camp/ --url http://127.0.0.1:8080 --watch")


def register(sub) -> None:
    p = sub.add_parser("label-studio", help="Label in Label Studio: its config, and a live active-learning sync.",
                       description="Label in Label Studio: its config, and a live active-learning sync.",
                       epilog="Example:\n  datascout label-studio config camp/ > config.xml\n  " + SYNC_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = p.add_subparsers(dest="ls_command", metavar="ACTION", parser_class=sub._parser_class)
    c = command(lsub, "config", "Print the labeling config (XML) that matches the campaign's tasks and predictions.",
                "datascout label-studio config camp/ > config.xml", run_config)
    c.add_argument("dir")
    s = command(lsub, "sync", "Push each round's items to a Label Studio project as tasks with the model's "
                "predictions, pull the annotations, and select the next round when one is complete.",
                SYNC_EXAMPLE, run_sync)
    s.add_argument("dir")
    s.add_argument("--url", required=True, help="Label Studio's address, e.g. http://127.0.0.1:8080")
    s.add_argument("--project", type=int, default=None,
                   help="the project's id (default: the campaign's own, found by its title or created with the config)")
    s.add_argument("--token", default=None, help="Label Studio API token (default: $LABEL_STUDIO_API_KEY)")
    once = s.add_mutually_exclusive_group(required=True)
    once.add_argument("--once", action="store_true", help="one pass, then exit (non-zero when Label Studio fails)")
    once.add_argument("--watch", action="store_true", help="a pass every --interval seconds until stopped")
    s.add_argument("--interval", type=float, default=5.0, help="seconds between passes with --watch (default 5)")
    s.add_argument("--image-base-url", metavar="URL",
                   help="where the images are served (URL + path relative to the images' folder); "
                        "default: each image inline as a data: URL")


def run_config(args) -> int:
    from datascout.campaign import labelstudio as ls
    from datascout.cli.campaign import _open

    camp = _open(args.dir)
    print(ls.label_config(camp.classes, ls.item_kind(camp.con)), end="")
    return 0


def run_sync(args) -> int:
    from datascout.cli.campaign import _open
    from datascout.exceptions import ValidationError
    from datascout.labelstudio import TOKEN_ENV, Client, Sync

    if not args.interval > 0:
        raise ValidationError(f"--interval must be a number of seconds > 0 but is {args.interval}")
    camp = _open(args.dir)
    client = Client(args.url, args.token or os.environ.get(TOKEN_ENV, ""))
    sync = Sync(camp, client, args.project, image_base_url=args.image_base_url)
    if args.once:
        sync.run_once()
    else:
        sync.watch(args.interval)
    return 0
