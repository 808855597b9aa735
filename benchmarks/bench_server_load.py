"""Load on the labeling server over loopback: 50 concurrent simulated annotators label for 60 s
(each: GET /api/batch, then one POST /api/labels per item), with rounds completing and the model
retraining in the background in the middle. Reports p50/p95 latency of POST /api/labels and
checks that no acknowledged label is lost or duplicated.

    .venv/bin/python benchmarks/bench_server_load.py [--annotators 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import markdown_table, write_section  # noqa: E402
from test_campaign_support import Server, fortunes_items, write_inputs  # noqa: E402


async def annotator(name, url, truth, deadline, lat, acked, errors, rounds_seen):
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        while time.monotonic() < deadline:
            r = await c.get("/api/batch", params={"annotator": name, "n": 5})
            if r.status_code != 200:
                errors.append((r.status_code, r.text[:200]))
                continue
            b = r.json()
            rounds_seen.add(b["round"])
            if not b["items"]:
                await asyncio.sleep(0.2)  # the next round is being selected
                continue
            for it in b["items"]:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--batch-size", type=int, default=400, help="items per round")
    args = ap.parse_args()
    from datascout.campaign import Campaign

    tmp = Path(tempfile.mkdtemp(prefix="ds-load-"))
    items, X, y, classes = fortunes_items(n_per_class=1000, dim=64)
    emb, items_path = write_inputs(tmp / "inputs", items, X)
    camp = Campaign.create(tmp / "camp", embeddings=emb, items=items_path, classes=classes,
                           batch_size=args.batch_size, k=30)
    camp.close()
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    srv = Server(tmp / "camp")
    lat, acked, errors, rounds_seen = [], [], [], set()
    try:
        deadline = time.monotonic() + args.seconds
        t0 = time.perf_counter()

        async def run():
            await asyncio.gather(*(annotator(f"a{i}", srv.url, truth, deadline, lat, acked, errors, rounds_seen)
                                   for i in range(args.annotators)))

        asyncio.run(run())
        wall = time.perf_counter() - t0
    finally:
        srv.stop()
    con = sqlite3.connect(tmp / "camp" / "campaign.db")
    stored = con.execute("SELECT l.annotator, i.id FROM labels l JOIN items i ON i.pos = l.pos").fetchall()
    rounds = con.execute("SELECT round, settings FROM rounds ORDER BY round").fetchall()
    n_sel, n_sel_distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT pos) FROM selections").fetchone()
    con.close()
    lost = set(acked) - set(stored)
    dup = len(stored) - len(set(stored))
    item_dups = len([i for _, i in stored]) - len({i for _, i in stored})
    ms = np.asarray(lat) * 1000
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    retrain_s = [json.loads(s)["seconds"] for r, s in rounds if r > 0]
    print(f"{len(acked)} labels acknowledged in {wall:.1f}s ({len(acked) / wall:.0f}/s), "
          f"{len(errors)} errors, rounds {sorted(rounds_seen)}")
    print(f"POST /api/labels latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {ms.max():.1f}")
    print(f"lost {len(lost)}, duplicated rows {dup}, items labeled twice {item_dups}, "
          f"selections {n_sel} ({n_sel_distinct} distinct)")
    if errors:
        print("first errors:", errors[:3])
    ok = not lost and dup == 0 and item_dups == 0 and n_sel == n_sel_distinct
    body = (f"50 simulated annotators (asyncio + httpx, one process) against `datascout serve` (uvicorn, one "
            f"worker) over loopback, {args.seconds:.0f} s, fortunes quotes with 64-d embeddings "
            f"({len(items)} items), {args.batch_size} items per round: each annotator leases 5 items and "
            f"posts one label per request. Rounds {min(rounds_seen)}..{max(rounds_seen)} were served, so the "
            f"model retrained and selected {len(retrain_s)} times in the background during the run "
            f"(selection took {', '.join(f'{s:.2f}' for s in retrain_s)} s). SQLite WAL, synchronous=FULL "
            f"(each label is on disk before the 200).\n\n"
            + markdown_table(["annotators", "labels acked", "labels/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                              "errors", "lost", "duplicated", "no loss/dup"],
                             [[args.annotators, len(acked), len(acked) / wall, p50, p95, p99, float(ms.max()),
                               len(errors), len(lost), dup + item_dups, "yes" if ok else "NO"]]))
    write_section("server_load", body, "python benchmarks/bench_server_load.py")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
