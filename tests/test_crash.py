"""Crash durability: SIGKILL the daemon, mount again, and nothing closed or fsynced is lost.

The durability promise: everything a user wrote and closed, or fsynced, survives a daemon crash.
`drive.kill()` SIGKILLs the daemon and clears the dead mount; `drive.start()` mounts the same
store again. Fds opened before the kill belong to the dead mount: they are only closed, with
errors ignored. Against a native directory (MOTIONFS_TEST_TARGET=native) kill is a no-op, so
these reduce to plain write-and-read checks, which keeps the tests themselves honest.
"""

from __future__ import annotations

import os
import random
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import close_quietly, sha256_bytes

if TYPE_CHECKING:
    from conftest import Drive

KIB = 1024
MIB = 1024 * KIB


def write_in_chunks(fd: int, data: bytes, rng: random.Random) -> None:
    """Write all of `data` in chunks of random size, as a copying tool would."""
    done = 0
    while done < len(data):
        done += os.write(fd, data[done : done + rng.randint(1, 256 * KIB)])


def write_file(path: Path, data: bytes, rng: random.Random) -> None:
    """Create `path` with `data` and close it; raises if any step fails, close included."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_in_chunks(fd, data, rng)
    except OSError:
        close_quietly(fd)
        raise
    os.close(fd)


def push_to_daemon(fd: int) -> None:
    """Make sure unsynced writes reach the daemon before a kill: with a writeback cache the
    kernel could still hold them, and a test of what the daemon does with them would pass
    vacuously. FADV_DONTNEED starts writeback without asking for durability (unlike fsync)."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    time.sleep(0.5)


def assert_content(path: Path, digest: str, what: str) -> None:
    assert path.is_file(), f"{what}: {path.name} is missing after the crash"
    assert sha256_bytes(path.read_bytes()) == digest, f"{what}: {path.name} changed by the crash"


@dataclass(frozen=True)
class Written:
    """A file the workload finished: closed, or fsynced and left open."""

    name: str
    how: str
    size: int
    digest: str


def test_closed_and_fsynced_files_survive_kill(drive: Drive, project: Path) -> None:
    """Files closed, or fsynced and still open, survive a SIGKILL during a half-written file."""
    rng = random.Random(20240601)
    sizes = [0, 1, 4095, 4096, 65537, 2 * MIB] + [rng.randint(0, 2 * MIB) for _ in range(10)]
    written: list[Written] = []
    open_fds: list[int] = []
    for i, size in enumerate(sizes):
        name = f"clip{i:02d}.bin"
        data = rng.randbytes(size)
        fd = os.open(project / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        write_in_chunks(fd, data, rng)
        if i % 2:
            os.fsync(fd)
            open_fds.append(fd)
            how = "fsynced, left open"
        else:
            os.close(fd)
            how = "closed"
        written.append(Written(name, how, size, sha256_bytes(data)))

    half = "half-written.bin"
    fd = os.open(project / half, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    open_fds.append(fd)
    write_in_chunks(fd, rng.randbytes(600 * KIB), rng)  # of a 1 MiB file, say
    push_to_daemon(fd)
    drive.kill()
    close_quietly(*open_fds)
    drive.start()

    for w in written:
        assert_content(project / w.name, w.digest, f"{w.how}, {w.size} bytes")
    # Whatever became of the half-written file, it must not have disturbed anything else.
    extra = set(os.listdir(project)) - {w.name for w in written}
    assert extra <= {half}, f"unexpected entries after the crash: {sorted(extra)}"
    after = rng.randbytes(300 * KIB)
    (project / "after-restart.bin").write_bytes(after)
    assert (project / "after-restart.bin").read_bytes() == after


def test_interrupted_overwrite_keeps_previous_version(drive: Drive, project: Path) -> None:
    """A rewrite in progress at the crash never replaces the last complete version."""
    if drive.native:
        pytest.skip("needs a daemon to kill: a native directory keeps the partial overwrite")
    rng = random.Random(7)
    path = project / "render.mp4"
    version1 = rng.randbytes(MIB + 123)
    path.write_bytes(version1)

    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, rng.randbytes(256 * KIB), 0)  # overwrite the start
        os.pwrite(fd, rng.randbytes(4 * KIB), len(version1) + 8 * KIB)  # and grow it
        push_to_daemon(fd)
        drive.kill()
    finally:
        close_quietly(fd)
    drive.start()

    assert path.stat().st_size == len(version1), "the half-written rewrite changed the size"
    assert path.read_bytes() == version1, "the half-written rewrite replaced version 1"


def test_kill_during_concurrent_writers(drive: Drive, project: Path) -> None:
    """Kill at a random moment while two threads write files: every file closed before survives."""
    seed = random.randrange(2**32)  # file contents and kill delays; thread timing varies anyway
    print(f"seed {seed}")
    rng = random.Random(seed)
    completed: dict[str, str] = {}  # name -> sha256, over all rounds
    for round_no in range(3):
        kill_during_writers(drive, project, round_no, rng, completed)
        drive.start()
        for name, digest in sorted(completed.items()):
            assert_content(project / name, digest, f"round {round_no}, seed {seed}")
    assert len(completed) >= 3 * 2


def kill_during_writers(
    drive: Drive, project: Path, round_no: int, rng: random.Random, completed: dict[str, str]
) -> None:
    """One round: two writer threads and a killer thread, which kills once each writer has
    finished a file, after a random delay. Completed files are added to `completed`."""
    lock = threading.Lock()
    killing = threading.Event()
    done_this_round = [0, 0]
    errors: list[str] = []

    def writer(tid: int, wrng: random.Random) -> None:
        i = 0
        while not killing.is_set():
            name = f"r{round_no}-t{tid}-{i:03d}.bin"
            i += 1
            data = wrng.randbytes(
                wrng.choice([0, wrng.randint(1, 4 * KIB), wrng.randint(1, 512 * KIB)])
            )
            try:
                write_file(project / name, data, wrng)
            except OSError as exc:
                if not killing.is_set():
                    errors.append(f"{name}: {exc!r} before the kill")
                return
            with lock:
                if not killing.is_set():  # close() returned before the kill started
                    completed[name] = sha256_bytes(data)
                    done_this_round[tid] += 1

    def killer(delay: float) -> None:
        try:
            deadline = time.monotonic() + 60
            while min(done_this_round) < 1 and time.monotonic() < deadline and not errors:
                time.sleep(0.005)
            time.sleep(delay)
            with lock:
                killing.set()
            drive.kill()
        except Exception as exc:
            errors.append(f"kill failed: {exc!r}")
            killing.set()

    threads = [
        threading.Thread(target=writer, args=(tid, random.Random(rng.randrange(2**32))))
        for tid in (0, 1)
    ]
    threads.append(threading.Thread(target=killer, args=(rng.uniform(0, 0.3),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer or the killer hung after the kill"
    assert not errors, errors
    assert min(done_this_round) >= 1, "a writer finished no file before the kill"


def test_metadata_changes_survive_kill(drive: Drive, project: Path) -> None:
    """mkdir, symlink, rename, chmod, setxattr, utime, unlink and rmdir survive a SIGKILL."""
    scenes = project / "scenes" / "intro"
    scenes.mkdir(parents=True)
    (scenes / "Title.tsx").write_bytes(b"export const Title = () => null;\n")
    (project / "draft.txt").write_bytes(b"draft")
    (project / "old.txt").write_bytes(b"old")
    (project / "new.txt").write_bytes(b"new")
    (project / "tmpdir").mkdir()
    (project / "tmpdir" / "inner.txt").write_bytes(b"inner")
    (project / "gone.txt").write_bytes(b"gone")
    (project / "empty-gone").mkdir()
    (project / "render.sh").write_bytes(b"#!/bin/sh\n")

    os.symlink("scenes/intro/Title.tsx", project / "title-link")
    os.symlink("does/not/exist", project / "dangling-link")
    os.rename(project / "draft.txt", project / "final.txt")
    os.rename(project / "new.txt", project / "old.txt")  # over an existing file
    os.rename(project / "tmpdir", project / "scenes" / "moved")  # a directory, with contents
    os.chmod(project / "final.txt", 0o600)
    os.chmod(project / "render.sh", 0o755)
    os.chmod(project / "scenes", 0o750)
    os.setxattr(project / "final.txt", "user.note", b"approved\x00by\xffeditor")
    os.setxattr(scenes, "user.note", b"dir note")
    os.unlink(project / "gone.txt")
    os.rmdir(project / "empty-gone")
    mtime_ns = 1_500_000_000_123_456_789
    os.utime(project / "final.txt", ns=(1_600_000_000_000_000_001, mtime_ns))

    drive.kill()
    drive.start()

    assert (project / "scenes" / "intro" / "Title.tsx").read_bytes().startswith(b"export")
    assert os.readlink(project / "title-link") == "scenes/intro/Title.tsx"
    assert (project / "title-link").read_bytes() == (scenes / "Title.tsx").read_bytes()
    assert os.readlink(project / "dangling-link") == "does/not/exist"
    assert not (project / "draft.txt").exists()
    assert not (project / "new.txt").exists()
    assert (project / "old.txt").read_bytes() == b"new"
    assert not (project / "tmpdir").exists()
    assert (project / "scenes" / "moved" / "inner.txt").read_bytes() == b"inner"
    assert not (project / "gone.txt").exists()
    assert not (project / "empty-gone").exists()

    final = os.stat(project / "final.txt")
    assert final.st_mtime_ns == mtime_ns
    assert stat.S_IMODE(final.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(project / "render.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(project / "scenes").st_mode) == 0o750
    assert stat.S_ISDIR(os.stat(project / "scenes").st_mode)
    assert os.getxattr(project / "final.txt", "user.note") == b"approved\x00by\xffeditor"
    assert os.getxattr(scenes, "user.note") == b"dir note"
    assert (project / "final.txt").read_bytes() == b"draft"
    assert sorted(os.listdir(project / "scenes")) == ["intro", "moved"]
    assert sorted(os.listdir(project)) == sorted(
        ["dangling-link", "final.txt", "old.txt", "render.sh", "scenes", "title-link"]
    )
