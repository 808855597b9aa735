"""The one progress bar of the library and the CLI: rich's bar on a terminal, a line per update
in a log (stderr not a terminal), nothing when disabled."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Progress of ``total`` items on stderr, from ``done`` already finished.

    Use as a context manager. Calling it with a count advances it (the ``progress`` callback that
    :meth:`datascout.index.SimilarityIndex.build` and others accept); :meth:`update` sets the
    number finished.
    """

    def __init__(self, total: int, label: str, *, done: int = 0, enabled: bool = True):
        self.total = total
        self.label = label
        self.done = done
        self.enabled = enabled

    def __enter__(self) -> "ProgressBar":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def start(self) -> "ProgressBar":
        self.completed_ = self.done
        self.t0_ = time.perf_counter()
        self.bar_ = None
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self.bar_ = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self.task_ = self.bar_.add_task(self.label, total=self.total, completed=self.done)
            self.bar_.start()
        return self

    def __call__(self, n: int) -> None:
        self.update(self.completed_ + int(n))

    def update(self, completed: int) -> None:
        self.completed_ = int(completed)
        if not self.enabled:
            return
        if self.bar_ is not None:
            self.bar_.update(self.task_, completed=self.completed_)
            return
        dt = time.perf_counter() - self.t0_
        rate = (self.completed_ - self.done) / dt if dt > 0 else 0.0
        eta = (self.total - self.completed_) / rate if rate > 0 else float("nan")
        print(f"{self.label}: {self.completed_}/{self.total} ({rate:.1f} items/s, ETA {eta:.0f} s)",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if getattr(self, "bar_", None) is not None:
            self.bar_.stop()
            self.bar_ = None
