#!/usr/bin/env python3
"""Benchmark motionfs against a native directory on the same disk, in one run (issue 6).

Run it as `scripts/bench` (that sets up the .venv first); `--help` lists the options.

Each workload runs first in a native directory, then in a project folder of a fresh
motionfs mount. Both live in one temporary directory (TMPDIR decides where), next to the
mount's store, so both sides use the same disk; the mount is always unmounted at the end,
even on error or Ctrl-C.

The workloads (sizes of the full run; --quick shrinks them for a smoke run):
 1  write 1 GiB in 1 MiB writes, then fsync             target: >= 75% of native MiB/s
 2  read it back after dropping the caches               target: >= 75% of native MiB/s
 3  4 KiB random preads on a 256 MiB file for 10 s,     ops/s, no target
    fixed seed, caches dropped first
 4  create 5,000 files of 4 KiB in 50 directories        target: >= 1,500 files/s
 5  listdir every dir + lstat every entry of that tree,  target: >= 15,000 ops/s
    caches dropped first
 6  500 editor saves (temp file, fsync, rename over)     target: >= 50% of native saves/s
 7  rsync -a of a 2,000-file tree in                     target: <= 8x native time
 8  git add -A && git commit of 1,000 files              target: <= 8x native time
 9  delete the 5,000-file tree of 4                      target: >= 2,000 files/s
10  the daemon's peak RSS while a 4 GiB file is written  target: < 300 MiB
    and read back (VmHWM, reset through clear_refs)
Dropping the caches is `sync; echo 3 > /proc/sys/vm/drop_caches` (needs root; without it
those steps are "not measured"); on the mount it drops the FUSE page cache and the pages
of the daemon's cache files alike. Every byte written is verified, most of it untimed
after the step; reads compare what they read inside the step (a memcmp per block, the
same cost on both sides).

Wall time comes from time.perf_counter. A step that takes under FAST_SECONDS is repeated
until it has run REPEATS times and the median is reported. Before every step (native ones
too) the bench waits, untimed, until the daemon has no store operations pending, so the
background uploads of one step do not slow down the next.

A step that fails (an error, or a verification that does not hold) is reported in the
table as FAILED, with the motionfs.log excerpt below the table, the run goes on with the
others, and the exit code is 1. Missing a speed target only prints MISS: `--quick` is a CI
smoke test whatever the machine's speed.

The checkpoint workload (`--checkpoints` runs only it; the default run ends with it) has no
native equivalent and gets its own table: a project of 2,000 files of 512 KiB; checkpoint
c1; replace one file with 1 MiB of new content; checkpoint c2, which must take under 2 s and
add under 2 MiB to the store (apparent size of STORE/data, journal drained, like du -sb);
then `motionfs checkpoint restore P c1`, which must rewrite in the store only the file that
differs. Those three are reported PASS/FAIL, and a FAIL makes the exit code 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB
FAST_SECONDS = 2.0
REPEATS = 3
SETTLE_TIMEOUT = 600.0
PREAD_SEED = 6  # the random preads' offsets are the same in every run and on both sides

CKPT_PROJECT = "ckpt"  # the checkpoint workload's own project folder
CKPT_FILE = 512 * KiB  # size of each of its files
CKPT_DIRS = 40
CKPT_CHANGE = MiB  # the changed file's new content
CKPT_SECONDS = 2.0  # the second checkpoint must take under this
CKPT_GROWTH = 2 * MiB  # and add under this to the store
# Checkpoint bookkeeping in a project's store namespace; a restore's own writes there (the
# safety checkpoint's manifest and objects) are not rewrites of the project.
CKPT_STORE_DIRS = (".chuk-motion/objects", ".chuk-motion/checkpoints")

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

# Vocabulary of the source-like text files (git and editor workloads).
WORDS = (
    *("def", "class", "return", "import", "self", "value", "path", "store", "mount", "read"),
    *("write", "open", "close", "the", "a", "of", "to", "in", "for", "if", "else", "while"),
    *("frame", "clip", "render", "scene", "project", "asset", "motion", "timeline"),
)

LEGEND = """\
ratio: how many times longer motionfs takes for the same work (native rate / motionfs rate;
    lower is better, 1.00x is native speed). runs: timed runs (native/motionfs); steps under
    2 s run 3 times and the median is shown. "not measured": the step needs root (caches).
3:  runs for a fixed time; the columns show that time and the ops done per second.
10: motionfs only; the time is the whole write + fsync + read back, peak RSS in the target."""

CKPT_LEGEND = """\
Each step runs once, after the journal is drained. c1 and c2 are timed as mkdir
P/.snapshots/NAME, which returns once the checkpoint is in the store. The restore is timed
as one `motionfs checkpoint restore` command: its safety checkpoint and one CLI start-up
(see the reference row) included. "files rewritten" counts the store's files (under
STORE/data, checkpoint objects and manifests left out) that are new or have a new inode or
mtime after the restore."""


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
)


@dataclass(frozen=True)
class Goal:
    """A row's speed (or size) target; missing it prints MISS but is not a failure."""

    kind: Literal["share", "rate", "slowdown", "below"]  # see judge()
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
        elif self.kind == "below" and mfs and mfs.figure is not None:  # figure < value (bytes)
            achieved = mfs.figure
            shown, ok = f"{achieved / MiB:,.0f} MiB", achieved < self.value
        if achieved is None:
            return None, "", ""
        return achieved, shown, "PASS" if ok else "MISS"


SHARE_75 = Goal("share", 0.75, ">= 75% of native")


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


# motionfs is imported where used: this file may start outside the venv (reexec_in_venv).
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


# --- data ------------------------------------------------------------------------------------


@functools.cache
def big_block() -> bytes:
    return random.Random(1).randbytes(MiB)


def big_blocks(mib: int) -> Iterator[bytearray]:
    """A big file's 1 MiB blocks: one random block, stamped with its index (one buffer)."""
    buf = bytearray(big_block())
    for i in range(mib):
        buf[:8] = i.to_bytes(8, "little")
        yield buf


def write_big(path: Path, mib: int, update: Callable[[bytearray], object] | None = None) -> None:
    """Write the big file in 1 MiB writes and fsync it; update sees every block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in big_blocks(mib):
            if update is not None:
                update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_blocks(path: Path, mib: int) -> Iterator[bytearray]:
    """Read a big file in 1 MiB blocks (one buffer); raise unless it has exactly mib MiB."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        for i in range(mib):
            got = 0
            while got < MiB:
                n = f.readinto(view[got:])
                if not n:
                    raise RuntimeError(f"{path.name} ends at {i * MiB + got:,} B, not {mib} MiB")
                got += n
            yield buf
        if f.read(1):
            raise RuntimeError(f"{path.name} is longer than the {mib} MiB written")


def read_verify(path: Path, mib: int) -> None:
    """Read the big file back and compare every block with what was written."""
    expect = bytearray(big_block())
    for i, block in enumerate(read_blocks(path, mib)):
        expect[:8] = i.to_bytes(8, "little")
        if block != expect:
            raise RuntimeError(f"{path.name}: block {i} differs from what was written")


def random_preads(path: Path, mib: int, seconds: float) -> int:
    """4 KiB preads at random page offsets (fixed seed) for `seconds`; each one checked."""
    rng = random.Random(PREAD_SEED)
    base = big_block()
    pages, per_block = mib * MiB // PAGE, MiB // PAGE
    ops = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.perf_counter() + seconds
        while ops % 64 or time.perf_counter() < deadline:
            page = rng.randrange(pages)
            data = os.pread(fd, PAGE, page * PAGE)
            off = (page % per_block) * PAGE
            if off:
                ok = data == base[off : off + PAGE]
            else:
                stamp = (page // per_block).to_bytes(8, "little")
                ok = data[:8] == stamp and data[8:] == base[8:PAGE]
            if not ok:
                raise RuntimeError(f"pread at {page * PAGE:,} differs from what was written")
            ops += 1
    finally:
        os.close(fd)
    return ops


class SmallTree:
    """n files of 4 KiB, each with its own content, spread over `dirs` directories."""

    def __init__(self, root: Path, n: int, dirs: int) -> None:
        self.root = root
        self.dirs = [root / f"d{a:02d}" for a in range(dirs)]
        self.files = [self.dirs[i % dirs] / f"f{i:05d}.txt" for i in range(n)]
        self.block = random.Random(3).randbytes(4 * KiB)

    def content(self, i: int) -> bytes:
        return f"{i:08d}\n".encode() + self.block[9:]

    def create(self) -> None:
        self.root.mkdir()
        for d in self.dirs:
            d.mkdir()
        for i, path in enumerate(self.files):
            with open(path, "wb") as f:
                f.write(self.content(i))

    def ensure(self) -> None:
        if not self.root.exists():
            self.create()

    def verify(self) -> None:
        for i, path in enumerate(self.files):
            if path.read_bytes() != self.content(i):
                raise RuntimeError(f"{path.relative_to(self.root)} differs from what was written")

    def walk(self) -> int:
        """listdir every directory, lstat every entry (os.walk-like); returns the op count."""
        ops = files = 0
        stack = [str(self.root)]
        while stack:
            d = stack.pop()
            names = os.listdir(d)
            ops += 1
            for name in names:
                path = os.path.join(d, name)
                st = os.lstat(path)
                ops += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)
                elif st.st_size == 4 * KiB:
                    files += 1
                else:
                    raise RuntimeError(f"{name} has size {st.st_size:,}, not 4 KiB")
        if files != len(self.files):
            raise RuntimeError(f"the walk found {files} files, expected {len(self.files)}")
        return ops

    def gone(self) -> None:
        if os.path.lexists(self.root):
            raise RuntimeError(f"{self.root.name} is still there after deleting it")

    def delete(self) -> None:
        for path in self.files:
            os.unlink(path)
        for d in self.dirs:
            os.rmdir(d)
        os.rmdir(self.root)


def make_tree(root: Path, n: int, seed: int, text: bool) -> int:
    """n files of mixed small sizes (100 B-64 KiB, log-uniform) in nested dirs; total bytes.

    text=True gives source-like lines (what git usually stores), else random bytes; mtimes
    have nanoseconds so that rsync -a must carry them over exactly.
    """
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        size = int(100 * 655 ** rng.random())
        path = root / f"d{i % 10}" / f"e{i % 7}" / f"f{i:04d}.{'txt' if text else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if text:
            words = " ".join(rng.choices(WORDS, k=size // 6 + 1))
            data = "\n".join(words[j : j + 72] for j in range(0, len(words), 72))[:size] + "\n"
            path.write_text(data)
            total += len(data)
        else:
            path.write_bytes(rng.randbytes(size))
            total += size
        mtime = 1_600_000_000_123_456_789 + i * 1_000_000_007
        os.utime(path, ns=(mtime, mtime))
    return total


def editor_saves(d: Path, contents: list[bytes]) -> None:
    """Save d/notes.md once per content: temp file in the same dir, fsync, rename over."""
    target = d / "notes.md"
    for i, data in enumerate(contents):
        tmp = d / f".notes.md.{i:04d}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, target)


def save_contents(n: int) -> list[bytes]:
    """n versions of a text file of 2-16 KiB, each different."""
    rng = random.Random(4)
    out = []
    for i in range(n):
        words = " ".join(rng.choices(WORDS, k=rng.randrange(300, 2700)))
        out.append(f"version {i}\n{words}\n".encode())
    return out


def daemon_peak(pid: int) -> int:
    """The process's peak RSS (VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KiB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")


# --- targets ---------------------------------------------------------------------------------


class NativeTarget:
    """A plain directory on the same disk as the motionfs store."""

    name = "native"

    def __init__(self, base: Path) -> None:
        self.root = base / "native"
        self.root.mkdir()

    def alive(self) -> bool:
        return True

    def ensure_alive(self) -> None:
        pass

    def recover(self) -> None:
        pass

    def settle(self) -> None:
        pass

    def cold(self) -> None:
        drop_caches()

    def log_mark(self) -> int:
        return 0

    def log_since(self, mark: int) -> str:
        return ""


class MotionfsTarget:
    """A fresh motionfs mount, driven through its command line.

    The store backend is only in mount_args (the `motionfs mount` options that choose it)
    and state (the local directory that holds the daemon's index, cache and log): another
    backend is another pair of those.
    """

    name = "motionfs"

    def __init__(self, base: Path, state: Path, mount_args: list[str]) -> None:
        self.exe = str(Path(sys.executable).parent / "motionfs")
        self.mountpoint = base / "mnt"
        self.store = state
        self.mount_args = mount_args
        self.root = self.mountpoint / "projects" / "bench"
        self.log = self.store / "motionfs.log"
        self.pid: int | None = None  # the running daemon's
        self.pids: set[int] = set()  # every daemon started, for the clean-up
        self.mountpoint.mkdir()

    def mount(self) -> None:
        cmd = [self.exe, "mount", str(self.mountpoint), *self.mount_args]
        # Own session, and waited for even on Ctrl-C: a daemon half-way through starting
        # would otherwise mount after the clean-up has looked.
        client = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, err = client.communicate(timeout=120)
        except KeyboardInterrupt:
            client.wait(timeout=120)
            raise
        if client.returncode != 0:
            raise RuntimeError(f"motionfs mount exited {client.returncode}: {err.strip()}")
        self.pid = None
        for record in json.loads(run([self.exe, "status", "--json"])):
            if record["mountpoint"] == str(self.mountpoint):
                self.pid = int(record["pid"])
                self.pids.add(self.pid)
        if self.pid is None:
            raise RuntimeError("motionfs status --json does not list the new mount")
        self.root.mkdir(exist_ok=True)

    def alive(self) -> bool:
        return is_mounted(self.mountpoint) and (self.mountpoint / "projects").is_dir()

    def recover(self) -> None:
        self.close()
        self.mount()

    def pending(self) -> int:
        from motionfs.meta.sqlite import Index  # the same read-only view `motionfs status` uses

        index = Index.open_readonly(self.store / "index.sqlite")
        try:
            return int(index.pending_count())
        finally:
            index.close()

    def ensure_alive(self) -> None:
        if not self.alive():
            raise RuntimeError("the motionfs mount is gone (did the daemon die?)")

    def settle(self) -> None:
        self.ensure_alive()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while pending := self.pending():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending} store operations still pending after waiting")
            time.sleep(0.05)

    def cold(self) -> None:
        drop_caches()

    def log_mark(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark: int, lines: int = 25) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Unmount whatever state the mount is in and make sure the daemon is gone."""
        if is_mounted(self.mountpoint):
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(
                    [self.exe, "umount", str(self.mountpoint), "--timeout", "120"],
                    capture_output=True,
                    timeout=180,
                    start_new_session=True,  # a second Ctrl-C must not kill the clean-up
                    check=False,
                )
        if is_mounted(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, check=False
            )
        for pid in self.pids:
            stop_process(pid)
        self.pids.clear()
        self.pid = None


def local_store(base: Path) -> MotionfsTarget:
    """The local store: a directory next to the native one (same disk)."""
    store = base / "store"
    return MotionfsTarget(base, state=store, mount_args=["--store", str(store)])


def s3_store(base: Path) -> MotionfsTarget:
    """A bucket on a moto S3 server started for this run on 127.0.0.1 (the test suite's
    tests/s3server.py), with the index and cache in a local directory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3server import S3Server  # sets dummy AWS credentials for the daemon it starts

    server = S3Server()
    server.open()
    atexit.register(server.close)  # after the mount is gone (main's clean-up runs first)
    state = base / "s3-index"
    args = ["--store", server.store_url("bench"), "--s3-endpoint", server.endpoint]
    return MotionfsTarget(base, state=state, mount_args=[*args, "--index", str(state)])


STORES: dict[str, Callable[[Path], MotionfsTarget]] = {
    "local": local_store,
    "s3": s3_store,
}


def stop_process(pid: int) -> None:
    """Wait for a daemon we started to exit; terminate it if it will not."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (30 if sig is None else 10)
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_alive(pid):
            return


Target = NativeTarget | MotionfsTarget


# --- the bench -------------------------------------------------------------------------------


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


# --- workloads -------------------------------------------------------------------------------


def sequential(b: Bench, t: Target) -> None:
    """1: write a big file and fsync it; 2: read it back cold; 3: random preads, cold."""
    mib, pmib = b.sizes.seq_mib, b.sizes.pread_mib
    d = t.root / "seq"
    d.mkdir(exist_ok=True)
    big, preads = d / "big.bin", d / "preads.bin"
    b.step(
        t,
        "1",
        f"seq write {fmt_mib(mib)} (1 MiB writes) + fsync",
        lambda: write_big(big, mib),
        check=lambda _: read_verify(big, mib),  # also when step 2 cannot drop the caches
        amount=mib,
        unit="MiB/s",
        goal=SHARE_75,
    )
    b.step(
        t,
        "2",
        f"seq read {fmt_mib(mib)}, caches dropped",
        lambda: read_verify(big, mib),
        prepare=t.cold,
        amount=mib,
        unit="MiB/s",
        goal=SHARE_75,
    )
    big.unlink(missing_ok=True)
    seconds = b.sizes.pread_seconds

    def prepare_preads() -> None:
        write_big(preads, pmib)
        b.settle(t)
        t.cold()

    b.step(
        t,
        "3",
        f"4 KiB random preads, {fmt_mib(pmib)} file, {seconds:g} s, cold",
        lambda: random_preads(preads, pmib, seconds),
        prepare=prepare_preads,
        check=lambda _: read_verify(preads, pmib),  # the pages the preads did not reach
        amount=lambda ops: float(ops),
        unit="ops/s",
        repeat=False,
    )
    shutil.rmtree(d, ignore_errors=True)


def small_tree(b: Bench, t: Target) -> None:
    """4: create a tree of small files; 5: walk it cold; 9: delete it."""
    n, dirs = b.sizes.tree_files, b.sizes.tree_dirs
    tree = SmallTree(t.root / "tree", n, dirs)

    def cold_tree() -> None:
        tree.ensure()
        t.cold()

    b.step(
        t,
        "4",
        f"create {n:,} files of 4 KiB in {dirs} dirs",
        tree.create,
        prepare=lambda: shutil.rmtree(tree.root, ignore_errors=True),
        check=lambda _: tree.verify(),
        amount=n,
        unit="files/s",
        goal=Goal("rate", 1500, ">= 1,500 files/s"),
    )
    b.step(
        t,
        "5",
        f"listdir + lstat the {n:,}-file tree, cold",
        tree.walk,
        prepare=cold_tree,
        amount=lambda ops: float(ops),
        unit="ops/s",
        goal=Goal("rate", 15000, ">= 15,000 ops/s"),
    )
    b.step(
        t,
        "9",
        f"delete the {n:,}-file tree",
        tree.delete,
        prepare=tree.ensure,
        check=lambda _: tree.gone(),
        amount=n,
        unit="files/s",
        goal=Goal("rate", 2000, ">= 2,000 files/s"),
    )
    shutil.rmtree(tree.root, ignore_errors=True)


def saves(b: Bench, t: Target) -> None:
    """6: editor saves (vim / VS Code style) of one file."""
    n = b.sizes.saves
    d = t.root / "edit"
    contents = save_contents(n)

    def prepare() -> None:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        (d / "notes.md").write_bytes(b"first draft\n")

    def check(_: object) -> None:
        if (d / "notes.md").read_bytes() != contents[-1]:
            raise RuntimeError("notes.md does not have the last save's content")
        if os.listdir(d) != ["notes.md"]:
            raise RuntimeError(f"the folder has {sorted(os.listdir(d))[:3]}..., not only notes.md")

    b.step(
        t,
        "6",
        f"{n} editor saves (temp file, fsync, rename over)",
        lambda: editor_saves(d, contents),
        prepare=prepare,
        check=check,
        amount=n,
        unit="saves/s",
        goal=Goal("share", 0.5, ">= 50% of native"),
    )
    shutil.rmtree(d, ignore_errors=True)


def rsync_in(b: Bench, t: Target) -> None:
    """7: rsync -a a tree of mixed small files in; an rsync --checksum dry run checks it."""
    n = b.sizes.rsync_files
    label = f"rsync -a {n:,} files ({b.source_bytes / MiB:.0f} MiB) in"
    goal = Goal("slowdown", 8, "<= 8x native time")
    if not shutil.which("rsync"):
        b.skip(t, "7", label, "FAILED: rsync is not installed", goal)
        return
    dst = t.root / "rsync"
    verify = ["rsync", "-a", "--checksum", "--dry-run", "--itemize-changes"]
    b.step(
        t,
        "7",
        label,
        lambda: run(["rsync", "-a", f"{b.source}/", f"{dst}/"]),
        prepare=lambda: shutil.rmtree(dst, ignore_errors=True),
        check=lambda _: expect_no_output("rsync --checksum --dry-run")(
            run([*verify, f"{b.source}/", f"{dst}/"])
        ),
        amount=n,
        unit="files/s",
        goal=goal,
    )
    shutil.rmtree(dst, ignore_errors=True)


def git_commit(b: Bench, t: Target) -> None:
    """8: git add -A && git commit of a tree of source-like files (git init untimed)."""
    n = b.sizes.git_files
    label = f"git add -A && git commit, {n:,} files"
    goal = Goal("slowdown", 8, "<= 8x native time")
    if not shutil.which("git"):
        b.skip(t, "8", label, "FAILED: git is not installed", goal)
        return
    repo = t.root / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    make_tree(repo, n, seed=8, text=True)

    def prepare() -> None:
        shutil.rmtree(repo / ".git", ignore_errors=True)
        git(repo, "init", "-q")

    def check(_: object) -> None:
        listed = len(git(repo, "ls-files").splitlines())
        if listed != n:
            raise RuntimeError(f"the commit has {listed} files, not {n}")
        expect_no_output("git status --porcelain")(git(repo, "status", "--porcelain"))
        git(repo, "fsck", "--full", "--no-dangling")  # every object's bytes hash right

    b.step(
        t,
        "8",
        label,
        lambda: (git(repo, "add", "-A"), git(repo, "commit", "-q", "-m", "bench")),
        prepare=prepare,
        check=check,
        amount=n,
        unit="files/s",
        goal=goal,
    )
    shutil.rmtree(repo, ignore_errors=True)


def daemon_rss(b: Bench, t: Target) -> None:
    """10: the daemon's peak RSS while a big file is written and read back."""
    mib = b.sizes.rss_mib
    label = f"daemon peak RSS, {fmt_mib(mib)} written + read back"
    goal = Goal("below", 300 * MiB, "< 300 MiB")
    if not isinstance(t, MotionfsTarget):
        b.skip(t, "10", label, "", goal)
        return
    path = t.root / "rss.bin"
    notes = []

    def write_read() -> int:
        assert t.pid is not None
        reset_peak(t.pid)
        written, read = hashlib.sha256(), hashlib.sha256()
        write_big(path, mib, written.update)
        b.settle(t)
        try:
            drop_caches()  # so that the read goes through the daemon
        except NotMeasured as e:
            notes.append(f"read back warm, {e}")
        for block in read_blocks(path, mib):
            read.update(block)
        if read.digest() != written.digest():
            raise RuntimeError(f"{path.name}: the bytes read back differ from those written")
        return daemon_peak(t.pid)

    out = b.step(
        t,
        "10",
        label,
        write_read,
        figure=lambda peak: float(peak),
        goal=goal,
        repeat=False,
    )
    out.note = "; ".join(notes) or None
    path.unlink(missing_ok=True)


def du_bytes(root: Path) -> int:
    """Apparent size of everything under root, hard links once (like du -sb)."""
    seen: set[tuple[int, int]] = set()
    total = os.lstat(root).st_size
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def store_files(data: Path) -> tuple[dict[str, tuple[int, int, int]], dict[str, int]]:
    """Files under the store's data dir: ({path: (inode, mtime, size)}, {object path: size}).

    The first excludes each namespace's CKPT_STORE_DIRS (and their .meta sidecars); the
    second is the checkpoint objects only.
    """
    files: dict[str, tuple[int, int, int]] = {}
    objects: dict[str, int] = {}
    skipped = CKPT_STORE_DIRS
    for dirpath, _dirs, filenames in os.walk(data):
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, data)
            parts = rel.split(os.sep)
            inner = "/".join(parts[2:]) if parts[0] == "ns" else ""  # path in the namespace
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if inner.startswith(CKPT_STORE_DIRS[0] + "/"):
                objects[rel] = st.st_size
            elif not any(inner == d + ".meta" or inner.startswith(d + "/") for d in skipped):
                files[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return files, objects


def checkpoints(b: Bench, t: Target) -> None:
    """Checkpoint a project, change one file, checkpoint again, restore the first one."""
    if not isinstance(t, MotionfsTarget):
        return
    n = b.sizes.ckpt_files
    project = t.mountpoint / "projects" / CKPT_PROJECT
    snapshots = project / ".snapshots"
    data = t.store / "data"
    cli = [t.exe, "checkpoint"]
    rows = b.measures
    mark = t.log_mark()

    def add(
        label: str, value: str = "", limit: str = "", verdict: str = "", number: float | None = None
    ) -> Measure:
        m = Measure(label, value, limit, verdict, number)
        rows.append(m)
        progress(f"  {t.name:<8} ckpt {label:<60} {value:>12}  {verdict}")
        return m

    def timed(fn: Callable[[], object]) -> float:
        b.settle(t)
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def summary(name: str) -> dict[str, Any]:
        listed = json.loads(run([*cli, "list", str(project), "--json"]))
        for record in listed:
            if record["name"] == name:
                return dict(record)
        raise RuntimeError(f"checkpoint list does not show {name}: {[r['name'] for r in listed]}")

    # Placeholders for the verdict rows, filled in as they are measured: a step that fails
    # leaves them FAIL (not measured).
    missing = "FAIL"
    try:
        project.mkdir()
        dirs = [project / f"d{i:02d}" for i in range(CKPT_DIRS)]
        files = [dirs[i % CKPT_DIRS] / f"f{i:05d}.bin" for i in range(n)]
        changed = files[n // 2]
        before_change = b""

        def create() -> None:
            nonlocal before_change
            for d in dirs:
                d.mkdir()
            for path in files:
                content = os.urandom(CKPT_FILE)
                if path == changed:
                    before_change = content
                with open(path, "wb") as f:
                    f.write(content)

        mib = n * CKPT_FILE / MiB
        seconds = timed(create)
        add(
            f"write {n:,} files of {CKPT_FILE // KiB} KiB ({mib:,.0f} MiB) in {CKPT_DIRS} dirs",
            f"{fmt_time(seconds)} ({mib / seconds:,.0f} MiB/s)",
            number=seconds,
        )
        start = time.perf_counter()
        b.settle(t)
        seconds = time.perf_counter() - start
        add(
            "  then until the store has it all (journal drained)", fmt_time(seconds), number=seconds
        )

        seconds = timed(lambda: (snapshots / "c1").mkdir())
        add("checkpoint c1 (mkdir P/.snapshots/c1)", fmt_time(seconds), number=seconds)

        changed_rel = changed.relative_to(project)
        new_content = os.urandom(CKPT_CHANGE)
        changed.write_bytes(new_content)
        b.settle(t)
        store_before = du_bytes(data)
        seconds = timed(lambda: (snapshots / "c2").mkdir())
        ok = seconds < CKPT_SECONDS
        add(
            f"checkpoint c2 after rewriting {changed_rel} with 1 MiB",
            fmt_time(seconds),
            f"< {CKPT_SECONDS:g} s",
            "PASS" if ok else missing,
            seconds,
        )
        b.settle(t)
        growth = du_bytes(data) - store_before
        add(
            "  store growth for c2 (du -sb STORE/data, drained)",
            f"{growth:,} B",
            f"< {CKPT_GROWTH // MiB} MiB",
            "PASS" if growth < CKPT_GROWTH else missing,
            growth,
        )
        start = time.perf_counter()
        c2 = summary("c2")
        cli_seconds = time.perf_counter() - start
        add(
            "  c2 exclusive_bytes (checkpoint list --json)",
            f"{c2['exclusive_bytes']:,} B",
            number=c2["exclusive_bytes"],
        )

        b.settle(t)
        files_before, objects_before = store_files(data)
        seconds = timed(lambda: run([*cli, "restore", str(project), "c1"]))
        add("restore c1 (motionfs checkpoint restore P c1)", fmt_time(seconds), number=seconds)
        b.settle(t)
        files_after, objects_after = store_files(data)
        rewritten = sorted(
            rel
            for rel, (ino, mtime, _size) in files_after.items()
            if rel not in files_before or files_before[rel][:2] != (ino, mtime)
        )
        removed = sorted(files_before.keys() - files_after.keys())
        rewritten_bytes = sum(files_after[rel][2] for rel in rewritten)
        only_changed = len(rewritten) == 1 and rewritten[0].endswith("/" + changed_rel.as_posix())
        add(
            "  files rewritten in the store",
            f"{len(rewritten):,} ({rewritten_bytes:,} B)",
            f"only {changed_rel}",
            "PASS" if only_changed else missing,
            rewritten_bytes,
        )
        if not only_changed:
            b.measure_notes.append(f"files the restore rewrote ({len(rewritten)}):")
            b.measure_notes.extend(f"  {rel}" for rel in rewritten[:20])
        if removed:
            b.measure_notes.append(f"files the restore removed from the store ({len(removed)}):")
            b.measure_notes.extend(f"  {rel}" for rel in removed[:20])
        new_objects = objects_after.keys() - objects_before.keys()
        added = sum(objects_after[rel] for rel in new_objects)
        add(
            "  safety checkpoint's new objects (not counted above)",
            f"{len(new_objects)} ({added:,} B)",
        )

        # Not timed: the restored project must be c1 again.
        problems = []
        if changed.read_bytes() != before_change:
            problems.append(f"{changed_rel} does not have its c1 content")
        diff = run([*cli, "diff", str(project), "c1"]).splitlines()
        if diff:
            problems.append(f"checkpoint diff P c1 lists {len(diff)} changes, e.g. {diff[0]!r}")
        add(
            "  restored project equals c1 (content, checkpoint diff)",
            "; ".join(problems) or "yes",
            verdict="FAIL" if problems else "",
        )
        add(
            "reference: one CLI call (checkpoint list --json)",
            fmt_time(cli_seconds),
            number=cli_seconds,
        )
    except Exception as e:
        add(f"FAILED: {b.describe(e)}", verdict="FAIL")
        log = t.log_since(mark)
        if log:
            b.measure_notes.append("motionfs.log since the checkpoint workload started:")
            b.measure_notes.extend(f"  {line}" for line in log.splitlines())
        labels = " ".join(m.label for m in rows)
        for label in ("checkpoint c2", "store growth", "files rewritten"):
            if label not in labels:
                add(f"{label}: not measured", verdict="FAIL")


# --- report ----------------------------------------------------------------------------------


def sorted_rows(rows: dict[str, Row]) -> list[Row]:
    return sorted(rows.values(), key=lambda r: int(r.key))


def table(rows: dict[str, Row]) -> list[str]:
    header = [
        "workload",
        "native",
        "motionfs",
        "ratio",
        "native rate",
        "motionfs rate",
        "target",
        "result",
        "runs",
    ]
    body = []
    for row in sorted_rows(rows):
        nat, mfs = row.outcomes.get("native"), row.outcomes.get("motionfs")
        notes = [
            f"{name}: {o.error or o.note}"
            for name, o in (("native", nat), ("motionfs", mfs))
            if o is not None and (o.error or o.note)
        ]
        _, achieved, verdict = row.goal.judge(row) if row.goal else (None, "", "")
        if any(o.failed for o in row.outcomes.values()):
            verdict = "FAILED"
        body.append(
            [
                f"{row.key:>2} {row.label}",
                time_cell(nat),
                time_cell(mfs),
                ratio(nat, mfs),
                rate_cell(row, nat),
                rate_cell(row, mfs),
                f"{row.goal.text}: {achieved or '-'}" if row.goal else "",
                verdict,
                "/".join(str(len(o.runs)) if o and o.runs else "-" for o in (nat, mfs)),
                "; ".join(notes),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:6], widths[1:6], strict=True)),
            r[6].ljust(widths[6]),
            r[7].ljust(widths[7]),
            r[8].rjust(widths[8]),
            *r[len(header) :],
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return lines


def time_cell(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if o.seconds is None:
        return "FAILED" if o.failed else "n/a"
    return fmt_time(o.seconds) + (" !" if o.error else "")


def ratio(nat: Outcome | None, mfs: Outcome | None) -> str:
    """How many times longer motionfs takes for the same work."""
    if not (nat and mfs) or nat.failed or mfs.failed:
        return "-"
    if nat.rate and mfs.rate:
        r = nat.rate / mfs.rate
    elif nat.seconds and mfs.seconds is not None:
        r = mfs.seconds / nat.seconds
    else:
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def rate_cell(row: Row, o: Outcome | None) -> str:
    if o is None or o.rate is None or not row.unit:
        return "-"
    return f"{fmt_number(o.rate)} {row.unit}"


def failures(rows: dict[str, Row]) -> list[str]:
    out = []
    for row in sorted_rows(rows):
        for name, o in row.outcomes.items():
            if o.failed:
                out.append(f"{row.key} {row.label} [{name}] {o.error}")
                if o.log:
                    out.append("  motionfs.log since the step started:")
                    out.extend(f"    {line}" for line in o.log.splitlines())
    return out


def measure_table(measures: list[Measure]) -> list[str]:
    header = ["checkpoints (motionfs only, no native equivalent)", "value", "threshold", "result"]
    body = [[m.label, m.value, m.limit, m.verdict] for m in measures]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


def row_json(row: Row) -> dict[str, Any]:
    achieved, shown, verdict = row.goal.judge(row) if row.goal else (None, "", "")
    out = asdict(row)
    for name, o in row.outcomes.items():
        out["outcomes"][name]["rate"] = o.rate
    out["ratio"] = ratio(row.outcomes.get("native"), row.outcomes.get("motionfs"))
    out["achieved"] = achieved
    out["achieved_text"] = shown
    out["verdict"] = verdict
    return out


def commit() -> str:
    try:
        sha = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    except (OSError, RuntimeError):
        return "unknown (not a git checkout)"
    return sha + (" (with uncommitted changes)" if dirty.strip() else "")


def disk_of(path: Path) -> str:
    """The device, filesystem and mount point holding path (findmnt -T, else /proc/mounts)."""
    with contextlib.suppress(OSError, RuntimeError):
        found = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,TARGET", "-T", str(path)]).split()
        if len(found) == 3:
            return f"{found[0]} ({found[1]}, mounted at {found[2]})"
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, point, fstype = line.split()[:3]
            if str(path).startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
                best = (point, dev, fstype)
    return f"{best[1]} ({best[2]}, mounted at {best[0]})"


def memory() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    return "RAM unknown"


# --- main ------------------------------------------------------------------------------------


def reexec_in_venv() -> None:
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve() and python.exists():
        os.execv(python, [str(python), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Time the issue 6 workloads on a native directory and on a fresh motionfs "
        "mount (same disk, same run); print both with the ratio and each target's PASS/MISS. "
        "Exits 1 if a step fails or a checkpoint check fails; a missed target is not a failure.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument(
        "--store",
        choices=sorted(STORES),
        default="local",
        help="store backend (default: local); s3 starts a moto server on 127.0.0.1 and skips "
        "the checkpoint workload",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="run only the checkpoint workload (the default run includes it)",
    )
    return p.parse_args()


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    reexec_in_venv()
    args = parse_args()
    make_target = STORES[args.store]
    sizes = QUICK if args.quick else FULL
    command = shlex.join(["scripts/bench", *sys.argv[1:]])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:  # respect nohup and the like
            signal.signal(sig, interrupt)

    base = Path(tempfile.mkdtemp(prefix="motionfs-bench-")).resolve()
    mfs = make_target(base)
    bench = Bench(base, sizes, [NativeTarget(base), mfs])
    rev = commit()
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
        "commit": rev,
        "machine": f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"{memory()}, Python {platform.python_version()}",
        "disk": f"{base} on {disk_of(base)}",
        "store": f"{args.store} ({mfs.store})",
        "run": "quick" if args.quick else "full",
    }
    print(f"motionfs bench, {header['date']}")
    for key in ("command", "commit", "machine", "disk", "store"):
        print(f"{key}: {header[key]}")
    sys.stdout.flush()

    started = time.perf_counter()
    interrupted = False
    try:
        mfs.mount()
        if not args.checkpoints:
            bench.source_bytes = make_tree(bench.source, sizes.rsync_files, seed=7, text=False)
            for workload in (sequential, small_tree, saves, rsync_in, git_commit, daemon_rss):
                for target in bench.targets:
                    bench.run(workload, target)
        if args.store == "local":  # it measures the store directory's growth on disk
            bench.run(checkpoints, mfs)
    except KeyboardInterrupt:
        interrupted = True
        progress("bench: interrupted; unmounting")
    except Exception as e:
        bench.problems.append(f"bench stopped: {bench.describe(e)}")
        log = mfs.log_since(0)
        if log:
            bench.problems.append(f"motionfs.log:\n{log}")
    finally:
        on_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        mfs.close()
        left = is_mounted(mfs.mountpoint)
        if left:
            bench.problems.append(f"{mfs.mountpoint} is still mounted")
        elif not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGINT, on_interrupt)
    total = time.perf_counter() - started

    if bench.rows:
        print()
        print("\n".join(table(bench.rows)))
        print()
        print(LEGEND)
        for line in failures(bench.rows):
            print(line)
    if bench.measures:
        print()
        print("\n".join(measure_table(bench.measures)))
        print()
        print(CKPT_LEGEND)
        for line in bench.measure_notes:
            print(line)
    if bench.problems:
        print()
        for line in bench.problems:
            print(line)

    failed = [
        f"{r.key} [{name}]"
        for r in bench.rows.values()
        for name, o in r.outcomes.items()
        if o.failed
    ]
    ckpt_failed = [m.label for m in bench.measures if m.verdict == "FAIL"]
    verdicts = [r.goal.judge(r)[2] for r in bench.rows.values() if r.goal]
    print()
    print(
        f"targets: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS (not failures); "
        f"failed steps: {len(failed)}; failed checkpoint checks: {len(ckpt_failed)}"
    )
    print(f"total wall time: {total:.0f} s" + (" (interrupted)" if interrupted else ""))
    if args.keep:
        print(f"kept: {base}")

    status = 130 if interrupted else 1 if failed or ckpt_failed or bench.problems else 0
    if args.json:
        report = {
            **header,
            "sizes": asdict(sizes),
            "interrupted": interrupted,
            "total_seconds": total,
            "rows": [row_json(r) for r in sorted_rows(bench.rows)],
            "checkpoints": [asdict(m) for m in bench.measures],
            "problems": bench.problems,
            "exit_status": status,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
