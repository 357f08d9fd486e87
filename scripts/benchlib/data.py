"""The bytes the workloads write, and the checks that they read back what they wrote.

Every generator is seeded, so both sides (and every run) get the same content.
"""

from __future__ import annotations

import functools
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .common import PAGE, KiB, MiB

PREAD_SEED = 6  # the random preads' offsets are the same in every run and on both sides

# Vocabulary of the source-like text files (git and editor workloads).
WORDS = (
    *("def", "class", "return", "import", "self", "value", "path", "store", "mount", "read"),
    *("write", "open", "close", "the", "a", "of", "to", "in", "for", "if", "else", "while"),
    *("frame", "clip", "render", "scene", "project", "asset", "motion", "timeline"),
)


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
