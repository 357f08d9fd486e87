"""What every part of the bench shares: sizes, the result records and small helpers.

Only the standard library at import time: bench.py may start outside the venv.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB

GIT = [
    "git",
    "-c",
    "user.name=motionfs bench",
    "-c",
    "user.email=bench@motionfs.invalid",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
]
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


@dataclass(frozen=True)
class Sizes:
    seq_mib: int  # 1-2: one file of this many MiB, written in 1 MiB writes
    pread_mib: int  # 3: the file the random preads read
    pread_seconds: float  # 3: how long they run
    tree_files: int  # 4, 5, 9: files of 4 KiB
    tree_dirs: int  # 4, 5, 9: spread over this many directories
    saves: int  # 6: editor saves
    rsync_files: int  # 7: files of mixed small sizes
    git_files: int  # 8: files committed
    rss_mib: int  # 10: the file written and read back while the daemon's RSS is watched
    ckpt_files: int  # checkpoint workload: files of CKPT_FILE bytes
    remotion: bool  # 11-12: the Remotion install and render (or --remotion)


FULL = Sizes(
    seq_mib=1024,
    pread_mib=256,
    pread_seconds=10.0,
    tree_files=5000,
    tree_dirs=50,
    saves=500,
    rsync_files=2000,
    git_files=1000,
    rss_mib=4096,
    ckpt_files=2000,
    remotion=True,
)
QUICK = Sizes(
    seq_mib=64,
    pread_mib=64,
    pread_seconds=1.0,
    tree_files=500,
    tree_dirs=50,
    saves=50,
    rsync_files=200,
    git_files=100,
    rss_mib=256,
    ckpt_files=200,
    remotion=False,
)


@dataclass(frozen=True)
class Goal:
    """A row's speed (or size) target; missing it prints MISS but is not a failure."""

    kind: Literal["share", "rate", "slowdown", "below", "passthrough"]  # see judge()
    value: float
    text: str  # the target as printed

    def judge(self, row: Row) -> tuple[float | None, str, str]:
        """(achieved figure, that figure as printed, PASS/MISS or "" if not measured).

        A step that failed has no verdict: a time is no pass if the bytes were wrong.
        """
        nat, mfs = row.outcomes.get("native"), row.outcomes.get("motionfs")
        if any(o.failed for o in row.outcomes.values()):
            return None, "", ""
        achieved: float | None = None
        shown = ""
        ok = False
        if self.kind == "share":  # motionfs rate >= value * native rate
            if nat and mfs and nat.rate and mfs.rate is not None:
                achieved = mfs.rate / nat.rate
                shown, ok = f"{achieved:.0%}", achieved >= self.value
        elif self.kind == "rate":  # motionfs rate >= value
            if mfs and mfs.rate is not None:
                achieved = mfs.rate
                shown, ok = f"{fmt_number(achieved)} {row.unit}", achieved >= self.value
        elif self.kind == "slowdown":  # motionfs time <= value * native time
            if nat and mfs and nat.seconds and mfs.seconds is not None:
                achieved = mfs.seconds / nat.seconds
                shown, ok = f"{achieved:.1f}x", achieved <= self.value
        elif self.kind == "passthrough":  # motionfs rate >= value * the passthrough's rate
            pt = row.outcomes.get("passthrough")
            if pt and pt.rate and mfs and mfs.rate is not None:
                achieved = mfs.rate / pt.rate
                shown, ok = f"{achieved:.0%} of it", achieved >= self.value
        elif self.kind == "below" and mfs and mfs.figure is not None:  # figure < value (bytes)
            achieved = mfs.figure
            shown, ok = f"{achieved / MiB:,.0f} MiB", achieved < self.value
        if achieved is None:
            return None, "", ""
        return achieved, shown, "PASS" if ok else "MISS"


class NotMeasured(Exception):
    """A step that cannot run here (e.g. dropping caches needs root); not a failure."""


@dataclass
class Outcome:
    seconds: float | None = None  # median of runs
    runs: list[float] = field(default_factory=list)
    amount: float | None = None  # units done per run (for the rate)
    figure: float | None = None  # a measured figure other than time (peak RSS)
    error: str | None = None  # "FAILED: ..." or "not measured ..."
    note: str | None = None  # information worth a mention (not a failure)
    log: str | None = None  # motionfs.log excerpt for a failure
    # Where the time goes (FUSE targets): per timed run, by request type.
    requests: dict[str, float] = field(default_factory=dict)  # requests
    reply_seconds: dict[str, float] = field(default_factory=dict)  # kernel send to reply
    handler_seconds: dict[str, float] = field(default_factory=dict)  # in passthrough.py
    requests_from: str | None = None  # "kernel" (tracepoints) or "daemon" (its counters)
    requests_lost: int = 0  # trace events dropped: the counts are a lower bound

    @property
    def rate(self) -> float | None:
        if self.amount is None or not self.seconds or self.error:
            return None
        return self.amount / self.seconds

    @property
    def failed(self) -> bool:
        return bool(self.error and self.error.startswith("FAILED"))


@dataclass
class Row:
    key: str  # "1".."10": sorts the table
    label: str
    unit: str | None = None  # rate unit, e.g. "MiB/s"
    goal: Goal | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class Measure:
    """A row of the checkpoint table."""

    label: str
    value: str = ""
    limit: str = ""  # the threshold, if the row has one
    verdict: str = ""  # PASS, FAIL or empty
    number: float | None = None  # the value as a number (seconds or bytes), for --json


# --- helpers ---------------------------------------------------------------------------------


# motionfs is imported where used: bench.py may start outside the venv (reexec_in_venv).
def is_mounted(path: Path) -> bool:
    from motionfs.daemon import is_mounted as mounted

    return mounted(path)


def process_alive(pid: int) -> bool:
    from motionfs.daemon import process_alive as alive

    return alive(pid)


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 900, **kw: Any) -> str:
    """Run a command; return its stdout, or raise with the tail of its stderr."""
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"{shlex.join(cmd[:3])} exited {done.returncode}: {' | '.join(tail)}")
    return str(done.stdout)


def git(cwd: Path, *args: str) -> str:
    return run([*GIT, *args], cwd=cwd, env={**os.environ, **GIT_ENV})


def expect_no_output(what: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        lines = output.splitlines()
        if lines:
            raise RuntimeError(f"{what} listed {len(lines)} differences, e.g. {lines[0]!r}")

    return check


def drop_caches() -> None:
    """sync; echo 3 > /proc/sys/vm/drop_caches: page cache, dentries and inodes."""
    if os.geteuid() != 0:
        raise NotMeasured("not measured (drop_caches needs root)")
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise NotMeasured(f"not measured (drop_caches: {e.strerror})") from e


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_time(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_mib(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
