"""The s3 store: key layout, ranged reads, outages, crashes with uploads pending, lazy unmount.

Every test mounts a real drive on chuk-virtual-fs's s3 provider against a real
moto server (tests/s3server.py). The outage tests get a server of their own
and cut it off with `stop()` (its relay refuses connections; the objects stay
in moto) and bring it back with `start()` on the same port.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import NATIVE, Drive
from helpers import motionfs, pattern, sha256_file, write_pattern
from s3server import S3Server
from test_trust import kill_during_checkpoint

pytestmark = pytest.mark.skipif(NATIVE, reason="the s3 store of the motionfs daemon")

MiB = 1 << 20
LIBRARY_FILES = (".workspace/", ".chuk-motion/", "_meta.json")


def bucket_files(drive: Drive) -> dict[str, bytes]:
    """{path inside its namespace: bytes} of every user file the bucket holds for `drive`."""
    assert drive.s3 is not None
    base = drive.s3_prefix + "ns/"
    out: dict[str, bytes] = {}
    for key in drive.s3.objects(base):
        _token, _, rest = key[len(base) :].partition("/")
        if not rest or rest.endswith("/") or rest.startswith(LIBRARY_FILES):
            continue
        out[rest] = drive.s3.get(key)
    return out


def drop_cache(drive: Drive) -> None:
    """Forget every local copy (the drive must be unmounted)."""
    shutil.rmtree(drive.store / "cache")
    (drive.store / "cache").mkdir()


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A moto server for this test alone (outage tests stop and start it)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def own_drive(tmp_path: Path, own_s3: S3Server) -> Iterator[Callable[..., Drive]]:
    """Factory: own_drive(*args) -> a started drive on `own_s3` (one store per test)."""
    drives: list[Drive] = []
    remote = own_s3.store_url(f"t-{uuid.uuid4().hex[:8]}")

    def make(*args: str) -> Drive:
        mountpoint = tmp_path / f"mnt{len(drives)}"
        mountpoint.mkdir()
        drive = Drive(mountpoint, tmp_path / "index", list(args), s3=own_s3, remote=remote)
        drives.append(drive)
        drive.start()
        return drive

    try:
        yield make
    finally:
        own_s3.start()  # so a failed test's daemon can drain and exit
        for drive in drives:
            drive.teardown()


# --------------------------------------------------------------------------- layout


def test_bytes_live_in_the_bucket_under_a_prefix_per_namespace(
    make_drive: Callable[..., Drive],
) -> None:
    drive = make_drive()
    one, two = drive.project("one"), drive.project("two")
    (one / "src").mkdir()
    (one / "src" / "Root.tsx").write_bytes(b"export const Root = 1;\n")
    (two / "src").mkdir()
    (two / "src" / "Root.tsx").write_bytes(b"export const Root = 2;\n")
    (one / "empty").write_bytes(b"")  # the provider's own stream_write cannot store this
    (drive.path / "assets" / "logo.png").write_bytes(b"\x89PNG fake")
    drive.unmount()
    assert drive.s3 is not None
    keys = drive.s3.objects(drive.s3_prefix)
    assert drive.s3_prefix + "store.json" in keys  # the store's identity
    namespaced = [k for k in keys if k != drive.s3_prefix + "store.json"]
    assert namespaced and all(k.startswith(drive.s3_prefix + "ns/") for k in namespaced)
    roots = [k for k in keys if k.endswith("/src/Root.tsx")]
    assert len(roots) == 2 and len({k.split("/")[-3] for k in roots}) == 2, roots
    assert sorted(drive.s3.get(k) for k in roots) == [
        b"export const Root = 1;\n",
        b"export const Root = 2;\n",
    ]
    assert [k for k in keys if k.endswith("/empty")] and b"" in bucket_files(drive).values()
    assert b"\x89PNG fake" in [drive.s3.get(k) for k in keys if k.endswith("/_data")]
    # The index keeps where the bytes are, never credentials.
    index = (drive.store / "index.sqlite").read_bytes()
    assert b"motionfs-test-secret" not in index and b"aws_secret" not in index
    drive.start()
    assert (drive.path / "projects/two/src/Root.tsx").read_bytes() == b"export const Root = 2;\n"


def test_store_address_is_checked(make_drive: Callable[..., Drive], tmp_path: Path) -> None:
    drive = make_drive()
    drive.unmount()
    other = tmp_path / "other"
    other.mkdir()
    assert drive.s3 is not None
    done = motionfs(
        "mount", other, "--store", drive.s3.store_url("elsewhere"), "--index", drive.store,
        "--s3-endpoint", drive.s3.endpoint,
    )  # fmt: skip
    assert done.returncode == 1
    assert "belongs to" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- big files


def test_ranged_reads_fetch_only_what_is_read(make_drive: Callable[..., Drive]) -> None:
    """A 96 MiB render: reading 64 KiB in its middle fetches a few MiB, not the file; a full
    read afterwards returns the exact bytes; the daemon's memory stays small throughout."""
    drive = make_drive()
    renders = drive.path / "renders" / "film"
    drive.project("film")
    size = 96 * MiB
    expected = write_pattern(renders / "cut.mp4", size)
    drive.unmount()
    drop_cache(drive)
    drive.start()

    f = renders / "cut.mp4"
    assert f.stat().st_size == size  # metadata is local
    with open(f, "rb") as fh:
        fh.seek(50 * MiB + 12345)
        got = fh.read(64 * 1024)
    want = pattern(MiB, 50)
    assert got == (want + pattern(MiB, 51))[12345 : 12345 + 64 * 1024]
    parts = list((drive.store / "cache").glob("*.part"))
    assert len(parts) == 1, list((drive.store / "cache").iterdir())
    allocated = parts[0].stat().st_blocks * 512
    assert allocated <= 8 * MiB, f"{allocated} bytes fetched for a 64 KiB read"

    assert sha256_file(f) == expected
    assert not list((drive.store / "cache").glob("*.part"))  # complete: ordinary cache now
    assert drive.proc is not None
    with open(f"/proc/{drive.proc.pid}/status") as st:
        peak = next(int(line.split()[1]) for line in st if line.startswith("VmHWM:")) / 1024
    assert peak < 250, f"daemon peak RSS {peak:.0f} MiB"


def test_writes_into_uncached_files(make_drive: Callable[..., Drive]) -> None:
    """Copy-on-write needs the whole base: a write into an uncached file (partly fetched or
    not at all, empty or not) fetches the rest first and keeps every other byte."""
    drive = make_drive()
    project = drive.project("p")
    data = pattern(3 * MiB + 5, 1)
    (project / "f").write_bytes(data)
    (project / "g").write_bytes(data)
    (project / "empty").write_bytes(b"")
    drive.unmount()
    drop_cache(drive)
    drive.start()
    with open(project / "f", "r+b") as fh:
        fh.seek(2 * MiB)
        assert fh.read(10) == data[2 * MiB : 2 * MiB + 10]  # one block fetched
        fh.seek(MiB)
        fh.write(b"0123456789")
    with open(project / "g", "ab") as fh:
        fh.write(b"tail")
    with open(project / "empty", "ab") as fh:
        fh.write(b"now")
    want_f = data[:MiB] + b"0123456789" + data[MiB + 10 :]
    assert (project / "f").read_bytes() == want_f
    assert (project / "g").read_bytes() == data + b"tail"
    assert (project / "empty").read_bytes() == b"now"
    drive.unmount()
    assert bucket_files(drive) == {"f": want_f, "g": data + b"tail", "empty": b"now"}


# --------------------------------------------------------------------------- outages


def test_outage_fsync_fails_then_everything_arrives(
    own_drive: Callable[..., Drive], own_s3: S3Server
) -> None:
    """The endpoint goes away mid-workload: fsync and uncached reads fail with EIO (never
    ENOENT) within --io-timeout, cached data and metadata stay usable, closed files queue;
    when it is back the queue drains and the bucket holds every file's exact bytes."""
    drive = own_drive("--io-timeout", "3")
    project = drive.project("p")
    files: dict[str, bytes] = {}
    for i in range(5):
        files[f"before{i}"] = pattern(300_000 + i, i)
        (project / f"before{i}").write_bytes(files[f"before{i}"])
    (project / "cold").write_bytes(b"cold bytes" * 1000)
    drive.unmount()
    drop_cache(drive)
    drive.start()
    (project / "warm").write_bytes(b"warm bytes")
    files["warm"] = b"warm bytes"
    files["cold"] = b"cold bytes" * 1000

    own_s3.stop()
    for i in range(5):
        files[f"during{i}"] = pattern(2 * MiB + i, 100 + i)
        (project / f"during{i}").write_bytes(files[f"during{i}"])
    fd = os.open(project / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    files["synced"] = b"must not be lost"
    os.write(fd, files["synced"])
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.EIO
    os.close(fd)
    with pytest.raises(OSError) as e:
        (project / "cold").read_bytes()
    assert e.value.errno == errno.EIO
    assert (project / "warm").read_bytes() == b"warm bytes"
    assert (project / "during3").read_bytes() == files["during3"]
    assert sorted(os.listdir(project)) == sorted(files)
    status = motionfs("status", "--json")
    row = next(r for r in json.loads(status.stdout) if r["mountpoint"] == str(drive.path))
    assert row["pending"] > 0 and row["pending_bytes"] >= 5 * 2 * MiB
    assert row["store"] == drive.remote

    own_s3.start()
    fd = os.open(project / "synced", os.O_RDONLY)
    try:
        for _ in range(20):  # the queue retries with backoff; fsync waits up to 3 s each
            try:
                os.fsync(fd)
                break
            except OSError as err:
                assert err.errno == errno.EIO
        else:
            pytest.fail("fsync kept failing after the endpoint came back")
    finally:
        os.close(fd)
    assert (project / "cold").read_bytes() == files["cold"]
    drive.unmount()
    assert bucket_files(drive) == {f"{name}": data for name, data in files.items()}
    drop_cache(drive)
    drive.start()
    for name, data in files.items():
        assert (project / name).read_bytes() == data, name


@pytest.mark.mount  # runs `motionfs mount`: needs /dev/fuse
def test_mount_refuses_an_unreachable_endpoint(own_s3: S3Server, tmp_path: Path) -> None:
    own_s3.stop()
    mnt = tmp_path / "mnt"
    done = motionfs(
        "mount", mnt, "--store", own_s3.store_url("x"), "--index", tmp_path / "index",
        "--s3-endpoint", own_s3.endpoint, "--io-timeout", "2",
    )  # fmt: skip
    assert done.returncode == 1, done
    assert "cannot reach bucket" in done.stderr


def test_kill_with_uploads_pending_resumes_on_the_next_mount(
    own_drive: Callable[..., Drive], own_s3: S3Server
) -> None:
    drive = own_drive()
    project = drive.project("p")
    (project / "sub").mkdir()
    own_s3.stop()  # nothing can be uploaded: every closed file is pending at the kill
    files = {f"sub/f{i}": pattern(100_000 * i + 1, i) for i in range(8)}
    files["big.mov"] = pattern(20 * MiB + 7, 99)
    for name, data in files.items():
        (project / name).write_bytes(data)
    os.rename(project / "sub/f0", project / "sub/renamed")
    files["sub/renamed"] = files.pop("sub/f0")
    rows = json.loads(motionfs("status", "--json").stdout)
    assert next(r for r in rows if r["mountpoint"] == str(drive.path))["pending"] > 0
    drive.kill()
    own_s3.start()
    drive.start()
    drive.unmount()  # waits for the resumed queue
    assert bucket_files(drive) == files


def test_lazy_umount_leaves_the_queue_for_the_next_mount(
    own_drive: Callable[..., Drive], own_s3: S3Server
) -> None:
    drive = own_drive()
    project = drive.project("p")
    own_s3.stop()
    files = {f"f{i}": pattern(50_000 + i, i) for i in range(4)}
    for name, data in files.items():
        (project / name).write_bytes(data)
    text = motionfs("status").stdout
    assert f"store:   {drive.remote}" in text and f"index:   {drive.store}" in text
    assert "pending: " in text and "to upload)" in text
    done = motionfs("umount", "--lazy", drive.path)
    assert done.returncode == 0, done.stderr
    assert "left for the next mount" in done.stderr
    assert drive.proc is not None
    drive.proc.wait(timeout=60)
    drive.proc = None
    assert bucket_files(drive) == {}
    own_s3.start()
    drive.start()
    assert {n: (project / n).read_bytes() for n in files} == files
    drive.unmount()
    assert bucket_files(drive) == files


def test_s3_keys_past_the_limit_are_refused_at_create(make_drive: Callable[..., Drive]) -> None:
    """On S3 a path whose key would pass 1,024 bytes is ENAMETOOLONG at the mount
    (a relay refusing such keys, as S3 does, never sees one)."""
    drive = make_drive()
    project = drive.project("p")
    deep = project
    for i in range(4):  # 240-byte names are stored as they are (longer ones as digests)
        deep = deep / (f"{i}" + "k" * 239)
        deep.mkdir()
    with pytest.raises(OSError) as err:
        (deep / ("f" * 40)).mkdir()
    assert err.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as err:
        (deep / ("f" * 40)).write_bytes(b"x")
    assert err.value.errno == errno.ENAMETOOLONG
    (project / "short").mkdir()
    (project / "short" / "inner-folder-name").mkdir()
    with pytest.raises(OSError) as err:  # the name fits, the folder's content would not
        os.rename(project / "short", deep / ("s" * 20))
    assert err.value.errno == errno.ENAMETOOLONG
    (deep / "ok.txt").write_bytes(b"fits")
    drive.remount()
    assert (deep / "ok.txt").read_bytes() == b"fits"


def test_a_new_index_over_a_used_bucket_is_refused_then_rebuilt(
    make_drive: Callable[..., Drive], tmp_path: Path
) -> None:
    """The bucket carries the store's identity: an empty index over a store that
    holds namespaces is refused (never shown empty), and fsck --repair rebuilds it."""
    drive = make_drive()
    project = drive.project("film")
    (project / "scene.tsx").write_bytes(b"export const A = 1;\n")
    (drive.path / "assets" / "logo.png").write_bytes(b"png")
    drive.unmount()

    mnt = tmp_path / "other-mnt"
    mnt.mkdir()
    other = Drive(mnt, tmp_path / "other-index", s3=drive.s3, remote=drive.remote)
    try:
        with pytest.raises(RuntimeError) as err:
            other.start()
        assert "fsck" in str(err.value)
        fsck = subprocess.run(
            [sys.executable, "-m", "motionfs", "fsck", *other.store_args(), "--repair"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert fsck.returncode == 1, fsck.stdout + fsck.stderr
        other.start()
        assert (mnt / "projects" / "film" / "scene.tsx").read_bytes() == b"export const A = 1;\n"
        assert (mnt / "assets" / "logo.png").read_bytes() == b"png"
        other.unmount()
        clean = subprocess.run(
            [sys.executable, "-m", "motionfs", "fsck", *other.store_args()],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert clean.returncode == 0, clean.stdout + clean.stderr
    finally:
        other.teardown()


def test_kill_during_a_checkpoint_on_s3(make_drive: Callable[..., Drive]) -> None:
    """The checkpoint crash test of test_trust, once, on the s3 store."""
    kill_during_checkpoint(make_drive, seed=4, files=150)
