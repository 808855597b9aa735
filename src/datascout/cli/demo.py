"""``datascout demo``: the main job on real, offline data, ending in a campaign ready to label.

1. The pool: the ~15k quotes of Debian ``fortunes`` embedded once with all-MiniLM-L6-v2
   (``datascout datasets embed fortunes``; a few minutes on 2 cores, then cached in
   ``$DATASCOUT_CACHE/pools/fortunes``). The file a quote comes from is its ground truth.
2. Rare-concept search, simulated with that ground truth as the oracle: for each concept
   (default: Star Trek quotes, 1.5% of the pool, and medicine, 0.5%) a seed set of 5 positives +
   95 negatives, then rounds of labels chosen by random sampling, MaxEnt and most-likely-positive
   over the whole pool, and the same two strategies over the SEALS candidates (k = 100, the
   paper's, and a small k), a few seeds each. Quality (final test AP, positives found, each SEALS
   run against the full-pool run of the same seed) and cost (fraction of the pool scored,
   selection time per round, the one-time kNN graph) side by side.
3. A labeling campaign on the same pool, started from a text query, and the one command that
   opens it in the browser.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from datascout.cli import command
from datascout.exceptions import ValidationError

EXAMPLE = "datascout demo --out demo-run --concepts startrek,medicine --seeds 3"
DATASET = "fortunes"
DEFAULT_CONCEPTS = "startrek,medicine"
# the campaign's starting query for a concept: what a user would type to find it
DEFAULT_QUERIES = {"startrek": "Captain Kirk and Mr. Spock on the bridge of the starship Enterprise"}
EMBED_RATE = 90  # MiniLM quotes/s on 2 cores (docs/benchmarks.md, "Text backends", torch float32)
SEED_POSITIVES, SEED_NEGATIVES = 5, 95  # the SEALS paper's seed set

# Where SEALS pays, measured by benchmarks/bench_seals_scale.py on 2 cores and quoted from
# docs/benchmarks.md; tests/test_demo.py checks that these rows are still there.
SCALE_QUOTES = [
    {"pool": "1,000,000 x 256 (synthetic, one connected graph)",
     "section": "SEALS speed and scale, 1,000,000 x 256 float32, cluster centre scale 0.5",
     "command": "python benchmarks/bench_seals_scale.py --n 1000000 --center-scale 0.5 ... --section=-connected",
     "row": "| entropy | 0 | 0 | 58.1 | 2.89 | 4.39 | 20.1x | 8.0x |",
     "text": "full-pool MaxEnt 58 ms a round, SEALS 2.9 ms (+4.4 ms of graph lookups), scoring at most 7.2% "
             "of the pool, AP ratio 1.000; its graph took 20 s (index) + 385 s (neighbours) once"},
    {"pool": "10,000,000 x 256 (float16, memory-mapped, no graph: index queries on the fly)",
     "section": "SEALS speed and scale, 10,000,000 x 256 float16, memory-mapped",
     "command": "python benchmarks/bench_seals_scale.py --skip-part1 --n-big 10000000 ... --section=-memmap10m",
     "row": "| 0 | 6.01 | 4.3 | 197.8 | 1397x | 30x | 0.7042% |",
     "text": "a full-pool round 6.0 s, SEALS 4.3 ms + 198 ms of index queries, scoring at most 0.70% of the "
             "pool; its IVF-PQ index took 161 s once, paid back after about 28 rounds"},
]


def register(sub) -> None:
    p = command(sub, "demo", "The main job: rare-concept search on real text embeddings, full pool vs SEALS, "
                "then a campaign ready to label.", EXAMPLE, run)
    p.add_argument("--out", default="demo-run",
                   help="folder for results.json, results.csv, learning_curves.png and the campaign")
    p.add_argument("--concepts", default=DEFAULT_CONCEPTS,
                   help="comma-separated fortunes files to find, each a rare concept (default: %(default)s; "
                        "'datascout datasets list' names the data set)")
    p.add_argument("--seeds", type=int, default=3, help="repeats per strategy (seed sets and test splits)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=50, help="labels per round")
    p.add_argument("--k", type=int, default=100, help="SEALS neighbours per labeled item (the paper's 100)")
    p.add_argument("--small-k", type=int, default=10,
                   help="a second, smaller k for the same SEALS strategies (0: none)")
    p.add_argument("--index", default="HNSW32", help="faiss factory string of the kNN graph")
    p.add_argument("--limit", type=int, default=None,
                   help="embed a seeded random subset of this many quotes instead of all of them (a quicker first run)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes for the simulated runs (default: the cores, at most 4)")
    p.add_argument("--campaign-concept", default=None,
                   help="the concept of the campaign made at the end (default: the first of --concepts)")
    p.add_argument("--query", default=None,
                   help="the text the campaign's first round is found from (default for startrek: "
                        f"{DEFAULT_QUERIES['startrek']!r})")


def _arms(k: int, small_k: int) -> list[tuple[str, str, int | None]]:
    """(label, strategy, SEALS k or None for the full pool), the order of the table."""
    arms = [("random", "random", None)]
    for name, strategy in (("MaxEnt", "entropy"), ("most-likely-pos.", "most-likely-positive")):
        arms.append((f"{name}, full pool", strategy, None))
        for kk in (k, small_k):
            if kk:
                arms.append((f"{name}, SEALS k={kk}", strategy, kk))
    return arms


def _check_args(args, classes: list[str]) -> tuple[list[str], str, str]:
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    unknown = [c for c in concepts if c not in classes]
    if not concepts or unknown:
        raise ValidationError(f"--concepts must name fortunes files ({', '.join(classes)}) but got "
                              f"{', '.join(map(repr, unknown or [args.concepts]))}")
    if len(set(concepts)) != len(concepts):
        raise ValidationError(f"--concepts names a concept twice: {args.concepts!r}")
    for flag, v, lo in (("--seeds", args.seeds, 1), ("--rounds", args.rounds, 1), ("--batch-size", args.batch_size, 1),
                        ("--k", args.k, 1), ("--small-k", args.small_k, 0), ("--jobs", args.jobs, 1)):
        if v < lo:
            raise ValidationError(f"{flag} must be >= {lo} but is {v}")
    if args.small_k >= args.k:
        raise ValidationError(f"--small-k must be smaller than --k ({args.k}) but is {args.small_k}")
    if args.limit is not None and args.limit < 2 * (SEED_POSITIVES + SEED_NEGATIVES):
        raise ValidationError(f"--limit must be >= {2 * (SEED_POSITIVES + SEED_NEGATIVES)} quotes but is {args.limit}")
    camp = args.campaign_concept or concepts[0]
    if camp not in classes:
        raise ValidationError(f"--campaign-concept must name a fortunes file ({', '.join(classes)}) but is {camp!r}")
    query = args.query if args.query is not None else DEFAULT_QUERIES.get(camp)
    if query is None:
        raise ValidationError(f"the campaign for {camp!r} needs a starting text: pass --query TEXT")
    if not query.strip():
        raise ValidationError("--query is empty")
    return concepts, camp, query


def ready_pool(limit: int | None, console) -> tuple[Path, dict]:
    """The fortunes pool folder (embedded now when it is not cached) and what it cost."""
    from datascout.embed import embed_dataset, load_pool_dir, pools_dir
    from datascout.embed.pipeline import MANIFEST

    out = pools_dir() / (DATASET if limit is None else f"{DATASET}-{limit}")
    if (out / MANIFEST).is_file():
        m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if (m.get("source") or {}).get("dataset") != DATASET or "labels" not in m.get("files", {}):
            raise ValidationError(f"{str(out)!r} holds a pool that is not the {DATASET} data set with its labels: "
                                  "move it away, or set DATASCOUT_CACHE to another folder")
        console.print(f"pool: {m['count']:,} quotes, {m['model']} ({m['dimension']}-d), cached in {out}")
        return out, {"embedded_now": False, "seconds": None, "count": m["count"]}
    from datascout.datasets import load

    n = len(load(DATASET).labels) if limit is None else limit
    console.print(f"[bold]first run[/]: embedding {n:,} quotes once with all-MiniLM-L6-v2 into {out} "
                  f"(about {max(1, round(n / EMBED_RATE / 60))} min on 2 cores at ~{EMBED_RATE} quotes/s; "
                  "an interrupted run resumes; later runs reuse it)")
    t0 = time.perf_counter()
    embed_dataset(DATASET, out, limit=limit, progress=True)
    dt = time.perf_counter() - t0
    count = int(load_pool_dir(out).manifest["count"])
    console.print(f"embedded {count:,} quotes in {dt:.0f} s ({count / dt:.0f} quotes/s), once")
    return out, {"embedded_now": True, "seconds": round(dt, 1), "count": count}


def run_simulations(X, y, graph, tasks, jobs: int) -> list[dict]:
    """``simulate`` for every ``(concept, label, config)`` of ``tasks``, in order, over ``jobs``
    processes (joblib: the pool and the graph are memory-mapped to the workers, not copied)."""
    from joblib import Parallel, delayed

    from datascout.progress import ProgressBar
    from datascout.simulate import simulate

    out = []
    with ProgressBar(len(tasks), "simulated runs") as bar:
        gen = Parallel(n_jobs=jobs, return_as="generator")(
            delayed(simulate)(X, y, cfg, graph=graph if cfg.seals else None) for _, _, cfg in tasks)
        for res in gen:
            out.append(res)
            if len(out) == len(tasks) or len(out) * 10 // len(tasks) > (len(out) - 1) * 10 // len(tasks):
                bar.update(len(out))  # every tenth: a log gets ten lines, not one per run
    return out


def _final(res: dict, key: str) -> float:
    return float(res["rounds"][-1][key])


def summarize(concept: str, share: float, arms, runs: dict[str, list[dict]]) -> list[dict]:
    """One row per arm: means and ranges over seeds, each SEALS run against the full-pool run of
    the same seed (same split, same seed set), candidate fractions and selection time."""
    rows = []
    for label, strategy, k in arms:
        res = runs[label]
        ap = np.asarray([_final(r, "average_precision") for r in res])
        found = np.asarray([_final(r, "positives_found") for r in res])
        row = {"concept": concept, "pool_share": round(share, 6), "strategy": label, "seals_k": k or "",
               "seeds": len(res), "final_ap_mean": float(ap.mean()), "final_ap_min": float(ap.min()),
               "final_ap_max": float(ap.max()), "found_mean": float(found.mean()), "found_min": int(found.min()),
               "found_max": int(found.max()), "pool_positives": int(_final(res[0], "pool_positives")),
               "ap_vs_full_worst": "", "found_vs_full_worst": "", "seeds_below_full": ""}
        if k:
            full = runs[next(lab for lab, s, kk in arms if s == strategy and kk is None)]
            d_ap = ap - np.asarray([_final(r, "average_precision") for r in full])
            d_found = found - np.asarray([_final(r, "positives_found") for r in full])
            row.update(ap_vs_full_worst=float(d_ap.min()), found_vs_full_worst=int(d_found.min()),
                       seeds_below_full=int(((d_ap < 0) | (d_found < 0)).sum()))
        frac = [[x["candidates"] / r["n_pool"] for x in r["rounds"][1:]] for r in res]
        row["scored_first"] = float(np.mean([f[0] for f in frac]))
        row["scored_last"] = float(np.mean([f[-1] for f in frac]))
        row["select_ms"] = 1000 * float(np.mean([np.mean([x["select_seconds"] for x in r["rounds"][1:]])
                                                 for r in res]))
        rows.append(row)
    return rows


TABLE_NOTE = ("vs full: the worst seed against the full-pool run of the same seed (same split, same seed set), "
              "AP / positives found, and on how many seeds SEALS was below it; scored: the share of the pool "
              "scored in round 1 -> the last round; ms: selection time per round")


def _table(rows: list[dict], title: str):
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", caption=TABLE_NOTE, caption_justify="left",
              box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for col in ("strategy", "final test AP", f"found / {rows[0]['pool_positives']}", "vs full", "scored", "ms"):
        t.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for r in rows:
        vs = "-"
        if r["seals_k"]:
            vs = f"{r['ap_vs_full_worst']:+.3f} / {r['found_vs_full_worst']:+d} ({r['seeds_below_full']}/{r['seeds']})"
        t.add_row(r["strategy"], f"{r['final_ap_mean']:.3f} ({r['final_ap_min']:.3f}-{r['final_ap_max']:.3f})",
                  f"{r['found_mean']:.0f} ({r['found_min']}-{r['found_max']})", vs,
                  f"{100 * r['scored_first']:.0f}% -> {100 * r['scored_last']:.0f}%", f"{r['select_ms']:.1f}")
    return t


def _round2(x: float) -> int:
    """``x`` to two significant digits (a count of rounds is an estimate, not a measurement)."""
    return int(float(f"{x:.2g}"))


def cost_lines(graph_meta: dict, built_now: float | None, rows: list[dict], k: int) -> list[str]:
    """What the graph cost once and what SEALS saved a round on this pool, and where it pays."""
    one_time = float(graph_meta.get("index_seconds", 0) + graph_meta.get("graph_seconds", 0))
    how = f"built now in {built_now:.1f} s" if built_now is not None else f"loaded; it took {one_time:.1f} s to build"
    lines = [f"The kNN graph ({graph_meta.get('index')}, k={graph_meta.get('k')}, {graph_meta.get('n'):,} quotes) is "
             f"made once per pool and shared by every SEALS run and the campaign: {how}."]
    full = [r["select_ms"] for r in rows if not r["seals_k"] and r["strategy"] != "random"]
    seals = [r["select_ms"] for r in rows if r["seals_k"] == k]
    scored = [r["scored_last"] for r in rows if r["seals_k"] == k]
    saved = np.mean(full) - np.mean(seals)
    if saved > 0:
        pay = f"it saves {saved:.1f} ms a round, so the graph pays for itself after ~{_round2(one_time / (saved / 1000)):,} rounds"
    else:
        pay = "it saves nothing a round here"
    lines.append(f"Per round the full pool took {np.mean(full):.1f} ms to select and SEALS k={k} {np.mean(seals):.1f} ms "
                 f"(it scored up to {100 * max(scored):.0f}% of the pool: 100 neighbours of a few hundred labels "
                 f"reach most of {graph_meta.get('n'):,} items); {pay}. On a pool this small the graph costs more "
                 "than it saves; SEALS's per-round neighbour lookups (in teach) are not in these times.")
    lines.append("Where it pays, measured on 2 cores (docs/benchmarks.md):")
    lines += [f"  {q['pool']}: {q['text']} ('{q['section']}')." for q in SCALE_QUOTES]
    lines.append("A full-pool round grows with the pool; a SEALS round grows with labels x k.")
    return lines


def _datascout_command() -> str:
    """How the user runs datascout: 'datascout' when that is on PATH and this one, else its path."""
    exe = Path(sys.executable).parent / "datascout"
    if not exe.is_file():
        return f"{shlex.quote(sys.executable)} -m datascout"
    on_path = shutil.which("datascout")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "datascout"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return shlex.quote(str(exe))


def make_campaign(directory: Path, pool: Path, concept: str, query: str, console) -> dict:
    """A rare-concept campaign on ``pool`` whose first round is the quotes nearest ``query``, made
    by the very ``campaign init`` command it prints; kept (never replaced) when it exists."""
    from datascout.campaign import DB_NAME, Campaign

    init = ["campaign", "init", str(directory), "--pool", str(pool), "--positive-class", concept,
            "--query-text", query]
    subset = (json.loads((pool / "manifest.json").read_text(encoding="utf-8")).get("source") or {}).get("subset")
    if (directory / DB_NAME).exists():
        camp = Campaign(directory)
        try:
            p, n = camp.round_progress(), camp.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        finally:
            camp.close()
        console.print(f"campaign: {directory} exists (round {p['round']}, {n} labels so far): kept as it is; "
                      "move it away to start a new one")
        return {"dir": str(directory), "created": False, "round": p["round"], "labels": int(n)}
    from datascout.cli import build_parser

    if subset:  # a pool of some of the quotes: the campaign's items are those (a pool's source is all of them)
        items = directory.parent / f"{pool.name}-items.jsonl"
        write_items(items, pool)
        init += ["--items", str(items)]
    console.print(f"campaign: {_datascout_command()} {shlex.join(init)}")
    t0 = time.perf_counter()
    args = build_parser().parse_args(init)
    args.func(args)
    dt = time.perf_counter() - t0
    return {"dir": str(directory), "created": True, "seconds": round(dt, 1), "command": init,
            **first_round_truth(directory, pool, concept)}


def write_items(path: Path, pool: Path) -> None:
    """The quotes of ``pool`` as JSONL ``{"id", "text"}``, matched to the data set by id."""
    from datascout.datasets import load
    from datascout.embed import load_pool_dir
    from datascout.files import atomic_write_text

    d = load(DATASET)
    text_of = dict(zip(d.ids.tolist(), d.data))
    ids = np.asarray(load_pool_dir(pool).ids).astype(str).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps({"id": i, "text": text_of[i]}) + "\n" for i in ids))


def first_round_truth(directory: Path, pool: Path, concept: str) -> dict:
    """How many of round 0's query picks are the concept, by the pool's ground truth (by id)."""
    from datascout.campaign import Campaign
    from datascout.embed import load_pool_dir

    pf = load_pool_dir(pool)
    truth = dict(zip(np.asarray(pf.ids).astype(str).tolist(), np.asarray(pf.labels).tolist()))
    want = pf.manifest["classes"].index(concept)
    camp = Campaign(directory)
    try:
        picks = camp.con.execute("SELECT i.id, s.audit FROM selections s JOIN items i ON i.pos = s.pos "
                                 "WHERE s.round = 0 ORDER BY s.rank").fetchall()
    finally:
        camp.close()
    query = [i for i, audit in picks if not audit]
    return {"round0_items": len(picks), "round0_query_picks": len(query),
            "round0_query_picks_positive": sum(truth[i] == want for i in query)}


def _write_results(out: Path, summary: list[dict], payload: dict, panels, styles) -> list[Path]:
    from datascout.files import atomic_write_bytes, atomic_write_text
    from datascout.simulate import learning_curve_panels_png

    png = learning_curve_panels_png(panels, ncols=len(panels) // 2, styles=styles)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(summary[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(summary)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "learning_curves.png", out / "results.csv", out / "results.json"]
    atomic_write_bytes(files[0], png)
    atomic_write_text(files[1], buf.getvalue())
    atomic_write_text(files[2], json.dumps(payload, indent=1))
    return files


def _styles(arms, k: int) -> dict:
    """One colour per strategy; solid over the full pool, dashed under SEALS k, dotted under the small k."""
    colours = {"random": "tab:gray", "entropy": "tab:blue", "most-likely-positive": "tab:red"}
    return {label: {"color": colours[s], "ls": "-" if kk is None else ("--" if kk == k else ":")}
            for label, s, kk in arms}


def run(args) -> int:
    from rich.console import Console

    from datascout.datasets import load
    from datascout.embed import load_pool_dir
    from datascout.seals import build_or_load_graph, find_graph
    from datascout.simulate import SimulationConfig

    t_start = time.perf_counter()
    concepts, camp_concept, query = _check_args(args, load(DATASET).classes)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"--out must be a folder but {str(out)!r} is a file")
    console = Console(width=120, highlight=False, soft_wrap=True)
    console.print("[bold]datascout demo[/]: find rare concepts in the Debian fortunes quotes (MiniLM text "
                  "embeddings), over the full pool and with SEALS, then label one yourself")
    pool, pool_info = ready_pool(args.limit, console)
    pf = load_pool_dir(pool)
    X = np.ascontiguousarray(np.asarray(pf.embeddings, dtype=np.float32))
    y = np.asarray(pf.labels, dtype=np.int64)
    classes = list(pf.manifest["classes"])
    for concept in concepts:  # the seed set needs its positives in the pool, the test at least one
        n = int((y == classes.index(concept)).sum())
        if n < SEED_POSITIVES + 2:
            raise ValidationError(f"{concept!r} has {n} quotes in this pool but the demo needs at least "
                                  f"{SEED_POSITIVES + 2}: choose another concept or a larger --limit")

    t0 = time.perf_counter()
    saved = find_graph(X, pool / "embeddings.npy", args.index, args.k, quiet=True)
    graph = build_or_load_graph(X, pool / "embeddings.npy", args.index, args.k, progress=True)
    built_now = None if saved is not None else round(time.perf_counter() - t0, 1)
    arms = _arms(args.k, args.small_k)
    console.print(f"kNN graph ({args.index}, k={args.k}) ready in {time.perf_counter() - t0:.1f} s. "
                  f"Each concept: seed {SEED_POSITIVES} positives + {SEED_NEGATIVES} negatives, {args.rounds} rounds "
                  f"x {args.batch_size} labels, {len(arms)} strategies x {args.seeds} seeds, test = a stratified 20%.")

    tasks = [(concept, label, SimulationConfig(
        strategy=strategy, positive_class=classes.index(concept), seals=k is not None, k=k or args.k,
        index=args.index, initial_positives=SEED_POSITIVES, initial_negatives=SEED_NEGATIVES,
        batch_size=args.batch_size, rounds=args.rounds, seed=seed, extra={"concept": concept, "arm": label}))
        for concept in concepts for label, strategy, k in arms for seed in range(args.seeds)]
    t_sim = time.perf_counter()
    done = run_simulations(X, y, graph, tasks, args.jobs)
    summary, runs_out, panels = [], {}, []
    for concept in concepts:
        runs = {label: [res for (c, lab, _), res in zip(tasks, done) if c == concept and lab == label]
                for label, _, _ in arms}
        share = float(np.mean(y == classes.index(concept)))
        rows = summarize(concept, share, arms, runs)
        summary += rows
        runs_out[concept] = runs
        console.print(_table(rows, f"Find {concept!r}: {100 * share:.2f}% of {len(y):,} quotes, "
                                   f"{rows[0]['pool_positives']} in the pool (the other 20% is the test); "
                                   f"mean (min-max) over {args.seeds} seeds"))
        title = f"{concept} ({100 * share:.2f}%)"
        panels.append((title, runs, "average_precision"))
        panels.append((title, runs, "positives_found"))
    sim_s = time.perf_counter() - t_sim
    # AP panels on the first row, positives found on the second
    panels = panels[0::2] + panels[1::2]
    for line in cost_lines(graph.meta, built_now, summary, args.k):
        console.print(line)

    campaign = make_campaign(out / "campaign", pool, camp_concept, query, console)
    if campaign["created"]:
        console.print(f"round 0: the {campaign['round0_query_picks']} quotes nearest the query (plus "
                      f"{campaign['round0_items'] - campaign['round0_query_picks']} at random, the honest audit); "
                      f"by the ground truth {campaign['round0_query_picks_positive']} of the "
                      f"{campaign['round0_query_picks']} are {camp_concept!r} quotes")
    payload = {"pool": {"dir": str(pool), "model": pf.manifest["model"], "count": int(len(y)), **pool_info},
               "graph": {**graph.meta, "built_now_seconds": built_now},
               "settings": {"concepts": concepts, "seeds": args.seeds, "rounds": args.rounds,
                            "batch_size": args.batch_size, "k": args.k, "small_k": args.small_k,
                            "index": args.index, "seed_positives": SEED_POSITIVES,
                            "seed_negatives": SEED_NEGATIVES},
               "summary": summary, "runs": runs_out, "campaign": campaign,
               "scale_quotes": SCALE_QUOTES, "simulation_seconds": round(sim_s, 1)}
    files = _write_results(out, summary, payload, panels, _styles(arms, args.k))
    console.print(f"wrote {', '.join(map(str, files))} in {time.perf_counter() - t_start:.0f} s")
    serve = f"{_datascout_command()} serve {shlex.quote(str(out / 'campaign'))}"
    console.print(f"\n[bold]Label it yourself[/]: find {camp_concept!r} quotes, starting from {query!r}. Run\n\n"
                  f"    {serve}\n\nand open http://127.0.0.1:8000 in a browser. On this machine no token is needed; "
                  "to serve beyond it, add --host and set DATASCOUT_TOKEN before starting, and type the token "
                  "into the page (it never goes into a URL).", soft_wrap=True)
    return 0
