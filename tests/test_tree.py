"""Fast tests of the tree, journal and storage together, without the kernel.

They drive the same calls the FUSE layer makes and then look at what the
chuk-virtual-fs namespaces really hold, which the mount tests cannot see.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import trio

from harness import CTX, Harness, ns_of, project, read_file, write_file
from motionfs.daemon import Engine
from motionfs.data import journal as journal_module
from motionfs.errors import FsError
from motionfs.layout import ROOT_INO
from motionfs.store.names import BLOB_DATA_PATH, MOTION_METADATA_PATH


def test_closed_file_lands_in_the_namespace_at_its_own_path(h: Harness) -> None:
    """Interoperable layout: src/Root.tsx is /src/Root.tsx in its WORKSPACE namespace."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        src = await tree.mkdir(p, b"src", 0o755, CTX)
        await write_file(drive, src.ino, b"Root.tsx", b"export {}")
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/src/Root.tsx") == b"export {}"
        meta = h.store_bytes(e, ns, MOTION_METADATA_PATH)
        assert meta is not None and b'"project_name":"p"' in meta

    h.run(body)


def test_names_the_provider_cannot_hold_are_escaped(h: Harness) -> None:
    """`x.meta` would be a sidecar, `.workspace` is the library's: both are escaped."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        await write_file(drive, p, b"x.meta", b"user data")
        await write_file(drive, p, b".workspace", b"mine")
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/x.meta~mfs") == b"user data"
        assert h.store_bytes(e, ns, "/.workspace~mfs") == b"mine"

    h.run(body)


def test_renames_and_unlinks_are_mirrored_in_the_store(h: Harness) -> None:
    """Directory renames move the store's subtree; unlink removes the bytes."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        d = await tree.mkdir(p, b"a", 0o755, CTX)
        await write_file(drive, d.ino, b"f", b"1")
        await write_file(drive, p, b"gone", b"2")
        await tree.rename(p, b"a", p, b"b", 0)
        await tree.unlink(p, b"gone")
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/b/f") == b"1"
        assert h.store_bytes(e, ns, "/a/f") is None
        assert h.store_bytes(e, ns, "/gone") is None

    h.run(body)


def test_rename_over_existing_file_replaces_it_in_the_store(h: Harness) -> None:
    """The editor pattern: write a temp file, rename it over the original."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        await write_file(drive, p, b"doc", b"old")
        await write_file(drive, p, b".doc.swp", b"new")
        await tree.rename(p, b".doc.swp", p, b"doc", 0)
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/doc") == b"new"
        assert h.store_bytes(e, ns, "/.doc.swp") is None

    h.run(body)


def test_hard_links_put_the_bytes_at_every_path(h: Harness) -> None:
    """The provider has no links: each link's path holds the content."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"one", b"shared")
        await tree.link(ino, p, b"two")
        await tree.unlink(p, b"one")
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/two") == b"shared"
        assert h.store_bytes(e, ns, "/one") is None
        assert tree.stat(ino).nlink == 1

    h.run(body)


def test_blob_files_in_assets_and_renders(h: Harness) -> None:
    """A file in assets/ or renders/<project>/ is its own BLOB namespace's /_data."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        await project(drive, b"film")
        assets = tree.lookup(ROOT_INO, b"assets").ino
        renders = tree.lookup(ROOT_INO, b"renders").ino
        film_renders = tree.lookup(renders, b"film").ino
        logo = await write_file(drive, assets, b"logo.png", b"\x89PNG")
        clip = await write_file(drive, film_renders, b"clip.mp4", b"mp4")
        await tree.journal.drain_all()
        assert h.store_bytes(e, ns_of(drive, logo), BLOB_DATA_PATH) == b"\x89PNG"
        assert h.store_bytes(e, ns_of(drive, clip), BLOB_DATA_PATH) == b"mp4"
        assert ns_of(drive, logo) != ns_of(drive, clip)
        with pytest.raises(FsError) as err:
            await drive.create(renders, b"loose.mp4", 0o644, os.O_WRONLY, CTX)
        assert err.value.errno == errno.EPERM

    h.run(body)


def test_layout_refusals(h: Harness) -> None:
    """The fixed layout refuses files, removal and moves across namespaces."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        a = await project(drive, b"a")
        b = await project(drive, b"b")
        await write_file(drive, a, b"f", b"x")
        projects = tree.lookup(ROOT_INO, b"projects").ino
        shared_projects = tree.lookup(tree.lookup(ROOT_INO, b"shared").ino, b"projects").ino
        cases = [
            (drive.create(ROOT_INO, b"f", 0o644, os.O_WRONLY, CTX), errno.EPERM),
            (drive.create(projects, b"f", 0o644, os.O_WRONLY, CTX), errno.EPERM),
            (tree.rmdir(ROOT_INO, b"projects"), errno.EPERM),
            (tree.rename(a, b"f", b, b"f", 0), errno.EXDEV),
            (tree.rename(projects, b"a", shared_projects, b"a", 0), errno.EXDEV),
            (tree.mkdir(a, b"x" * 256, 0o755, CTX), errno.ENAMETOOLONG),
            (tree.rmdir(projects, b"a"), errno.ENOTEMPTY),
        ]
        for call, expected in cases:
            with pytest.raises(FsError) as err:
                await call
            assert err.value.errno == expected

    h.run(body)


def test_removing_a_project_destroys_its_namespace_and_bytes(h: Harness) -> None:
    """rm -r projects/x: the namespace leaves the index and its files the disk."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        await write_file(drive, p, b"f", b"x" * 1000)
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        record = tree.index.namespace(ns)
        assert record is not None
        root = Path(record.provider_config["root_path"])
        assert (root / "f").exists()
        await tree.unlink(p, b"f")
        projects = tree.lookup(ROOT_INO, b"projects").ino
        await tree.rmdir(projects, b"p")
        await tree.journal.drain_all()
        assert tree.index.namespace(ns) is None
        assert not root.exists()

    h.run(body)


def test_restart_reattaches_and_reads_evicted_content_from_the_store(h: Harness) -> None:
    """The index is the registry: a new daemon finds every namespace and its bytes."""
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        found["ino"] = await write_file(drive, p, b"f", b"persisted")

    async def second(e: Engine) -> None:
        drive = e.drive
        e.cache.drop_all(found["ino"])  # as if evicted
        assert await read_file(drive, found["ino"]) == b"persisted"

    h.run(first)
    h.run(second)


def test_unsealed_writes_are_dropped_after_a_crash(h: Harness) -> None:
    """A rewrite still open at a crash never replaces the last closed version."""
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"version one")
        found["ino"] = ino
        fh = await drive.open(ino, os.O_RDWR)
        await drive.write(fh, 0, b"HALF")
        # no flush/release: the daemon "dies" here

    async def second(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        assert await read_file(drive, found["ino"]) == b"version one"
        assert tree.stat(found["ino"]).size == len(b"version one")

    h.run(first, drain=False)
    h.run(second)


def test_fsync_returns_after_the_store_has_the_bytes(h: Harness) -> None:
    """fsync waits for its upload: the namespace holds the data when it returns."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        fh, inode = await drive.create(p, b"f", 0o644, os.O_RDWR, CTX)
        await drive.write(fh, 0, b"durable")
        await drive.fsync(fh)
        assert h.store_bytes(e, ns_of(drive, p), "/f") == b"durable"
        assert not tree.index.pending_puts(inode.ino)
        await drive.release(fh)

    h.run(body)


def test_copy_on_write_keeps_the_sealed_generation_intact(h: Harness) -> None:
    """Writes after a seal go to a new generation; the sealed one is untouched."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"abcdef")
        sealed = tree.stat(ino).content_gen
        fh = await drive.open(ino, os.O_RDWR)
        await drive.write(fh, 2, b"XY")
        assert e.cache.path(ino, sealed).read_bytes() == b"abcdef"
        assert await drive.read(fh, 0, 100) == b"abXYef"
        await drive.release(fh)
        assert tree.stat(ino).content_gen == sealed + 1
        assert not e.cache.path(ino, sealed).exists()

    h.run(body)


def test_truncate_without_a_handle_and_modes(h: Harness) -> None:
    """truncate(2) seals at once; chmod keeps the file type bits."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"0123456789")
        node = await drive.setattr(ino, size=4, mode=0o600)
        assert node.size == 4 and stat.S_ISREG(node.mode) and stat.S_IMODE(node.mode) == 0o600
        assert await read_file(drive, ino) == b"0123"
        await tree.journal.drain_all()
        assert h.store_bytes(e, ns_of(drive, p), "/f") == b"0123"

    h.run(body)


def test_xattrs_limits(h: Harness) -> None:
    """Values over 64 KiB are E2BIG, system.* (ACLs) ENOTSUP, missing ENODATA."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        tree.setxattr(p, b"user.k", b"v")
        assert tree.getxattr(p, b"user.k") == b"v"
        assert tree.listxattr(p) == [b"user.k"]
        for name, value, expected in [
            (b"user.big", b"x" * 65537, errno.E2BIG),
            (b"system.posix_acl_access", b"", errno.ENOTSUP),
        ]:
            with pytest.raises(FsError) as err:
                tree.setxattr(p, name, value)
            assert err.value.errno == expected
        tree.removexattr(p, b"user.k")
        with pytest.raises(FsError) as err:
            tree.getxattr(p, b"user.k")
        assert err.value.errno == errno.ENODATA

    h.run(body)


def test_local_upload_shares_the_sealed_file_and_never_rewrites_it(h: Harness) -> None:
    """The local store gets the sealed cache file by hard link; a rewrite of the
    file seals a new generation and replaces the store's file by rename, so the
    bytes the store held before (and anyone reading them) never change."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"version one")
        await tree.journal.drain_all()
        host = tree.storage.direct(ns_of(drive, p))
        assert host is not None
        stored = host.host("/f")
        gen = tree.stat(ino).content_gen
        assert os.path.samefile(stored, e.cache.path(ino, gen))
        with open(stored, "rb") as before:
            fh = await drive.open(ino, os.O_RDWR)
            await drive.write(fh, 0, b"VERSION")
            await drive.release(fh)
            assert before.read() == b"version one"  # not yet uploaded, never in place
            await tree.journal.drain_all()
            before.seek(0)
            assert before.read() == b"version one"
        assert stored.read_bytes() == b"VERSION one"
        assert not [n for n in os.listdir(stored.parent) if n.startswith(".tmp_")]

    h.run(body)


def test_content_hashes_are_computed_on_first_need(h: Harness) -> None:
    """The local upload path does not hash; the first reader of the hash computes
    it from the content, and a new seal forgets it."""
    import hashlib

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"hash me")
        await tree.journal.drain_all()
        node = tree.stat(ino)
        assert node.stored_gen == node.content_gen and node.sha256 is None
        hashed = await tree.ensure_sha256(node)
        assert hashed.sha256 == hashlib.sha256(b"hash me").hexdigest()
        assert tree.stat(ino).sha256 == hashed.sha256
        fh = await drive.open(ino, os.O_WRONLY | os.O_TRUNC)
        await drive.write(fh, 0, b"other")
        await drive.release(fh)
        assert tree.stat(ino).sha256 is None
        assert (await tree.ensure_sha256(tree.stat(ino))).sha256 == (
            hashlib.sha256(b"other").hexdigest()
        )

    h.run(body)


def test_deleted_files_leave_nothing_in_the_cache(h: Harness) -> None:
    """A purged inode's cache files go (without scanning the cache)."""

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        ino = await write_file(drive, p, b"f", b"bytes")
        gen = tree.stat(ino).content_gen
        await tree.unlink(p, b"f")
        tree.forget(ino, 1)
        assert not e.cache.path(ino, gen).exists()
        assert tree.index.get(ino) is None

    h.run(body)


async def store_has(h: Harness, e: Engine, ns: str, path: str, want: bytes) -> bool:
    """Whether the store comes to hold `want` at `path` within a minute (polled)."""
    with trio.move_on_after(60):
        while h.store_bytes(e, ns, path) != want:
            await trio.sleep(0.05)
        return True
    return False


def test_a_new_file_still_open_reaches_the_store_with_its_content(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The empty upload a create journals waits for the close, which replaces
    it: an editor's temp file is not first made empty in the store."""
    monkeypatch.setattr(journal_module, "HOLD_MAX", 600.0)

    async def body(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        p = await project(drive)
        await tree.journal.drain_all()
        ns = ns_of(drive, p)
        fh, _inode = await drive.create(p, b"tmp", 0o644, os.O_WRONLY, CTX)
        await trio.sleep(0.3)  # the journal's turns: the put is held, not applied
        assert h.store_bytes(e, ns, "/tmp") is None
        await drive.write(fh, 0, b"saved")
        await drive.flush(fh)
        await drive.release(fh)
        await tree.journal.drain_all()
        assert h.store_bytes(e, ns, "/tmp") == b"saved"

    h.run(body)


def test_a_held_upload_waits_no_longer_than_its_bound(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file kept open and empty reaches the store once HOLD_MAX has passed."""
    monkeypatch.setattr(journal_module, "HOLD_MAX", 0.2)

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        fh, _inode = await drive.create(p, b"lock", 0o644, os.O_WRONLY, CTX)
        assert await store_has(h, e, ns_of(drive, p), "/lock", b"")
        await drive.release(fh)

    h.run(body)


def test_a_held_upload_does_not_delay_an_fsync(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone waiting for the store (fsync of another file) ends the hold:
    the queue is applied in order, the open empty file included."""
    monkeypatch.setattr(journal_module, "HOLD_MAX", 600.0)

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        held, _a = await drive.create(p, b"a", 0o644, os.O_WRONLY, CTX)
        await trio.sleep(0.2)
        fh, _b = await drive.create(p, b"b", 0o644, os.O_WRONLY, CTX)
        await drive.write(fh, 0, b"bee")
        with trio.move_on_after(120) as scope:
            await drive.fsync(fh)
        assert not scope.cancelled_caught
        ns = ns_of(drive, p)
        assert h.store_bytes(e, ns, "/a") == b""
        assert h.store_bytes(e, ns, "/b") == b"bee"
        await drive.release(fh)
        await drive.release(held)

    h.run(body)


def test_a_held_upload_survives_a_crash(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 while a new file is open and its upload held: the create returned,
    so the file is there after the restart, in the index and in the store."""
    monkeypatch.setattr(journal_module, "HOLD_MAX", 600.0)
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        p = await project(e.drive)
        _fh, inode = await e.drive.create(p, b"open", 0o644, os.O_WRONLY, CTX)
        await trio.sleep(0.2)
        found["p"], found["ino"] = p, inode.ino
        # no release, no drain: the daemon dies here

    async def second(e: Engine) -> None:
        await e.journal.drain_all()
        drive = e.drive
        assert drive.lookup(found["p"], b"open").ino == found["ino"]
        assert drive.stat(found["ino"]).size == 0
        assert h.store_bytes(e, ns_of(drive, found["p"]), "/open") == b""

    h.run(first, drain=False)
    h.run(second)
