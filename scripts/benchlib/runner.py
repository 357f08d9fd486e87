"""The measuring loop: times each step on a target and records its outcome, so that a
failing step is reported and the run goes on."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import Goal, Measure, NotMeasured, Outcome, Row, Sizes, fmt_time, progress
from .targets import Target

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
                start = time.perf_counter()
                result = fn()
                out.runs.append(time.perf_counter() - start)
                if not repeat or out.runs[0] >= FAST_SECONDS:
                    break
            out.seconds = statistics.median(out.runs)
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
        progress(f"  {target.name:<8} {key:<3} {label:<52} {shown:>9}  {out.error or ''}")
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
