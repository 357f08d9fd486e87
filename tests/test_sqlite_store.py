"""The sqlite:/// store through the kernel and the command line: one file holds
every byte, in the schema chuk-virtual-fs's own sqlite provider reads; it
survives kill -9 and a lost index (fsck rebuilds it); files past SQLite's blob
limit are EFBIG at the write; a store file that cannot be one is refused in
one line. (The POSIX, model, checkpoint and API suites also run `[sqlite]`.)"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from chuk_virtual_fs import AsyncVirtualFileSystem

from conftest import NATIVE
from helpers import MiB, expect_errno, motionfs, pattern, sha256_file, write_file, write_pattern
from motionfs.store.sqlitedb import MAX_FILE_SIZE

pytestmark = [
    pytest.mark.skipif(NATIVE, reason="a motionfs store"),
    pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True),
]


def stored(db: Path) -> dict[str, bytes]:
    """Every file in the store file, by its path there (read-only, beside a daemon)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT path, content FROM file_content").fetchall()
    return {path: bytes(content) for path, content in rows}


def test_the_stock_provider_reads_what_the_drive_wrote(make_drive: Any) -> None:
    """Projects, renders and assets land under /ns/<token>/ in the provider's own
    tables: chuk-virtual-fs's sqlite provider, opened on the file, reads them
    (names with `_` and `%`, which the provider's LIKE would confuse, included)."""
    drive = make_drive()
    project = drive.project("film")
    (project / "src").mkdir()
    write_file(project / "src" / "a_b%c.tsx", b"export const A = 1;\n")
    write_file(project / "src" / "axbyc.tsx", b"other\n")
    video = pattern(3 * MiB + 17, seed=5)
    write_file(drive.path / "renders" / "film" / "cut.mp4", video)
    write_file(drive.path / "assets" / "logo.png", b"\x89PNG" + pattern(999, seed=6))
    drive.unmount()

    async def read() -> tuple[dict[str, list[str]], bytes, bytes, bytes]:
        vfs = AsyncVirtualFileSystem("sqlite", db_path=str(drive.sqlite_db))
        await vfs.initialize()
        try:
            tokens = await vfs.ls("/ns")
            listing = {t: sorted(await vfs.ls(f"/ns/{t}")) for t in tokens}
            (ws,) = [t for t, names in listing.items() if "src" in names]
            source = await vfs.read_file(f"/ns/{ws}/src/a_b%c.tsx")
            blobs = [t for t, names in listing.items() if "_data" in names]
            datas = [await vfs.read_file(f"/ns/{t}/_data") for t in blobs]
            (render,) = [d for d in datas if d is not None and len(d) == len(video)]
            ident = await vfs.read_file("/store.json")
            return listing, source, render, ident
        finally:
            await vfs.close()

    listing, source, render, ident = asyncio.run(read())
    assert len(listing) == 3, listing
    assert source == b"export const A = 1;\n"
    assert hashlib.sha256(render).digest() == hashlib.sha256(video).digest()
    assert json.loads(ident)["uuid"]
    assert (drive.store / "index.sqlite").is_file()
    assert oct(drive.sqlite_db.stat().st_mode & 0o777) == "0o600"


def test_kill9_then_a_lost_index_then_fsck(make_drive: Any) -> None:
    """Closed and fsynced files survive kill -9; with the index gone, fsck
    --repair rebuilds it from the store file and the drive serves the bytes."""
    drive = make_drive()
    project = drive.project("p")
    files = {f"f{i:02d}.bin": pattern(1000 + 4099 * i, seed=i) for i in range(30)}
    for i, (name, data) in enumerate(files.items()):
        write_file(project / name, data, fsync=i % 2 == 0)
    drive.kill()
    drive.start()
    for name, data in files.items():
        assert (drive.path / "projects" / "p" / name).read_bytes() == data, name
    drive.unmount()
    index_args = ("--store", f"sqlite://{drive.sqlite_db}", "--index", str(drive.store))
    done = motionfs("fsck", *index_args, "--full")
    assert done.returncode == 0, done.stdout + done.stderr

    shutil.rmtree(drive.store)
    done = motionfs("fsck", *index_args, "--repair")
    assert done.returncode == 1 and "repaired index" in done.stdout, done.stdout + done.stderr
    drive.start()
    for name, data in files.items():
        assert (drive.path / "projects" / "p" / name).read_bytes() == data, name


def test_files_past_the_blob_limit_are_efbig(drive: Any) -> None:
    """SQLite keeps a file as one blob: a write or a truncate past its limit is
    EFBIG at once (not a failed upload later), and nothing else changes."""
    project = drive.project("big")
    path = project / "huge.mov"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"head")
        expect_errno(errno.EFBIG, os.pwrite, fd, b"x", MAX_FILE_SIZE)
        expect_errno(errno.EFBIG, os.ftruncate, fd, MAX_FILE_SIZE + 1)
        os.pwrite(fd, b"tail", 8 * MiB)
    finally:
        os.close(fd)
    expect_errno(errno.EFBIG, os.truncate, path, MAX_FILE_SIZE + 1)
    want = b"head" + bytes(8 * MiB - 4) + b"tail"
    assert path.read_bytes() == want
    assert "EFBIG" in drive.log or "File too large" in drive.log
    drive.unmount()
    (blob,) = [v for k, v in stored(drive.sqlite_db).items() if k.endswith("/huge.mov")]
    assert blob == want


def test_a_store_file_that_cannot_be_one_is_refused(tmp_path: Path, make_drive: Any) -> None:
    """No file named, a folder, a file that is not SQLite, an index of another
    store file: each refused in one line, nothing touched."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    folder = tmp_path / "folder.db"
    folder.mkdir()
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not a database\n" * 100)
    for address, words in (
        ("sqlite://", "name the store file"),
        (f"sqlite://{folder}", "it is a folder"),
        (f"sqlite://{junk}", "not a SQLite database"),
        (f"sqlite://{tmp_path}/none/x.db", "does not exist"),
    ):
        done = motionfs("mount", mp, "--store", address, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and words in lines[0], done.stderr
    assert junk.read_bytes() == b"not a database\n" * 100
    assert os.listdir(mp) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db", "mnt", "notes.txt"]

    drive = make_drive()
    done = motionfs(
        "mount", mp, "--store", f"sqlite://{drive.sqlite_db}", "--index", tmp_path / "i2"
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "in use" in lines[0], done.stderr
    drive.unmount()
    other = tmp_path / "other.db"
    done = motionfs("mount", mp, "--store", f"sqlite://{other}", "--index", drive.store, timeout=60)
    assert done.returncode == 1 and "belongs to sqlite://" in done.stderr, done.stderr
    assert not other.exists()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def test_a_large_file_moves_through_with_bounded_daemon_memory(drive: Any) -> None:
    """160 MiB in, stored, its folder renamed (the blob moves), fetched back with an
    empty cache: the daemon's memory never holds the file (SQLite would, for a row
    it rewrites whole)."""
    project = drive.project("big")
    (project / "cuts").mkdir()
    expected = write_pattern(project / "cuts" / "render.mov", 160 * MiB, seed=3)
    fd = os.open(project / "cuts" / "render.mov", os.O_RDONLY)
    try:
        os.fsync(fd)  # stored in the file, before the rename moves it
    finally:
        os.close(fd)
    os.rename(project / "cuts", project / "final")
    settled(drive.path)
    assert drive.proc is not None
    peak = peak_rss_mib(drive.proc.pid)
    assert peak < 250, f"daemon peak RSS {peak:.0f} MiB storing and moving 160 MiB"
    drive.unmount()
    shutil.rmtree(drive.store / "cache")
    (drive.store / "cache").mkdir()
    drive.start()
    assert sha256_file(drive.path / "projects" / "big" / "final" / "render.mov") == expected
    assert drive.proc is not None
    peak = peak_rss_mib(drive.proc.pid)
    assert peak < 250, f"daemon peak RSS {peak:.0f} MiB reading 160 MiB back"
    with sqlite3.connect(f"file:{drive.sqlite_db}?mode=ro", uri=True) as conn:
        sizes = dict(conn.execute("SELECT path, length(content) FROM file_content"))
    assert [z for k, z in sizes.items() if k.endswith("/final/render.mov")] == [160 * MiB]
    assert not [k for k in sizes if "/cuts/" in k]


def settled(mountpoint: Path, timeout: float = 120) -> None:
    """Wait until the daemon serving `mountpoint` has no store operation pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = json.loads(motionfs("status", "--json").stdout)
        (row,) = [r for r in rows if r["mountpoint"] == str(mountpoint.resolve())]
        if row["pending"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"store operations still pending after {timeout}s")
