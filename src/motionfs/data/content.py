"""File content: open files, copy-on-write work generations, fetches and eviction.

The tree (core/tree.py) keeps names and POSIX metadata; this layer keeps the
bytes behind them. Writes go to a fresh work generation in the data cache
and sealing makes it the file's content and journals its upload. Reads of a
file that is not cached fetch it from the store (whole, or block by block on
a store that serves byte ranges). fsync and checkpoints wait here until the
store holds what they need, and eviction keeps the cache within its budget.

It asks the tree only what names decide (a file's store paths, when an
unlinked inode may go), through the small `Names` protocol, so that it never
imports the tree.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import trio

from motionfs.bridge import AsyncioBridge
from motionfs.data.blocks import BLOCK as BLOCK_SIZE
from motionfs.data.blocks import PartialContent
from motionfs.data.cache import DataCache
from motionfs.data.journal import Journal
from motionfs.data.space import SpaceGuard
from motionfs.errors import FsError, StoreUnavailable
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import Inode
from motionfs.store.backend import file_sha256
from motionfs.store.storage import Storage

log = logging.getLogger(__name__)
HASHERS = 2  # files hashed at once (checkpoints): this machine kind's cores
HASH_BATCH = 32  # files hashed per trip to a worker thread
PAGE_GENS_MAX = 100_000  # inodes whose page-cache generation is remembered


def _hash_each(files: list[BinaryIO]) -> list[str]:
    return [file_sha256(f) for f in files]


class Names(Protocol):
    """What the content layer needs from the name layer (the tree)."""

    def store_paths(self, inode: Inode) -> list[str]:
        """Where the store keeps the file's bytes (each hard link's path, or the blob)."""
        ...

    def changing(self) -> AbstractContextManager[None]:
        """A metadata transaction whose store operations start once it commits."""
        ...

    def purge_if_unused(self, ino: int) -> None:
        """The last handle of `ino` closed: delete it if no name or lookup keeps it."""
        ...


class FileLock:
    """A mutex that costs nothing when nobody else holds it.

    trio.Lock yields to the scheduler on every acquire; an open file's lock is
    taken on every first write and every close, almost always uncontended.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiting = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        while self._held:
            await self._waiting.park()
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        self._waiting.unpark()


@dataclass
class OpenFile:
    """Per-inode state while handles are open (or a truncate is in progress)."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    handles: int = 0
    fd: int | None = None  # on cache generation fd_gen
    fd_gen: int = 0
    work: bool = False  # fd_gen is an unsealed work generation
    lock: FileLock = field(default_factory=FileLock)


@dataclass
class Handle:
    ino: int
    writable: bool
    append: bool


class Content:
    """The bytes of the drive's files, for the tree and the FUSE layer."""

    def __init__(
        self,
        index: MetaEngine,
        storage: Storage,
        bridge: AsyncioBridge,
        journal: Journal,
        cache: DataCache,
        space: SpaceGuard,
        io_timeout: float,
        names: Names,
    ) -> None:
        self.index = index
        self.storage = storage
        self.bridge = bridge
        self.journal = journal
        self.cache = cache
        self.space = space
        self.io_timeout = io_timeout
        self.names = names
        self.open_files: dict[int, OpenFile] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._fetch_locks: dict[int, trio.Lock] = {}
        self._partials: dict[int, PartialContent] = {}  # ranged stores: partly cached content
        # The content generation the kernel's page cache holds per inode: the
        # pages stay valid across opens until another host seals a new one.
        self._page_gens: dict[int, int] = {}

    def _node(self, ino: int) -> Inode:
        inode = self.index.get(ino)
        if inode is None:
            raise FsError(errno.ENOENT, f"inode {ino} does not exist")
        return inode

    # -- what the tree asks ------------------------------------------------------------

    def is_open(self, ino: int) -> bool:
        """Whether handles (or a truncate) hold `ino` open."""
        return ino in self.open_files

    def overlay(self, inode: Inode) -> Inode:
        """The inode as its writers see it: an unsealed work generation's size and times."""
        of = self.open_files.get(inode.ino)
        if of is None or not of.work:
            return inode
        return inode.model_copy(
            update={"size": of.size, "mtime_ns": of.mtime_ns, "ctime_ns": of.ctime_ns}
        )

    def note_times(self, ino: int, ctime_ns: int, mtime_ns: int | None) -> None:
        """A setattr changed the times: an open file seals with them, not its own."""
        of = self.open_files.get(ino)
        if of is not None:
            of.ctime_ns = ctime_ns
            if mtime_ns is not None:
                of.mtime_ns = mtime_ns

    def drop_inode(self, ino: int, content_gen: int) -> None:
        """A deleted inode's bytes: its cached content and any partial fetch."""
        self._drop_partial(ino)
        self.cache.drop_inode(ino, content_gen)

    def replaced(self, ino: int) -> None:
        """The file's content was replaced behind its handles (a restore): they
        read the new generation, and older cached ones go."""
        of = self.open_files.get(ino)
        inode = self.index.get(ino)
        if of is not None and inode is not None:
            if of.fd is not None:
                os.close(of.fd)
            of.fd, of.fd_gen, of.work = None, 0, False
            of.size, of.mtime_ns, of.ctime_ns = inode.size, inode.mtime_ns, inode.ctime_ns
        if inode is not None:
            self._drop_partial(ino)
            self.cache.drop_all(ino, keep=inode.content_gen)

    def statfs_path(self) -> Path:
        """The cache's folder: its file system's free space is the drive's."""
        return self.cache.root

    # -- handles ---------------------------------------------------------------------------

    def allocate_fh(self) -> int:
        """A file handle number, unique across live files and snapshot views."""
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def open_handle(self, inode: Inode, flags: int) -> int:
        """A handle on a regular file (no O_TRUNC: a new file is empty already)."""
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        of = self.open_files.get(inode.ino)
        if of is None:
            of = OpenFile(
                ino=inode.ino, size=inode.size, mtime_ns=inode.mtime_ns, ctime_ns=inode.ctime_ns
            )
            self.open_files[inode.ino] = of
        of.handles += 1
        fh = self.allocate_fh()
        self.handles[fh] = Handle(inode.ino, writable, bool(flags & os.O_APPEND))
        return fh

    def page_cache_valid(self, ino: int) -> bool:
        """Whether the kernel's cached pages of `ino` hold its current content
        (this mount's writes keep them so; another host's do not), as of now."""
        inode = self.index.get(ino)
        gen = 0 if inode is None else inode.content_gen
        valid = self._page_gens.get(ino) == gen
        if not valid:
            if len(self._page_gens) >= PAGE_GENS_MAX:
                self._page_gens.clear()
            self._page_gens[ino] = gen
        return valid

    async def open(self, inode: Inode, flags: int) -> int:
        """A handle on a regular file, truncating it for a writable O_TRUNC."""
        fh = self.open_handle(inode, flags)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            try:
                await self.truncate(inode, 0, time.time_ns())
            except BaseException:
                await self.release(fh)
                raise
        return fh

    def _handle(self, fh: int) -> tuple[Handle, OpenFile]:
        h = self.handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h, self.open_files[h.ino]

    async def read(self, fh: int, off: int, size: int) -> bytes:
        _h, of = self._handle(fh)
        if off >= of.size:
            return b""
        if of.fd is None:
            await self._open_content(of)
        if of.fd is None:
            return b""
        partial = self._partials.get(of.ino)
        if partial is not None and partial.gen == of.fd_gen and not of.work:
            await self._fetch_blocks(partial, off, size)
        return os.pread(of.fd, min(size, of.size - off), off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h, of = self._handle(fh)
        if not of.work:
            async with of.lock:
                if not of.work:
                    await self._start_work(of, keep=None)
        assert of.fd is not None
        if h.append:
            off = of.size
        self.space.check_write()
        with self._disk_full_is_enospc():
            n = os.pwrite(of.fd, buf, off)
        of.size = max(of.size, off + n)
        t = time.time_ns()
        of.mtime_ns = of.ctime_ns = t
        return n

    async def flush(self, fh: int) -> None:
        h, of = self._handle(fh)
        if h.writable and of.work:
            await self._seal(of)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        of = self.open_files[h.ino]
        of.handles -= 1
        if of.handles > 0:
            if of.work and h.writable:
                await self._seal(of)
            return
        if of.work:
            await self._seal(of)
        self._close_file(of)

    def _close_file(self, of: OpenFile) -> None:
        if of.fd is not None:
            os.close(of.fd)
            of.fd = None
        self.open_files.pop(of.ino, None)
        self.names.purge_if_unused(of.ino)

    async def fsync(self, fh: int) -> None:
        _h, of = self._handle(fh)
        inode = self._node(of.ino)
        if of.work:
            await self._seal(of, durable=True)
        if inode.ns_id is not None:
            await self._stored(self.journal.wait_for_uploads(of.ino, self.io_timeout))
            failed = self.index.parked_put(of.ino)
            if failed is not None:  # the data is safe in the cache; fsck reports it
                raise FsError(errno.EIO, f"the store refused the data: {failed}")
        self.index.sync()

    # -- waiting for the store ---------------------------------------------------------

    async def wait_stored(self, ns_id: str) -> None:
        """Wait until everything queued for the namespace is in the store (EIO
        once the store has been failing for --io-timeout), with the namespace
        attached (another host may have made it after this one started)."""
        await self._stored(self.journal.drain(ns_id, self.io_timeout))
        await self._stored(self.journal.attach(ns_id))

    async def _stored(self, waiting: Awaitable[object]) -> None:
        """Await a journal wait; a store that stays unavailable is EIO."""
        try:
            await waiting
        except StoreUnavailable as e:
            raise FsError(errno.EIO, f"the store did not take the data: {e}") from e

    # -- cached content ------------------------------------------------------------------

    async def _open_content(self, of: OpenFile) -> None:
        async with of.lock:
            if of.fd is not None:
                return
            inode = self._node(of.ino)
            if inode.content_gen == 0:
                return
            if self.storage.ranged and not self.cache.has(inode.ino, inode.content_gen):
                # Fetch blocks as reads need them (a seek does not download the file).
                partial = self._partial(inode)
                of.fd = os.dup(partial.fd)
                of.fd_gen = inode.content_gen
                return
            await self.ensure_cached(inode)
            of.fd = os.open(self.cache.path(of.ino, inode.content_gen), os.O_RDONLY)
            of.fd_gen = inode.content_gen

    async def ensure_cached(self, inode: Inode) -> None:
        """Stream a file's sealed content from the store into the cache, once."""
        gen = inode.content_gen
        if self.cache.has(inode.ino, gen) and self._cached_size_ok(inode):
            return
        if self.storage.ranged:
            partial = self._partial(inode)
            await self._fetch_blocks(partial, 0, partial.size, whole=True)
            return
        lock = self._fetch_locks.setdefault(inode.ino, trio.Lock())
        async with lock:
            if self.cache.has(inode.ino, gen):
                return
            assert inode.ns_id is not None
            await self.wait_stored(inode.ns_id)
            part = self.cache.part_path(inode.ino, gen)
            for path in self.names.store_paths(inode):
                try:
                    found = await self.bridge.call(self.storage.get, inode.ns_id, path, part)
                except (StoreUnavailable, OSError) as e:
                    raise FsError(errno.EIO, f"reading {path} from the store failed: {e}") from e
                if found:
                    got = part.stat().st_size
                    if got != inode.size:
                        part.unlink()
                        raise FsError(
                            errno.EIO,
                            f"store copy of {path} has {got} bytes, expected {inode.size}",
                        )
                    part.rename(self.cache.path(inode.ino, gen))
                    return
            raise FsError(errno.EIO, f"content of inode {inode.ino} is missing from the store")

    def _cached_size_ok(self, inode: Inode) -> bool:
        """Whether the cached copy has the size the index says (a local store's
        file shares its host file, so this also checks the store copy).

        A damaged copy that the store still holds is dropped (False: fetch it
        again); one that exists nowhere else is EIO, logged.
        """
        if inode.content_gen == 0:
            return True
        path = self.cache.path(inode.ino, inode.content_gen)
        try:
            got = path.stat().st_size
        except FileNotFoundError:
            return False
        if got == inode.size:
            return True
        log.error("cached copy %s has %d bytes, the index says %d", path, got, inode.size)
        if inode.stored_gen != inode.content_gen or not self.storage.ranged:
            # Not uploaded yet, or (local store) the same file as the store's copy.
            raise FsError(errno.EIO, f"content of inode {inode.ino} is damaged ({got} bytes)")
        self.cache.drop(inode.ino, inode.content_gen)
        return False

    async def ensure_sha256(self, inode: Inode) -> Inode:
        """The inode with its content hash, computed now if nobody has yet.

        Uploads to a local disk skip hashing (fsync must not wait for it);
        checkpoints and media metadata ask here when they need one.
        """
        if inode.sha256 is not None or not inode.is_reg or inode.content_gen == 0:
            return inode
        await self.hash_all([inode])
        return self._node(inode.ino)

    async def hash_all(self, inodes: Iterable[Inode]) -> None:
        """Compute the content hash of every file among `inodes` that has none.

        HASHERS files at a time (hashlib lets go of the GIL, so they use as
        many cores), HASH_BATCH files per trip to a worker thread (a trip
        costs more than hashing a small file), recorded in one transaction.
        A file replaced or evicted meanwhile keeps no hash: its caller looks
        again. The first error (a store that cannot give content back) is
        raised as it is, after the hashes found are recorded.
        """
        todo = [n for n in inodes if n.is_reg and n.sha256 is None and n.content_gen != 0]
        found: list[tuple[int, int, str]] = []
        errors: list[Exception] = []

        async def hasher(share: list[Inode]) -> None:
            try:
                for start in range(0, len(share), HASH_BATCH):
                    with contextlib.ExitStack() as files:
                        batch: list[tuple[int, int, BinaryIO]] = []
                        for inode in share[start : start + HASH_BATCH]:
                            await self.ensure_cached(inode)
                            gen = inode.content_gen
                            with contextlib.suppress(FileNotFoundError):
                                f = files.enter_context(
                                    open(self.cache.source(inode.ino, gen), "rb")
                                )
                                batch.append((inode.ino, gen, f))
                        digests = await trio.to_thread.run_sync(_hash_each, [f for *_, f in batch])
                    found.extend(
                        (ino, gen, d) for (ino, gen, _f), d in zip(batch, digests, strict=True)
                    )
            except Exception as e:  # not an ExceptionGroup for the caller
                errors.append(e)

        async with trio.open_nursery() as nursery:
            for k in range(HASHERS):
                nursery.start_soon(hasher, todo[k::HASHERS])
        if found:
            with self.index.transaction():
                for ino, gen, digest in found:
                    current = self.index.get(ino)
                    if current and current.content_gen == gen and current.sha256 is None:
                        self.index.update(ino, sha256=digest)
        if errors:
            raise errors[0]

    # -- ranged reads (remote stores) ------------------------------------------------

    def _partial(self, inode: Inode) -> PartialContent:
        """The sparse cache file of `inode`'s content generation, made on first use."""
        gen = inode.content_gen
        partial = self._partials.get(inode.ino)
        if partial is not None and partial.gen == gen:
            return partial
        self._drop_partial(inode.ino)
        partial = PartialContent(self.cache.part_path(inode.ino, gen), inode.ino, gen, inode.size)
        self._partials[inode.ino] = partial
        return partial

    def _drop_partial(self, ino: int, gen: int | None = None) -> None:
        partial = self._partials.get(ino)
        if partial is not None and (gen is None or partial.gen == gen):
            del self._partials[ino]
            partial.close()

    async def _fetch_blocks(
        self, partial: PartialContent, off: int, size: int, whole: bool = False
    ) -> None:
        """Make bytes [off, off+size) present (with readahead, or the whole file)."""
        need_first = off // BLOCK_SIZE
        need_last = max(need_first, (min(off + size, partial.size) - 1) // BLOCK_SIZE)
        if partial.complete:
            self._finish_partial(partial)
            return
        if not whole and partial.has(need_first, need_last):
            partial.note(off, size)  # keep track of sequential reads
            return
        async with partial.lock:
            first, last = (0, partial.blocks - 1) if whole else partial.window(off, size)
            inode = self._node(partial.ino)
            assert inode.ns_id is not None
            if partial.etag is None and self.index.pending_for_paths(
                inode.ns_id, inode.ino, self.names.store_paths(inode)
            ):
                # The store must hold this generation at its path before we read it;
                # uploads of other files in the project need not be waited for.
                await self.wait_stored(inode.ns_id)
            for start, length in partial.missing_ranges(first, last):
                await self._fetch_range(partial, inode, start, length)
            if partial.complete:
                self._finish_partial(partial)

    def _finish_partial(self, partial: PartialContent) -> None:
        """Every block is here: from now on it is ordinary cached content."""
        if self._partials.get(partial.ino) is not partial:
            return
        with contextlib.suppress(FileNotFoundError):
            os.rename(partial.path, self.cache.path(partial.ino, partial.gen))
        del self._partials[partial.ino]
        partial.close(unlink=False)

    async def _fetch_range(
        self, partial: PartialContent, inode: Inode, start: int, length: int
    ) -> None:
        assert inode.ns_id is not None
        await self._stored(self.journal.attach(inode.ns_id))
        timeout = self.io_timeout
        with trio.move_on_after(timeout) as scope:
            for path in self.names.store_paths(inode):
                try:
                    got = await self.bridge.call(
                        self.storage.read_range,
                        inode.ns_id,
                        path,
                        start,
                        length,
                        partial.fd,
                        partial.etag,
                    )
                except (StoreUnavailable, OSError) as e:
                    raise FsError(errno.EIO, f"reading {path} from the store failed: {e}") from e
                if got is None:
                    continue
                etag, total = got
                if total != partial.size:
                    raise FsError(
                        errno.EIO,
                        f"store copy of {path} has {total} bytes, expected {partial.size}",
                    )
                partial.etag = etag
                partial.mark(start, length)
                return
            raise FsError(errno.EIO, f"content of inode {inode.ino} is missing from the store")
        if scope.cancelled_caught:
            raise FsError(errno.EIO, f"the store did not answer within {timeout:.0f}s")

    # -- work generations ----------------------------------------------------------------

    async def _start_work(self, of: OpenFile, keep: int | None) -> None:
        """Switch an open file to a fresh work generation (copy-on-write)."""
        inode = self._node(of.ino)
        base = inode.content_gen
        if base and keep != 0:
            await self.ensure_cached(inode)
        gen = self.index.new_generation(of.ino, max(inode.content_gen, of.fd_gen))
        with self._disk_full_is_enospc():
            if base and keep != 0:  # a copy: off the event loop
                fd = await trio.to_thread.run_sync(self.cache.start_work, of.ino, gen, base, keep)
            else:  # a new empty file: cheaper than a thread hop
                fd = self.cache.start_work(of.ino, gen, base, keep)
        if of.fd is not None:
            os.close(of.fd)
        of.fd, of.fd_gen, of.work = fd, gen, True

    @contextmanager
    def _disk_full_is_enospc(self) -> Iterator[None]:
        """A full disk under the cache: ENOSPC for the writer, the reserve for the index."""
        try:
            yield
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.space.release()
            raise FsError(errno.ENOSPC, "the disk under the cache is full") from e

    async def truncate(self, inode: Inode, size: int, t: int) -> None:
        """Cut or extend a regular file to `size` (open or not) at time `t`."""
        temporary = inode.ino not in self.open_files
        of = self.open_files.get(inode.ino) or OpenFile(
            ino=inode.ino, size=inode.size, mtime_ns=inode.mtime_ns, ctime_ns=inode.ctime_ns
        )
        self.open_files[inode.ino] = of
        try:
            async with of.lock:
                if not of.work:
                    await self._start_work(of, keep=min(size, of.size))
                assert of.fd is not None
                os.ftruncate(of.fd, size)
                of.size = size
                of.mtime_ns = of.ctime_ns = t
            if temporary:
                await self._seal(of)
        finally:
            if temporary:
                self._close_file(of)

    async def _seal(self, of: OpenFile, durable: bool = False) -> None:
        """Make the work generation the file's content and journal its upload."""
        async with of.lock:
            if not of.work:
                return
            inode = self._node(of.ino)
            old = inode.content_gen
            with self.names.changing():
                self.index.update(
                    of.ino,
                    sha256=None,  # new content: hashed on upload or on first need
                    content_gen=of.fd_gen,
                    size=of.size,
                    mtime_ns=of.mtime_ns,
                    ctime_ns=of.ctime_ns,
                )
                if inode.nlink > 0 and inode.ns_id is not None:
                    # Earlier uploads of this file are superseded by this one.
                    self.index.replace_puts(
                        inode.ns_id, of.ino, self.names.store_paths(inode), durable
                    )
            of.work = False
            self._page_gens[of.ino] = of.fd_gen  # the kernel saw these writes
            if old != of.fd_gen:
                self._drop_partial(of.ino, old)
                self.cache.drop(of.ino, old)

    async def seal_namespace(self, ns_id: str) -> None:
        """Seal every open file of a namespace (before a checkpoint or restore)."""
        for of in list(self.open_files.values()):
            inode = self.index.get(of.ino)
            if of.work and inode is not None and inode.ns_id == ns_id:
                await self._seal(of)

    async def flush_all(self) -> None:
        """Seal every open file's work (unmount)."""
        for of in list(self.open_files.values()):
            if of.work:
                await self._seal(of)

    # -- eviction ------------------------------------------------------------------------

    def evict(self, usage: int) -> None:
        """Drop clean, closed, least recently used content until within budget."""
        if usage <= self.cache.budget:
            return
        for ino, partial in list(self._partials.items()):
            if ino not in self.open_files and not partial.lock.locked():
                usage -= partial.path.stat().st_blocks * 512 if partial.path.exists() else 0
                self._drop_partial(ino)
        for ino, gen, path in self.cache.eviction_candidates():
            if usage <= self.cache.budget:
                return
            if ino == -1:  # checkpoint content: open handles keep their fd
                usage -= path.stat().st_blocks * 512
                path.unlink(missing_ok=True)
                continue
            inode = self.index.get(ino)
            if (
                inode is None
                or ino in self.open_files
                or inode.content_gen != gen
                or inode.stored_gen != gen
                or self.index.ino_has_pending(ino)
            ):
                continue
            size = path.stat().st_blocks * 512
            self.cache.drop(ino, gen)
            usage -= size
