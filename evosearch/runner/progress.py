"""Live status of a search on stderr: one rewritten line on a terminal, a log line now and then
otherwise (a batch job's log stays readable). stdout is left to the final summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from evosearch.outcomes import Status
from evosearch.text import printable


@dataclass
class SearchStats:
    evaluations: int = 0  # candidates trained (or failed) on the proxy tasks
    budget: int | None = None
    candidates: int = 0  # finished candidates of every fate
    in_flight: int = 0
    training: int = 0  # training tasks running now
    concurrency: int = 1
    elapsed_s: float = 0.0
    driver_s: float = 0.0  # the driver's own work (proposals, records, checkpoints), waits excluded
    worker_s: float = 0.0  # probe and training seconds reported by the workers
    statuses: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)  # by probe reason
    best: dict[str, float] = field(default_factory=dict)  # per objective, at rung 0
    rungs: list[int] = field(default_factory=list)  # candidates with a result at each rung of the funnel
    train_steps: int = 0  # training steps run, summed over every run (rung, task, seed)
    noise: dict[str, float] = field(default_factory=dict)  # per objective: sd over training seeds

    def line(self) -> str:
        minutes = max(self.elapsed_s / 60, 1e-9)
        budget = f"/{self.budget}" if self.budget else ""
        rate = self.evaluations / minutes
        parts = [
            f"[{_clock(self.elapsed_s)}] evals {self.evaluations}{budget} ({rate:.1f}/min)",
            f"candidates {self.candidates}",
        ]
        rejected = sum(self.rejections.values())
        if rejected:
            top = ", ".join(f"{k} {v}" for k, v in self.rejections.most_common(3))
            parts.append(f"rejected {rejected} ({top})")
        inconclusive = self.statuses[Status.INCONCLUSIVE.value]
        if inconclusive:  # probes with no verdict: many means a probe budget too small for this machine
            parts.append(f"inconclusive {inconclusive}")
        if len(self.rungs) > 1:
            parts.append("rungs " + "/".join(map(str, self.rungs)))
        if self.best:
            parts.append("best " + ", ".join(f"{k} {v:.3f}" for k, v in self.best.items()))
        if self.noise:
            parts.append("noise ±" + "/".join(f"{v:.3f}" for v in self.noise.values()))
        parts.append(f"busy {self.in_flight}/{self.concurrency}")
        return " | ".join(parts)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = 0.5 if self.tty else 30.0
        self.last = 0.0
        self.width = 0

    def update(self, stats: SearchStats, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.interval):
            return
        self.last = now
        line = printable(stats.line())  # objective names come from the config: no raw control characters
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def log(self, message: str) -> None:
        """A message of its own, above the status line."""
        if not self.enabled:
            return
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(printable(message) + "\n")
        self.stream.flush()

    def close(self, stats: SearchStats) -> None:
        self.update(stats, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
