"""Random-operation model tests: file contents on the drive must match an in-memory model.

An fsx-style loop drives a handful of files in three folders of one project through the
kernel with os.* calls: pwrite of any size at any offset (holes past EOF included), O_APPEND
writes, truncate and ftruncate (grow and shrink), close and reopen, rename (also over an
existing file), unlink and recreate, pread and mmap reads of random ranges, fsync and full-file
compares. A few fds stay open across operations, so a file is often written through one fd and
read through another, or renamed while open. The drive is remounted halfway and at the end, and
every file is verified after each remount. A failure names the seed; replay it with

    MOTIONFS_MODEL_SEED=<seed> MOTIONFS_MODEL_OPS=<ops> scripts/test tests/test_model.py -k random

(MOTIONFS_MODEL_HISTORY=<n> quotes more than the last 20 operations in the message.)

A hypothesis state machine runs the same operations in short derandomized sequences that
shrink to a minimal failing example; it complements the long seeded loop.

The model is a dict path -> bytearray; an open fd refers to the bytearray itself, so it
follows its file through renames as an fd follows its inode. Before a file is unlinked or
renamed over, its fds are closed: open-but-unlinked files are not covered here.
"""

from __future__ import annotations

import mmap
import os
import random
import secrets
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

if TYPE_CHECKING:
    from conftest import Drive

KIB = 1024
MIB = 1024 * KIB
OPS = int(os.environ.get("MOTIONFS_MODEL_OPS", "12000"))
# A fixed default keeps CI reproducible; MOTIONFS_MODEL_SEED=random explores new seeds.
_seed_env = os.environ.get("MOTIONFS_MODEL_SEED", "20261121")
SEED = secrets.randbelow(2**32) if _seed_env == "random" else int(_seed_env)
REPLAY = f"MOTIONFS_MODEL_SEED={SEED} MOTIONFS_MODEL_OPS={OPS}"

MAX_WRITE = 256 * KIB  # largest single write
MAX_FILE = 2 * MIB  # files never grow past this
MAX_HOLE = 128 * KIB  # how far past EOF a write may start
MAX_FDS = 4  # fds kept open across operations
HISTORY = int(os.environ.get("MOTIONFS_MODEL_HISTORY", "20"))  # ops quoted in a failure
DIRS = ("src", "src/scenes", "media")
PATHS = tuple(f"{DIRS[i % len(DIRS)]}/f{i}" for i in range(8))
MODES = {"r": os.O_RDONLY, "rw": os.O_RDWR, "append": os.O_WRONLY | os.O_APPEND}
# How often RandomOps draws each of its operations.
WEIGHTS = {
    "pwrite": 24, "append": 8, "read": 20, "mmap_read": 6, "truncate": 8, "reopen": 8,
    "rename": 5, "unlink": 4, "create": 4, "fsync": 3, "compare": 2,
}  # fmt: skip
SERVES = {"r": {"any", "read"}, "rw": {"any", "read", "write"}, "append": {"any", "append"}}


@dataclass(eq=False)
class Handle:
    """An open fd and the model bytes of the file it refers to."""

    fd: int
    data: bytearray
    mode: str  # a key of MODES

    def can(self, kind: str) -> bool:
        """Whether this fd serves `kind`: any, read, write (pwrite/ftruncate) or append."""
        return kind in SERVES[self.mode]


def grow_or_cut(data: bytearray, size: int) -> None:
    """What truncate does to a file's bytes: cut them, or extend with zeros."""
    if size < len(data):
        del data[size:]
    else:
        data.extend(bytes(size - len(data)))


def put(data: bytearray, offset: int, chunk: bytes) -> None:
    """What pwrite does to a file's bytes: a write past EOF leaves a hole of zeros (an empty
    write changes nothing)."""
    if chunk and offset > len(data):
        grow_or_cut(data, offset)
    data[offset : offset + len(chunk)] = chunk


class FsModel:
    """A folder tree of a few files, kept both on the drive and in memory, compared often."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = root
        self.label = label
        self.files: dict[str, bytearray] = {}
        self.handles: list[Handle] = []
        self.history: deque[str] = deque(maxlen=HISTORY)
        self.op = 0
        for folder in DIRS:
            (root / folder).mkdir(parents=True, exist_ok=True)

    # -- reporting ---------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        self.op += 1
        self.history.append(f"#{self.op} {text}")

    def fail(self, message: str) -> NoReturn:
        ops = "\n".join(f"    {line}" for line in self.history)
        raise AssertionError(
            f"{message}\n  {self.label}, at op #{self.op}; the last {len(self.history)} ops:\n{ops}"
        )

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Report an unexpected error (e.g. EIO from the drive) with the seed and history."""
        try:
            yield
        except AssertionError:
            raise
        except Exception as exc:
            self.fail(f"unexpected {exc!r}")

    def expect_bytes(self, what: str, got: bytes, want: bytes, offset: int = 0) -> None:
        if got == want:
            return
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        self.fail(
            f"{what}: first difference at file offset {offset + first} "
            f"(read {len(got)} bytes, model has {len(want)}): "
            f"got {got[first : first + 16].hex()!r}, want {want[first : first + 16].hex()!r}"
        )

    def expect_size(self, what: str, size: int, want: int) -> None:
        if size != want:
            self.fail(f"{what}: st_size is {size}, model has {want}")

    def name(self, handle: Handle) -> str:
        path = next((p for p, data in self.files.items() if data is handle.data), "(unlinked)")
        return f"fd{handle.fd}[{handle.mode} {path}]"

    # -- choosing what to operate on ---------------------------------------------------------

    def existing(self) -> list[str]:
        return sorted(self.files)

    def some_file(self, choice: int) -> str:
        """An existing file picked by `choice`; an empty one is created if there is none."""
        existing = self.existing()
        if not existing:
            self.create(PATHS[choice % len(PATHS)], b"")
            existing = self.existing()
        return existing[choice % len(existing)]

    def handle(self, kind: str, choice: int, fresh: bool = False) -> Handle:
        """An open fd that serves `kind`: one already open, or (if `fresh` or none fits) a new
        one on an existing file."""
        fits = [h for h in self.handles if h.can(kind)]
        if fits and not fresh:
            return fits[choice % len(fits)]
        mode = {"any": "rw", "read": "r", "write": "rw", "append": "append"}[kind]
        return self.open(self.some_file(choice), mode)

    # -- operations: each does one thing on the drive and the same to the model --------------

    def open(self, path: str, mode: str, trunc: bool = False) -> Handle:
        while len(self.handles) >= MAX_FDS:
            self.close(self.handles[0])
        self._log(f"open {path} {mode}{' O_TRUNC' if trunc else ''}")
        fd = os.open(self.root / path, MODES[mode] | (os.O_TRUNC if trunc else 0))
        handle = Handle(fd, self.files[path], mode)
        self.handles.append(handle)
        if trunc:
            del handle.data[:]
        return handle

    def close(self, handle: Handle) -> None:
        self._log(f"close {self.name(handle)}")
        self.handles.remove(handle)
        os.close(handle.fd)

    def close_all(self) -> None:
        while self.handles:
            self.close(self.handles[-1])

    def forget_fds(self) -> None:
        """Close every fd without logging or checking, e.g. after a failure."""
        for handle in self.handles:
            with suppress(OSError):
                os.close(handle.fd)
        self.handles.clear()

    def _close_fds_of(self, path: str) -> None:
        for handle in [h for h in self.handles if h.data is self.files[path]]:
            self.close(handle)

    def create(self, path: str, data: bytes) -> None:
        """O_CREAT|O_EXCL, write, close; on an existing file it must fail with EEXIST."""
        self._log(f"create {path} len={len(data)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if path in self.files:
            try:
                fd = os.open(self.root / path, flags, 0o644)
            except FileExistsError:
                return
            os.close(fd)
            self.fail(f"O_EXCL create of existing {path} succeeded")
        fd = os.open(self.root / path, flags, 0o644)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            self.fail(f"short write creating {path}: {written} of {len(data)}")
        self.files[path] = bytearray(data)

    def pwrite(self, handle: Handle, offset: int, data: bytes) -> None:
        self._log(f"pwrite {self.name(handle)} off={offset} len={len(data)}")
        written = os.pwrite(handle.fd, data, offset)
        if written != len(data):
            self.fail(f"short pwrite: {written} of {len(data)}")
        put(handle.data, offset, data)

    def append(self, handle: Handle, data: bytes) -> None:
        self._log(f"append {self.name(handle)} len={len(data)}")
        written = os.write(handle.fd, data)
        if written != len(data):
            self.fail(f"short O_APPEND write: {written} of {len(data)}")
        handle.data.extend(data)
        position = os.lseek(handle.fd, 0, os.SEEK_CUR)
        if data and position != len(handle.data):  # an empty write does not move the offset
            self.fail(f"after an O_APPEND write the offset is {position}, not EOF")

    def truncate(self, path: str, size: int) -> None:
        self._log(f"truncate {path} from {len(self.files[path])} to {size}")
        os.truncate(self.root / path, size)
        grow_or_cut(self.files[path], size)

    def ftruncate(self, handle: Handle, size: int) -> None:
        self._log(f"ftruncate {self.name(handle)} from {len(handle.data)} to {size}")
        os.ftruncate(handle.fd, size)
        grow_or_cut(handle.data, size)

    def read(self, handle: Handle, offset: int, length: int) -> None:
        self._log(f"pread {self.name(handle)} off={offset} len={length}")
        got = os.pread(handle.fd, length, offset)
        want = handle.data[offset : offset + length]
        self.expect_bytes(f"pread via {self.name(handle)}", got, want, offset)
        self.expect_size(
            f"fstat {self.name(handle)}", os.fstat(handle.fd).st_size, len(handle.data)
        )

    def mmap_read(self, handle: Handle, offset: int, length: int) -> None:
        """Map the pages holding [offset, offset+length) read-only (MAP_SHARED) and compare."""
        self._log(f"mmap {self.name(handle)} off={offset} len={length}")
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(
            handle.fd, offset - start + length, access=mmap.ACCESS_READ, offset=start
        ) as m:
            got = m[offset - start :]
        want = handle.data[offset : offset + length]
        self.expect_bytes(f"mmap read via {self.name(handle)}", got, want, offset)

    def fsync(self, handle: Handle, data_only: bool) -> None:
        self._log(f"{'fdatasync' if data_only else 'fsync'} {self.name(handle)}")
        (os.fdatasync if data_only else os.fsync)(handle.fd)

    def rename(self, src: str, dst: str) -> None:
        """Rename within the tree; a file renamed over loses its open fds first."""
        if dst in self.files:
            self._close_fds_of(dst)
        self._log(f"rename {src} -> {dst}{' (over existing)' if dst in self.files else ''}")
        os.rename(self.root / src, self.root / dst)
        self.files[dst] = self.files.pop(src)

    def unlink(self, path: str) -> None:
        self._close_fds_of(path)
        self._log(f"unlink {path}")
        os.unlink(self.root / path)
        del self.files[path]

    # -- verification ------------------------------------------------------------------------

    def compare(self, path: str) -> None:
        """Full compare of one file, read through a new fd, and its st_size."""
        self._log(f"compare {path}")
        self._check_file(path)

    def _check_file(self, path: str) -> None:
        want = self.files[path]
        self.expect_size(f"stat {path}", os.stat(self.root / path).st_size, len(want))
        self.expect_bytes(f"full read of {path}", (self.root / path).read_bytes(), bytes(want))

    def check_sizes(self) -> None:
        """Cheap check of the namespace: which files exist, and their st_size."""
        for path in PATHS:
            exists = os.path.lexists(self.root / path)
            if exists != (path in self.files):
                self.fail(f"{path} {'exists' if exists else 'is missing'}, unlike in the model")
            if exists:
                self.expect_size(
                    f"stat {path}", os.stat(self.root / path).st_size, len(self.files[path])
                )

    def verify_all(self) -> None:
        """Directory listings, then every file in full, then the size seen by each open fd."""
        self._log("verify all")
        for folder in DIRS:
            want = {
                p.rpartition("/")[2] for p in [*self.files, *DIRS] if p.rpartition("/")[0] == folder
            }
            got = set(os.listdir(self.root / folder))
            if got != want:
                self.fail(f"listing of {folder}: {sorted(got)}, model has {sorted(want)}")
        for path in self.existing():
            self._check_file(path)
        for handle in self.handles:
            size = os.fstat(handle.fd).st_size
            self.expect_size(f"fstat {self.name(handle)}", size, len(handle.data))

    def remount(self, drive: Drive) -> None:
        """Close every fd, unmount cleanly, mount again and verify everything."""
        self.close_all()
        if drive.persistent:  # on a memory:// store, only the verification
            self._log("remount")
            drive.remount()
        self.verify_all()


class RandomOps:
    """Draws fsx-style operations, with their sizes and offsets, from a seeded generator."""

    def __init__(self, model: FsModel, rng: random.Random) -> None:
        self.m = model
        self.rng = rng

    def step(self) -> None:
        name = self.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        getattr(self, name)()

    # -- drawing parameters ------------------------------------------------------------------

    def size(self) -> int:
        """0 .. 256 KiB - 1, log-uniform: mostly small, sometimes large."""
        return int(2 ** self.rng.uniform(0, 18)) - 1

    def choice(self) -> int:
        return self.rng.randrange(1 << 16)

    def handle(self, kind: str) -> Handle:
        return self.m.handle(kind, self.choice(), fresh=self.rng.random() < 0.1)

    def offset(self, size: int) -> int:
        """A write offset for a file of `size` bytes: at EOF, inside, page-aligned or past EOF."""
        r = self.rng.random()
        if r < 0.3:
            return size
        if r < 0.7:
            return self.rng.randint(0, size)
        if r < 0.85:
            return self.rng.randint(0, size // 4096) * 4096
        return size + self.rng.randint(1, MAX_HOLE)

    def new_size(self, size: int) -> int:
        """A truncate target: zero, shorter, or longer (a hole at the end)."""
        r = self.rng.random()
        if r < 0.1:
            return 0
        if r < 0.55:
            return self.rng.randint(0, size)
        return min(MAX_FILE, size + self.rng.randint(1, MAX_WRITE))

    # -- operations --------------------------------------------------------------------------

    def pwrite(self) -> None:
        handle = self.handle("write")
        data = self.rng.randbytes(self.size())
        self.m.pwrite(handle, min(self.offset(len(handle.data)), MAX_FILE - len(data)), data)

    def append(self) -> None:
        handle = self.handle("append")
        self.m.append(handle, self.rng.randbytes(min(self.size(), MAX_FILE - len(handle.data))))

    def truncate(self) -> None:
        if self.rng.random() < 0.5:
            path = self.m.some_file(self.choice())
            self.m.truncate(path, self.new_size(len(self.m.files[path])))
        else:
            handle = self.handle("write")
            self.m.ftruncate(handle, self.new_size(len(handle.data)))

    def reopen(self) -> None:
        if self.m.handles:
            self.m.close(self.rng.choice(self.m.handles))
        mode = self.rng.choice(list(MODES))
        trunc = mode != "r" and self.rng.random() < 0.05
        self.m.open(self.m.some_file(self.choice()), mode, trunc)

    def read(self) -> None:
        handle = self.handle("read")
        self.m.read(handle, self.rng.randint(0, len(handle.data) + 8 * KIB), self.size())

    def mmap_read(self) -> None:
        handle = self.handle("read")
        size = len(handle.data)
        if size == 0:  # nothing to map
            self.m.read(handle, 0, 1)
            return
        offset = self.rng.randrange(size)
        self.m.mmap_read(handle, offset, min(self.size() + 1, size - offset))

    def rename(self) -> None:
        src = self.m.some_file(self.choice())
        self.m.rename(src, self.rng.choice([p for p in PATHS if p != src]))

    def unlink(self) -> None:
        path = self.m.some_file(self.choice())
        self.m.unlink(path)
        if self.rng.random() < 0.5:
            self.m.create(path, self.rng.randbytes(self.size()))

    def create(self) -> None:
        self.m.create(self.rng.choice(PATHS), self.rng.randbytes(self.size()))

    def fsync(self) -> None:
        self.m.fsync(self.handle("any"), data_only=self.rng.random() < 0.3)

    def compare(self) -> None:
        self.m.compare(self.m.some_file(self.choice()))


def test_random_operations_match_model(drive: Drive, project: Path) -> None:
    """Seeded fsx-style operations match the model, across a remount halfway and at the end."""
    print(f"replay with {REPLAY}")
    model = FsModel(project, REPLAY)
    ops = RandomOps(model, random.Random(SEED))
    try:
        with model.guard():
            for step in range(OPS):
                if step == OPS // 2:
                    model.remount(drive)
                ops.step()
            model.verify_all()
            model.remount(drive)
    finally:
        model.forget_fds()  # open fds would keep a failed drive from unmounting in teardown
    assert model.op > OPS  # every step did at least one operation, plus the verifications


# -- the same operations as a hypothesis state machine ---------------------------------------

CHOICE = st.integers(0, 1 << 16)
SIZE = st.one_of(st.integers(0, 4 * KIB), st.integers(0, MAX_WRITE - 1))
FILL = st.integers(0, 2**32 - 1)
WHERE = st.integers(0, MAX_FILE)


def payload(fill: int, size: int) -> bytes:
    return random.Random(fill).randbytes(size)


class ModelMachine(RuleBasedStateMachine):
    """The operations of RandomOps as rules; sizes and offsets clamp to the current file."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.m = FsModel(root, f"hypothesis example in {root.name}")

    @rule(c=CHOICE, fresh=st.booleans(), where=WHERE, size=SIZE, fill=FILL)
    def pwrite(self, c: int, fresh: bool, where: int, size: int, fill: int) -> None:
        handle = self.m.handle("write", c, fresh)
        offset = min(where, len(handle.data) + MAX_HOLE, MAX_FILE - size)
        self.m.pwrite(handle, offset, payload(fill, size))

    @rule(c=CHOICE, fresh=st.booleans(), size=SIZE, fill=FILL)
    def append(self, c: int, fresh: bool, size: int, fill: int) -> None:
        handle = self.m.handle("append", c, fresh)
        self.m.append(handle, payload(fill, min(size, MAX_FILE - len(handle.data))))

    @rule(c=CHOICE, size=WHERE, by_path=st.booleans())
    def truncate(self, c: int, size: int, by_path: bool) -> None:
        if by_path:
            path = self.m.some_file(c)
            self.m.truncate(path, min(size, len(self.m.files[path]) + MAX_WRITE))
        else:
            handle = self.m.handle("write", c)
            self.m.ftruncate(handle, min(size, len(handle.data) + MAX_WRITE))

    @rule(c=CHOICE, mode=st.sampled_from(list(MODES)), trunc=st.booleans())
    def reopen(self, c: int, mode: str, trunc: bool) -> None:
        if self.m.handles:
            self.m.close(self.m.handles[c % len(self.m.handles)])
        self.m.open(self.m.some_file(c), mode, trunc and mode != "r")

    @rule(c=CHOICE, fresh=st.booleans(), where=WHERE, size=SIZE)
    def read(self, c: int, fresh: bool, where: int, size: int) -> None:
        handle = self.m.handle("read", c, fresh)
        self.m.read(handle, min(where, len(handle.data) + 8 * KIB), size)

    @rule(c=CHOICE, fresh=st.booleans(), where=WHERE, size=SIZE)
    def mmap_read(self, c: int, fresh: bool, where: int, size: int) -> None:
        handle = self.m.handle("read", c, fresh)
        if handle.data:
            offset = where % len(handle.data)
            self.m.mmap_read(handle, offset, min(size + 1, len(handle.data) - offset))

    @rule(c=CHOICE, dst=st.sampled_from(PATHS))
    def rename(self, c: int, dst: str) -> None:
        src = self.m.some_file(c)
        if src != dst:
            self.m.rename(src, dst)

    @rule(c=CHOICE, recreate=st.booleans(), size=SIZE, fill=FILL)
    def unlink(self, c: int, recreate: bool, size: int, fill: int) -> None:
        path = self.m.some_file(c)
        self.m.unlink(path)
        if recreate:
            self.m.create(path, payload(fill, size))

    @rule(path=st.sampled_from(PATHS), size=SIZE, fill=FILL)
    def create(self, path: str, size: int, fill: int) -> None:
        self.m.create(path, payload(fill, size))

    @rule(c=CHOICE, data_only=st.booleans())
    def fsync(self, c: int, data_only: bool) -> None:
        self.m.fsync(self.m.handle("any", c), data_only)

    @rule(c=CHOICE)
    def compare(self, c: int) -> None:
        self.m.compare(self.m.some_file(c))

    @invariant()
    def sizes_match(self) -> None:
        self.m.check_sizes()

    def teardown(self) -> None:
        self.m.forget_fds()


MACHINE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_state_machine_matches_model(project: Path) -> None:
    """Short derandomized hypothesis runs of the same operations match the model (no remount)."""
    examples = count()
    run_state_machine_as_test(
        lambda: ModelMachine(project / f"example{next(examples)}"), settings=MACHINE_SETTINGS
    )
    assert next(examples) >= MACHINE_SETTINGS.max_examples
