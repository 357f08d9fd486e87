"""The `.snapshots` views through the Drive, without the kernel: checkpoints made
by mkdir or by request, browsed and read back, and every change refused."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from harness import CTX, Harness, fs_error, project, read_file, rewrite, write_file
from motionfs.daemon import Engine
from motionfs.fuse.drive import Drive


def names(drive: Drive, ino: int) -> list[bytes]:
    return sorted(name for name, _node in drive.listing_with_dots(ino))


def test_a_checkpoint_is_browsed_and_read_while_the_live_file_changes(h: Harness) -> None:
    """mkdir .snapshots/v1 checkpoints the project; its files keep the old bytes,
    modes and xattrs; `latest` names the newest checkpoint."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        f = await write_file(drive, p, b"f", b"version one")
        d = await drive.mkdir(p, b"d", 0o750, CTX)
        await write_file(drive, d.ino, b"g", b"nested")
        drive.setxattr(f, b"user.k", b"v1")
        snapdir = drive.lookup(p, b".snapshots")
        assert stat.S_ISDIR(snapdir.mode) and stat.S_IMODE(snapdir.mode) == 0o555
        v1 = await drive.mkdir(snapdir.ino, b"v1", 0o755, CTX)
        await rewrite(drive, f, 0, b"VERSION TWO", os.O_WRONLY | os.O_TRUNC)
        drive.setxattr(f, b"user.k", b"v2")
        await drive.create_checkpoint(p, b"v2", "second")

        assert names(drive, snapdir.ino) == [b".", b"..", b"latest", b"v1", b"v2"]
        assert drive.readlink(drive.lookup(snapdir.ino, b"latest").ino) == b"v2"
        assert names(drive, v1.ino) == [b".", b"..", b"d", b"f"]
        old = drive.lookup(v1.ino, b"f")
        assert await read_file(drive, old.ino) == b"version one"
        assert drive.getxattr(old.ino, b"user.k") == b"v1"
        old_d = drive.lookup(v1.ino, b"d")
        assert stat.S_IMODE(old_d.mode) == 0o750
        assert await read_file(drive, drive.lookup(old_d.ino, b"g").ino) == b"nested"
        assert drive.lookup(old_d.ino, b"..").ino == v1.ino
        assert await read_file(drive, f) == b"VERSION TWO"

    h.run(body)


def test_a_checkpoint_is_read_back_from_the_store_after_a_restart(h: Harness) -> None:
    """A new engine with an empty cache fetches checkpointed content from the store."""
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        p = await project(e.drive)
        found["p"] = p
        await write_file(e.drive, p, b"f", b"kept in the store")
        await e.drive.create_checkpoint(p, b"v1", None)

    async def second(e: Engine) -> None:
        drive = e.drive
        v1 = drive.lookup(drive.lookup(found["p"], b".snapshots").ino, b"v1")
        entry = drive.lookup(v1.ino, b"f")
        assert entry.sha256 is not None
        cached = e.cache.object_path(entry.sha256)
        cached.unlink(missing_ok=True)  # as if evicted: only the store has it
        assert await read_file(drive, entry.ino) == b"kept in the store"
        assert cached.read_bytes() == b"kept in the store"

    h.run(first)
    h.run(second)


def test_every_change_inside_a_checkpoint_is_erofs(h: Harness) -> None:
    """Snapshots are read-only: writes, creates, removals, renames, attribute and
    xattr changes all answer EROFS, and the checkpoint still reads the same."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        await write_file(drive, p, b"f", b"frozen")
        await drive.mkdir(p, b"d", 0o755, CTX)
        snapdir = drive.lookup(p, b".snapshots").ino
        await drive.create_checkpoint(p, b"v1", None)
        v1 = drive.lookup(snapdir, b"v1").ino
        f = drive.lookup(v1, b"f").ino
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
            with fs_error(errno.EROFS):
                await drive.open(f, flags)
        changes = [
            drive.create(v1, b"new", 0o644, os.O_WRONLY, CTX),
            drive.mkdir(v1, b"newdir", 0o755, CTX),
            drive.mknod(v1, b"fifo", stat.S_IFIFO | 0o644, 0, CTX),
            drive.symlink(v1, b"lnk", b"f", CTX),
            drive.link(f, p, b"hard"),
            drive.unlink(v1, b"f"),
            drive.rmdir(v1, b"d"),
            drive.rename(v1, b"f", v1, b"g", 0),
            drive.rename(p, b"f", v1, b"g", 0),
            drive.setattr(f, mode=0o600),
        ]
        for change in changes:
            with fs_error(errno.EROFS):
                await change
        with fs_error(errno.EROFS):
            drive.setxattr(f, b"user.k", b"v")
        with fs_error(errno.EROFS):
            drive.removexattr(f, b"user.k")
        assert names(drive, v1) == [b".", b"..", b"d", b"f"]
        assert await read_file(drive, f) == b"frozen"

    h.run(body)


def test_rmdir_deletes_a_checkpoint_and_the_name_stays_reserved(h: Harness) -> None:
    """rmdir .snapshots/NAME deletes the checkpoint; `latest` is not a folder; the
    live project cannot hold its own `.snapshots`, which listings hide."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        snapdir = drive.lookup(p, b".snapshots").ino
        await drive.create_checkpoint(p, b"v1", None)
        with fs_error(errno.ENOTDIR):
            await drive.rmdir(snapdir, b"latest")
        await drive.rmdir(snapdir, b"v1")
        with fs_error(errno.ENOENT):
            drive.lookup(snapdir, b"v1")
        with fs_error(errno.ENOENT):
            drive.lookup(snapdir, b"latest")
        assert e.checkpoints.summaries(p) == []
        with fs_error(errno.EEXIST):
            await drive.mkdir(p, b".snapshots", 0o755, CTX)
        with fs_error(errno.EEXIST):
            await drive.create(p, b".snapshots", 0o644, os.O_WRONLY, CTX)
        assert b".snapshots" not in names(drive, p)

    h.run(body)


def test_a_visible_snapdir_is_listed(tmp_path: Path) -> None:
    """--snapdir-visible lists `.snapshots` in every project folder."""
    h = Harness(tmp_path, snapdir_visible=True)

    async def body(e: Engine) -> None:
        p = await project(e.drive)
        assert b".snapshots" in names(e.drive, p)

    h.run(body)
