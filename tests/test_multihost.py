"""Several hosts on one store: the index in PostgreSQL, the bytes in S3.

Two daemons' engines (tests/harness.py's wiring, no kernel) run side by side
in one process, each with its own index folder (its cache, log and host id),
over one PostgreSQL schema and one bucket prefix, as two machines would.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from harness import CTX, fs_error, project, read_file, rewrite, write_file
from motionfs.daemon import Engine, MountOptions
from motionfs.errors import FsError
from motionfs.layout import ROOT_INO
from motionfs.meta.postgres_hosts import SESSION_TIMEOUT
from s3server import S3Server

UID = GID = 1000
VISIBLE_WITHIN = 1.0  # seconds: another host's change shows by then (the promise)


class Hosts:
    """N engines over one PostgreSQL schema and one S3 prefix, each with its own folder."""

    def __init__(self, tmp_path: Path, pg_url: str, s3: S3Server) -> None:
        self.tmp_path = tmp_path
        self.meta_url = pg_url
        self.s3 = s3
        self.remote = s3.store_url(f"mh-{uuid.uuid4().hex[:10]}")

    def options(self, name: str) -> MountOptions:
        return MountOptions(
            mountpoint=self.tmp_path / f"mnt-{name}",  # never mounted
            store=self.tmp_path / f"index-{name}",
            s3_url=self.remote,
            s3_endpoint=self.s3.endpoint,
            meta_url=self.meta_url,
            user="alice",
            cache_size=1 << 30,
            io_timeout=5.0,
        )

    def run(self, body: Callable[..., Awaitable[None]], *names: str) -> None:
        """Start an engine per name (each with its services), run body(*engines),
        then drain every journal and stop them."""
        engines: list[Engine] = []
        try:
            for name in names:
                engine = Engine(self.options(name), owner=(UID, GID))
                engines.append(engine)
                engine.prepare()

            async def main() -> None:
                async with trio.open_nursery() as nursery:
                    for engine in engines:
                        await engine.start_services(nursery)
                    await body(*engines)
                    for engine in engines:
                        await engine.journal.drain_all(timeout=30)
                    nursery.cancel_scope.cancel()

            trio.run(main)
        finally:
            for engine in engines:
                engine.close()

    def run_and_crash(self, body: Callable[[Engine], Awaitable[None]], name: str) -> None:
        """One engine runs body, then stops as after kill -9: its queue is not
        drained, its open files not released, its session not ended."""
        engine = Engine(self.options(name), owner=(UID, GID))
        try:
            engine.prepare()

            async def main() -> None:
                async with trio.open_nursery() as nursery:
                    await engine.start_services(nursery)
                    await body(engine)
                    nursery.cancel_scope.cancel()

            trio.run(main)
        finally:
            engine.session_open = False
            engine.close()


@pytest.fixture
def hosts(pg_server: Any, s3_server: S3Server, tmp_path: Path) -> Hosts:
    return Hosts(tmp_path, pg_server.create_database(), s3_server)


async def eventually(check: Callable[[], object], within: float = VISIBLE_WITHIN) -> None:
    """Until check() passes (returns without raising); its error after `within`."""
    deadline = trio.current_time() + within
    while True:
        try:
            check()
            return
        except (AssertionError, OSError, FsError, pytest.fail.Exception):
            if trio.current_time() >= deadline:
                raise
            await trio.sleep(0.01)  # the listener thread takes the notices meanwhile
        await trio.sleep(0.05)


def lookup(engine: Engine, parent: int, name: bytes) -> int:
    return engine.drive.lookup(parent, name).ino


def test_close_to_open_between_hosts(hosts: Hosts) -> None:
    """A file closed on host A reads identically when opened on host B; B's
    rewrite then reads back on A, whole (never a mix), with a new generation."""

    async def body(a: Engine, b: Engine) -> None:
        p = await project(a.drive)
        f = await write_file(a.drive, p, b"f", b"from host A" * 1000)
        projects = lookup(b, ROOT_INO, b"projects")
        await eventually(lambda: lookup(b, projects, b"p"))
        assert lookup(b, p, b"f") == f
        assert await read_file(b.drive, f) == b"from host A" * 1000
        await rewrite(b.drive, f, 0, b"B" * 50, os.O_WRONLY | os.O_TRUNC)

        async def a_reads_b() -> None:
            assert await read_file(a.drive, f) == b"B" * 50

        deadline = trio.current_time() + VISIBLE_WITHIN
        while True:
            try:
                await a_reads_b()
                break
            except AssertionError:
                if trio.current_time() >= deadline:
                    raise
                await trio.sleep(0.05)
        gen_a = a.index.get(f)
        assert gen_a is not None and gen_a.size == 50

    hosts.run(body, "a", "b")


def test_metadata_changes_show_on_the_other_host_within_a_second(hosts: Hosts) -> None:
    """Renames, unlinks, chmod and xattrs made on one host are seen on the
    other within a second, although both keep inode caches."""

    async def body(a: Engine, b: Engine) -> None:
        p = await project(a.drive)
        f = await write_file(a.drive, p, b"f", b"x")
        d = (await a.drive.mkdir(p, b"d", 0o755, CTX)).ino
        await eventually(lambda: lookup(b, p, b"f"))
        assert b.drive.stat(f).mode & 0o777 != 0o600  # cached on B now
        await b.drive.rename(p, b"f", d, b"g", 0)
        await b.drive.setattr(f, mode=0o100600)
        b.drive.setxattr(f, b"user.who", b"B")

        def a_sees() -> None:
            assert lookup(a, d, b"g") == f
            with fs_error(errno.ENOENT):
                a.drive.lookup(p, b"f")
            assert a.drive.getxattr(f, b"user.who") == b"B"
            assert a.drive.stat(f).mode & 0o777 == 0o600
            assert a.tree.drive_path(f).endswith("/p/d/g")

        await eventually(a_sees)
        await a.drive.unlink(d, b"g")

        def b_sees_unlink() -> None:
            with fs_error(errno.ENOENT):
                b.drive.lookup(d, b"g")

        await eventually(b_sees_unlink)

    hosts.run(body, "a", "b")


def test_one_name_made_on_both_hosts_at_once(hosts: Hosts) -> None:
    """B knows a folder to be empty (it listed it; misses are cached) when A
    creates a name in it: B's create of that name fails with EEXIST, whether
    A's notice has reached B yet or not, and both then see A's file."""

    async def body(a: Engine, b: Engine) -> None:
        p = await project(a.drive)
        d = (await a.drive.mkdir(p, b"d", 0o755, CTX)).ino
        await eventually(lambda: lookup(b, p, b"d"))
        assert b.index.listing(d) == []
        with fs_error(errno.ENOENT):
            b.drive.lookup(d, b"x")
        f = await write_file(a.drive, d, b"x", b"from A")
        with fs_error(errno.EEXIST):
            await b.drive.create(d, b"x", 0o644, os.O_WRONLY | os.O_EXCL, CTX)
        await eventually(lambda: lookup(b, d, b"x"))
        assert lookup(b, d, b"x") == f
        assert await read_file(b.drive, f) == b"from A"
        assert [n for n, _ in a.index.listing(d)] == [b"x"]

    hosts.run(body, "a", "b")


def test_last_close_wins_whole_file(hosts: Hosts) -> None:
    """Both hosts rewrite one file; whichever closes last is what both read, whole."""

    async def body(a: Engine, b: Engine) -> None:
        p = await project(a.drive)
        f = await write_file(a.drive, p, b"f", b"0" * 4096)
        await eventually(lambda: lookup(b, p, b"f"))
        await rewrite(a.drive, f, 0, b"A" * 8192, os.O_WRONLY | os.O_TRUNC)
        await rewrite(b.drive, f, 0, b"B" * 4096, os.O_WRONLY | os.O_TRUNC)
        for engine in (a, b):
            await engine.journal.drain_all(timeout=30)

        async def reads(engine: Engine) -> bytes:
            return await read_file(engine.drive, f)

        deadline = trio.current_time() + VISIBLE_WITHIN
        while (await reads(a)) != b"B" * 4096 and trio.current_time() < deadline:
            await trio.sleep(0.05)
        assert await reads(a) == b"B" * 4096
        assert await reads(b) == b"B" * 4096
        node_a, node_b = a.index.get(f), b.index.get(f)
        assert node_a is not None and node_b is not None
        assert node_a.content_gen == node_b.content_gen

    hosts.run(body, "a", "b")


def test_checkpoints_show_on_every_host(hosts: Hosts) -> None:
    """A checkpoint made on A is listed and readable on B; B restores it."""

    async def body(a: Engine, b: Engine) -> None:
        p = await project(a.drive)
        f = await write_file(a.drive, p, b"f", b"v1 content")
        await a.drive.create_checkpoint(p, b"v1", "first")
        await a.journal.drain_all(timeout=30)
        await eventually(lambda: lookup(b, p, b"f"))
        assert [s.name for s in b.checkpoints.summaries(p)] == ["v1"]
        await rewrite(b.drive, f, 0, b"v2", os.O_WRONLY | os.O_TRUNC)
        await b.checkpoints.restore(p, "v1")
        await b.journal.drain_all(timeout=30)
        f2 = lookup(a, p, b"f")
        assert await read_file(a.drive, f2) == b"v1 content"

    hosts.run(body, "a", "b")


def test_sessions_are_listed_and_a_host_comes_back_as_itself(hosts: Hosts) -> None:
    """Each engine is a session with a heartbeat; the same index folder is the same
    host after a restart (its journal entries are still its own)."""
    seen: dict[str, Any] = {}

    async def body(a: Engine, b: Engine) -> None:
        ha, hb = a.index.hosts(), b.index.hosts()
        assert ha is not None and hb is not None and ha.me != hb.me
        sessions = {s.sid: s for s in ha.all()}
        assert set(sessions) == {ha.me, hb.me}
        assert all(s.alive for s in sessions.values())
        assert hb.alive(ha.me) and ha.alive(hb.me)
        seen["a"] = ha.me

    hosts.run(body, "a", "b")

    async def again(a: Engine) -> None:
        ha = a.index.hosts()
        assert ha is not None and ha.me == seen["a"]
        assert [s.sid for s in ha.all()] == [ha.me]  # a clean exit ends a session

    hosts.run(again, "a")


def test_puts_wait_for_their_host_and_other_work_is_taken_over(hosts: Hosts) -> None:
    """Host A stops with an upload and a rename queued (as after kill -9): the
    upload's bytes are only in A's cache, so it waits for A; reading that file
    on B fails with EIO (never stale bytes) once A's session has expired; when A
    is back, everything is stored and B reads it."""
    seen: dict[str, int] = {}

    async def crash_with_work_queued(a: Engine) -> None:
        p = await project(a.drive)
        await a.journal.drain_all(timeout=30)
        a.journal.kick = lambda rescan=False: None  # type: ignore[method-assign]
        a.journal.moved_elsewhere = lambda everything=False: None  # type: ignore[method-assign]
        f = await write_file(a.drive, p, b"f", b"only in A's cache")
        seen.update(p=p, f=f)

    # A "crashes": its queue stays (its workers were never woken for the new entries).
    hosts.run_and_crash(crash_with_work_queued, "a")

    async def on_b(b: Engine) -> None:
        assert b.index.pending_count() >= 1
        started = time.monotonic()
        with fs_error(errno.EIO):
            await read_file(b.drive, seen["f"])
        assert time.monotonic() - started < 60
        g = await write_file(b.drive, seen["p"], b"g", b"B works on")
        seen["g"] = g

    hosts.run(on_b, "b")

    async def a_back(a: Engine, b: Engine) -> None:
        await a.journal.drain_all(timeout=30)
        assert await read_file(b.drive, seen["f"]) == b"only in A's cache"
        assert await read_file(a.drive, seen["g"]) == b"B works on"
        assert a.index.pending_count() == 0

    hosts.run(a_back, "a", "b")


def test_an_outage_of_postgresql_is_eio_and_passes(tmp_path: Path, s3_server: S3Server) -> None:
    """PostgreSQL stops: metadata operations fail with EIO within the timeouts (the
    daemon stays up), and once it is back the daemon reconnects by itself and
    everything committed before is there."""
    from pgserver import PgServer

    with PgServer() as server:
        hosts = Hosts(tmp_path, server.create_database(), s3_server)

        async def body(a: Engine) -> None:
            p = await project(a.drive)
            f = await write_file(a.drive, p, b"f", b"committed before")
            await a.journal.drain_all(timeout=30)
            await trio.to_thread.run_sync(server.stop)
            started = time.monotonic()
            with fs_error(errno.EIO):
                await a.drive.mkdir(p, b"during", 0o755, CTX)
            with fs_error(errno.EIO):
                await write_file(a.drive, p, b"g", b"lost with the outage")
            assert time.monotonic() - started < 30
            await trio.to_thread.run_sync(server.start)
            d = await a.drive.mkdir(p, b"after", 0o755, CTX)
            assert lookup(a, p, b"after") == d.ino
            assert await read_file(a.drive, f) == b"committed before"

        hosts.run(body, "a")


def test_an_expired_host_s_open_unlinked_files_are_dropped_by_the_others(hosts: Hosts) -> None:
    """A file host A unlinked while it still had it open is an orphan A holds:
    B leaves it alone while A lives, and drops it once A's session expired."""
    seen: dict[str, int] = {}

    async def unlink_while_open(a: Engine) -> None:
        p = await project(a.drive)
        f = await write_file(a.drive, p, b"f", b"still open on A")
        seen["f"] = f
        a.drive.remember(f)  # the kernel's reference, as after a lookup
        await a.drive.open(f, os.O_RDONLY)
        await a.drive.unlink(p, b"f")
        assert a.index.get(f) is not None  # kept: A uses it

    hosts.run_and_crash(unlink_while_open, "a")

    async def on_b(b: Engine) -> None:
        f = seen["f"]
        assert b.index.get(f) is not None  # B's start left A's orphan alone
        assert b.tree.drop_orphans() == 0
        deadline = time.monotonic() + SESSION_TIMEOUT + 10
        while b.index.get(f) is not None and time.monotonic() < deadline:
            await trio.sleep(0.5)
            b.tree.drop_orphans()
        assert b.index.get(f) is None

    hosts.run(on_b, "b")


def test_a_crash_of_postgresql_keeps_what_fsync_covered(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """PostgreSQL crashes (immediate shutdown: its unflushed log is gone) right
    after fsync returned: the fsynced file and everything before it is there
    when it is back, for this host and a fresh one."""
    from pgserver import PgServer

    with PgServer() as server:
        hosts = Hosts(tmp_path, server.create_database(), s3_server)
        seen: dict[str, int] = {}

        async def body(a: Engine) -> None:
            p = await project(a.drive)
            f = await write_file(a.drive, p, b"f", b"fsynced before the crash")
            fh = await a.drive.open(f, os.O_RDONLY)
            await a.drive.fsync(fh)
            await a.drive.release(fh)
            seen.update(p=p, f=f)
            await trio.to_thread.run_sync(server.stop, "immediate")
            await trio.to_thread.run_sync(server.start)
            # The daemon connects again by itself: the call that finds the old
            # connection dead fails with EIO, a later one connects again.
            await eventually(a.index.backlog, within=10)
            await eventually(lambda: lookup(a, p, b"f"), within=10)
            assert lookup(a, p, b"f") == f
            assert await read_file(a.drive, f) == b"fsynced before the crash"
            # Numbers drawn before the crash are not used again: the server may
            # have lost their log and hand them out anew.
            made = [await write_file(a.drive, p, b"n%d" % i, b"after") for i in range(70)]
            assert len(set(made)) == 70 and f not in made

        hosts.run(body, "a")

        async def fresh(b: Engine) -> None:
            assert lookup(b, seen["p"], b"f") == seen["f"]
            assert await read_file(b.drive, seen["f"]) == b"fsynced before the crash"

        hosts.run(fresh, "b")


def test_the_python_api_on_two_hosts(hosts: Hosts) -> None:
    """ArtifactStorageManager with meta_url on two index folders at once (two
    hosts): what one creates, the other lists and reads."""
    import asyncio

    from motionfs import ArtifactStorageManager, ProviderType

    def manager(name: str) -> ArtifactStorageManager:
        bucket, prefix = hosts.remote.removeprefix("s3://").split("/", 1)
        config = {
            "bucket_name": bucket,
            "prefix": prefix,
            "endpoint_url": hosts.s3.endpoint,
            "index": str(hosts.tmp_path / f"api-{name}"),
            "meta_url": hosts.meta_url,
        }
        return ArtifactStorageManager(ProviderType.S3, config, user_id="alice")

    async def main() -> None:
        async with manager("a") as a, manager("b") as b:
            project = await a.create_project("film", theme="tech", fps=25, width=64, height=48)
            ns = project.namespace_info.namespace_id
            render = await a.store_render(ns, b"frames", "mp4", "64x48", 25, 1.0)
            names = [p.metadata.project_name for p in await b.list_projects()]
            assert names == ["film"]
            got = await b.read_render_data(render.namespace_info.namespace_id)
            assert got == b"frames"

    asyncio.run(main())
