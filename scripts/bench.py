#!/usr/bin/env python3
"""Benchmark motionfs against a native directory on the same disk, in one run.

Run it as `scripts/bench` (that sets up the .venv first); `--help` lists the options.

Each workload runs first in a native directory, then in a project folder of a fresh
motionfs mount. Both live in one temporary directory (TMPDIR decides where), next to the
mount's store; the mount is always unmounted at the end, even on error or Ctrl-C.

Wall time comes from time.perf_counter. A step that takes under FAST_SECONDS is repeated
until it has run REPEATS times and the median is reported. Before every step (native ones
too) the bench waits, untimed, until the daemon has no store operations pending, so the
background uploads of one step do not slow down the next; row 7 measures that upload time
on purpose.

A step that fails is reported in the table (FAILED: reason, with the motionfs.log excerpt
below the table) and the run goes on with the others.

The checkpoint workload (`--checkpoints` runs only it; the default run ends with it) has no
native equivalent and gets its own table: a project of 2,000 files of 512 KiB; checkpoint
c1; replace one file with 1 MiB of new content; checkpoint c2, which must take under 2 s and
add under 2 MiB to the store (apparent size of STORE/data, journal drained, like du -sb);
then `motionfs checkpoint restore P c1`, which must rewrite in the store only the file that
differs. Those three are reported PASS/FAIL, and a FAIL makes the exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"

KiB = 1 << 10
MiB = 1 << 20
FAST_SECONDS = 2.0
REPEATS = 3
SETTLE_TIMEOUT = 600.0
FANOUT = 10  # the small-file tree has FANOUT top dirs with FANOUT subdirs each

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

LEGEND = """\
2b: native drops the kernel caches (echo 3 > /proc/sys/vm/drop_caches, needs root);
    motionfs is unmounted and mounted again: the kernel cache is empty, its local data
    cache is not ("reopen after remount").
7:  time until everything is in the store: motionfs umount right after 3a (it waits for
    the pending uploads); native: sync.
runs: how many runs were timed (native/motionfs); steps under 2 s run 3 times, median shown."""

CKPT_LEGEND = """\
Each step runs once, after the journal is drained. c1 and c2 are timed as mkdir
P/.snapshots/NAME, which returns once the checkpoint is in the store. The restore is timed
as one `motionfs checkpoint restore` command: its safety checkpoint and one CLI start-up
(see the reference row) included. "files rewritten" counts the store's files (under
STORE/data, checkpoint objects and manifests left out) that are new or have a new inode or
mtime after the restore."""


@dataclass(frozen=True)
class Sizes:
    big_mib: int  # workloads 1-2: one file of this many MiB, written in 1 MiB writes
    small_files: int  # workloads 3, 5, 7: files of 4 KiB
    meta_cycles: int  # workload 4: mkdir/create/rename/unlink/rmdir cycles
    tree_files: int  # workload 6: files of 1 KiB-1 MiB for cp -a and rsync
    ckpt_files: int  # checkpoint workload: files of CKPT_FILE bytes


FULL = Sizes(big_mib=256, small_files=2000, meta_cycles=5000, tree_files=500, ckpt_files=2000)
QUICK = Sizes(big_mib=16, small_files=200, meta_cycles=300, tree_files=50, ckpt_files=200)


class NotMeasured(Exception):
    """A step that cannot run here; reported as such, not as a failure."""


@dataclass
class Outcome:
    seconds: float | None = None  # median of runs
    runs: list[float] = field(default_factory=list)
    error: str | None = None  # "FAILED: ..." or "not measured ..."
    note: str | None = None  # information worth a mention (not a failure)
    log: str | None = None  # motionfs.log excerpt for a failure


@dataclass
class Row:
    key: str  # sorts the table: "1a", "2b", ...
    label: str
    unit: str | None = None  # throughput unit, e.g. "MiB/s"
    amount: float | None = None  # units processed per run
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


def git_commit(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench")


def expect_no_output(what: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        lines = output.splitlines()
        if lines:
            raise RuntimeError(f"{what} listed {len(lines)} changes, e.g. {lines[0]!r}")

    return check


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


# --- data ------------------------------------------------------------------------------------


@functools.cache
def big_block() -> bytes:
    return random.Random(1).randbytes(MiB)


def big_blocks(mib: int) -> Iterator[bytearray]:
    """The big file's 1 MiB blocks: one random block, stamped with its index (one buffer)."""
    buf = bytearray(big_block())
    for i in range(mib):
        buf[:8] = i.to_bytes(8, "little")
        yield buf


@functools.cache
def big_digest(mib: int) -> str:
    h = hashlib.sha256()
    for block in big_blocks(mib):
        h.update(block)
    return h.hexdigest()


def write_big(path: Path, mib: int, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in big_blocks(mib):
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_big(path: Path, mib: int, update: Callable[[memoryview], object] | None = None) -> int:
    buf = bytearray(MiB)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
            if update is not None:
                update(memoryview(buf)[:n])
    if total != mib * MiB:
        raise RuntimeError(f"read {total:,} bytes, wrote {mib * MiB:,}")
    return total


def verify_big(path: Path, mib: int) -> None:
    h = hashlib.sha256()
    read_big(path, mib, h.update)
    if h.hexdigest() != big_digest(mib):
        raise RuntimeError("content read back differs from what was written")


class SmallTree:
    """n files of 4 KiB, each with its own content, spread over nested directories."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.tops = [root / f"d{a}" for a in range(FANOUT)]
        self.dirs = [top / f"e{b}" for top in self.tops for b in range(FANOUT)]
        self.files = [self.dirs[i % len(self.dirs)] / f"f{i:05d}.txt" for i in range(n)]
        block = random.Random(3).randbytes(4 * KiB)
        self.contents = [f"{i:08d}\n".encode() + block[9:] for i in range(n)]

    def create(self) -> None:
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        for path, data in zip(self.files, self.contents, strict=True):
            with open(path, "wb") as f:
                f.write(data)

    def ensure(self) -> None:
        if not self.files[-1].exists():
            self.create()

    def stat_all(self) -> None:
        for path in self.files:
            if os.stat(path).st_size != 4 * KiB:
                raise RuntimeError(f"{path.name} has size {os.stat(path).st_size}")

    def walk(self) -> None:
        found = sum(len(files) for _, _, files in os.walk(self.root))
        if found != len(self.files):
            raise RuntimeError(f"os.walk found {found} files, expected {len(self.files)}")

    def delete(self) -> None:
        for path in self.files:
            os.unlink(path)
        for d in [*self.dirs, *self.tops]:
            os.rmdir(d)


def make_source_tree(root: Path, n: int) -> int:
    """The cp -a source: n files of 1 KiB-1 MiB (log-uniform) with nanosecond mtimes."""
    rng = random.Random(6)
    total = 0
    for i in range(n):
        size = int(KiB * 1024 ** rng.random())
        path = root / f"d{i % 10}" / f"e{i % 7}" / f"f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        mtime = 1_600_000_000_123_456_789 + i * 1_000_000_007
        os.utime(path, ns=(mtime, mtime))
        total += size
    return total


def metadata_cycles(root: Path, n: int) -> None:
    for i in range(n):
        d = os.path.join(root, f"c{i}")
        a, b = os.path.join(d, "a"), os.path.join(d, "b")
        os.mkdir(d)
        os.close(os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.rename(a, b)
        os.unlink(b)
        os.rmdir(d)


# --- targets ---------------------------------------------------------------------------------


class Native:
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

    def pending(self) -> int | None:
        return None

    def cold(self) -> None:
        if os.geteuid() != 0:
            raise NotMeasured("not measured (drop_caches needs root)")
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as e:
            raise NotMeasured(f"not measured (drop_caches: {e.strerror})") from e

    def flush(self) -> None:
        os.sync()

    def after_flush(self) -> None:
        pass

    def log_mark(self) -> int:
        return 0

    def log_since(self, mark: int) -> str:
        return ""


class Motionfs:
    """A fresh motionfs mount of a temporary store, driven through its command line."""

    name = "motionfs"

    def __init__(self, base: Path) -> None:
        self.exe = str(Path(sys.executable).parent / "motionfs")
        self.mountpoint = base / "mnt"
        self.store = base / "store"
        self.root = self.mountpoint / "projects" / "bench"
        self.log = self.store / "motionfs.log"
        self.pids: set[int] = set()
        self.mountpoint.mkdir()

    def mount(self) -> None:
        cmd = [self.exe, "mount", str(self.mountpoint), "--store", str(self.store)]
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
        for record in json.loads(run([self.exe, "status", "--json"])):
            if record["mountpoint"] == str(self.mountpoint):
                self.pids.add(int(record["pid"]))
        self.root.mkdir(exist_ok=True)

    def umount(self) -> None:
        run([self.exe, "umount", str(self.mountpoint)], timeout=900)

    def alive(self) -> bool:
        return is_mounted(self.mountpoint) and (self.mountpoint / "projects").is_dir()

    def recover(self) -> None:
        self.close()
        self.mount()

    def pending(self) -> int | None:
        from motionfs.index import Index  # the same read-only view `motionfs status` uses

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
        self.umount()
        self.mount()

    def flush(self) -> None:
        self.umount()

    def after_flush(self) -> None:
        if not is_mounted(self.mountpoint):
            self.mount()

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


Target = Native | Motionfs


# --- the bench -------------------------------------------------------------------------------


class Bench:
    def __init__(self, base: Path, sizes: Sizes, targets: list[Target]) -> None:
        self.base = base
        self.sizes = sizes
        self.targets = targets
        self.rows: dict[str, Row] = {}
        self.problems: list[str] = []
        self.source = base / "source"  # the cp -a source tree, on the native disk
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
        amount: float | None = None,
        unit: str | None = None,
        repeat: bool = True,
        prepare: Callable[[], Any] | None = None,
        check: Callable[[Any], None] | None = None,
        settle: bool = True,
    ) -> Outcome:
        """Time fn on target (prepare and settling untimed); record and return the outcome."""
        row = self.rows.setdefault(key, Row(key, label, unit, amount))
        out = row.outcomes[target.name] = Outcome()
        mark = target.log_mark()
        try:
            result = None
            while len(out.runs) < REPEATS:
                if prepare is not None:
                    prepare()
                if settle:
                    self.settle(target)
                else:
                    target.ensure_alive()
                start = time.perf_counter()
                result = fn()
                out.runs.append(time.perf_counter() - start)
                if not repeat or out.runs[0] >= FAST_SECONDS:
                    break
            out.seconds = statistics.median(out.runs)
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

    def skip(self, target: Target, key: str, label: str, why: str) -> None:
        self.rows.setdefault(key, Row(key, label)).outcomes[target.name] = Outcome(error=why)

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


def sequential_io(b: Bench, t: Target) -> None:
    """1: write one big file in 1 MiB writes; 2: read it back warm and cold."""
    mib = b.sizes.big_mib
    d = t.root / "seq"
    d.mkdir(exist_ok=True)
    big, synced = d / "big.bin", d / "big-fsync.bin"
    b.step(
        t,
        "1a",
        f"seq write {mib} MiB in 1 MiB writes, to close",
        lambda: write_big(big, mib, fsync=False),
        amount=mib,
        unit="MiB/s",
    )
    b.step(
        t,
        "1b",
        f"seq write {mib} MiB in 1 MiB writes, to fsync",
        lambda: write_big(synced, mib, fsync=True),
        amount=mib,
        unit="MiB/s",
    )
    with contextlib.suppress(OSError, RuntimeError):
        read_big(big, mib)  # warm the page cache
    b.step(
        t,
        "2a",
        f"seq read {mib} MiB, warm (page cache)",
        lambda: read_big(big, mib),
        amount=mib,
        unit="MiB/s",
    )
    b.step(
        t,
        "2b",
        f"seq read {mib} MiB, cold / reopen after remount",
        lambda: read_big(big, mib),
        prepare=t.cold,
        check=lambda _: verify_big(big, mib),
        amount=mib,
        unit="MiB/s",
    )
    shutil.rmtree(d, ignore_errors=True)


def small_files(b: Bench, t: Target) -> None:
    """3: create, stat, readdir, delete small files; 7: flush after creating; 5: git on them."""
    n = b.sizes.small_files
    tree = SmallTree(t.root / "tree", n)
    label = f"create {n:,} files of 4 KiB in {len(tree.dirs) + len(tree.tops)} nested dirs"
    b.step(
        t,
        "3a",
        label,
        tree.create,
        prepare=lambda: shutil.rmtree(tree.root, ignore_errors=True),
        amount=n,
        unit="files/s",
    )

    pending = t.pending()
    flushed = b.step(
        t,
        "7",
        "flush after 3a (motionfs: umount; native: sync)",
        t.flush,
        repeat=False,
        settle=False,
    )
    if pending is not None and flushed.error is None:
        flushed.note = f"{pending:,} store ops were pending"
    t.after_flush()

    b.step(t, "3b", f"stat {n:,} files", tree.stat_all, amount=n, unit="files/s")
    b.step(t, "3c", f"readdir all (os.walk, {n:,} files)", tree.walk, amount=n, unit="files/s")

    if shutil.which("git"):
        b.step(
            t,
            "5a",
            f"git init + add -A + commit ({n:,} files)",
            lambda: git_commit(tree.root),
            prepare=lambda: shutil.rmtree(tree.root / ".git", ignore_errors=True),
        )
        b.step(
            t,
            "5b",
            "git status (after 5a)",
            lambda: git(tree.root, "status", "--porcelain"),
            check=expect_no_output("git status"),
        )
    else:
        b.skip(t, "5a", "git init + add -A + commit", "skipped: git not installed")
        b.skip(t, "5b", "git status", "skipped: git not installed")

    b.step(
        t,
        "3d",
        f"delete {n:,} files and their dirs",
        tree.delete,
        prepare=tree.ensure,
        amount=n,
        unit="files/s",
    )
    shutil.rmtree(tree.root, ignore_errors=True)


def metadata(b: Bench, t: Target) -> None:
    """4: many small namespace operations."""
    n = b.sizes.meta_cycles
    d = t.root / "meta"
    d.mkdir(exist_ok=True)
    b.step(
        t,
        "4",
        f"{n:,} x (mkdir, create, rename, unlink, rmdir)",
        lambda: metadata_cycles(d, n),
        amount=5 * n,
        unit="ops/s",
    )
    d.rmdir()


def copy_tree(b: Bench, t: Target) -> None:
    """6: cp -a a tree of mixed sizes in, then rsync --checksum must find nothing to do."""
    n = b.sizes.tree_files
    source, dst = b.source, t.root / "copy"
    mib = b.source_bytes / MiB
    b.step(
        t,
        "6a",
        f"cp -a {n} files of 1 KiB-1 MiB ({mib:.0f} MiB)",
        lambda: run(["cp", "-a", str(source), str(dst)]),
        prepare=lambda: shutil.rmtree(dst, ignore_errors=True),
        amount=mib,
        unit="MiB/s",
    )
    rsync = ["rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", f"{source}/", f"{dst}/"]
    if shutil.which("rsync"):
        b.step(
            t,
            "6b",
            "rsync -a --checksum dry run (after 6a)",
            lambda: run(rsync),
            check=expect_no_output("rsync"),
            amount=mib,
            unit="MiB/s",
        )
    else:
        b.skip(t, "6b", "rsync -a --checksum dry run", "skipped: rsync not installed")
    shutil.rmtree(dst, ignore_errors=True)


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
    if not isinstance(t, Motionfs):
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


def table(rows: dict[str, Row]) -> list[str]:
    header = ["workload", "native", "motionfs", "ratio", "native rate", "motionfs rate", "runs"]
    body = []
    for row in sorted(rows.values(), key=lambda r: r.key):
        nat, mfs = row.outcomes.get("native"), row.outcomes.get("motionfs")
        notes = [
            f"{name}: {o.error or o.note}"
            for name, o in (("native", nat), ("motionfs", mfs))
            if o is not None and (o.error or o.note)
        ]
        body.append(
            [
                f"{row.key:<3}{row.label}",
                time_cell(nat),
                time_cell(mfs),
                ratio(nat, mfs),
                rate_cell(row, nat),
                rate_cell(row, mfs),
                "/".join(str(len(o.runs)) if o else "-" for o in (nat, mfs)),
                "; ".join(notes),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        numbers = zip(r[1 : len(header)], widths[1:], strict=True)
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in numbers), *r[len(header) :]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return lines


def time_cell(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if o.seconds is None:
        return "FAILED" if o.error and o.error.startswith("FAILED") else "n/a"
    return fmt_time(o.seconds) + (" !" if o.error else "")


def ratio(nat: Outcome | None, mfs: Outcome | None) -> str:
    if not (nat and mfs and nat.seconds and mfs.seconds is not None):
        return "-"
    r = mfs.seconds / nat.seconds
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def rate_cell(row: Row, o: Outcome | None) -> str:
    if not (o and o.seconds and row.amount and row.unit):
        return "-"
    return f"{fmt_number(row.amount / o.seconds)} {row.unit}"


def failures(rows: dict[str, Row]) -> list[str]:
    out = []
    for row in sorted(rows.values(), key=lambda r: r.key):
        for name, o in row.outcomes.items():
            if o.error and o.error.startswith("FAILED"):
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


def commit() -> str:
    try:
        sha = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    except (OSError, RuntimeError):
        return "unknown (not a git checkout)"
    return sha + (" (with uncommitted changes)" if dirty.strip() else "")


def disk_of(path: Path) -> str:
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, point, fstype = line.split()[:3]
            if str(path).startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
                best = (point, dev, fstype)
    return f"{best[1]} ({best[2]})"


# --- main ------------------------------------------------------------------------------------


def reexec_in_venv() -> None:
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve() and python.exists():
        os.execv(python, [str(python), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Time fixed workloads on a native directory and on a fresh motionfs mount "
        "(same disk, same run) and print both with the ratio.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--store", default="local", help="store backend: local (default)")
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
    if args.store != "local":
        print(f"bench: --store {args.store}: not implemented yet", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    command = shlex.join(["scripts/bench", *sys.argv[1:]])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:  # respect nohup and the like
            signal.signal(sig, interrupt)

    base = Path(tempfile.mkdtemp(prefix="motionfs-bench-")).resolve()
    mfs = Motionfs(base)
    bench = Bench(base, sizes, [Native(base), mfs])
    started = time.perf_counter()
    interrupted = False
    progress(f"bench: {'quick' if args.quick else 'full'} run in {base}")
    try:
        mfs.mount()
        if not args.checkpoints:
            bench.source_bytes = make_source_tree(bench.source, sizes.tree_files)
            for workload in (sequential_io, small_files, metadata, copy_tree):
                for target in bench.targets:
                    bench.run(workload, target)
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

    rev = commit()
    host = (
        f"Linux {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"native dir and store on {disk_of(base)} under {base.parent}"
    )
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
    print()
    print(f"command: {command}")
    print(f"motionfs commit: {rev}")
    print(f"host: {host}")
    print(f"total wall time: {total:.0f} s" + (" (interrupted)" if interrupted else ""))
    if args.keep:
        print(f"kept: {base}")

    if args.json:
        report = {
            "command": command,
            "commit": rev,
            "host": host,
            "sizes": asdict(sizes),
            "interrupted": interrupted,
            "total_seconds": total,
            "rows": [asdict(r) for r in sorted(bench.rows.values(), key=lambda r: r.key)],
            "checkpoints": [asdict(m) for m in bench.measures],
            "problems": bench.problems,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if interrupted:
        return 130
    failed = any(
        o.error and o.error.startswith("FAILED")
        for r in bench.rows.values()
        for o in r.outcomes.values()
    )
    missed = any(m.verdict == "FAIL" for m in bench.measures)
    return 1 if failed or missed or bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
