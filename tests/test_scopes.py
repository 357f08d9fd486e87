"""Scopes on the mounted drive: SESSION-scope expiry and moves between scopes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import NATIVE

pytestmark = pytest.mark.skipif(NATIVE, reason="motionfs scopes")


def namespace_roots(store: Path) -> set[str]:
    return (
        {p.name for p in (store / "data" / "ns").iterdir()}
        if (store / "data" / "ns").exists()
        else set()
    )


def test_scratch_items_expire_from_mount_and_store(make_drive: Any) -> None:
    """With --scratch-ttl 0.001 (3.6 s) scratch items vanish; USER-scope ones stay."""
    drive = make_drive("--scratch-ttl", "0.001")
    before = namespace_roots(drive.store)
    scratch = drive.path / "scratch"
    (scratch / "projects" / "draft").mkdir()
    (scratch / "projects" / "draft" / "scene.tsx").write_text("x")
    (scratch / "assets" / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    kept = drive.project("kept")
    (kept / "f").write_text("stays")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.listdir(scratch / "projects"):
        time.sleep(0.2)
    assert os.listdir(scratch / "projects") == []
    assert os.listdir(scratch / "assets") == []
    assert (kept / "f").read_text() == "stays"
    subprocess.run([sys.executable, "-m", "motionfs", "umount", str(drive.path)], check=True)
    drive.proc.wait(timeout=60)
    drive.proc = None
    # Only the USER-scope project's namespace remains in the store.
    assert len(namespace_roots(drive.store) - before) == 1
    assert "expired" in drive.log


def test_moves_between_scopes_are_exdev(drive: Any) -> None:
    """mv between scopes copies (EXDEV), as between two disks."""
    mine = drive.project("mine")
    (mine / "f").write_text("x")
    shared = drive.path / "shared" / "projects"
    (shared / "team").mkdir()
    for src, dst in [
        (mine, shared / "mine"),
        (mine / "f", shared / "team" / "f"),
        (drive.path / "renders" / "mine", drive.path / "shared" / "renders" / "mine"),
    ]:
        with pytest.raises(OSError) as e:
            os.rename(src, dst)
        assert e.value.errno == errno.EXDEV
    subprocess.run(["mv", str(mine / "f"), str(shared / "team" / "f")], check=True)
    assert (shared / "team" / "f").read_text() == "x"
    assert not (mine / "f").exists()
