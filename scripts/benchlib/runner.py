"""The measuring loop: times each step on a target and records its outcome, so that a
failing step is reported and the run goes on."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .common import Goal, Measure, NotMeasured, Outcome, Row, Sizes, fmt_time, progress
from .fusetrace import FuseTrace, connection
from .targets import PassthroughTarget, Target

FAST_SECONDS = 2.0
REPEATS = 3


class Bench:
    def __init__(self, base: Path, sizes: Sizes, targets: list[Target]) -> None:
        self.base = base
        self.sizes = sizes
        self.targets = targets
        self.rows: dict[str, Row] = {}
        self.problems: list[str] = []
        self.source = base / "source"  # the rsync source tree, on the native disk
        self.source_bytes = 0
        self.measures: list[Measure] = []  # the checkpoint table
        self.measure_notes: list[str] = []  # printed below it
        self.notes: list[str] = []  # printed below the main table (e.g. a skipped workload)
        self.trace: FuseTrace | None = None  # the kernel's FUSE request counts, if available
        self.npm_cache = base / "npm-cache"  # 11-12: one warm npm cache for every target
        self.remotion_skip: str | None = None  # 11-12: why they cannot run here

    def settle(self, target: Target) -> None:
        """Wait until no target has background work pending; only target's failure counts."""
        for other in self.targets:
            if other is not target:
                with contextlib.suppress(Exception):
                    other.settle()
        target.settle()

    def describe(self, e: BaseException) -> str:
        return f"{type(e).__name__}: {e}".replace(f"{self.base}/", "")

    def step(
        self,
        target: Target,
        key: str,
        label: str,
        fn: Callable[[], Any],
        *,
        amount: float | Callable[[Any], float] | None = None,
        unit: str | None = None,
        goal: Goal | None = None,
        repeat: bool = True,
        prepare: Callable[[], Any] | None = None,
        check: Callable[[Any], None] | None = None,
        figure: Callable[[Any], float] | None = None,
    ) -> Outcome:
        """Time fn on target; settling, prepare and check are untimed. Records the outcome.

        amount is the work per run (or computed from fn's result), for the rate; check sees
        the last run's result; figure takes a non-time measurement from it.
        """
        row = self.rows.setdefault(key, Row(key, label, unit, goal))
        out = row.outcomes[target.name] = Outcome()
        mark = target.log_mark()
        try:
            result = None
            while len(out.runs) < REPEATS:
                self.settle(target)
                if prepare is not None:
                    prepare()
                    self.settle(target)  # what prepare left for the store, e.g. deletes
                probe = Probe(self.trace, target)
                start = time.perf_counter()
                result = fn()
                out.runs.append(time.perf_counter() - start)
                probe.stop(out)
                if not repeat or out.runs[0] >= FAST_SECONDS:
                    break
            out.seconds = statistics.median(out.runs)
            per_run(out)
            out.amount = amount(result) if callable(amount) else amount
            if figure is not None:
                out.figure = figure(result)
            if check is not None:
                check(result)
        except NotMeasured as e:
            out.error = str(e)
        except Exception as e:
            out.error = f"FAILED: {self.describe(e)}"
            out.log = target.log_since(mark) or None
        shown = fmt_time(out.seconds) if out.seconds is not None else ""
        progress(f"  {target.name:<11} {key:<3} {label:<52} {shown:>9}  {out.error or ''}")
        return out

    def skip(
        self, target: Target, key: str, label: str, why: str, goal: Goal | None = None
    ) -> None:
        row = self.rows.setdefault(key, Row(key, label, goal=goal))
        row.outcomes[target.name] = Outcome(error=why)

    def run(self, workload: Callable[[Bench, Target], None], target: Target) -> None:
        if not target.alive():
            try:
                target.recover()
            except Exception as e:
                self.problems.append(f"{target.name}: could not mount again: {self.describe(e)}")
        try:
            workload(self, target)
        except Exception as e:  # set-up or clean-up between steps; the steps are recorded
            self.problems.append(f"{target.name}: {workload.__name__}: {self.describe(e)}")


class Probe:
    """The FUSE requests of one timed run: started just before it, stopped just after.

    From the kernel's tracepoints when the bench has them (any FUSE target), else from
    the passthrough daemon's own counters; a native target has none.
    """

    def __init__(self, trace: FuseTrace | None, target: Target) -> None:
        self.target = target
        mountpoint = target.fuse_mount()
        self.conn = connection(mountpoint) if trace and mountpoint else None
        self.trace = trace if self.conn is not None else None
        self.before: dict[str, dict[str, float]] | None = None
        if isinstance(target, PassthroughTarget):
            self.before = target.stats()
        if self.trace is not None:
            self.trace.clear()

    def stop(self, out: Outcome) -> None:
        """Add this run's requests to out (sums over the runs; per_run divides)."""
        if self.trace is not None and self.conn is not None:
            got = self.trace.collect({self.conn})[self.conn]
            add(out.requests, got.counts)
            add(out.reply_seconds, got.reply_seconds)
            out.requests_lost += got.lost
            out.requests_from = "kernel"
        if self.before is not None and isinstance(self.target, PassthroughTarget):
            after = self.target.stats()
            counts = diff(after["counts"], self.before["counts"])
            add(out.handler_seconds, diff(after["seconds"], self.before["seconds"]))
            if self.trace is None:
                add(out.requests, counts)
                out.requests_from = "daemon"


def add(into: dict[str, float], more: Mapping[str, float]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def diff(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def per_run(out: Outcome) -> None:
    """Sums over the timed runs -> means per run."""
    n = len(out.runs)
    for d in (out.requests, out.reply_seconds, out.handler_seconds):
        for key in d:
            d[key] /= n
