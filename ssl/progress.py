"""A progress line for long passes over a survey (embedding, predicting): a self-rewriting bar
on a terminal, one line per tenth of the work otherwise (logs stay short)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, what: str, unit: str = "images", stream=None):
        self.total, self.what, self.unit = max(int(total), 0), what, unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.t0, self._tenth = 0, time.perf_counter(), -1
        self.start_done = 0

    def start_at(self, done: int) -> None:
        """Work already done before this run (a resume): counted, not timed."""
        self.done = self.start_done = int(done)

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + int(n))
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        frac = self.done / self.total if self.total else 1.0
        text = (f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * frac:.0f} %), "
                f"{rate:.0f} {self.unit}/s" + (f", {left:.0f} s left" if left == left else ""))
        if self.tty:
            filled = int(30 * frac)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text} ")
            self.stream.flush()
        elif int(10 * frac) > self._tenth:
            self._tenth = int(10 * frac)
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
