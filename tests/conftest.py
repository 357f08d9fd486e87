"""Fixtures that mount real motionfs drives through the kernel.

`drive` mounts a fresh store in a temporary directory and always unmounts in
teardown, even when the test fails (a leftover mount breaks the next run).

Set MOTIONFS_TEST_TARGET=native to run the mount-level suites against a plain
local directory instead: that checks the tests themselves against the kernel's
own filesystem (remount/kill become no-ops there).

The suites in S3_SUITES run twice, on the local store (`[local]`) and on an
s3 store in a moto server on 127.0.0.1 (`[s3]`; one server for the session,
a key prefix per drive): `scripts/test -k s3` runs only the s3 side. The
suites in MEMORY_SUITES also run on a memory:// store (`[memory]`); there a
test that needs its content to outlive an unmount is skipped at that point.
They run on a sqlite:/// store too (`[sqlite]`: one store file, the index in
the drive's store directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Harness
from helpers import force_unmount
from motionfs.daemon import is_mounted
from s3server import S3Server

NATIVE = os.environ.get("MOTIONFS_TEST_TARGET") == "native"
LAYOUT = ("projects", "renders", "assets", "shared", "scratch")
# Mount-level suites that also run against the s3 store.
S3_SUITES = {
    "test_posix",
    "test_posix_attrs",
    "test_model",
    "test_checkpoints",
    "test_api",
    "test_s3",
    "test_trust",
}
# Mount-level suites that also run on a memory:// store (`[memory]`): all but
# what needs the store to outlive an unmount.
MEMORY_SUITES = {"test_posix", "test_posix_attrs", "test_model", "test_checkpoints"}
# ... and on a sqlite:/// store (`[sqlite]`), remounts included.
SQLITE_SUITES = MEMORY_SUITES | {"test_api"}
# ... and on a store several hosts share (`[shared]`): the index in PostgreSQL, the
# bytes in S3, and a second daemon (another host) mounted on the same store throughout.
SHARED_SUITES = {"test_posix"}


class Drive:
    """A motionfs mount driven like a user would: the CLI, then the kernel."""

    # Set per test by `mounts_only_in_the_mount_layer`: a test without the `mount`
    # marker may not start a drive, so `-m "not mount"` never needs the kernel.
    mounting_allowed = True

    def __init__(
        self,
        mountpoint: Path,
        store: Path,
        args: list[str] | None = None,
        s3: S3Server | None = None,
        remote: str | None = None,
        memory: bool = False,
        sqlite_db: Path | None = None,
        meta_url: str | None = None,
    ) -> None:
        self.path = mountpoint
        self.meta_url = meta_url  # postgresql://...: the index lives there
        self.memory = memory  # memory://: `store` is its private folder, gone at unmount
        self.sqlite_db = sqlite_db  # sqlite:///FILE: the bytes live there, `store` is the index
        self.store = store  # the local store directory (an s3 store's index directory)
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.native = NATIVE
        self.s3 = s3
        self.remote = remote  # s3://BUCKET/PREFIX when the bytes live in s3

    @property
    def s3_prefix(self) -> str:
        """The key prefix of this drive's store in the bucket."""
        assert self.s3 is not None and self.remote is not None
        return self.remote.removeprefix(f"s3://{self.s3.bucket}/") + "/"

    @property
    def persistent(self) -> bool:
        """Whether the content outlives an unmount (not on a memory:// store)."""
        return not self.memory

    def require_persistence(self) -> None:
        if not self.persistent:
            pytest.skip("a memory:// store keeps nothing across an unmount")

    def stored_bytes(self) -> int:
        """Bytes the store holds: the bucket's objects, or the data directory's files."""
        if self.memory:
            pytest.skip("a memory:// store's bytes are in the daemon's RAM, not countable here")
        if self.s3 is not None:
            return sum(self.s3.objects(self.s3_prefix).values())
        if self.sqlite_db is not None:
            with sqlite3.connect(f"file:{self.sqlite_db}?mode=ro", uri=True) as db:
                (n,) = db.execute("SELECT coalesce(sum(size), 0) FROM file_content").fetchone()
            return int(n)
        total = 0
        for p in (self.store / "data").rglob("*"):
            if p.is_file():
                total += p.stat().st_size
        return total

    def store_args(self) -> list[str]:
        if self.memory:
            return ["--store", "memory://", "--index", str(self.store)]
        if self.sqlite_db is not None:
            return ["--store", f"sqlite://{self.sqlite_db}", "--index", str(self.store)]
        if self.remote is None:
            return ["--store", str(self.store)]
        assert self.s3 is not None
        return [
            *("--store", self.remote, "--index", str(self.store)),
            *("--s3-endpoint", self.s3.endpoint),
            *(("--meta", self.meta_url) if self.meta_url else ()),
        ]

    @property
    def log(self) -> str:
        try:
            return (self.store / "motionfs.log").read_text(errors="replace")[-8000:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 60) -> None:
        if not Drive.mounting_allowed:
            raise RuntimeError(
                "a test without the `mount` marker starts a drive: use a fixture in "
                "MOUNTING_FIXTURES or mark it with pytest.mark.mount"
            )
        if self.native:
            for name in LAYOUT:
                (self.path / name).mkdir(exist_ok=True)
            for scope in ("shared", "scratch"):
                for area in ("projects", "renders", "assets"):
                    (self.path / scope / area).mkdir(exist_ok=True)
            return
        cmd = [
            sys.executable,
            "-m",
            "motionfs",
            "mount",
            str(self.path),
            *self.store_args(),
            "--foreground",
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"motionfs exited with {self.proc.returncode}: {err}\n{self.log}"
                )
            if is_mounted(self.path) and (self.path / "projects").is_dir():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"motionfs did not mount within {timeout}s\n{self.log}")

    def unmount(self, timeout: float = 120) -> None:
        """Clean unmount through the CLI: flushes pending uploads, daemon exits."""
        if self.native:
            return
        if is_mounted(self.path):
            subprocess.run(
                [sys.executable, "-m", "motionfs", "umount", str(self.path)],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
            assert self.proc.returncode == 0, f"daemon exit {self.proc.returncode}\n{self.log}"
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), then clear the dead mount."""
        if self.native:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        force_unmount(self.path)

    def remount(self) -> None:
        self.require_persistence()
        self.unmount()
        self.start()

    def crash_and_remount(self) -> None:
        self.require_persistence()
        self.kill()
        self.start()

    def project(self, name: str = "p") -> Path:
        path = self.path / "projects" / name
        path.mkdir()
        return path

    def teardown(self) -> bool:
        """Unmount whatever happens; False if the daemon had to be killed (it did not
        finish its store work within 60 s)."""
        if self.native:
            return True
        force_unmount(self.path)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return False
        return True


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the session (each drive has its own key prefix)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """ "local", "s3", "memory", "sqlite" or "shared": which store the drives of this test use."""
    return str(getattr(request, "param", "local"))


# Fixtures that mount through the kernel (a drive, or a tmpfs): a test using one is a
# `mount` test, so `-m "not mount"` selects the fast layer (the engine without the
# kernel). Tests that run `motionfs mount` themselves carry the marker explicitly.
MOUNTING_FIXTURES = {"drive", "make_drive", "project", "own_drive", "small_disk", "tmpfs"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MOUNTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mount)


def mounts_under(base: Path) -> set[str]:
    """Mount points below `base` (this session's temporary directories)."""
    with open("/proc/mounts") as f:
        points = {line.split()[1] for line in f}
    return {p for p in points if p.startswith(f"{base}/")}


@pytest.fixture(scope="session")
def session_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's temporary base; nothing a test mounted below it outlives the run."""
    base = tmp_path_factory.getbasetemp()
    yield base
    for point in mounts_under(base):  # belt and braces
        force_unmount(Path(point))


@pytest.fixture(autouse=True)
def mounts_only_in_the_mount_layer(
    request: pytest.FixtureRequest, session_base: Path
) -> Iterator[None]:
    """A test without the `mount` marker may neither start a drive nor leave
    anything mounted: `-m "not mount"` must run without the kernel."""
    mounting = request.node.get_closest_marker("mount") is not None
    before = mounts_under(session_base)
    Drive.mounting_allowed = mounting
    try:
        yield
    finally:
        Drive.mounting_allowed = True
    if not mounting:
        left = mounts_under(session_base) - before
        assert not left, f"a test without the `mount` marker mounted {sorted(left)}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    local_only = metafunc.definition.get_closest_marker("local_store") is not None
    if not NATIVE and module in S3_SUITES and "store_kind" in metafunc.fixturenames:
        if local_only:
            return
        kinds = ["s3"] if module == "test_s3" else ["local", "s3"]
        if module in MEMORY_SUITES:
            kinds.append("memory")
        if module in SQLITE_SUITES:
            kinds.append("sqlite")
        if module in SHARED_SUITES:
            kinds.append("shared")
        metafunc.parametrize("store_kind", kinds, indirect=True)


@pytest.fixture
def make_drive(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """Factory: make_drive(*cli_args) -> a started Drive; all are torn down."""
    drives: list[Drive] = []
    shared = store_kind == "shared"
    s3 = request.getfixturevalue("s3_server") if store_kind in ("s3", "shared") else None
    database = request.getfixturevalue("pg_server").create_database() if shared else None

    def make(*args: str, store: Path | None = None) -> Drive:
        n = len(drives)
        mountpoint = tmp_path / f"mnt{n}"
        mountpoint.mkdir()
        store = store or tmp_path / f"store{n}"
        remote = meta_url = None
        known = [d for d in drives if d.store == store]
        if s3 is not None:
            remote = known[0].remote if known else s3.store_url(f"t-{uuid.uuid4().hex[:10]}")
        if database is not None:
            meta_url = known[0].meta_url if known else f"{database}?schema=s{n}"
        memory = store_kind == "memory"
        db = store.with_name(store.name + ".db") if store_kind == "sqlite" else None
        drive = Drive(
            mountpoint,
            store,
            list(args),
            s3=s3,
            remote=remote,
            memory=memory,
            sqlite_db=db,
            meta_url=meta_url,
        )
        drives.append(drive)
        drive.start()
        if shared and not known:  # another host, mounted on the same store throughout
            other = tmp_path / f"other-host{n}"
            other.mkdir()
            drives.append(
                Drive(other, tmp_path / f"other-index{n}", s3=s3, remote=remote, meta_url=meta_url)
            )
            drives[-1].start()
        return drive

    try:
        yield make
    finally:
        stuck = [d for d in drives if not d.teardown()]
    # On the s3 store a daemon that cannot drain its queue is a failure, not slowness
    # (an object the server refuses is retried for ever: nothing may be left behind).
    assert s3 is None or not stuck, f"daemon stuck draining its queue:\n{stuck[0].log}"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    """The daemon's engine over one store directory, without the kernel."""
    return Harness(tmp_path)


@pytest.fixture
def drive(make_drive: object) -> Drive:
    return make_drive()  # type: ignore[operator,no-any-return]


@pytest.fixture
def project(drive: Drive) -> Path:
    """A fresh project folder on a fresh drive."""
    return drive.project("p")


needs_tool = {
    name: pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} not installed")
    for name in ("rsync", "git", "npm", "getfattr", "setfattr")
}


# -- PostgreSQL, for the metadata engine's tests ----------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One throwaway PostgreSQL server for the session (tests/pgserver.py; a test
    makes its own database with create_database()). Without PostgreSQL the tests
    that need it fail under CI=true (setup must have installed it) and skip elsewhere."""
    from pgserver import PgServer, missing_reason

    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with PgServer() as server:
        yield server
