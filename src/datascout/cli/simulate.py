"""``datascout simulate``: a simulated active-learning run on labeled embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.io import load_embeddings, load_labels
from datascout.loop import DENSITY_REFERENCES
from datascout.models import MODEL_NAMES, MODELS
from datascout.pool import check_embeddings, check_ids
from datascout.registry import STRATEGY_NAMES
from datascout.simulate import SimulationConfig, check_result_paths, simulate, write_result

EXAMPLE = ("datascout simulate --embeddings E.npy --labels Y.npy --positive-class 3 "
           "--strategy entropy --seals --k 100 --index HNSW32 --initial-positives 5 "
           "--initial-negatives 95 --batch-size 100 --rounds 20 --out run.json")


def register(sub) -> None:
    p = command(sub, "simulate", "Simulate active learning with an oracle on labeled embeddings.",
                EXAMPLE, run)
    p.add_argument("--embeddings", required=True, help=".npy (memory-mapped), .npz or .parquet")
    p.add_argument("--labels", required=True, help=".npy of class ids or .csv")
    p.add_argument("--positive-class", type=int, default=None,
                   help="class C: the task becomes C vs the rest (binary, AP on the test split)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="auto",
                   help="default auto: TypiClust, then margin / Cluster-Margin; entropy for --positive-class")
    p.add_argument("--model", choices=MODEL_NAMES, default="logreg",
                   help="classifier refitted every round: "
                        + "; ".join(f"{name}: {text}" for name, (_, text) in MODELS.items()))
    p.add_argument("--beta", type=float, default=1.0, help="Information Density exponent")
    p.add_argument("--seals", action="store_true", help="score only the labeled items' neighbours")
    p.add_argument("--k", type=int, default=100, help="neighbours per labeled item (SEALS)")
    p.add_argument("--index", default="HNSW32", help="faiss factory string (SEALS)")
    p.add_argument("--no-graph", action="store_true",
                   help="SEALS: query the index on the fly instead of a precomputed kNN graph")
    p.add_argument("--explore", type=int, default=0, metavar="M",
                   help="SEALS: also score M random items outside the candidate set each round "
                        "(redrawn every round; lets MaxEnt/margin see regions no label is near yet)")
    p.add_argument("--density-reference", choices=DENSITY_REFERENCES, default="pool",
                   help="SEALS + density: what mean similarity is measured against: "
                        + "; ".join(f"{k}: {v}" for k, v in DENSITY_REFERENCES.items()))
    p.add_argument("--initial-positives", type=int, default=None)
    p.add_argument("--initial-negatives", type=int, default=None)
    p.add_argument("--initial", type=int, default=None, help="random seed set size (default 100)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run.json (run.csv and run.png are written beside it)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")


def run(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise ValidationError(f"--out must name a .json file but is {args.out!r}")
    if not out.parent.exists():
        raise ValidationError(f"the folder of --out does not exist: {str(out.parent)!r}")
    check_result_paths(out, plot=not args.no_plot)
    X, ids = load_embeddings(args.embeddings)
    X = check_embeddings(X)
    ids = check_ids(ids, X.shape[0])  # an .npz / Parquet id column: one unique id per row
    y, _ = load_labels(args.labels, ids=ids)
    if len(y) != X.shape[0]:
        raise ValidationError(f"labels has {len(y)} entries but embeddings has {X.shape[0]} rows")
    cfg = SimulationConfig(
        strategy=args.strategy, positive_class=args.positive_class, beta=args.beta, seals=args.seals,
        k=args.k, index=args.index, graph=not args.no_graph, explore=args.explore,
        density_reference=args.density_reference,
        initial_positives=args.initial_positives, initial_negatives=args.initial_negatives,
        initial=args.initial, batch_size=args.batch_size, rounds=args.rounds,
        test_size=args.test_size, seed=args.seed, model=args.model,
        extra={"embeddings": str(args.embeddings), "labels": str(args.labels)},
    )

    def show(rec):
        metric = rec["average_precision"] if rec["average_precision"] is not None else rec["accuracy"]
        cand = "" if rec["candidates"] is None else f" candidates={rec['candidates']}"
        found = "" if rec["positives_found"] is None else f" positives={rec['positives_found']}/{rec['pool_positives']}"
        print(f"round {rec['round']:>3}  labeled={rec['labeled']}{found}{cand}  "
              f"{'AP' if rec['average_precision'] is not None else 'acc'}={metric:.4f}", flush=True)

    result = simulate(X, np.asarray(y), cfg, embeddings_path=args.embeddings, progress=show)
    paths = write_result(result, out, plot=not args.no_plot)
    print(f"aulc={result['aulc']:.4f}; wrote {', '.join(str(p) for p in paths)}")
    return 0
