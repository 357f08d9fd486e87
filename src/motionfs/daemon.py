"""The mount daemon: checks, start-up, the trio main loop, and a clean exit.

Start-up refuses clearly (SetupError, one line) before touching anything:
no /dev/fuse or fusermount3, an unwritable or full store, a mountpoint that
is busy or not empty, a store already served by another daemon, an index
that is damaged or not this store's. Any other failure while starting (the
host's OSError, the metadata engine's errors) is one line too. On unmount the daemon seals
open files and drains the journal before it exits, so `motionfs umount`
means "everything is in the store"; a signal stops it like `umount --lazy`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pyfuse3
import trio
from pydantic import BaseModel

from motionfs.address import MEMORY
from motionfs.bridge import AsyncioBridge
from motionfs.control import ControlServer
from motionfs.core.checkpoints import Checkpoints
from motionfs.core.expiry import Expiry
from motionfs.core.tree import Tree, TreeConfig
from motionfs.data.cache import DataCache
from motionfs.data.journal import Journal
from motionfs.errors import FsError, SetupError, StoreUnavailable
from motionfs.fuse.drive import Drive
from motionfs.fuse.ops import Operations
from motionfs.fuse.snapshots import SnapshotView
from motionfs.meta import driver_errors, open_engine, read_marker, redact
from motionfs.meta.engine import HostSessions, IndexUnusable, MetaEngine, RemoteChanges
from motionfs.motion.catalog import Catalog
from motionfs.motion.xattrs import MotionMetadata
from motionfs.store.s3 import S3Settings
from motionfs.store.sqlitedb import file_problem
from motionfs.store.storage import Storage

log = logging.getLogger("motionfs")

INDEX_FILE = "index.sqlite"
PG_INDEX_FILE = "index.postgres"  # with meta_url: names the PostgreSQL index (no password)
LOCK_FILE = "lock"
LOG_FILE = "motionfs.log"
LAZY_FLAG = "umount-lazy"  # `motionfs umount --lazy`: exit without draining the journal
IDENTITY_FILE = "store.json"
STORE_FORMAT = 1  # of the store's layout, recorded in IDENTITY_FILE
# What only the store's user may read: the index names every project.
STDERR_FILE = "daemon.stderr"  # a detached daemon's stderr (the CLI names it)
PRIVATE_FILES = (INDEX_FILE, f"{INDEX_FILE}-wal", f"{INDEX_FILE}-shm", LOG_FILE, STDERR_FILE)
STOP_GRACE = 3.0  # seconds a signal leaves requests in flight before cancelling them
EVICT_INTERVAL = 10.0
NOTICE_POLL = 0.2  # seconds between looks at what other hosts changed (shared index)
ORPHAN_SWEEP_BEATS = 5  # heartbeats between sweeps for orphans that expired hosts held
READ_AHEAD_KB = 1024  # one maximal FUSE request


class MountOptions(BaseModel):
    mountpoint: Path
    store: Path  # the local store directory (for an s3 store: its index directory)
    s3_url: str | None = None  # s3://BUCKET/PREFIX: the bytes live there
    s3_endpoint: str | None = None
    memory: bool = False  # memory://: the bytes live in this process; `store` is private scratch
    sqlite_db: Path | None = None  # sqlite:///FILE: the bytes live in that file
    meta_url: str | None = None  # postgresql://...: the index lives there, not in `store`
    user: str
    allow_other: bool = False
    cache_size: int = 10 << 30
    io_timeout: float = 30.0
    attr_timeout: float = 1.0
    snapdir_visible: bool = False
    scratch_ttl_hours: float = 24.0


class MountRecord(BaseModel):
    """What `motionfs status` and `umount` know about a running daemon."""

    pid: int
    mountpoint: str
    store: str
    user: str
    started_at: float
    remote: str | None = None  # the store's address when it is not the folder `store`
    meta: str | None = None  # the PostgreSQL index's URL, without its password


class StoreIdentity(BaseModel):
    """IDENTITY_FILE: which store this is. Its index records the same uuid, so
    an index that is not this store's is refused instead of served."""

    uuid: str
    format: int = STORE_FORMAT


def registry_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "motionfs" / "mounts"


def registry_file(mountpoint: Path) -> Path:
    key = str(mountpoint.resolve()).replace("/", "%")
    return registry_dir() / f"{key}.json"


def mounted_points() -> set[str]:
    with open("/proc/mounts") as f:
        return {line.split()[1] for line in f}


def is_mounted(path: Path) -> bool:
    return os.path.realpath(path) in mounted_points()


def mount_type(path: Path) -> str | None:
    """The file system type mounted at `path` (the topmost), None if none is."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == target:
                found = fields[2]
    return found


def clear_dead_mount(mp: Path) -> None:
    """Detach our mount at `mp` if its daemon died (kill -9, a crash): such a
    mount answers ENOTCONN to everything until it is unmounted."""
    if mount_type(mp) != "fuse.motionfs":
        return
    try:
        record: MountRecord | None = MountRecord.model_validate_json(registry_file(mp).read_bytes())
    except (OSError, ValueError):
        record = None
    if record is not None and process_alive(record.pid):
        return  # served: refused as "already a mount point"
    if record is None:  # no word from the registry: ask the daemon (stat may be cached)
        try:
            os.statvfs(mp)
            return
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                return
    done = subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise SetupError(f"{mp} is left mounted by a dead daemon and cannot be cleared: {why}")
    registry_file(mp).unlink(missing_ok=True)
    log.warning("cleared the mount at %s left by a daemon that died", mp)


@contextlib.contextmanager
def start_up_errors(what: str) -> Iterator[None]:
    """The host's refusals while starting (a full or read-only disk, permissions,
    the index's errors) as one line: `what: reason`."""
    try:
        yield
    except OSError as e:
        raise SetupError(f"{what}: {e.strerror or e}") from e
    except FsError as e:  # the index's own translation, e.g. of a full disk
        raise SetupError(f"{what}: {e}") from e
    except driver_errors() as e:  # SQLite's or PostgreSQL's, after the index opened
        raise SetupError(f"{what}: index: {one_line(str(e))}") from e


def one_line(text: str) -> str:
    """A driver's message (libpq's run over several lines) as one line."""
    return " ".join(text.split())


def s3_settings(index: MetaEngine, opts: MountOptions) -> S3Settings | None:
    """The s3 store an index belongs to: named on the command line the first
    time, remembered in the index (address and endpoint, never credentials)."""
    known = index.get_meta("s3_url")
    url = opts.s3_url or known
    if url is None:
        return None
    if index.get_meta("sqlite_db") is not None:
        raise SetupError(
            f"the index in {opts.store} belongs to a sqlite store: use another --index"
        )
    if known is not None and opts.s3_url is not None and known != opts.s3_url:
        raise SetupError(
            f"the index in {opts.store} belongs to {known}, not {opts.s3_url}: "
            "use another --index directory"
        )
    if known is None and index.namespace_count():
        raise SetupError(f"{opts.store} holds a local store; use another --index directory")
    endpoint = opts.s3_endpoint or index.get_meta("s3_endpoint")
    try:
        settings = S3Settings.parse(
            url,
            endpoint_url=endpoint,
            connect_timeout=min(5.0, opts.io_timeout),
            read_timeout=opts.io_timeout,
        )
    except ValueError as e:
        raise SetupError(str(e)) from e
    if known is None or (opts.s3_endpoint and opts.s3_endpoint != index.get_meta("s3_endpoint")):
        with index.transaction():
            index.set_meta("s3_url", settings.url)
            if endpoint:
                index.set_meta("s3_endpoint", endpoint)
    return settings


def sqlite_db(index: MetaEngine, opts: MountOptions) -> Path | None:
    """The store file a sqlite store's index belongs to: named on the command
    line the first time, remembered in the index."""
    known = index.get_meta("sqlite_db")
    if opts.sqlite_db is None:
        return None if known is None else Path(known)
    if known is not None and Path(known) != opts.sqlite_db:
        raise SetupError(
            f"the index in {opts.store} belongs to sqlite://{known}, not "
            f"sqlite://{opts.sqlite_db}: use another --index directory"
        )
    if known is None:
        if index.get_meta("s3_url") is not None or index.namespace_count():
            raise SetupError(f"{opts.store} holds another store's index: use another --index")
        with index.transaction():
            index.set_meta("sqlite_db", str(opts.sqlite_db))
    return opts.sqlite_db


def check_environment(opts: MountOptions) -> None:
    """Refuse to start, with a line that says what to do, before touching anything
    (but the dead mount a killed daemon left, which is cleared)."""
    if not os.path.exists("/dev/fuse"):
        raise SetupError(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) "
            "or run the container with --device /dev/fuse"
        )
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise SetupError("/dev/fuse is not readable and writable by this user")
    if shutil.which("fusermount3") is None:
        raise SetupError("fusermount3 is not installed: apt-get install fuse3")
    if opts.sqlite_db is not None and (problem := file_problem(opts.sqlite_db)):
        raise SetupError(f"cannot use store file {opts.sqlite_db}: {problem}")
    mp = opts.mountpoint
    with start_up_errors(f"cannot use mountpoint {mp}"):
        clear_dead_mount(mp)
        # A missing mountpoint whose parent exists is made, once every check has passed.
        create = not mp.exists() and not mp.is_symlink() and mp.parent.is_dir()
        if not create and not mp.is_dir():
            raise SetupError(f"mountpoint {mp} does not exist or is not a directory: mkdir -p {mp}")
        if not create:
            if str(mp.resolve()) in mounted_points():
                raise SetupError(
                    f"{mp} is already a mount point: unmount it first (motionfs umount {mp})"
                )
            if any(mp.iterdir()):
                raise SetupError(f"mountpoint {mp} is not empty: use an empty directory")
            if not os.access(mp, os.W_OK | os.X_OK):
                raise SetupError(f"mountpoint {mp} is not writable by this user")
    store = opts.store
    with start_up_errors(f"store {store} is not writable"):
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = store / f".probe-{os.getpid()}"
        try:  # a byte, not only a name: a full disk still has inodes
            probe.write_bytes(b"\0")
        finally:
            probe.unlink(missing_ok=True)
        release_store(lock_store(store))  # refuse now if another daemon serves this store
    if opts.allow_other and os.getuid() != 0 and not _fuse_allows_other():
        raise SetupError("--allow-other needs 'user_allow_other' in /etc/fuse.conf")
    if create:
        try:
            mp.mkdir()
        except OSError as e:
            raise SetupError(f"cannot create mountpoint {mp}: {e.strerror}") from e


def _fuse_allows_other() -> bool:
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def lock_store(store: Path) -> int:
    """One daemon per store: an exclusive flock held for the daemon's life."""
    fd = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SetupError(
                f"store {store} is in use by another motionfs daemon (pid {owner}); "
                "unmount that drive first"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def release_store(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.close(fd)


def secure_store(store: Path) -> None:
    """Make the store its user's alone, as S3QL keeps its cache: the index
    names every project and the folders hold their metadata. New files are
    private already (the daemon's umask); this tightens stores made 0755/0644
    by older versions."""
    for path, mode in [(store, 0o700), *((store / name, 0o600) for name in PRIVATE_FILES)]:
        try:
            path.chmod(mode)
        except FileNotFoundError:
            pass
        except OSError as e:  # e.g. a store folder someone else owns: say so, serve anyway
            log.warning("cannot make %s private: %s", path, e.strerror)


def open_index(path: Path, meta_url: str | None = None) -> MetaEngine:
    """The store's index (in PostgreSQL with `meta_url`, `path`'s folder then
    holding its marker file); a damaged file is a SetupError, never a traceback."""
    marker = path.with_name(PG_INDEX_FILE)
    if meta_url is not None:
        try:
            return open_engine(marker, url=meta_url)
        except (IndexUnusable, ValueError) as e:
            raise SetupError(one_line(str(e))) from e
    elsewhere = read_marker(marker)
    if elsewhere is not None:  # a SQLite index made here now would hide the real one
        raise SetupError(
            f"the index of {path.parent} is in PostgreSQL ({elsewhere}): add --meta URL "
            f"(or remove {marker} to use a SQLite index here again)"
        )
    try:
        return open_engine(path)
    except sqlite3.DatabaseError as e:
        if e.sqlite_errorname not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise
        raise SetupError(
            f"index {path} is damaged ({e}): rebuild it with motionfs fsck --repair"
        ) from e


def check_identity(index: MetaEngine, storage: Storage, bridge: AsyncioBridge) -> None:
    """Refuse an index that is not this store's; give the store an identity
    (IDENTITY_FILE in the store, the same uuid in the index) if it has none.

    A replaced or zeroed index would otherwise mount as an empty or foreign
    drive while the store holds namespaces. The uuid goes into the index
    first, so a crash in between leaves an index that can rewrite the file.
    """
    where = storage.where
    raw = bridge.run(storage.read_store_file, IDENTITY_FILE)
    try:
        known = None if raw is None else StoreIdentity.model_validate_json(raw)
    except ValueError:
        raise SetupError(
            f"{IDENTITY_FILE} of store {where} is damaged: remove it, the next mount rewrites it"
        ) from None
    if known is not None and known.format > STORE_FORMAT:
        raise SetupError(f"store {where} was made by a newer motionfs: upgrade motionfs")
    found = known.uuid if known is not None else None
    recorded = index.get_meta("store_uuid")
    if found is not None and recorded is not None and found != recorded:
        raise SetupError(
            f"index {index.path} belongs to another store, not {where}: put this store's "
            "index back, or move it aside and rebuild it with motionfs fsck --repair"
        )
    if recorded is None and not index.namespace_count() and bridge.run(storage.store_tokens):
        raise SetupError(
            f"index {index.path} is new or empty but store {where} holds namespaces: "
            "rebuild the index with motionfs fsck --repair"
        )
    identity = found or recorded or uuid.uuid4().hex
    if recorded is None:
        with index.transaction():
            index.set_meta("store_uuid", identity)
    if found is None:
        data = StoreIdentity(uuid=identity).model_dump_json().encode()
        bridge.run(storage.write_store_file, IDENTITY_FILE, data)


def setup_logging(store: Path, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.raiseExceptions = False  # a full disk must not print tracebacks per log line
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fh = logging.FileHandler(store / LOG_FILE)
    fh.setFormatter(fmt)
    root.addHandler(fh)
    if foreground:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        sh.setLevel(logging.WARNING)
        root.addHandler(sh)
    for noisy in ("chuk_artifacts", "chuk_virtual_fs", "chuk_sessions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Engine:
    """Everything a mount serves but the kernel: index, store, cache, journal,
    tree, checkpoints, `.snapshots` views, motion metadata, catalog, the drive
    and its control socket. Built here once, so the daemon, fsck, the Python
    API and the fast tests run the same wiring in the same order.

    check_store=False skips check_identity, for fsck: it opens an index the
    mount refuses in order to rebuild it. `owner` is the (uid, gid) the tree
    serves as (the daemon's own by default).
    """

    def __init__(
        self,
        opts: MountOptions,
        check_store: bool = True,
        owner: tuple[int, int] | None = None,
        exclusive: bool = True,
    ) -> None:
        self.opts = opts
        self.check_store = check_store
        self.session_open = False  # registered with a shared index's hosts
        uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
        self.index = open_index(opts.store / INDEX_FILE, opts.meta_url)
        try:
            secure_store(opts.store)
            self.s3 = s3_settings(self.index, opts)
            self.sqlite_db = sqlite_db(self.index, opts)
            sandbox = self.index.get_meta("sandbox_id")
            if sandbox is None:
                sandbox = f"motionfs-{uuid.uuid4().hex[:12]}"
                with self.index.transaction():
                    self.index.set_meta("sandbox_id", sandbox)
        except BaseException:
            self.index.close()
            raise
        self.bridge = AsyncioBridge()
        self.storage = Storage(
            opts.store / "data",
            sandbox,
            s3=self.s3,
            memory=opts.memory,
            sqlite=self.sqlite_db,
            exclusive=exclusive,
        )
        self.cache = DataCache(opts.store / "cache", opts.cache_size)
        self.journal = Journal(self.index, self.storage, self.bridge, self.cache)
        self.tree = Tree(
            self.index,
            self.storage,
            self.bridge,
            self.journal,
            self.cache,
            TreeConfig(user=opts.user, uid=uid, gid=gid, io_timeout=opts.io_timeout),
        )
        self.checkpoints = Checkpoints(self.tree)
        self.view = SnapshotView(self.tree, self.checkpoints, visible=opts.snapdir_visible)
        self.motion = MotionMetadata(self.tree)
        self.expiry = Expiry(self.tree, opts.scratch_ttl_hours * 3600)
        self.journal.on_stored = self.motion.stored
        self.drive = Drive(self.tree, self.view, self.motion)
        self.catalog = Catalog(self.drive)
        self.control = ControlServer(self.drive, self.catalog, opts.store)

    def prepare(self) -> None:
        """Start the store, check it is this index's, lay out and recover the tree."""
        try:
            self.bridge.run(self.storage.start)
            if self.check_store:
                check_identity(self.index, self.storage, self.bridge)
        except StoreUnavailable as e:
            raise SetupError(str(e)) from e
        self.tree.ensure_layout()
        self.tree.recover()
        hosts = self.index.hosts()
        if hosts is not None:
            hosts.begin(str(self.opts.mountpoint))
            self.session_open = True

    async def start_services(self, nursery: trio.Nursery) -> None:
        """The background services: store journal, cache eviction, control
        socket (listening when this returns), media probing, scratch expiry."""
        nursery.start_soon(self.journal.run, nursery)
        nursery.start_soon(self._evict_forever)
        await nursery.start(self.control.serve)
        nursery.start_soon(self.motion.run)
        nursery.start_soon(self.expiry.run)
        hosts = self.index.hosts()
        if hosts is not None:
            nursery.start_soon(self._follow_hosts, hosts)

    async def _follow_hosts(self, hosts: HostSessions) -> None:
        """Several hosts on one index: beat, and pass on what the others change
        (the engine has dropped it from its caches; waiters look again)."""
        next_beat = trio.current_time() + hosts.beat_every
        beats = 0
        failing = False
        while True:
            await trio.sleep(NOTICE_POLL)
            try:
                if trio.current_time() >= next_beat:
                    next_beat = trio.current_time() + hosts.beat_every
                    hosts.beat()
                    beats += 1
                    if beats % ORPHAN_SWEEP_BEATS == 0:  # what expired hosts held
                        self.tree.drop_orphans()
                changes = hosts.poll()
            except Exception as e:  # the index is away: the next round tries again
                if not failing:
                    log.warning("cannot reach the shared index: %s", e)
                failing = True
                continue
            if failing:
                log.info("the shared index answers again")
                failing = False
            if changes:
                await self.remote_changed(changes)

    async def remote_changed(self, changes: RemoteChanges) -> None:
        """Another host changed these: queues it held up may move on."""
        if changes.namespaces or changes.everything:
            self.journal.moved_elsewhere(changes.everything)

    async def _evict_forever(self) -> None:
        while True:
            await trio.sleep(EVICT_INTERVAL)
            usage = await trio.to_thread.run_sync(self.cache.usage)
            self.tree.content.evict(usage)

    def close(self) -> None:
        """Stop the store and close the index (after the services have stopped)."""
        self.bridge.run(self.storage.stop)
        self.bridge.close()
        hosts = self.index.hosts()
        if hosts is not None and self.session_open:
            try:
                hosts.end()
            except Exception as e:  # it expires by itself
                log.warning("cannot end this host's session: %s", e)
        self.index.close()


class Daemon(Engine):
    """The engine served through the kernel: the mount, signals, a clean exit."""

    def __init__(
        self, opts: MountOptions, check_store: bool = True, exclusive: bool = True
    ) -> None:
        self.stopping = False  # a signal asked for a lazy unmount
        # The FUSE loop and the drain after an unmount, which a signal cuts short.
        self._serving = trio.CancelScope()
        self._draining = trio.CancelScope()
        super().__init__(opts, check_store, exclusive=exclusive)

    def mount(self) -> None:
        options = set(pyfuse3.default_options)
        options |= {"fsname=motionfs", "subtype=motionfs", "default_permissions"}
        if self.opts.allow_other:
            options.add("allow_other")
        ops = Operations(self.drive, attr_timeout=self.opts.attr_timeout)
        try:
            pyfuse3.init(ops, str(self.opts.mountpoint), options)
        except RuntimeError as e:  # libfuse has said why on stderr
            raise SetupError(f"cannot mount {self.opts.mountpoint}: {e}") from e
        self.tree.notify_inode = _invalidate_inode
        self.tree.notify_entry = _invalidate_entry

    async def _run_services(self, main: Callable[[], Awaitable[None]], signals: bool) -> None:
        """Background services around `main`; when it returns, flush and stop."""
        async with trio.open_nursery() as nursery:
            await self.start_services(nursery)
            if signals:
                nursery.start_soon(self._stop_on_signal)
            await main()
            await self.tree.content.flush_all()
            lazy = self.opts.store / LAZY_FLAG
            if lazy.exists() or self.stopping:
                lazy.unlink(missing_ok=True)
                log.info(
                    "lazy unmount: %d store operations left for the next mount",
                    self.index.pending_count(owner=self.journal.me),
                )
            else:
                log.info(
                    "flushing %d pending store operations",
                    self.index.pending_count(owner=self.journal.me),
                )
                with self._draining:
                    await self.journal.drain_all()
                if self._draining.cancelled_caught:
                    log.info(
                        "signal: %d store operations left",
                        self.index.pending_count(owner=self.journal.me),
                    )
            nursery.cancel_scope.cancel()

    async def serve(self, ready_fd: int | None) -> None:
        """Serve the mount until it is unmounted."""

        async def main() -> None:
            if ready_fd is not None:
                os.write(ready_fd, b"ok\n")
                os.close(ready_fd)
            log.info("mounted %s (store %s)", self.opts.mountpoint, self.storage.where)
            if self.opts.memory:
                log.warning("store %s: a RAM drive, everything in it is gone at unmount", MEMORY)
            with self._serving:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._raise_read_ahead)
                    await pyfuse3.main()
                    nursery.cancel_scope.cancel()
            log.info("unmounted")

        await self._run_services(main, signals=True)

    async def _raise_read_ahead(self) -> None:
        # The kernel sets read-ahead when it gets our INIT reply; a stat of the
        # mountpoint returns only after that (from a thread: the loop answers it).
        mountpoint = self.opts.mountpoint
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
        await trio.to_thread.run_sync(raise_read_ahead, mountpoint, abandon_on_cancel=True)

    async def serve_headless(self, started: Callable[[trio.Event], None]) -> None:
        """Serve the control socket without a mount (the Python API's own engine)."""
        stop = trio.Event()

        async def main() -> None:
            started(stop)
            await stop.wait()

        await self._run_services(main, signals=False)

    async def remote_changed(self, changes: RemoteChanges) -> None:
        """The kernel forgets what another host changed, rather than keeping it
        for its entry and attribute timeouts (a thread: a synchronous
        invalidation waits for pages that a read in this loop may hold)."""
        await super().remote_changed(changes)
        for parent, name in changes.entries:
            _invalidate_entry(parent, name)
        if changes.inodes:
            await trio.to_thread.run_sync(_invalidate_inodes, sorted(changes.inodes))

    async def _stop_on_signal(self) -> None:
        """SIGTERM, SIGINT, SIGHUP: unmount like `umount --lazy`, within seconds
        even while the store fails. Open files are sealed and the store queue
        stays in the index for the next mount (a drain under way stops);
        requests still waiting on the store after STOP_GRACE (or a second
        signal) are cancelled."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if self.stopping:
                    self._serving.cancel()
                    continue
                log.info("signal %d: unmounting, store operations stay queued", signum)
                self.stopping = True
                self._draining.cancel()
                pyfuse3.terminate()
                self._serving.deadline = trio.current_time() + STOP_GRACE

    def close(self, mounted: bool = True) -> None:
        if mounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception:
                log.exception("pyfuse3.close failed")
        super().close()


def raise_read_ahead(mountpoint: Path) -> None:
    """Let the kernel read ahead READ_AHEAD_KB on this mount instead of 128 KiB.

    FUSE caps read-ahead at the kernel default whatever the daemon asks; the
    mount's backing-device setting in sysfs lifts it (root only: otherwise the
    default stays). Sequential reads then arrive as 1 MiB requests, an eighth
    of the round trips.
    """
    target = str(mountpoint.parent.resolve() / mountpoint.name)
    try:
        with open("/proc/self/mountinfo") as f:
            devices = [line.split()[2] for line in f if line.split()[4] == target]
        if devices:
            Path(f"/sys/class/bdi/{devices[-1]}/read_ahead_kb").write_text(f"{READ_AHEAD_KB}\n")
    except OSError as e:
        log.info("read-ahead stays at the kernel default: %s", e)


def _invalidate_inode(ino: int) -> None:
    with contextlib.suppress(OSError):  # the kernel does not have it cached
        pyfuse3.invalidate_inode(ino)


def _invalidate_inodes(inodes: list[int]) -> None:
    for ino in inodes:
        _invalidate_inode(ino)


def _invalidate_entry(parent: int, name: bytes) -> None:
    pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)


def run(opts: MountOptions, foreground: bool, ready_fd: int | None = None) -> int:
    """Serve the mount until it is unmounted. Returns the process exit status."""
    check_environment(opts)
    os.umask(0o077)  # what the daemon itself creates (index, cache, log) is private
    # Each step is undone if a later one fails; every failure is one line.
    with contextlib.ExitStack() as undo, start_up_errors(f"cannot start on store {opts.store}"):
        lock_fd = lock_store(opts.store)
        undo.callback(release_store, lock_fd)
        if opts.memory:
            # Whatever a killed daemon left here belongs to bytes that died with it.
            clear_memory_store(opts.store)
            undo.callback(remove_memory_store, opts.store)
        setup_logging(opts.store, foreground)
        (opts.store / LAZY_FLAG).unlink(missing_ok=True)
        daemon = Daemon(opts)
        undo.callback(daemon.close, mounted=False)
        daemon.prepare()
        # Resolve paths before mounting: a stat of our own mountpoint from the
        # daemon thread would wait for the loop that is not running yet.
        record = registry_file(opts.mountpoint)
        record.parent.mkdir(parents=True, exist_ok=True)
        info = MountRecord(
            pid=os.getpid(),
            mountpoint=str(opts.mountpoint.resolve()),
            store=str(opts.store.resolve()),
            user=opts.user,
            started_at=time.time(),
            remote=None if daemon.storage.local else daemon.storage.where,
            meta=None if opts.meta_url is None else redact(opts.meta_url),
        )
        record.write_text(info.model_dump_json())
        undo.callback(record.unlink, missing_ok=True)
        daemon.mount()
        undo.pop_all()
    try:
        trio.run(daemon.serve, ready_fd)
    finally:
        daemon.close()
        record.unlink(missing_ok=True)
        log.info("daemon exited")
        if opts.memory:
            remove_memory_store(opts.store)
        release_store(lock_fd)
    return 0


def clear_memory_store(store: Path) -> None:
    """Empty a memory store's private folder but for the lock we hold and the
    stderr file of the command starting us."""
    for entry in store.iterdir():
        if entry.name == LOCK_FILE or entry.name.startswith(STDERR_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove_memory_store(store: Path) -> None:
    """A memory store ends with its daemon: its index, cache and log go too."""
    shutil.rmtree(store, ignore_errors=True)


def read_records() -> list[MountRecord]:
    out: list[MountRecord] = []
    directory = registry_dir()
    if not directory.is_dir():
        return out
    for f in sorted(directory.glob("*.json")):
        try:
            rec = MountRecord.model_validate(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
        if process_alive(rec.pid):
            out.append(rec)
        else:
            f.unlink(missing_ok=True)
    return out


def process_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
