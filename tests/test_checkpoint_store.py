"""Fast checkpoint tests without the kernel: what the store and the index hold."""

from __future__ import annotations

import errno
import gzip
import json
import os
from pathlib import Path

import pytest

from harness import CTX, Harness, ns_of, project, read_file, write_file
from helpers import sha256_bytes
from motionfs.core.checkpoints import manifest_path, object_path
from motionfs.daemon import Engine
from motionfs.errors import FsError, StoreUnavailable
from motionfs.store.host import HostTree


def store_usage(h: Harness) -> int:
    return sum(p.stat().st_size for p in (h.root / "data").rglob("*") if p.is_file())


def test_content_is_stored_once_per_hash(h: Harness) -> None:
    """Two checkpoints of mostly unchanged files add only the changed content."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        cps = e.checkpoints
        p = await project(drive)
        for i in range(10):
            await write_file(drive, p, f"f{i}".encode(), bytes([i]) * 50_000)
        await write_file(drive, p, b"dup", bytes([0]) * 50_000)  # same content as f0
        await cps.create(p, b"c1", None)
        ns = ns_of(drive, p)
        assert (
            h.store_bytes(e, ns, object_path(sha256_bytes(bytes([3]) * 50_000)))
            == bytes([3]) * 50_000
        )
        before = store_usage(h)
        ino = tree.lookup(p, b"f3").ino
        fh = await drive.open(ino, os.O_WRONLY)
        await drive.write(fh, 0, b"changed")
        await drive.release(fh)
        await cps.create(p, b"c2", "one file changed")
        await tree.journal.drain_all()
        grown = store_usage(h) - before
        # The changed file itself (50 KB) plus its one new object and the manifest.
        assert grown < 2 * 50_000 + 20_000
        summaries = {s.name: s for s in cps.summaries(p)}
        assert summaries["c2"].file_count == 11
        assert summaries["c2"].exclusive_bytes == 50_000
        assert summaries["c2"].description == "one file changed"
        manifest = h.store_bytes(e, ns, manifest_path("c2"))
        assert manifest is not None
        entries = json.loads(gzip.decompress(manifest))["entries"]
        assert sorted(e["path"] for e in entries) == sorted(["dup", *(f"f{i}" for i in range(10))])

    h.run(body)


def test_restore_puts_back_content_tree_and_metadata(h: Harness) -> None:
    """Restore removes later files, brings back deleted ones, resets modes and xattrs."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        cps = e.checkpoints
        p = await project(drive)
        d = await tree.mkdir(p, b"empty", 0o750, CTX)
        f = await write_file(drive, p, b"f", b"original")
        tree.setxattr(f, b"user.k", b"v1")
        await cps.create(p, b"v1", None)
        await drive.setattr(f, mode=0o600)
        tree.setxattr(f, b"user.k", b"v2")
        fh = await drive.open(f, os.O_WRONLY | os.O_TRUNC)
        await drive.write(fh, 0, b"rewritten")
        await drive.release(fh)
        await tree.rmdir(p, b"empty")
        await write_file(drive, p, b"later", b"x")
        auto = await cps.restore(p, "v1")
        assert auto.startswith("auto-")
        names = sorted(n for n, _node in tree.listing(p))
        assert names == [b"empty", b"f"]
        f_now = tree.lookup(p, b"f")
        assert await read_file(drive, f_now.ino) == b"original"
        assert f_now.mode & 0o777 == 0o644
        assert tree.getxattr(f_now.ino, b"user.k") == b"v1"
        assert tree.lookup(p, b"empty").mode & 0o777 == d.mode & 0o777
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/f") == b"original"
        assert h.store_bytes(e, ns, "/later") is None
        changes = {(c.kind, c.path) for c in await cps.diff(p, auto, "v1")}
        assert changes == {("D", "later"), ("A", "empty"), ("M", "f")}

    h.run(body)


def test_deleting_checkpoints_frees_unshared_content(h: Harness) -> None:
    """An object stays while any checkpoint uses it and goes with the last one."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        cps = e.checkpoints
        p = await project(drive)
        await write_file(drive, p, b"f", b"kept")
        await cps.create(p, b"a", None)
        await cps.create(p, b"b", None)
        ns = ns_of(drive, p)
        obj = object_path(sha256_bytes(b"kept"))
        cps.delete(p, b"a")
        await tree.journal.drain_all()
        assert h.store_bytes(e, ns, obj) == b"kept"
        cps.delete(p, b"b")
        await tree.journal.drain_all()
        assert h.store_bytes(e, ns, obj) is None
        assert h.store_bytes(e, ns, manifest_path("b")) is None

    h.run(body)


@pytest.mark.parametrize(
    ("name", "err"),
    [
        (b"latest", errno.EINVAL),
        (b".hidden", errno.EINVAL),
        (b"a b", errno.EINVAL),
        (b"x" * 129, errno.EINVAL),
        (b"v1", errno.EEXIST),
    ],
)
def test_checkpoint_name_errors(h: Harness, name: bytes, err: int) -> None:
    """Reserved, hidden, spaced, over-long and existing names are refused."""

    async def body(e: Engine) -> None:
        drive = e.drive
        cps = e.checkpoints
        p = await project(drive)
        await cps.create(p, b"v1", None)
        with pytest.raises(FsError) as info:
            await cps.create(p, name, None)
        assert info.value.errno == err

    h.run(body)


def test_checkpoints_survive_a_restart(tmp_path: Path) -> None:
    """Manifests live in the index and content in the store: a new daemon browses them."""
    h = Harness(tmp_path)
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        found["p"] = p
        await write_file(drive, p, b"f", b"old")
        await e.checkpoints.create(p, b"v1", None)

    async def second(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        e.cache.drop_all(tree.lookup(found["p"], b"f").ino)
        cps = e.checkpoints
        assert [s.name for s in cps.summaries(found["p"])] == ["v1"]
        await cps.restore(found["p"], "v1")
        assert await read_file(drive, tree.lookup(found["p"], b"f").ino) == b"old"

    h.run(first)
    h.run(second)


def test_a_restore_cut_short_by_a_store_outage_and_a_crash_completes_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index switches in one transaction; the journal brings the store along later,
    so an interrupted restore shows the restored state, never a mix."""
    h = Harness(tmp_path, io_timeout=1.0)
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        cps = e.checkpoints
        p = await project(drive)
        found["p"] = p
        for i in range(5):
            await write_file(drive, p, f"f{i}".encode(), f"old {i}".encode())
        await cps.create(p, b"v1", None)
        for i in range(5):
            fh = await drive.open(tree.lookup(p, f"f{i}".encode()).ino, os.O_WRONLY | os.O_TRUNC)
            await drive.write(fh, 0, f"new {i}".encode())
            await drive.release(fh)
        await write_file(drive, p, b"extra", b"x")
        await tree.journal.drain_all()

        share = HostTree.share  # every copy in the local store starts here

        def store_down_for_restores(
            self: HostTree, src: str, dst: str, if_missing: bool = False
        ) -> bool | None:
            # The safety checkpoint's objects (kept if missing) get stored; the
            # restore's copies do not.
            if not if_missing:
                raise StoreUnavailable("store went away")
            return share(self, src, dst, if_missing)

        monkeypatch.setattr(HostTree, "share", store_down_for_restores)
        with pytest.raises(FsError) as err:
            await cps.restore(p, "v1")
        assert err.value.errno == errno.EIO
        # The daemon dies here, with the store work still in the journal.

    async def second(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = found["p"]
        names = sorted(n for n, _node in tree.listing(p))
        assert names == [f"f{i}".encode() for i in range(5)]
        for i in range(5):
            assert (
                await read_file(drive, tree.lookup(p, f"f{i}".encode()).ino) == f"old {i}".encode()
            )
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        for i in range(5):
            assert h.store_bytes(e, ns, f"/f{i}") == f"old {i}".encode()
        assert h.store_bytes(e, ns, "/extra") is None

    h.run(first, drain=False)
    monkeypatch.undo()
    h.run(second)
