"""Load on the labeling server over loopback: 50 concurrent simulated annotators label for 60 s
(each: POST /api/batch, then one POST /api/labels per item), with rounds completing and the model
retraining in the background in the middle. Reports p50/p95 latency of POST /api/labels and
checks that no acknowledged label is lost or duplicated.

    .venv/bin/python benchmarks/bench_server_load.py [--annotators 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import markdown_table, write_section  # noqa: E402
from test_campaign_support import Server, write_inputs  # noqa: E402


def all_fortunes(dim: int = 64, seed: int = 0):
    """Every fortunes quote (15k: the pool never runs dry in 60 s) in three groups of files, each
    quote's embedding its group's centre plus noise, so that the model has something to learn."""
    from datascout.datasets import load

    ds = load("fortunes")
    y = ds.labels % 3
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(3, dim)) * 2.5)[y] + rng.normal(size=(len(y), dim))
    items = [{"id": str(i), "text": t} for i, t in zip(ds.ids, ds.data)]
    return items, X.astype(np.float32), y, ["group-a", "group-b", "group-c"]


async def annotator(name, url, truth, deadline, think, lat, acked, errors, rounds_seen, waits):
    import httpx

    waiting = None  # since when this annotator has had nothing to label
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        while time.monotonic() < deadline:
            r = await c.post("/api/batch", json={"annotator": name, "n": 5})
            if r.status_code != 200:
                errors.append((r.status_code, r.text[:200]))
                continue
            b = r.json()
            rounds_seen.add(b["round"])
            if not b["items"]:
                waiting = waiting or time.monotonic()
                await asyncio.sleep(0.2)  # the next round is being selected
                continue
            if waiting is not None:  # the wait at a round boundary, as the annotator saw it
                waits.append(time.monotonic() - waiting)
                waiting = None
            for it in b["items"]:
                if think:
                    await asyncio.sleep(think)  # reading the item
                if time.monotonic() >= deadline:
                    return
                t0 = time.perf_counter()
                r = await c.post("/api/labels", json={"annotator": name,
                                                      "labels": [{"id": it["id"], "label": truth[it["id"]]}]})
                lat.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    acked.append((name, it["id"]))
                else:
                    errors.append((r.status_code, r.text[:200]))


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scenario(think: float, args, select_ahead: bool = True) -> dict:
    """A fresh campaign and server; one annotator alone, then ``args.annotators`` at once."""
    import httpx

    from datascout.campaign import Campaign

    tmp = Path(tempfile.mkdtemp(prefix="ds-load-"))
    items, X, y, classes = all_fortunes(dim=64)
    emb, items_path = write_inputs(tmp / "inputs", items, X)
    camp = Campaign.create(tmp / "camp", embeddings=emb, items=items_path, classes=classes,
                           batch_size=args.batch_size, k=30, select_ahead=select_ahead)
    camp.close()
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    srv = Server(tmp / "camp")
    lat, acked, errors, rounds_seen, seq, waits = [], [], [], set(), [], []
    try:
        # one annotator alone first: the latency of a POST without queueing
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            while len(seq) < 100:
                for it in c.post("/api/batch", json={"annotator": "solo", "n": 5}).json()["items"]:
                    t1 = time.perf_counter()
                    r = c.post("/api/labels", json={"annotator": "solo",
                                                    "labels": [{"id": it["id"], "label": truth[it["id"]]}]})
                    seq.append(time.perf_counter() - t1)
                    if r.status_code == 200:
                        acked.append(("solo", it["id"]))
        n_solo = len(acked)
        deadline = time.monotonic() + args.seconds
        t0 = time.perf_counter()
        cpu0 = time.process_time(), proc_cpu_seconds(srv.proc.pid)

        async def run():
            await asyncio.gather(*(annotator(f"a{i}", srv.url, truth, deadline, think, lat, acked, errors,
                                             rounds_seen, waits) for i in range(args.annotators)))

        asyncio.run(run())
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0[0]
        server_cpu = proc_cpu_seconds(srv.proc.pid) - cpu0[1]
    finally:
        srv.stop()
    con = sqlite3.connect(tmp / "camp" / "campaign.db")
    stored = con.execute("SELECT l.annotator, i.id FROM labels l JOIN items i ON i.pos = l.pos").fetchall()
    rounds = con.execute("SELECT round, settings FROM rounds ORDER BY round").fetchall()
    n_sel, n_sel_distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT pos) FROM selections").fetchone()
    con.close()
    shutil.rmtree(tmp, ignore_errors=True)
    lost = set(acked) - set(stored)
    dup = len(stored) - len(set(stored))
    item_dups = len([i for _, i in stored]) - len({i for _, i in stored})
    ms = np.asarray(lat) * 1000
    retrain_s = [json.loads(v)["seconds"] for r, v in rounds if r > 0]
    out = {"think": think, "n_run": len(acked) - n_solo, "wall": wall, "errors": len(errors), "lost": len(lost),
           "dup": dup + item_dups, "ok": not lost and dup == 0 and item_dups == 0 and n_sel == n_sel_distinct,
           "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
           "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "solo_ms": float(np.median(seq) * 1000),
           "server_cpu": server_cpu, "client_cpu": client_cpu, "retrains": len(retrain_s),
           "retrain_med": float(np.median(retrain_s)) if retrain_s else float("nan"), "n_items": len(items),
           "ahead": select_ahead, "waits": len(waits), "wait_s": float(np.sum(waits)) if waits else 0.0,
           "wait_max": float(np.max(waits)) if waits else 0.0}
    print(f"think {think} s: {out['n_run']} labels in {wall:.1f} s ({out['n_run'] / wall:.0f}/s), "
          f"{len(errors)} errors, {len(retrain_s)} retrains; POST ms p50 {out['p50']:.1f} p95 {out['p95']:.1f} "
          f"p99 {out['p99']:.1f} max {out['max']:.1f}; alone {out['solo_ms']:.1f} ms; CPU server "
          f"{server_cpu:.0f} s, clients {client_cpu:.0f} s; lost {len(lost)}, dup {out['dup']}; "
          f"select ahead {select_ahead}: {len(waits)} empty-page waits, {out['wait_s']:.1f} s in all, "
          f"longest {out['wait_max']:.2f} s", flush=True)
    if errors:
        print("first errors:", errors[:3])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--batch-size", type=int, default=400, help="items per round")
    ap.add_argument("--think", default="0,1", help="seconds each annotator waits before each answer, per scenario")
    args = ap.parse_args()
    res = [scenario(float(t), args) for t in args.think.split(",")]
    res.append(scenario(float(args.think.split(",")[-1]), args, select_ahead=False))  # the rounds' waits without
    cores = os.cpu_count() or 1
    rows = [[f"{r['think']:g}", args.annotators, r["n_run"], r["n_run"] / r["wall"], r["p50"], r["p95"], r["p99"],
             r["max"], r["solo_ms"], f"{r['server_cpu']:.0f} / {r['client_cpu']:.0f} / {r['wall'] * cores:.0f}",
             r["retrains"], r["errors"], r["lost"], r["dup"], "yes" if r["ok"] else "NO",
             "yes" if r["ahead"] else "no", r["waits"], f"{r['wait_s']:.1f}", f"{r['wait_max']:.2f}"] for r in res]
    body = (f"{args.annotators} simulated annotators (asyncio + httpx, one process) against `datascout serve` "
            f"(uvicorn, one worker) over loopback, {args.seconds:.0f} s per scenario, every fortunes quote with "
            f"a 64-d embedding ({res[0]['n_items']} items), {args.batch_size} items per round: each annotator "
            "leases 5 items and posts one label per request, after *think* seconds (0: a stress test, far "
            "faster than people label; 1 s is still several times faster than a person). Rounds complete "
            "all through the run, so the model retrains and selects in the background (*retrains*; median "
            f"{res[0]['retrain_med']:.2f} s each). SQLite WAL, synchronous=FULL (each label is on disk before "
            "the 200); the server's threads take turns on one in-process write lock. *alone ms*: median POST "
            "while a single annotator labels, before the crowd arrives. *CPU s*: server / simulated annotators "
            "/ available during the run.\n\n"
            + markdown_table(["think s", "annotators", "labels acked", "labels/s", "p50 ms", "p95 ms", "p99 ms",
                              "max ms", "alone ms", "CPU s", "retrains", "errors", "lost", "duplicated",
                              "no loss/dup", "select ahead", "empty-page waits", "waiting s (all)",
                              "longest wait s"], rows)
            + "\n\n*Reading.* With no think time the server process uses a full core (one Python process: "
            "the GIL) and the simulated annotators most of the other, so latency is queueing behind the "
            "other 49. At a 1 s pace the queue is gone (second row). Each "
            "round is selected in a separate process (`datascout serve` spawns it), so training competes "
            "for the cores but never for the server's interpreter; with the selection in a thread of the "
            "server, the paced scenario measured p95 89 ms / p99 148 ms. Before the write lock "
            "(SQLite's own busy handler, which sleeps in growing steps), the stress scenario measured p50 "
            "44 ms / p95 562 ms / p99 1,176 ms at 178 labels/s on this machine; with it, see the table. "
            "*Empty-page waits*: how often an annotator asked for items and got none (the next round not "
            "there yet), the seconds they spent so, summed over all annotators, and the longest single wait: "
            "the last row is the same paced scenario with the next round selected only after the last "
            "label of the current one (`campaign init --no-select-ahead`).")
    write_section("server_load", body, "python benchmarks/bench_server_load.py " + " ".join(sys.argv[1:]))
    if not all(r["ok"] for r in res):
        sys.exit(1)


if __name__ == "__main__":
    main()
