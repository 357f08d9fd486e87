"""Bounded memory and faults at the edges: big files, a store that goes away."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import NATIVE, Drive
from helpers import sha256_file, write_pattern

pytestmark = pytest.mark.skipif(NATIVE, reason="measures the motionfs daemon")

MiB = 1 << 20


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_large_file_streams_through_with_bounded_daemon_memory(drive: Drive) -> None:
    """Bounded memory: 768 MiB in, uploaded, evicted, fetched back; the daemon's RSS stays small."""
    project = drive.project("big")
    f = project / "render.mov"
    expected = write_pattern(f, 768 * MiB)
    drive.remount()
    # Drop the local copy so the read has to stream it back from the store.
    shutil.rmtree(drive.store / "cache")
    (drive.store / "cache").mkdir()
    drive.remount()
    assert drive.proc is not None
    assert sha256_file(f) == expected
    peak = peak_rss_mib(drive.proc.pid)
    assert peak < 250, f"daemon peak RSS {peak:.0f} MiB while streaming 768 MiB"


def test_store_that_vanished_gives_eio_not_enoent(drive: Drive) -> None:
    """Honest errors: bytes gone from the store make reads fail with EIO, not ENOENT."""
    project = drive.project("p")
    (project / "f").write_bytes(b"x" * 1000)
    drive.remount()
    shutil.rmtree(drive.store / "cache")
    (drive.store / "cache").mkdir()
    shutil.rmtree(drive.store / "data")
    drive.remount()
    assert os.path.exists(project / "f")  # metadata is local
    with pytest.raises(OSError) as e:
        (project / "f").read_bytes()
    assert e.value.errno == errno.EIO
    assert "missing from the store" in drive.log or "cannot open namespace" in drive.log


@pytest.mark.skipif(os.geteuid() != 0, reason="the mount's sysfs read-ahead is root's to set")
def test_the_mount_reads_ahead_a_whole_request(drive: Drive) -> None:
    """Cold sequential reads come in 1 MiB requests, not the kernel's 128 KiB default."""
    from motionfs.daemon import READ_AHEAD_KB

    dev = os.stat(drive.path).st_dev
    setting = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    for _ in range(100):  # set by the daemon right after the kernel's INIT
        if int(setting.read_text()) == READ_AHEAD_KB:
            break
        time.sleep(0.05)
    assert int(setting.read_text()) == READ_AHEAD_KB
