"""The persisted journal of store operations, applied in order per namespace.

Metadata changes commit to the index together with the store work they imply
(put a file, make or remove a directory, move, destroy a namespace). Workers
apply each namespace's journal strictly in order, so replaying it after a
crash, or after the backend comes back, converges the store on the index.
Every operation is idempotent. fsync waits here for its own entry.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import BinaryIO

import trio

from motionfs.bridge import AsyncioBridge
from motionfs.data.cache import DataCache
from motionfs.errors import FsError, StoreUnavailable
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import JournalEntry
from motionfs.store.backend import Change, Copy, MakeDirs, Move, Put, Remove, Write
from motionfs.store.failures import SourceMissing, is_permanent
from motionfs.store.host import HostTree
from motionfs.store.storage import Storage

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
MAX_PARALLEL_NAMESPACES = 4
# Write-back delay: while requests keep arriving, store work waits for a quiet
# moment (the libraries' Python work competes with the FUSE loop for the GIL),
# unless someone waits for it (fsync, a checkpoint, an uncached read, unmount)
# or the backlog grows past BACKLOG entries.
QUIET = 0.25
MAX_DELAY = 0.5  # never wait longer than this for a pause...
WORK_SLICE = 0.5  # ...and then work at least this long before waiting again
BACKLOG = 2000
STILL_WORKING_POLL = 1.0  # seconds between looks at a slow store past the timeout
BLOCKED_POLL = 2.0  # seconds between looks at a queue whose next entry is another host's
BATCH = 64  # entries applied and recorded at once on a local disk
INLINE_SLICE = 0.002  # seconds of local store work before the FUSE loop gets a turn
HOLD_MAX = 1.0  # seconds a put of a new file still open may wait for its close...
HOLD_POLL = 0.05  # ...looking again this often


class Op(StrEnum):
    PUT = "put"  # ino's sealed content -> path
    MKDIR = "mkdir"  # path
    REMOVE = "remove"  # path (file or tree)
    MOVE = "move"  # path -> path2
    WRITE = "write"  # small file: path2 holds the text (gzipped if path ends in .gz)
    COPY = "copy"  # path -> path2, replacing it (restoring a checkpoint)
    KEEP = "keep"  # path -> path2 unless path2 exists (content-addressed objects)
    DESTROY = "destroy"  # the whole namespace
    READY = "ready"  # checkpoint `path` has every object: make it visible


# What a namespace on this disk applies in runs (see Journal._apply_inline);
# everything else goes one entry at a time.
HOST_OPS = {Op.PUT, Op.MKDIR, Op.REMOVE, Op.MOVE, Op.COPY, Op.KEEP}


def _change(e: JournalEntry, src: tuple[BinaryIO, int] | None) -> Change | None:
    """The store change an entry asks for; None for a PUT with nothing to upload.

    A PUT's source is a sealed cache generation, opened by the caller.
    """
    op = Op(e.op)
    assert e.path is not None
    if op is Op.PUT:
        return None if src is None else Put(e.path, src[0], e.durable, sealed=True)
    if op is Op.MKDIR:
        return MakeDirs(e.path)
    if op is Op.REMOVE:
        return Remove(e.path)
    assert e.path2 is not None
    if op is Op.MOVE:
        return Move(e.path, e.path2)
    if op in (Op.COPY, Op.KEEP):
        return Copy(e.path, e.path2, if_missing=op is Op.KEEP)
    if op is Op.WRITE:
        data = e.path2.encode()
        if e.path.endswith(".gz"):  # checkpoint manifests: mostly hashes and paths
            data = gzip.compress(data, mtime=0)
        return Write(e.path, data)
    raise ValueError(f"journal entry {e.op} is not a store change")


def permanent(error: BaseException) -> bool:
    """Whether retrying an entry that failed this way can never succeed."""
    if isinstance(error, SourceMissing):
        return True
    if isinstance(error, StoreUnavailable | OSError | FsError):
        return is_permanent(error)
    return True  # a bug: keep the entry for fsck rather than retry it forever


class Journal:
    def __init__(
        self, index: MetaEngine, storage: Storage, bridge: AsyncioBridge, cache: DataCache
    ):
        self.index = index
        self.storage = storage
        self.bridge = bridge
        self.cache = cache
        self.checkpoints = index.checkpoint_catalog()
        self._wake = trio.Event()
        self._running: set[str] = set()
        self._progress = trio.Event()  # set (and replaced) whenever an entry finishes
        self._limiter = trio.CapacityLimiter(MAX_PARALLEL_NAMESPACES)
        self.errors: dict[str, str] = {}
        self.last_request = 0.0  # trio clock time of the latest file system request
        self.on_stored: Callable[[int], None] = lambda ino: None  # content reached the store
        self._waiters = 0
        self._work_until = 0.0
        self._urgent = trio.Event()  # set while someone waits for the store
        self._rescan = True  # look at every namespace's entries, not just new ones
        # Set by the tree: whether handles hold an inode open (see _hold).
        self.still_open: Callable[[int], bool] = lambda ino: False
        self._held: dict[str, tuple[int, float]] = {}  # ns_id -> (seq held back, since)
        # Several hosts: entries other hosts queued are theirs to apply (a put's
        # bytes are in their cache); a namespace whose next entry is one of
        # them waits here until its journal moves.
        self.hosts = index.hosts()
        self.me = None if self.hosts is None else self.hosts.me
        self._blocked: set[str] = set()

    def mine(self, entry: JournalEntry) -> bool:
        """Whether this host applies the entry (one host: every entry)."""
        return entry.owner is None or entry.owner == self.me

    def kick(self, rescan: bool = False) -> None:
        """New entries were committed (or, with rescan, may exist anywhere)."""
        if rescan:
            self._rescan = True
        self._wake.set()

    async def run(self, nursery: trio.Nursery) -> None:
        """Start a worker for every namespace with pending entries, forever.

        First, temporary files that a crash left in the store are removed:
        nothing else writes to the store before this loop starts workers.
        """
        await self._sweep()
        retry_blocked = False
        while True:
            touched = self.index.take_touched()
            self._blocked -= touched  # their journals moved: look again
            if retry_blocked:
                touched |= self._blocked
                self._blocked.clear()
            candidates: Iterable[str] = touched
            if self._rescan:
                self._rescan = False
                candidates = set(self.index.pending_namespaces()) - self._blocked | touched
            for ns_id in candidates:
                if ns_id not in self._running:
                    self._running.add(ns_id)
                    nursery.start_soon(self._worker, ns_id)
            with trio.move_on_after(BLOCKED_POLL if self._blocked else math.inf) as scope:
                await self._wake.wait()
            retry_blocked = scope.cancelled_caught
            self._wake = trio.Event()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _sweep(self) -> None:
        removed = await trio.to_thread.run_sync(self.storage.sweep_store_tmp)
        for record, _state in self.index.namespaces():
            tree = self.storage.local_tree(record)
            if tree is not None:
                removed += await trio.to_thread.run_sync(tree.sweep_temps)
        if removed:
            log.info("removed %d temporary files an interrupted store operation left", removed)

    async def _worker(self, ns_id: str) -> None:
        """Apply a namespace's entries; nothing that goes wrong ends the worker
        early (a full disk under the index, a bug) but an empty queue."""
        attempts = 0
        try:
            async with self._limiter:
                while True:
                    try:
                        entries = self.index.next_ops(ns_id, BATCH)
                        if not entries:
                            break
                        entries = list(itertools.takewhile(self.mine, entries))
                        if not entries:  # another host's turn first
                            self._blocked.add(ns_id)
                            break
                        await self._quiet_moment()
                        await self._apply_some(entries)
                        attempts = 0
                    except Exception as e:
                        attempts += 1
                        delay = min(MAX_BACKOFF, 0.2 * math.pow(2, min(attempts, 10)))
                        log.error("store queue of %s stalled, retry in %.1fs: %s", ns_id, delay, e)
                        self.errors[ns_id] = f"store queue stalled: {e}"
                        self._notify()
                        await trio.sleep(delay)
        finally:
            self._running.discard(ns_id)
            self._notify()
            self.kick(rescan=True)

    async def _quiet_moment(self) -> None:
        """Wait for a pause in requests, at most MAX_DELAY, then work for a while."""
        now = trio.current_time()
        if now < self._work_until or self._waiters:
            return
        deadline = now + MAX_DELAY
        while not self._waiters and self.index.backlog() <= BACKLOG:
            now = trio.current_time()
            idle = now - self.last_request
            if idle >= QUIET or now >= deadline:
                break
            with trio.move_on_after(min(QUIET - idle, deadline - now)):
                await self._urgent.wait()
        self._work_until = trio.current_time() + WORK_SLICE

    async def _apply_some(self, entries: list[JournalEntry]) -> None:
        """Apply the first entry, or a run of file operations at once on a local disk."""
        first = entries[0]
        direct = None
        try:
            if Op(first.op) in HOST_OPS and await self.attach(first.ns_id):
                direct = self.storage.direct(first.ns_id)
        except Exception as e:  # the namespace cannot be opened (yet)
            await self._failed(first, e)
            return
        if direct is None:
            try:
                await self.apply(first)
            except Exception as e:
                await self._failed(first, e)
                return
            self._finished([first])
            return
        run = list(itertools.takewhile(lambda e: Op(e.op) in HOST_OPS, entries))
        await self._apply_inline(direct, run)

    async def _apply_inline(self, tree: HostTree, entries: list[JournalEntry]) -> None:
        """Apply entries in order and record them in one transaction.

        Links, renames and unlinks take microseconds: they run right here, a
        slice at a time. A Python worker thread would cost more than the work,
        since every system call the FUSE loop makes meanwhile waits for the GIL
        to come back. Durable uploads (fsync) wait for the disk in a thread, and
        so does a copy that cannot be a link (a large file's bytes).
        """
        sources: list[tuple[BinaryIO, int] | None] = []
        results: list[bool] = []
        error: Exception | None = None
        held = False
        try:
            with tree.batch() as run:  # the run's folders stay open until it ends
                deadline = time.perf_counter() + INLINE_SLICE
                for e in entries:
                    if self._hold(e):
                        held = not results
                        break  # the rest waits behind it, in order
                    if time.perf_counter() >= deadline:
                        # The FUSE loop has its turn, then the run goes on: what
                        # was fetched stays a prefix of the queue, in order.
                        await trio.lowlevel.checkpoint()
                        deadline = time.perf_counter() + INLINE_SLICE
                    try:
                        src = self._open_source(e) if Op(e.op) is Op.PUT else None
                        sources.append(src)
                        change = _change(e, src)
                        if change is not None and (e.durable or not run.apply_if_cheap(change)):
                            await trio.to_thread.run_sync(run.apply, change)
                        results.append(isinstance(change, Put))  # stored content
                    except Exception as exc:
                        error = exc
                        break
        finally:
            for src in sources:
                if src is not None:
                    src[0].close()
        done = entries[: len(results)]
        stored = []
        with self.index.transaction():
            for e, src, stored_content in zip(done, sources, results, strict=False):
                if stored_content and src is not None and self._record_put(e, src[1], None):
                    stored.append(e.ino)
            self._finished(done)
        for ino in stored:
            assert ino is not None
            self.on_stored(ino)
        if error is not None:
            await self._failed(entries[len(results)], error)
        elif held:  # nothing to do yet: look again soon, or once someone waits
            with trio.move_on_after(HOLD_POLL):
                await self._urgent.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _hold(self, e: JournalEntry) -> bool:
        """Whether to leave a put of a new, still empty and still open file at
        the head of its queue for now. Its close journals a put of the content
        and drops this one; applying it first would make an empty store file
        only to replace it a moment later (an editor's or rsync's temp file).
        Never while someone waits for the store, and never for longer than
        HOLD_MAX: a file held open stays empty in the store no longer than that.
        The entry stays queued, so a crash meanwhile replays it."""
        if e.durable or self._waiters or Op(e.op) is not Op.PUT or e.ino is None:
            return False
        if not self.still_open(e.ino):
            return False
        inode = self.index.get(e.ino)
        if inode is None or inode.content_gen != 0:
            return False
        now = trio.current_time()
        seq, since = self._held.get(e.ns_id, (e.seq, now))
        if seq != e.seq:
            since = now
        self._held[e.ns_id] = (e.seq, since)
        return now - since < HOLD_MAX

    def _finished(self, entries: list[JournalEntry]) -> None:
        if not entries:
            return
        self.errors.pop(entries[0].ns_id, None)
        with self.index.transaction():
            for e in entries:
                self.index.finish_op(e.seq)
        self._notify()

    async def _failed(self, entry: JournalEntry, error: Exception) -> None:
        """A transient failure is retried with backoff (the entry stays first in
        line); a permanent one is parked (out of the queue, kept for status and
        fsck, its content safe in the cache) so that it blocks nothing."""
        if permanent(error):
            log.error("store operation %s failed for good, parked: %s", entry, error)
            with self.index.transaction():
                self.index.park_op(entry.seq, f"{entry.op} {entry.path or ''}: {error}")
            self.errors.pop(entry.ns_id, None)
            self._notify()
            return
        attempts = entry.attempts + 1
        delay = min(MAX_BACKOFF, 0.2 * math.pow(2, min(attempts, 10)))
        msg = f"{entry.op} {entry.path or ''} in {entry.ns_id}: {error}"
        log.warning("store operation failed (attempt %d, retry in %.1fs): %s", attempts, delay, msg)
        self.errors[entry.ns_id] = msg
        with self.index.transaction():
            self.index.fail_op(entry.seq, str(error))
        self._notify()
        await trio.sleep(delay)

    async def attach(self, ns: str) -> bool:
        """Make sure the namespace is attached; False if the index does not know it
        (another host may have made it since this one started)."""
        if self.storage.is_attached(ns):
            return True
        record = self.index.namespace(ns)
        if record is None:
            return False
        await self.bridge.call(self.storage.attach, record)
        return True

    async def apply(self, e: JournalEntry) -> None:
        """Carry out one entry through the storage layer (runs of local file
        operations go through `_apply_inline` instead); raises what the store raises."""
        ns = e.ns_id
        op = Op(e.op)
        if op is Op.DESTROY:
            record = self.index.namespace(ns)
            if record is not None:
                await self.bridge.call(self.storage.destroy_namespace, record)
                with self.index.transaction():
                    self.index.remove_namespace(ns)
            return
        if not await self.attach(ns):
            log.warning("journal entry for unknown namespace %s skipped", ns)
            return
        if op is Op.READY:
            assert e.path is not None
            lost = [p for p in self.index.parked_ops() if p.ns_id == ns and p.seq < e.seq]
            if lost:  # stays invisible; fsck reports it
                log.error("checkpoint %s of %s is incomplete: %s", e.path, ns, lost[0].last_error)
                return
            with self.index.transaction():
                self.checkpoints.mark_complete(ns, e.path)
            return
        src = self._open_source(e) if op is Op.PUT else None
        change = _change(e, src)
        if change is None:
            return
        with contextlib.ExitStack() as stack:
            if src is not None:
                stack.enter_context(src[0])
            digest = await self.bridge.call(self.storage.apply, ns, change)
        if src is not None:
            with self.index.transaction():
                stored = self._record_put(e, src[1], digest)
            if stored:
                assert e.ino is not None
                self.on_stored(e.ino)

    def _open_source(self, e: JournalEntry) -> tuple[BinaryIO, int] | None:
        """The sealed content to upload and its generation; None if there is nothing to do.

        The file is opened here so that a newer generation replacing it meanwhile
        cannot pull it away.
        """
        assert e.ino is not None and e.path is not None
        inode = self.index.get(e.ino)
        if inode is None:
            return None  # deleted since: a later entry removes the path
        gen = inode.content_gen
        try:
            return open(self.cache.source(e.ino, gen), "rb"), gen
        except FileNotFoundError:
            # Superseded by a newer generation (which has its own entry), or lost.
            puts = self.index.pending_puts(e.ino)
            if not (puts and puts[-1][0] > e.seq):
                log.error("content of inode %d generation %d is missing; not uploaded", e.ino, gen)
            return None

    def _record_put(self, e: JournalEntry, gen: int, digest: str | None) -> bool:
        """Note (in the current transaction) that `gen` is stored, if still current,
        with its hash when the upload computed one."""
        assert e.ino is not None
        current = self.index.get(e.ino)
        if current is None or current.content_gen != gen:
            return False
        if digest is None:
            self.index.update(e.ino, stored_gen=gen)
        else:
            self.index.update(e.ino, stored_gen=gen, sha256=digest)
        return True

    # -- waiting ----------------------------------------------------------------

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Someone waits for the store: no write-back delay meanwhile."""
        self._waiters += 1
        self._urgent.set()
        self.kick()
        try:
            yield
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._urgent = trio.Event()

    async def wait_for(self, ns_id: str, seq: int, timeout: float) -> None:
        """Wait until entry `seq` (and all before it in ns_id) is applied."""

        def applied() -> bool:
            entries = self.index.next_ops(ns_id, 1)
            return not entries or entries[0].seq > seq

        await self._wait_until(applied, ns_id, timeout)

    async def wait_for_uploads(self, ino: int, timeout: float) -> None:
        """Wait until no upload of `ino` is pending (newer ones replace older)."""
        inode = self.index.get(ino)
        ns_id = inode.ns_id if inode is not None else None
        await self._wait_until(lambda: not self.index.pending_puts(ino), ns_id, timeout)

    async def _wait_until(
        self, done: Callable[[], bool], ns_id: str | None, timeout: float
    ) -> None:
        """Wait until done(); once `timeout` has passed, fail as soon as the store is failing.

        A store that keeps answering (a 4 GiB upload over a slow link) is waited
        for: only failed attempts (in self.errors, with the client's own bounded
        timeouts) end the wait with StoreUnavailable, so an unreachable store
        costs about `timeout`, a slow one costs what it costs.
        """
        deadline = trio.current_time() + timeout
        with self._waiting():
            while not done():
                now = trio.current_time()
                if now >= deadline and (ns_id is None or ns_id in self.errors):
                    raise StoreUnavailable(
                        self.errors.get(
                            ns_id or "", f"store did not acknowledge within {timeout:.0f}s"
                        )
                    )
                if now >= deadline and ns_id is not None:
                    held = self.held_by_absent_host(ns_id)
                    if held is not None:
                        raise StoreUnavailable(held)
                with trio.move_on_after(max(deadline - now, STILL_WORKING_POLL)):
                    await self._progress.wait()

    def moved_elsewhere(self, everything: bool = False) -> None:
        """Other hosts applied or queued entries: waiters and blocked queues look again."""
        self._notify()
        self.kick(rescan=everything)

    def held_by_absent_host(self, ns_id: str) -> str | None:
        """Why the namespace's queue waits for a host that is not running, if it does."""
        if self.hosts is None:
            return None
        head = self.index.next_ops(ns_id, 1)
        if not head or self.mine(head[0]) or head[0].owner is None:
            return None
        owner = head[0].owner
        if self.hosts.alive(owner):
            return None
        return f"store work of {self.hosts.describe(owner)} comes first; that host is not running"

    async def drain(self, ns_id: str, timeout: float) -> None:
        last = self.index.last_seq(ns_id)
        if last is not None:
            await self.wait_for(ns_id, last, timeout)

    async def drain_all(self, timeout: float = math.inf) -> None:
        with self._waiting(), trio.move_on_after(timeout):
            while self.index.pending_count(owner=self.me):
                if self._all_held_by_absent_hosts():
                    log.warning(
                        "%d store operations wait for hosts that are not running; they stay queued",
                        self.index.pending_count(owner=self.me),
                    )
                    return
                with trio.move_on_after(BLOCKED_POLL):
                    await self._progress.wait()

    def _all_held_by_absent_hosts(self) -> bool:
        """Whether every namespace with this host's entries waits for an absent host."""
        if self.hosts is None:
            return False
        mine = [
            ns for ns in self.index.pending_namespaces() if self.index.pending_count(ns, self.me)
        ]
        return bool(mine) and all(self.held_by_absent_host(ns) is not None for ns in mine)
