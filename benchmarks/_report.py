"""Shared by the benchmarks: machine description and writing one section of docs/benchmarks.md.

Each benchmark owns one section, delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->``;
re-running a benchmark replaces its section and leaves the others alone (under a file lock, so
benchmarks may run side by side).
"""

from __future__ import annotations

import fcntl
import os
import platform
import resource
import sys
from datetime import date
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nEvery figure below was printed by a script under `benchmarks/`; each "
          "section names the machine and the command that produced it. Timings on shared machines "
          "are noisy: compare ratios measured in the same run.\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {sys.version.split()[0]}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_section(name: str, body: str, command: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    block = (f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n"
             f"*Machine:* {machine()}. *Command:* `{command}`. *Date:* {date.today().isoformat()}.\n"
             f"<!-- END {name} -->\n")
    with open(DOC.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = DOC.read_text() if DOC.exists() else HEADER
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + block.rstrip("\n") + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block
        tmp = DOC.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(DOC)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)
