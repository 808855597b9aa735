"""``datascout simulate``: a simulated active-learning run on labeled embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError
from datascout.io import load_embeddings, load_labels
from datascout.labels import NOISE_KINDS
from datascout.loop import DENSITY_REFERENCES
from datascout.models import MODEL_NAMES, MODELS
from datascout.multilabel_models import MULTILABEL_MODEL_NAMES, MULTILABEL_MODELS
from datascout.pool import check_embeddings, check_ids
from datascout.registry import MULTILABEL_STRATEGY_NAMES, STRATEGY_NAMES
from datascout.simulate import SimulationConfig, check_result_paths, simulate, stopping_lines, write_result

EXAMPLE = ("datascout simulate --embeddings E.npy --labels Y.npy --positive-class 3 "
           "--strategy entropy --seals --k 100 --index HNSW32 --initial-positives 5 "
           "--initial-negatives 95 --batch-size 100 --rounds 20 --out run.json\n"
           "  datascout simulate --multi-label --embeddings E.npy --labels sets.csv "
           "--strategy adaptive --seed-kind stratified --initial 100 --out run.json")
ALL_STRATEGIES = tuple(dict.fromkeys(STRATEGY_NAMES + MULTILABEL_STRATEGY_NAMES))
ALL_MODELS = tuple(dict.fromkeys(MODEL_NAMES + MULTILABEL_MODEL_NAMES))


def register(sub) -> None:
    p = command(sub, "simulate", "Simulate active learning with an oracle on labeled embeddings.",
                EXAMPLE, run)
    p.add_argument("--embeddings", required=True, help=".npy (memory-mapped), .npz or .parquet")
    p.add_argument("--labels", required=True,
                   help=".npy of class ids or .csv; with --multi-label: an (N, L) 0/1 .npy (a row of -1: "
                        "unlabeled), a scipy sparse .npz, or a CSV 'id,labels' with ';'-joined names")
    p.add_argument("--multi-label", action="store_true",
                   help="each item has a set of labels: multi-label strategies (" + ", ".join(MULTILABEL_STRATEGY_NAMES)
                        + "), models and metrics (micro/macro/samples F1, Hamming loss, subset accuracy, mAP)")
    p.add_argument("--seed-kind", choices=("random", "stratified"), default="random",
                   help="--multi-label: the --initial seed set at random or by iterative stratification")
    p.add_argument("--seed-label", default=None, metavar="LABEL",
                   help="--multi-label: with --initial-positives/--initial-negatives, the label (name or id) "
                        "whose positives the seed holds")
    p.add_argument("--positive-class", type=int, default=None,
                   help="class C: the task becomes C vs the rest (binary, AP on the test split)")
    p.add_argument("--strategy", choices=ALL_STRATEGIES, default=None,
                   help="default: auto (TypiClust, then margin / Cluster-Margin; entropy for two classes), "
                        "mean-entropy with --multi-label")
    p.add_argument("--model", choices=ALL_MODELS, default="logreg",
                   help="classifier refitted every round: "
                        + "; ".join(f"{name}: {text}" for name, (_, text) in MODELS.items())
                        + "; with --multi-label: "
                        + "; ".join(f"{name}: {text}" for name, (_, text) in MULTILABEL_MODELS.items()))
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
    p.add_argument("--label-noise", type=float, default=0.0, metavar="RATE",
                   help="the oracle answers wrongly at this rate (reproducibly: every answer of an item is "
                        "its own seeded draw); run.json then says how well 'labels audit' finds the wrong labels")
    p.add_argument("--noise-kind", choices=NOISE_KINDS, default="uniform",
                   help="a wrong answer: uniform (a random other class) or confusion (the class whose centroid "
                        "is nearest the true one's)")
    p.add_argument("--review-fraction", type=float, default=0.0, metavar="F",
                   help="every round, re-ask (blind, as a campaign's review queue) the audit's most suspect labels, "
                        "up to F x batch size: a second answer, a third when they disagree, the majority wins")
    p.add_argument("--stop-set", type=int, default=2000,
                   help="pool items drawn once on which successive models are compared (stopping rules)")
    p.add_argument("--label-budget", type=int, default=None, help="the 'budget' stopping rule fires at this many labels")
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
    if args.multi_label:
        return run_multilabel(args, X, ids, out)
    for flag, value in (("--seed-label", args.seed_label), ("--seed-kind", args.seed_kind != "random" or None)):
        if value is not None:
            raise ValidationError(f"{flag} is for --multi-label runs")
    if args.strategy is None:
        args.strategy = "auto"
    if args.strategy not in STRATEGY_NAMES or args.model not in MODEL_NAMES:
        what, name, names = (("strategy", args.strategy, STRATEGY_NAMES) if args.strategy not in STRATEGY_NAMES
                             else ("model", args.model, MODEL_NAMES))
        raise ValidationError(f"--{what} {name} is for --multi-label runs: expected one of {', '.join(names)}")
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
        label_noise=args.label_noise, noise_kind=args.noise_kind, review_fraction=args.review_fraction,
        stop_set=args.stop_set, label_budget=args.label_budget,
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
    for line in stopping_lines(result):
        print(line)
    print(f"aulc={result['aulc']:.4f}; wrote {', '.join(str(p) for p in paths)}")
    return 0


def run_multilabel(args, X, ids, out) -> int:
    """``simulate --multi-label``: label sets, multi-label strategies, models and metrics."""
    from datascout.multilabel import load_label_sets
    from datascout.multilabel_simulate import MultiLabelSimulationConfig, simulate_multilabel

    if args.positive_class is not None:
        raise ValidationError("--positive-class is for single-label runs; with --multi-label use --seed-label "
                              "with --initial-positives/--initial-negatives")
    for flag, value, default in (("--label-noise", args.label_noise, 0.0), ("--noise-kind", args.noise_kind, "uniform"),
                                 ("--review-fraction", args.review_fraction, 0.0), ("--stop-set", args.stop_set, 2000),
                                 ("--label-budget", args.label_budget, None)):
        if value != default:
            raise ValidationError(f"{flag} is for single-label runs (not yet with --multi-label)")
    strategy = args.strategy or "mean-entropy"
    if strategy not in MULTILABEL_STRATEGY_NAMES:
        raise ValidationError(f"--strategy {strategy} is for single-label runs: with --multi-label expected one of "
                              f"{', '.join(MULTILABEL_STRATEGY_NAMES)}")
    if args.model not in MULTILABEL_MODEL_NAMES:
        raise ValidationError(f"--model {args.model} is for single-label runs: with --multi-label expected one of "
                              f"{', '.join(MULTILABEL_MODEL_NAMES)}")
    Y, labeled, classes = load_label_sets(args.labels, ids=ids if ids is not None else np.arange(X.shape[0]))
    if Y.shape[0] != X.shape[0]:
        raise ValidationError(f"label sets have {Y.shape[0]} rows but embeddings has {X.shape[0]}")
    seed_label = None
    if args.seed_label is not None:
        names = classes if classes is not None else [str(j) for j in range(Y.shape[1])]
        if args.seed_label in names:
            seed_label = names.index(args.seed_label)
        else:
            raise ValidationError(f"--seed-label {args.seed_label!r} is not a label: expected one of {names}")
    cfg = MultiLabelSimulationConfig(
        strategy=strategy, model=args.model, seals=args.seals, k=args.k, index=args.index,
        graph=not args.no_graph, explore=args.explore, initial=args.initial, seed_kind=args.seed_kind,
        seed_label=seed_label, initial_positives=args.initial_positives, initial_negatives=args.initial_negatives,
        batch_size=args.batch_size, rounds=args.rounds, test_size=args.test_size, seed=args.seed,
        extra={"embeddings": str(args.embeddings), "labels": str(args.labels)})

    def show(rec):
        cand = "" if rec["candidates"] is None else f" candidates={rec['candidates']}"
        ap = "" if rec["average_precision"] is None else f" mAP={rec['average_precision']:.4f}"
        print(f"round {rec['round']:>3}  labeled={rec['labeled']}{cand}  micro-F1={rec['micro_f1']:.4f}{ap}",
              flush=True)

    result = simulate_multilabel(X, Y, cfg, labeled=labeled, classes=classes, embeddings_path=args.embeddings,
                                 progress=show)
    paths = write_result(result, out, plot=not args.no_plot)
    print(f"aulc={result['aulc']:.4f} (micro-F1); wrote {', '.join(str(p) for p in paths)}")
    return 0
