"""``datascout campaign ...`` (init, status, import, export, next) and ``datascout serve DIR``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from datascout.campaign.formats import EXPORT_FORMATS
from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.io import atomic_write_text
from datascout.registry import STRATEGY_NAMES

INIT_EXAMPLE = ("datascout campaign init camp/ --pool pool/ --classes funny,wise,other --batch-size 20\n"
                "  datascout campaign init camp/ --embeddings emb.npy --items quotes.csv --classes funny,wise,other")


def register(sub) -> None:
    p = sub.add_parser("campaign", help="A persistent labeling campaign (SQLite) run in rounds.",
                       description="A persistent labeling campaign (SQLite) run in rounds.",
                       epilog=f"Example:\n  {INIT_EXAMPLE}\n  datascout serve camp/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="campaign_command", metavar="ACTION", parser_class=sub._parser_class)

    c = command(csub, "init", "Create a campaign directory and select its first batch.", INIT_EXAMPLE, run_init)
    c.add_argument("dir", help="campaign directory (created)")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--pool", metavar="POOL_DIR",
                     help="a pool folder written by 'datascout embed': ids, embeddings and (unless --items "
                          "is given) the texts or image files of its source")
    src.add_argument("--embeddings",
                     help=".npy (memory-mapped), .npz, .parquet, a shard directory or a pool folder. Items are "
                          "matched to rows by id wherever the embeddings carry ids (a pool folder, ids in the "
                          ".npz / Parquet, or ids.npy beside the .npy); a bare .npy without ids pairs the n-th "
                          "item with the n-th row (line order)")
    c.add_argument("--items",
                   help='JSONL (one {"id", "text"} or {"id", "image"} a line), or CSV / Parquet texts '
                        "(--id-column, --text-column, as for 'datascout embed text'); default with --pool: "
                        "the pool's source")
    c.add_argument("--id-column", default="id", help="id column of --items (default: id)")
    c.add_argument("--text-column", default="text", help="text column of --items (default: text)")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--classes", help="comma-separated class names (keys 1-9 follow this order)")
    g.add_argument("--positive-class", help="rare-concept search: NAME vs everything else")
    c.add_argument("--strategy", choices=STRATEGY_NAMES, default=None,
                   help="default: entropy, or most-likely-positive with --positive-class")
    c.add_argument("--batch-size", type=int, default=20, help="items per round")
    c.add_argument("--k", type=int, default=30, help="SEALS neighbours per labeled item")
    c.add_argument("--index", default="HNSW32",
                   help="how the kNN graph is built: a faiss factory string (HNSW32, IVF1024,Flat, ...) or "
                        "'blocks' (matrix products over blocks of nearby items)")
    c.add_argument("--lease-seconds", type=float, default=600.0, help="how long an item stays leased to one annotator")
    c.add_argument("--labels-per-item", type=int, default=1, help="distinct annotators asked for each item")
    c.add_argument("--audit-fraction", type=float, default=0.1,
                   help="share of each round drawn uniformly at random, labeled blind and never trained on: "
                        "the honest estimate of the model's quality (default 0.1; 0 = none)")
    c.add_argument("--no-select-ahead", action="store_true",
                   help="select the next round only after the last label of the current one (default: once it "
                        "is handed out and half answered, so nobody waits)")
    c.add_argument("--review-fraction", type=float, default=0.1,
                   help="at most this share of a batch, each round, of the labels the label audit suspects "
                        "most is asked again of another annotator, blind (default 0.1; 0 = none)")
    c.add_argument("--label-budget", type=int, default=None,
                   help="labels the campaign may use: the 'budget' stopping rule fires there (status says so)")
    c.add_argument("--seed-labels", help="labels that already exist (CSV id,label / JSONL / Label Studio JSON)")
    q = c.add_mutually_exclusive_group()
    q.add_argument("--like", metavar="ITEM_ID", help="first round: the items most similar to this item")
    q.add_argument("--query-embedding", metavar="FILE.npy",
                   help="first round: the items most similar to this vector (e.g. an embedded text or image)")
    q.add_argument("--query-text", metavar="TEXT",
                   help="first round: the items most similar to this text, embedded with the pool's own "
                        "model (embeddings made by 'datascout embed')")
    q.add_argument("--query-image", metavar="IMAGE",
                   help="first round: the items most similar to this image file, embedded with the pool's model")
    c.add_argument("--random-state", type=int, default=0)

    c = command(csub, "status", "Rounds, labels, class counts, positives and the model's CV quality.",
                "datascout campaign status camp/", run_status)
    c.add_argument("dir")
    c.add_argument("--json", action="store_true", help="print the full statistics as JSON")

    c = command(csub, "import", "Import existing labels (CSV id,label[,annotator] / JSONL / a Label Studio export: "
                "JSON, JSON-MIN or CSV), told by their content.",
                "datascout campaign import camp/ labels.csv --annotator alice", run_import)
    c.add_argument("dir")
    c.add_argument("file")
    c.add_argument("--annotator", default="import", help="who gave labels that name no annotator")

    c = command(csub, "export", "Export labels as CSV, JSONL or Label Studio tasks with predictions.",
                "datascout campaign export camp/ --format label-studio --out tasks.json", run_export)
    c.add_argument("dir")
    c.add_argument("--format", choices=list(EXPORT_FORMATS), default="jsonl",
                   help="; ".join(f"{name}: {what}" for name, (what, _, _) in EXPORT_FORMATS.items()))
    c.add_argument("--out", required=True, help="output file (written atomically), or - for standard output")
    c.add_argument("--annotator-map", metavar="NAME=MEMBER,...",
                   help="label-studio: each annotator's Label Studio member (email or user id), e.g. "
                        "alice=alice@example.com,bob=3: their labels go as annotations (Label Studio refuses "
                        "others); the labels of annotators not mapped go as predictions")
    c.add_argument("--image-base-url", metavar="URL",
                   help="label-studio: where the images are served (URL + path relative to the images' folder), "
                        "e.g. /data/local-files/?d= ; default: each image inline as a data: URL")

    c = command(csub, "next", "Retrain and select the next round now, if the current one is fully answered.",
                "datascout campaign next camp/", run_next)
    c.add_argument("dir")

    s = command(sub, "serve", "Serve the labeling web page and JSON API of a campaign.",
                "datascout serve camp/ --port 8000   (then open http://127.0.0.1:8000)", run_serve)
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1", help="beyond loopback needs --token or $DATASCOUT_TOKEN")
    s.add_argument("--port", type=int, default=8000, help="a port in use is an error (0: any free port)")
    s.add_argument("--token", default=None,
                   help="required as 'Authorization: Bearer TOKEN' on every API call (default: $DATASCOUT_TOKEN); "
                        "give it to the page as http://HOST:PORT/#token=TOKEN or type it in")
    s.add_argument("--log-level", default="warning")


def _open(directory):
    from datascout.campaign import Campaign

    if not Path(directory).is_dir():
        raise ValidationError(f"expected a campaign directory at {str(directory)!r} but none exists")
    return Campaign(directory)


def run_init(args) -> int:
    from datascout.campaign import Campaign

    query = note = None
    if args.query_embedding:
        from datascout.io import load_embeddings

        q, _ = load_embeddings(args.query_embedding)
        query = np.asarray(q, dtype=np.float32).reshape(-1)
        note = f"embedding: {args.query_embedding}"
    elif args.query_text is not None or args.query_image is not None:
        from datascout.embed.query import embed_query, pool_manifest

        query = embed_query(pool_manifest(args.pool or args.embeddings), text=args.query_text,
                            image=args.query_image)
        note = f"text: {args.query_text}" if args.query_text is not None else f"image: {args.query_image}"
    camp = Campaign.create(
        args.dir, embeddings=args.embeddings, pool=args.pool, items=args.items,
        id_column=args.id_column, text_column=args.text_column,
        classes=args.classes.split(",") if args.classes else None, positive_class=args.positive_class,
        strategy=args.strategy, batch_size=args.batch_size, k=args.k, index=args.index,
        lease_seconds=args.lease_seconds, labels_per_item=args.labels_per_item,
        audit_fraction=args.audit_fraction, review_fraction=args.review_fraction,
        select_ahead=not args.no_select_ahead, label_budget=args.label_budget,
        random_state=args.random_state, seed_labels=args.seed_labels, like=args.like, query_embedding=query,
        query_note=note)
    prog = camp.round_progress()
    print(f"campaign in {args.dir}: {camp.config['n_items']} items (matched to the embeddings by "
          f"{camp.config['matched_by']}), classes {', '.join(camp.classes)}; "
          f"round {prog['round']} has {prog['selected']} items to label. Next: datascout serve {args.dir}")
    return 0


def run_status(args) -> int:
    camp = _open(args.dir)
    s = camp.stats()
    now = camp.quality_now()
    s["model_now"] = now
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    p, lab = s["progress"], s["labels"]
    print(f"round {p['round']}: {p['done']}/{p['selected']} answered  ({len(s['rounds'])} rounds, strategy {s['strategy']})")
    print(f"labels: {lab['answers']} answers on {lab['items_labeled']} items, {lab['skips']} skips, "
          f"{lab['relabels']} relabels, {s['disagreements']['items']} items with disagreement")
    print("classes: " + ", ".join(f"{c}={n}" for c, n in s["class_counts"].items()))
    if s["positives_found"] is not None:
        print(f"positives found: {s['positives_found']}")
    a = now["audit"]
    if a["value"] is None:
        print(f"audit: {a['labels']} audit labels so far; the honest estimate needs audit labels of a model "
              "trained on 2 classes or more")
    else:
        ci = f" [95% {a['ci'][0]:.3f}-{a['ci'][1]:.3f}]" if a["ci"] else " (too few audit labels for an interval)"
        items = "item" if a["labels"] == 1 else "items"
        line = f"audit ({a['labels']} random {items}, never trained on): {a['metric'].replace('_', ' ')} " \
               f"{a['value']:.3f}{ci}"
        if "macro_f1" in a:
            f1 = a["macro_f1"]
            spread = (f" [{f1['ci'][0]:.3f}-{f1['ci'][1]:.3f}; narrow with few items per class]" if f1["ci"]
                      else " (too few audit labels for its interval)")
            line += f", macro-F1 {f1['value']:.3f}{spread}"
        if "prevalence" in a:
            pr, rem = a["prevalence"], a["positives_remaining"]
            line += (f", prevalence {pr['value']:.4f} [{pr['ci'][0]:.4f}-{pr['ci'][1]:.4f}], "
                     f"positives remaining ~{rem['value']:.0f} [{rem['ci'][0]:.0f}-{rem['ci'][1]:.0f}]")
        print(line)
    cv = now["cv"]
    if cv is None:
        print(f"model: not enough labels for cross-validation yet ({now['n_train']} training labels)")
    else:
        extra = f", average precision {cv['average_precision']:.3f}" if "average_precision" in cv else ""
        left = f"; classes with one label left out: {len(now['left_out_classes'])}" if now.get("left_out_classes") else ""
        print(f"model ({cv['folds']}-fold CV on {now['n_train']} actively chosen labels, biased toward hard items): "
              f"accuracy {cv['accuracy']:.3f}, macro-F1 {cv['macro_f1']:.3f}{extra}{left}")
    rv, ag = s["review"], s["agreement"]
    print(f"review: {rv['open']} open, {rv['done']} done, {rv['changed']} labels changed by review")
    if ag["pairs"] or ag["alpha"] is not None:
        kappas = ", ".join(f"{x['a']}/{x['b']} {x['kappa']:.2f} ({x['items']})" for x in ag["pairs"])
        alpha = "n/a" if ag["alpha"] is None else f"{ag['alpha']:.3f}"
        quality = ", ".join(f"{a} {q:.2f}" for a, q in sorted(s["annotator_quality"].items()))
        print(f"agreement: Krippendorff's alpha {alpha} on {ag['items_with_several_answers']} items; "
              f"Cohen's kappa {kappas or 'n/a'}" + (f"; annotator quality {quality}" if quality else ""))
    print("stopping: " + s["stopping"]["message"])
    for r in s["rounds"]:
        q = "" if r["cv"] is None else f"  CV macro-F1 {r['cv']['macro_f1']:.3f}"
        print(f"  round {r['round']:>3} {r['strategy']:<22} {r['answered']:>4}/{r['selected']:<4} answered"
              f"  labels before {r['labels_before']}{q}")
    return 0


def run_import(args) -> int:
    camp = _open(args.dir)
    before = camp.current_round()
    n = camp.import_labels(args.file, annotator=args.annotator)
    p = camp.round_progress()
    print(f"imported {n} new labels into {args.dir}; round {p['round']}: {p['done']}/{p['selected']} answered"
          + (f" (round {before} complete: round {p['round']} selected)" if p["round"] != before else ""))
    return 0


def run_export(args) -> int:
    camp = _open(args.dir)
    if args.format != "label-studio" and (args.annotator_map or args.image_base_url):
        raise ValidationError(f"--annotator-map and --image-base-url are for --format label-studio, not {args.format}")
    text = camp.export(args.format, annotators=args.annotator_map, image_base_url=args.image_base_url)
    if args.out == "-":  # standard output
        sys.stdout.write(text)
        return 0
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


def run_next(args) -> int:
    camp = _open(args.dir)
    if not camp.maybe_advance(background=False):
        p = camp.round_progress()
        raise ValidationError(f"round {p['round']} is not fully answered yet: {p['done']} of {p['selected']}")
    p = camp.round_progress()
    print(f"round {p['round']} selected: {p['selected']} items")
    return 0


def run_serve(args) -> int:
    from datascout.server import TOKEN_ENV, bind_socket, check_bind, hold_campaign, require_extra, serve

    require_extra()
    camp = _open(args.dir)
    camp.embeddings()  # the file it was created on, unchanged (or a one-line error before serving)
    camp.close()
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)
    held = hold_campaign(args.dir)  # noqa: F841  (kept open while serving)
    sock = bind_socket(args.host, args.port)  # held from here on: nothing can take the port meanwhile
    port = sock.getsockname()[1]
    where = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
    print(f"datascout: serving {args.dir} on http://{where}:{port}  (API docs at /docs)", flush=True)
    serve(args.dir, host=args.host, port=port, token=token, log_level=args.log_level, sock=sock)
    return 0
