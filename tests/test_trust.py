"""Trust: the store and the index never silently diverge, and `motionfs fsck` proves it.

Each case goes through the kernel: a kill -9 in the middle of a checkpoint, a full
disk under the store, a path deeper than PATH_MAX, store files damaged behind the
drive's back, a lost index. fsck runs as users run it, on the unmounted store.
"""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers import sha256_bytes, sha256_file

if TYPE_CHECKING:
    from conftest import Drive

pytestmark = pytest.mark.mount

KIB = 1024
MIB = 1024 * KIB


def fsck(drive: Drive, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `motionfs fsck --json` on the drive's store; (exit status, report)."""
    out = subprocess.run(
        [sys.executable, "-m", "motionfs", "fsck", *drive.store_args(), "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        report = {"raw": out.stdout, "stderr": out.stderr}
    return out.returncode, report


def problems(report: dict[str, Any]) -> list[str]:
    return [f"{f['kind']}: {f['what']}: {f['problem']}" for f in report.get("findings", [])]


def store_file(drive: Drive, rel: str) -> Path:
    """The host file of a project file on the local store (the only namespace folder
    holding `rel`)."""
    found = [p for p in (drive.store / "data" / "ns").glob(f"*/{rel}") if p.is_file()]
    assert len(found) == 1, f"{rel} found {len(found)} times in the store"
    return found[0]


def replace_store_file(drive: Drive, host: Path, content: bytes) -> None:
    """Put a new file with `content` at the store file `host`, and drop the
    cache's hard link of the old one (other links, a checkpoint's, stay)."""
    old = os.stat(host)
    for cached in (drive.store / "cache").iterdir():
        if os.stat(cached).st_ino == old.st_ino:
            cached.unlink()
    host.unlink()
    host.write_bytes(content)


# -- crash during a checkpoint ------------------------------------------------------


@pytest.mark.local_store
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_during_checkpoint_never_shows_a_broken_one(make_drive: Any, seed: int) -> None:
    kill_during_checkpoint(make_drive, seed, files=400)


def kill_during_checkpoint(make_drive: Any, seed: int, files: int) -> None:
    """kill -9 at a seeded moment of `mkdir .snapshots/c1`: afterwards c1 is either
    absent or complete, and restoring it gives every file back byte for byte
    (test_s3 runs it on the s3 store)."""
    rng = random.Random(seed)
    drive = make_drive()
    project = drive.project("p")
    contents = {f"f{i:04d}.bin": rng.randbytes(32 * KIB) for i in range(files)}
    for name, data in contents.items():
        (project / name).write_bytes(data)
    drive.remount()  # everything uploaded: the checkpoint's work is copying objects

    done = subprocess.Popen(
        ["mkdir", str(project / ".snapshots" / "c1")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(0.05, 1.2))
    drive.kill()
    done.wait(timeout=60)
    drive.start()

    snaps = project / ".snapshots"
    # A checkpoint whose transaction committed appears once the store queue has
    # replayed its objects; one that did not commit never appears.
    deadline = time.monotonic() + 60
    while "c1" not in os.listdir(snaps) and time.monotonic() < deadline:
        try:
            os.mkdir(snaps / "c1")  # EEXIST while an incomplete c1 is being completed
        except FileExistsError:
            time.sleep(0.5)
    if "c1" in os.listdir(snaps):
        for name, data in contents.items():
            assert (snaps / "c1" / name).read_bytes() == data, name
        for name in contents:
            (project / name).write_bytes(b"changed")
        restore = subprocess.run(
            [sys.executable, "-m", "motionfs", "checkpoint", "restore", str(project), "c1"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert restore.returncode == 0, restore.stderr
        for name, data in contents.items():
            assert (project / name).read_bytes() == data, name
    else:
        pytest.fail("c1 neither completed nor could be made again")
    drive.unmount()
    code, report = fsck(drive)
    assert code == 0, problems(report)


# -- a full disk ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs for the store, unmounted afterwards."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.local_store
def test_full_disk_is_enospc_and_the_drive_recovers(make_drive: Any, small_disk: Path) -> None:
    drive = make_drive(store=small_disk / "store")
    project = drive.project("p")
    keep = random.Random(5).randbytes(4 * MIB)
    (project / "keep.bin").write_bytes(keep)

    chunk = random.Random(6).randbytes(MIB)
    written = 0
    fd = os.open(project / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    failure: OSError | None = None
    try:
        for _ in range(100):
            written += os.write(fd, chunk)
    except OSError as e:
        failure = e
    try:
        os.fsync(fd)
    except OSError as e:
        failure = failure or e
    finally:
        try:
            os.close(fd)
        except OSError as e:
            failure = failure or e
    assert failure is not None and failure.errno == errno.ENOSPC, failure
    assert written >= 16 * MIB, f"only {written} bytes fitted on a 64 MiB disk"

    # The daemon is alive, what was written before the disk filled is kept.
    assert drive.proc is not None and drive.proc.poll() is None, drive.log
    size = (project / "big.bin").stat().st_size
    assert size >= written - MIB
    with open(project / "big.bin", "rb") as f:
        assert f.read(MIB) == chunk
    assert (project / "keep.bin").read_bytes() == keep

    # Free space through the mount: writes work again, no remount.
    os.unlink(project / "big.bin")
    data = random.Random(7).randbytes(8 * MIB)
    deadline = time.monotonic() + 30
    while True:
        try:
            (project / "after.bin").write_bytes(data)
            break
        except OSError as e:
            if e.errno != errno.ENOSPC or time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the deleted file's store copy goes with the queue
    drive.remount()
    assert (project / "after.bin").read_bytes() == data
    assert (project / "keep.bin").read_bytes() == keep


# -- a path deeper than PATH_MAX --------------------------------------------------------


@pytest.mark.local_store
def test_path_deeper_than_path_max_is_stored(drive: Drive) -> None:
    project = drive.project("deep")
    os.chdir(project)  # the whole path is over PATH_MAX: walk there relatively
    try:
        for i in range(25):
            name = f"{i:02d}" + "d" * 198
            os.mkdir(name)
            os.chdir(name)
        data = b"deep bytes\n" * 1000
        fd = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)  # fails with EIO if the store cannot take it
        os.close(fd)
    finally:
        os.chdir("/")
    started = time.monotonic()
    drive.unmount(timeout=60)
    assert time.monotonic() - started < 60
    assert "failed for good" not in drive.log
    drive.start()
    os.chdir(project)
    try:
        for i in range(25):
            os.chdir(f"{i:02d}" + "d" * 198)
        assert Path("leaf.txt").read_bytes() == data
    finally:
        os.chdir("/")
    drive.unmount()
    code, report = fsck(drive, "--full")
    assert code == 0, problems(report)


# -- damaged store files ------------------------------------------------------------------


@pytest.mark.local_store
def test_truncated_store_file_is_eio_and_fsck_repairs_from_a_checkpoint(drive: Drive) -> None:
    project = drive.project("p")
    data = random.Random(9).randbytes(32 * KIB)
    (project / "clip.bin").write_bytes(data)
    os.mkdir(project / ".snapshots" / "c1")
    drive.unmount()
    host = store_file(drive, "clip.bin")
    # A new file at the name (a tool that rewrote it), and the cache's copy gone:
    # the checkpoint's object, a hard link of the old file, keeps the content.
    replace_store_file(drive, host, data[:1000])

    drive.start()
    with pytest.raises(OSError) as err:
        (project / "clip.bin").read_bytes()
    assert err.value.errno == errno.EIO
    drive.unmount()

    code, report = fsck(drive)
    assert code == 4, problems(report)
    assert any("1000 bytes" in p for p in problems(report)), problems(report)
    code, report = fsck(drive, "--repair")
    assert code == 1, problems(report)
    code, report = fsck(drive)
    assert code == 0, problems(report)
    drive.start()
    assert (project / "clip.bin").read_bytes() == data


@pytest.mark.local_store
def test_fsck_full_finds_overwritten_bytes(drive: Drive) -> None:
    project = drive.project("p")
    data = random.Random(10).randbytes(64 * KIB)
    (project / "a.bin").write_bytes(data)
    os.mkdir(project / ".snapshots" / "c1")  # hashes the file
    drive.unmount()
    host = store_file(drive, "a.bin")
    replace_store_file(drive, host, data[:100] + b"XXXX" + data[104:])
    code, report = fsck(drive)
    assert code == 0, problems(report)  # same size: only --full can tell
    code, report = fsck(drive, "--full")
    assert code == 4 and any("sha256" in p for p in problems(report)), problems(report)
    code, report = fsck(drive, "--full", "--repair")
    assert code == 1, problems(report)
    drive.start()
    assert sha256_file(project / "a.bin") == sha256_bytes(data)


@pytest.mark.local_store
def test_a_checkpoint_shares_content_and_fsck_says_when_both_are_damaged(drive: Drive) -> None:
    """On the local store a checkpoint's object is a hard link of the file it
    was taken from (store files are never written in place), so a checkpoint
    costs no copy; bytes damaged in place are then damaged in both, and fsck
    says so rather than "repairing" one from the other."""
    project = drive.project("p")
    data = random.Random(11).randbytes(64 * KIB)
    (project / "a.bin").write_bytes(data)
    (project / "b.bin").write_bytes(data[:1000])
    os.mkdir(project / ".snapshots" / "c1")
    (project / "b.bin").write_bytes(b"new content")  # a new store file; c1 keeps the old
    assert (project / ".snapshots" / "c1" / "b.bin").read_bytes() == data[:1000]
    drive.unmount()
    host = store_file(drive, "a.bin")
    objects = list((host.parent / ".chuk-motion" / "objects").glob(f"*/{sha256_bytes(data)}"))
    assert len(objects) == 1
    assert os.stat(objects[0]).st_ino == os.stat(host).st_ino

    with open(host, "r+b") as f:  # damage in place: every name of the file
        f.seek(100)
        f.write(b"XXXX")
    code, report = fsck(drive, "--full", "--repair")
    assert code == 4, problems(report)
    found = problems(report)
    assert any("a.bin" in p and "no good copy anywhere" in p for p in found), found
    assert any("no other copy" in p for p in found), found
    assert not any("copied again" in p or "copied back" in p for p in found), found


# -- orphans, temp files and a lost index ------------------------------------------------


@pytest.mark.local_store
def test_fsck_removes_temp_files_and_adopts_unknown_files(drive: Drive) -> None:
    project = drive.project("p")
    (project / "a.txt").write_bytes(b"a")
    drive.unmount()
    host_dir = store_file(drive, "a.txt").parent
    (host_dir / ".tmp_deadbeef_a.txt").write_bytes(b"partial")
    (host_dir / "stray.txt").write_bytes(b"nobody knows me")
    code, report = fsck(drive)
    assert code == 4
    kinds = {f["kind"] for f in report["findings"]}
    assert {"temp", "orphan"} <= kinds, problems(report)
    code, report = fsck(drive, "--repair")
    assert code == 1, problems(report)
    assert not (host_dir / ".tmp_deadbeef_a.txt").exists()
    drive.start()
    assert (project / "lost+found" / "stray.txt").read_bytes() == b"nobody knows me"
    drive.unmount()
    code, report = fsck(drive)
    assert code == 0, problems(report)


@pytest.mark.local_store
def test_zeroed_index_is_refused_and_fsck_rebuilds_it(make_drive: Any, tmp_path: Path) -> None:
    drive = make_drive()
    project = drive.project("film")
    (project / "src").mkdir()
    (project / "src" / "scene.tsx").write_bytes(b"export const Scene = 1;\n")
    (drive.path / "assets" / "logo.png").write_bytes(b"png bytes")
    (drive.path / "renders" / "film" / "out.mp4").write_bytes(b"mp4 bytes")
    drive.unmount()
    index = drive.store / "index.sqlite"
    for side in ("-wal", "-shm"):
        Path(str(index) + side).unlink(missing_ok=True)
    index.write_bytes(b"")

    with pytest.raises(RuntimeError) as err:
        drive.start()
    assert "fsck" in str(err.value)
    code, report = fsck(drive)
    assert code == 4, problems(report)
    code, report = fsck(drive, "--repair")
    assert code == 1, problems(report)
    drive.start()
    assert (project / "src" / "scene.tsx").read_bytes() == b"export const Scene = 1;\n"
    assert (drive.path / "assets" / "logo.png").read_bytes() == b"png bytes"
    assert (drive.path / "renders" / "film" / "out.mp4").read_bytes() == b"mp4 bytes"


def test_fsck_on_a_clean_store_and_refused_while_mounted(drive: Drive) -> None:
    project = drive.project("p")
    (project / "a.txt").write_bytes(b"hello")
    (project / "line\nbreak.txt").write_bytes(b"a name s3 keys hold as a digest")
    (project / ("long" * 62)).write_bytes(b"a name the provider holds as a digest")
    os.mkdir(project / ".snapshots" / "c1")
    (drive.path / "assets" / "pic.png").write_bytes(b"pic")
    refused = subprocess.run(
        [sys.executable, "-m", "motionfs", "fsck", *drive.store_args()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 8 and "mounted" in refused.stderr, refused.stderr
    code, report = fsck(drive, "--dry-run")
    assert code in (0, 4), report
    drive.unmount()
    code, report = fsck(drive, "--full")
    assert code == 0, problems(report)
    assert report["checked"].get("files", 0) >= 2


@pytest.mark.local_store
def test_fsck_completes_a_checkpoint_left_incomplete(drive: Drive) -> None:
    """A checkpoint left invisible (its READY entry met a parked object) is
    checked again by fsck --repair and appears once its objects are stored."""
    project = drive.project("p")
    (project / "a.bin").write_bytes(b"a" * 5000)
    os.mkdir(project / ".snapshots" / "c1")
    drive.unmount()
    db = sqlite3.connect(drive.store / "index.sqlite")
    with db:
        db.execute("UPDATE checkpoints SET complete=0 WHERE name='c1'")
    db.close()
    code, report = fsck(drive)
    assert code == 4 and any("incomplete" in p for p in problems(report)), problems(report)
    code, report = fsck(drive, "--repair")
    assert code == 1, problems(report)
    drive.start()
    assert (project / ".snapshots" / "c1" / "a.bin").read_bytes() == b"a" * 5000
