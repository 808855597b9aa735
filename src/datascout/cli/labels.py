"""``datascout labels audit``: which labels are likely wrong (cleanlab + the kNN graph)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np


from datascout.cli import command
from datascout.exceptions import ValidationError

EXAMPLE = "datascout labels audit --embeddings E.npy --labels labels.csv --folds 5 --out suspects.csv"


def register(sub) -> None:
    p = sub.add_parser("labels", help="Audit labels: find the ones that are likely wrong.",
                       description="Audit labels: find the ones that are likely wrong.",
                       epilog=f"Example:\n  {EXAMPLE}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    inner = p.add_subparsers(dest="labels_command", metavar="ACTION", parser_class=type(p))
    a = command(inner, "audit", "Rank labeled items by how likely their label is wrong (out-of-fold "
                "probabilities + confident learning, near-duplicates and outliers from the kNN graph) "
                "and suggest the likely class.", EXAMPLE, run_audit)
    a.add_argument("--embeddings", required=True, help="a pool folder of 'datascout embed', .npy (memory-mapped; "
                   "the kNN graph is saved beside it; ids from ids.npy beside it), .npz, .parquet or a shard directory")
    a.add_argument("--labels", required=True, help=".npy of class ids (-1 = unlabeled), .csv (id,label, "
                   "matched by id; or one label a row), or a campaign's JSONL / Label Studio JSON export (the "
                   "majority of each item's answers)")
    a.add_argument("--model", default="logreg", help="classifier for the out-of-fold probabilities "
                   "(logreg, mlp, random-forest)")
    a.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    a.add_argument("--index", default="HNSW32", help="faiss factory string of the kNN graph (default HNSW32)")
    a.add_argument("--k", type=int, default=10, help="neighbours per item in the graph (default 10)")
    a.add_argument("--duplicate-similarity", type=float, default=0.98,
                   help="cosine at or above which two items are near-duplicates (default 0.98)")
    a.add_argument("--outlier-quantile", type=float, default=0.01,
                   help="share of labeled items flagged as outliers by their mean neighbour similarity "
                        "(default 0.01; 0 = none)")
    a.add_argument("--no-graph", action="store_true", help="probabilities only: no near-duplicate or outlier check")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True, help="suspects table (.csv): id, given, suggested, score, reason")


def _labels_from_answers(path, ids, n: int):
    """One label per item from a JSONL (a campaign's export: each annotator's answer) or Label
    Studio JSON file: the majority of the answers (a tie: the last one), matched to rows by id."""
    from collections import Counter

    from datascout.campaign.formats import read_label_file

    if ids is None:
        raise ValidationError(f"{Path(path).name} names items by id: the embeddings need ids (a pool folder, "
                              "an .npz / Parquet with ids, or ids.npy beside the .npy)")
    answers: dict[str, list] = {}
    for item_id, label, _ in read_label_file(path):
        if label is not None:
            answers.setdefault(str(item_id), []).append(label)
    classes = sorted({lab for labs in answers.values() for lab in labs})
    row = {str(i): p for p, i in enumerate(ids)}
    unknown = [i for i in answers if i not in row]
    if unknown:
        raise ValidationError(f"{len(unknown)} items of {Path(path).name} are not in the embeddings' ids "
                              f"(first: {', '.join(map(repr, unknown[:3]))})")
    y = np.full(n, -1, dtype=np.int64)
    for item_id, labs in answers.items():
        counts = Counter(labs)
        top = max(counts.values())
        y[row[item_id]] = classes.index(next(lab for lab in reversed(labs) if counts[lab] == top))
    return y, classes


def run_audit(args) -> int:
    from datascout.campaign.items import open_pool
    from datascout.io import atomic_write_text, load_labels
    from datascout.labels import audit_labels
    from datascout.models import make_model

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ValidationError(f"--out must name a .csv file but is {args.out!r}")
    if not out.parent.exists():
        raise ValidationError(f"the folder of --out does not exist: {str(out.parent)!r}")
    if args.folds < 2:
        raise ValidationError(f"--folds must be >= 2 but is {args.folds}")
    if args.k < 1:
        raise ValidationError(f"--k must be >= 1 but is {args.k}")
    model = make_model(args.model, random_state=args.seed)
    inputs = open_pool(args.embeddings)  # a file, a shard directory or a pool folder, with its ids
    X, ids = inputs.embeddings, inputs.ids
    if Path(args.labels).suffix.lower() in (".jsonl", ".json"):  # a campaign's export, or Label Studio's
        y, classes = _labels_from_answers(args.labels, ids, X.shape[0])
    else:
        y, classes = load_labels(args.labels, ids=ids)
    if len(y) != X.shape[0]:
        raise ValidationError(f"labels has {len(y)} entries but embeddings has {X.shape[0]} rows")
    n_classes = len(classes) if classes is not None else int(y.max()) + 1
    graph = None
    if not args.no_graph:
        from datascout.seals import build_or_load_graph

        k = min(args.k, X.shape[0] - 1)
        path = inputs.path if inputs.path.suffix.lower() == ".npy" else None
        graph = build_or_load_graph(X, path, args.index, k, save=path is not None)
    audit = audit_labels(X, y, n_classes=n_classes, model=model, folds=args.folds, graph=graph,
                         duplicate_similarity=args.duplicate_similarity,
                         outlier_quantile=args.outlier_quantile, random_state=args.seed)
    names = classes if classes is not None else [str(c) for c in range(n_classes)]
    id_of = (lambda p: str(ids[p])) if ids is not None else str
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "given", "suggested", "score", "reason"])
    for p, g, s, sc, why in zip(audit.positions.tolist(), audit.given.tolist(), audit.suggested.tolist(),
                                audit.score.tolist(), audit.reasons):
        w.writerow([id_of(p), names[g], names[s], f"{sc:.6f}", ";".join(why)])
    atomic_write_text(out, buf.getvalue())
    print(audit.summary(names) + f" ({audit.folds}-fold {args.model})")
    print(f"wrote {out}")
    return 0
