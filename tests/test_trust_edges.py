"""Trust at the edges: a private store, a dead mount, a full disk, signals, bounded
metadata, and a store that knows its own index.

Every test goes through the kernel and the command line as a user would. Refusals must
be one line `motionfs: ...` and exit status 1, never a traceback; refused mounts are
started with --foreground so that nothing of the daemon's stderr is hidden.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import NATIVE, needs_tool
from helpers import close_quietly, motionfs
from motionfs.daemon import is_mounted
from motionfs.meta.sqlite import Index

if TYPE_CHECKING:
    from conftest import Drive

pytestmark = [pytest.mark.mount, pytest.mark.skipif(NATIVE, reason="the motionfs daemon")]

KIB = 1024
NOBODY = "65534"


def refused_mount(mountpoint: Path, store: Path, *words: str) -> str:
    """`motionfs mount --foreground` refuses with one line holding `words`, mounts nothing."""
    done = motionfs("mount", str(mountpoint), "--store", str(store), "--foreground", timeout=60)
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr}"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{done.stderr}"
    assert lines[0].startswith("motionfs: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    assert not is_mounted(mountpoint)
    return lines[0]


def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    """Run a command as uid/gid 65534 with no supplementary groups."""
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        ["setpriv", *ids, *cmd], capture_output=True, text=True, errors="replace", timeout=30
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def pending(store: Path) -> int:
    """Store operations waiting in the index."""
    index = Index.open_readonly(store / "index.sqlite")
    try:
        return index.pending_count()
    finally:
        index.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.1)


def new_namespace_root(store: Path, make: Callable[[], Any]) -> Path:
    """The provider root directory that `make()` gives a new namespace."""
    roots = store / "data" / "ns"
    before = set(roots.iterdir()) if roots.is_dir() else set()
    make()
    found: list[Path] = []

    def appeared() -> bool:
        found[:] = sorted(set(roots.iterdir()) - before) if roots.is_dir() else []
        return len(found) == 1

    wait_for("the namespace's root in the store", appeared)
    return found[0]


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system at `directory`, then free `leave` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chunk = bytes(64 * KIB)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter. pytest's own temporary folders are 0700, which
    would keep other users out of a store below them and prove nothing."""
    path = Path(tempfile.mkdtemp(prefix="motionfs-trust-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory: tmpfs(size, at=None), a small tmpfs (on `at`, or a new folder),
    unmounted in teardown."""
    mounted: list[Path] = []

    def make(size: str, at: Path | None = None) -> Path:
        path = at or tmp_path / f"tmpfs{len(mounted)}"
        path.mkdir(exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(path)
        return path

    try:
        yield make
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def stopped_by_signal(drive: Drive, signum: int, within: float = 10) -> None:
    """Send `signum` to the daemon: it exits 0 and the mount is gone within `within` s."""
    assert drive.proc is not None
    start = time.monotonic()
    drive.proc.send_signal(signum)
    try:
        drive.proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        log = drive.log
        drive.kill()  # or closing the test's files would wait for it for ever
        pytest.fail(f"the daemon still runs {within:.0f}s after signal {signum}\n{log}")
    took = time.monotonic() - start
    assert drive.proc.returncode == 0, f"daemon exit {drive.proc.returncode}\n{drive.log}"
    drive.proc = None
    assert not is_mounted(drive.path), f"still mounted after the daemon exited ({took:.1f}s)"


# --- 1. a store is its user's alone ----------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")
def test_store_is_private_to_its_user(open_dir: Path, make_drive: Any) -> None:
    """Another local user can neither list the store, nor read its index or metadata."""
    store = open_dir / "store"
    drive = make_drive(store=store)
    root = new_namespace_root(store, lambda: drive.project("secret-film"))
    (drive.path / "projects" / "secret-film" / "cut.txt").write_text("rough cut\n")

    assert mode(store) == 0o700
    assert mode(store / "cache") == 0o700
    for name in ("index.sqlite", "index.sqlite-wal", "motionfs.log", "store.json"):
        if (store / name).exists():
            assert mode(store / name) == 0o600, name
    assert as_nobody("ls", str(open_dir)).returncode == 0, "the test cannot reach the store"
    for cmd in (
        ["ls", str(store)],
        ["cat", str(store / "index.sqlite")],
        ["ls", str(root)],
        ["cat", str(root / ".chuk-motion" / "metadata.json")],
    ):
        done = as_nobody(*cmd)
        assert done.returncode != 0 and "Permission denied" in done.stderr, (cmd, done)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")
def test_loose_store_of_an_older_version_is_tightened_at_mount(
    open_dir: Path, make_drive: Any
) -> None:
    """A store left 0755 with a 0644 index (as older versions made them) is private
    once mounted again."""
    store = open_dir / "store"
    drive = make_drive(store=store)
    drive.project("p")
    drive.unmount()
    store.chmod(0o755)
    (store / "cache").chmod(0o755)
    for name in ("index.sqlite", "motionfs.log"):
        (store / name).chmod(0o644)
    assert as_nobody("cat", str(store / "index.sqlite")).returncode == 0, "not loose enough"

    drive.start()
    assert mode(store) == 0o700
    assert mode(store / "cache") == 0o700
    assert mode(store / "index.sqlite") == 0o600
    assert mode(store / "motionfs.log") == 0o600
    assert as_nobody("ls", str(store)).returncode != 0
    assert as_nobody("cat", str(store / "index.sqlite")).returncode != 0


# --- 2. the mount a killed daemon left -------------------------------------------------


def test_mount_over_the_dead_mount_of_a_killed_daemon(drive: Drive) -> None:
    """After kill -9 the mountpoint answers ENOTCONN; mounting again clears it and
    serves what was fsynced before the kill."""
    project = drive.project("p")
    data = os.urandom(300 * KIB)
    with open(project / "kept.bin", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert drive.proc is not None
    drive.proc.kill()
    drive.proc.wait(timeout=30)
    drive.proc = None
    assert is_mounted(drive.path)
    with pytest.raises(OSError) as e:
        os.listdir(drive.path)
    assert e.value.errno == errno.ENOTCONN

    done = motionfs("mount", str(drive.path), "--store", str(drive.store))
    assert done.returncode == 0, f"{done.stderr}\n{drive.log}"
    assert "Traceback" not in done.stderr, done.stderr
    try:
        assert (drive.path / "projects" / "p" / "kept.bin").read_bytes() == data
    finally:
        umounted = motionfs("umount", str(drive.path))
    assert umounted.returncode == 0, umounted.stderr


# --- 3. a full or read-only disk at start-up -------------------------------------------


@pytest.mark.parametrize("disk", ["full, new store", "nearly full", "read-only"])
def test_unusable_disk_at_mount_is_one_line(
    tmpfs: Callable[..., Path], make_drive: Any, disk: str
) -> None:
    """No room or no writing on the store's disk: one line, status 1, nothing mounted."""
    fs = tmpfs("2M")
    store = fs / "store"
    if disk != "full, new store":  # a store that worked, on a disk that filled up since
        drive = make_drive(store=store)
        (drive.project("p") / "cut.txt").write_text("v1\n")
        drive.unmount()
    mountpoint = fs.parent / f"{fs.name}-mnt"
    mountpoint.mkdir()
    if disk == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    else:
        fill(fs, leave=4 * KIB if disk == "nearly full" else 0)
    refused_mount(mountpoint, store, str(store))


# --- 4. signals ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_like_a_lazy_umount(drive: Drive, signum: int) -> None:
    """SIGTERM or SIGINT: the mount is gone within seconds, a file still open is sealed,
    and everything is there after mounting again."""
    project = drive.project("p")
    closed = os.urandom(700 * KIB)
    (project / "closed.bin").write_bytes(closed)
    fd = os.open(project / "open.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"written, still open at the signal\n")
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # writeback to the daemon
        time.sleep(0.5)
        stopped_by_signal(drive, signum)
    finally:
        close_quietly(fd)
    drive.start()
    assert (project / "closed.bin").read_bytes() == closed
    assert (project / "open.bin").read_bytes() == b"written, still open at the signal\n"


def failing_project(drive: Drive, tmpfs: Callable[..., Path], data: bytes) -> Path:
    """Project p with `data` in cut.bin, whose upload keeps failing: a full tmpfs covers
    the namespace's folder in the store. Returns that folder."""
    root = new_namespace_root(drive.store, lambda: drive.project("p"))
    wait_for("the store queue to drain", lambda: pending(drive.store) == 0)
    fill(tmpfs("256k", at=root))
    (drive.path / "projects" / "p" / "cut.bin").write_bytes(data)
    wait_for("an upload to fail", lambda: "No space left on device" in drive.log)
    return root


def test_sigterm_while_the_store_fails_and_fsync_waits(
    tmpfs: Callable[..., Path], make_drive: Any
) -> None:
    """With uploads failing (the namespace's disk is full) and an fsync waiting on them,
    SIGTERM still unmounts within seconds; the queue stays in the index and the next
    mount, on a working disk, uploads it."""
    drive = make_drive("--io-timeout", "300")
    data = os.urandom(600 * KIB)
    root = failing_project(drive, tmpfs, data)
    project = drive.path / "projects" / "p"
    fd = os.open(project / "synced.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"fsync waits for the store\n")
    results: list[BaseException | None] = []

    def fsync() -> None:
        try:
            os.fsync(fd)
            results.append(None)
        except OSError as e:
            results.append(e)

    syncer = threading.Thread(target=fsync, daemon=True)
    syncer.start()
    try:
        time.sleep(1)
        assert not results, f"fsync returned while the store fails: {results}"
        stopped_by_signal(drive, signal.SIGTERM)
        syncer.join(timeout=30)
    finally:
        close_quietly(fd)
        subprocess.run(["umount", "-l", str(root)], check=False)
    assert pending(drive.store) > 0, "the queue was not kept for the next mount"

    drive.start()
    assert (project / "cut.bin").read_bytes() == data
    assert (project / "synced.bin").read_bytes() == b"fsync waits for the store\n"
    drive.unmount()
    assert (root / "cut.bin").read_bytes() == data


def test_sigterm_ends_the_wait_for_uploads_after_an_unmount(
    tmpfs: Callable[..., Path], make_drive: Any
) -> None:
    """After a plain unmount the daemon waits for its uploads, for ever while they fail;
    SIGTERM (a service manager stopping it) ends the wait and keeps the queue."""
    drive = make_drive()
    data = os.urandom(600 * KIB)
    root = failing_project(drive, tmpfs, data)
    subprocess.run(["fusermount3", "-u", str(drive.path)], check=True)
    time.sleep(1)
    assert drive.proc is not None and drive.proc.poll() is None, "it did not wait for uploads"
    try:
        stopped_by_signal(drive, signal.SIGTERM)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
    assert pending(drive.store) > 0, "the queue was not kept for the next mount"

    drive.start()
    assert (drive.path / "projects" / "p" / "cut.bin").read_bytes() == data
    drive.unmount()
    assert (root / "cut.bin").read_bytes() == data


# --- 5. bounded metadata xattrs --------------------------------------------------------


@needs_tool["getfattr"]
def test_motion_metadata_stays_readable(drive: Drive) -> None:
    """A value that would make `user.motion.json` too big for one xattr is EINVAL, and
    the earlier value stays: getfattr -d keeps working."""
    asset = drive.path / "assets" / "logo.bin"
    asset.write_bytes(os.urandom(4 * KIB))
    project = drive.project("film")
    os.setxattr(asset, "user.motion.tags", b"intro,logo")
    for target, name, value in (
        (asset, "user.motion.tags", b"t," * (32 * KIB)),  # 64 KiB, the kernel's limit
        (asset, "user.motion.tags", b"x" * (17 * KIB)),
        (asset, "user.motion.project_namespace_ids", b"n" * (20 * KIB)),
        (project, "user.motion.theme", b"dark" * (16 * KIB)),
    ):
        with pytest.raises(OSError) as e:
            os.setxattr(target, name, value)
        assert e.value.errno == errno.EINVAL, (name, len(value))
    os.setxattr(asset, "user.motion.tags", b"w" * (8 * KIB))  # well within the bound
    for target in (asset, project):
        model = json.loads(os.getxattr(target, "user.motion.json"))
        assert len(json.dumps(model)) < 16 * KIB
        dumped = subprocess.run(
            ["getfattr", "-d", "--absolute-names", str(target)], capture_output=True, text=True
        )
        assert dumped.returncode == 0, dumped.stderr
        assert "user.motion.json" in dumped.stdout
    assert json.loads(os.getxattr(asset, "user.motion.json"))["tags"] == ["w" * (8 * KIB)]


# --- 6. the store knows its index ------------------------------------------------------


def index_files(store: Path) -> list[Path]:
    return [store / f"index.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]


def put_index(store: Path, content: bytes) -> None:
    """Replace the (unmounted) store's index with `content`, and no WAL."""
    main, *sidecars = index_files(store)
    for path in sidecars:
        path.unlink(missing_ok=True)
    main.write_bytes(content)


def store_uuid(store: Path) -> str | None:
    db = sqlite3.connect(f"file:{store / 'index.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='store_uuid'").fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


@pytest.mark.parametrize("damage", ["truncated", "zero-filled"])
def test_zeroed_index_is_refused(drive: Drive, damage: str) -> None:
    """An index emptied or overwritten with zeros is refused with a pointer to fsck,
    instead of mounting an empty drive over a store full of namespaces."""
    (drive.project("film") / "cut.txt").write_text("v1\n")
    drive.unmount()
    saved = (drive.store / "index.sqlite").read_bytes()
    put_index(drive.store, b"" if damage == "truncated" else bytes(len(saved)))
    refused_mount(drive.path, drive.store, "index", "fsck --repair")
    # The command users type (the daemon in the background) says the same.
    done = motionfs("mount", str(drive.path), "--store", str(drive.store), timeout=60)
    assert done.returncode == 1 and "fsck" in done.stderr, done.stderr
    assert not is_mounted(drive.path)

    put_index(drive.store, saved)
    drive.start()
    assert (drive.path / "projects" / "film" / "cut.txt").read_text() == "v1\n"


def test_index_of_another_store_is_refused(make_drive: Any) -> None:
    """Another store's index copied in is refused; with its own back, the store mounts."""
    ours, theirs = make_drive(), make_drive()
    (ours.project("ours") / "a.txt").write_text("ours\n")
    theirs.project("theirs")
    ours.unmount()
    theirs.unmount()
    saved = (ours.store / "index.sqlite").read_bytes()
    put_index(ours.store, (theirs.store / "index.sqlite").read_bytes())
    refused_mount(ours.path, ours.store, "belongs to another store")

    put_index(ours.store, saved)
    ours.start()
    assert sorted(os.listdir(ours.path / "projects")) == ["ours"]
    assert (ours.path / "projects" / "ours" / "a.txt").read_text() == "ours\n"


def test_store_identity_is_written_and_given_to_older_stores(drive: Drive) -> None:
    """store.json and the index name the same uuid; a store made before identities
    (neither) gets one at its next mount, and remounts keep it."""
    identity = json.loads((drive.store / "store.json").read_text())
    assert identity["format"] == 1
    assert store_uuid(drive.store) == identity["uuid"]
    drive.project("p")
    drive.unmount()

    (drive.store / "store.json").unlink()
    db = sqlite3.connect(drive.store / "index.sqlite")
    with db:
        db.execute("DELETE FROM meta WHERE key='store_uuid'")
    db.close()
    drive.start()
    given = json.loads((drive.store / "store.json").read_text())["uuid"]
    assert given != identity["uuid"]
    assert store_uuid(drive.store) == given
    drive.remount()
    assert json.loads((drive.store / "store.json").read_text())["uuid"] == given
    assert (drive.path / "projects" / "p").is_dir()
