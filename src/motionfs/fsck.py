"""`motionfs fsck`: prove that the index and the store agree, and repair what can be.

Checks, in order: the index database itself, the store-operation queue (entries
waiting, entries that failed for good), every namespace the index knows, every
live file's store copy (exists, size; with `full` the sha256 where known), every
checkpoint object (exists, size; with `full` its bytes hash to its name),
checkpoints left incomplete, and what the store holds that the index does not
know (namespaces, files, objects, temporary files).

Repairs never delete data that exists nowhere else: a file's bytes are uploaded
again from the cache or copied back from a checkpoint object, unknown
namespaces and files are adopted into the drive (`lost+found`), temporary files
and unreferenced checkpoint objects are removed, parked store operations are
retried. With an empty index the whole drive is rebuilt from the namespaces'
own records (`/.chuk-motion/namespace.json`). Repairs are store operations in
the index's journal, applied before fsck returns.

Exit status as fsck(8): 0 clean, 1 problems found and all repaired, 4 problems
left, 8 fsck could not run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio
from pydantic import BaseModel

from motionfs.core.checkpoints import object_path
from motionfs.core.tree import Tree, now_ns
from motionfs.daemon import (
    IDENTITY_FILE,
    INDEX_FILE,
    PG_INDEX_FILE,
    Daemon,
    MountOptions,
    StoreIdentity,
    lock_store,
    release_store,
)
from motionfs.data.journal import Op
from motionfs.errors import FsError, SetupError, StoreUnavailable
from motionfs.layout import NAMESPACE_RECORD_PATH, ROOT_INO, Area, Role
from motionfs.meta import driver_errors, open_engine, redact
from motionfs.meta.engine import CheckpointCatalog, IndexUnusable, MetaEngine
from motionfs.meta.records import Inode, NamespaceRecord
from motionfs.meta.sqlite import Index
from motionfs.motion.models import NamespaceType, StorageScope
from motionfs.store.names import BLOB_DATA_PATH

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_CLEAN, EXIT_REPAIRED, EXIT_LEFT, EXIT_FAILED = 0, 1, 4, 8
LOST_FOUND = b"lost+found"
# Files of the libraries and of motionfs itself inside a namespace: never orphans.
LIBRARY_PREFIXES = ("/.chuk-motion/", "/.workspace/")
LIBRARY_FILES = {"/_meta.json", BLOB_DATA_PATH}


class Finding(BaseModel):
    kind: str  # index | queue | namespace | file | object | checkpoint | orphan | temp
    what: str  # the path, namespace or object concerned
    problem: str
    repaired: bool = False


class FsckReport(BaseModel):
    store: str
    meta: str | None = None  # the PostgreSQL index's URL (no password); None: SQLite
    checked: dict[str, int]
    findings: list[Finding]
    exit_code: int


@dataclass
class Fsck:
    """One run over a store whose components (the daemon's wiring) are given."""

    tree: Tree
    full: bool = False
    repair: bool = False
    progress: Callable[[str, int], AbstractContextManager[Callable[[int], None]]] | None = None
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    _incomplete: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.index: MetaEngine = self.tree.index
        self.storage = self.tree.storage
        self.bridge = self.tree.bridge
        self.cp_catalog: CheckpointCatalog = self.index.checkpoint_catalog()

    # -- reporting ------------------------------------------------------------

    def _found(self, kind: str, what: str, problem: str, repaired: bool = False) -> None:
        self.findings.append(Finding(kind=kind, what=what, problem=problem, repaired=repaired))

    def _count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def _steps(self, label: str, items: list[T]) -> Iterator[T]:
        """The items, with a progress bar when the caller gave one."""
        if self.progress is None:
            yield from items
            return
        with self.progress(label, len(items)) as advance:
            for item in items:
                yield item
                advance(1)

    def exit_code(self) -> int:
        if not self.findings:
            return EXIT_CLEAN
        return EXIT_REPAIRED if all(f.repaired for f in self.findings) else EXIT_LEFT

    # -- the run --------------------------------------------------------------

    async def run(self) -> None:
        if not self._index_ok():
            return
        rebuilt = False
        if self.index.namespace_count() == 0:
            rebuilt = await self._rebuild()
        self._queue()
        await self._namespaces()
        await self._files()
        await self._objects()
        self._checkpoints()
        if not rebuilt:
            await self._orphan_namespaces()
        await self._apply()
        self._incomplete_left()

    def _index_ok(self) -> bool:
        errors = self.index.integrity_errors()
        self._count("index")
        if not errors:
            return True
        self._found("index", str(self.index.path), "; ".join(errors[:5]))
        return False

    async def _apply(self) -> None:
        """Apply the repairs queued in the journal (and anything else pending)."""
        if not self.repair or not self.index.pending_count():
            return
        journal = self.tree.journal
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run, nursery)
            journal.kick(rescan=True)
            await journal.drain_all(self.tree.config.io_timeout * 10)
            nursery.cancel_scope.cancel()
        left = self.index.pending_count()
        if left:
            self._found("queue", "store queue", f"{left} store operations could not be applied")
        for entry in self.index.parked_ops():
            what = f"{entry.ns_id} {entry.op} {entry.path or ''}"
            self._found("queue", what, f"failed for good again: {entry.last_error}")

    # -- the queue --------------------------------------------------------------

    def _queue(self) -> None:
        """Entries still queued are the next mount's work (--repair applies them);
        ones that keep failing or failed for good are problems."""
        self._count("queued operations", self.index.pending_count())
        for entry in self.index.failing_ops():
            self._found(
                "queue",
                f"{entry.ns_id} {entry.op} {entry.path or ''}",
                f"failing after {entry.attempts} attempts: {entry.last_error}",
                repaired=self.repair,
            )
        parked = self.index.parked_ops()
        for entry in parked:
            self._found(
                "queue",
                f"{entry.ns_id} {entry.op} {entry.path or ''}",
                f"failed for good: {entry.last_error}",
                repaired=self.repair,
            )
        if parked and self.repair:
            with self.index.transaction():
                self.index.unpark_ops()

    # -- namespaces ---------------------------------------------------------------

    async def _namespaces(self) -> None:
        for record, state in self.index.namespaces():
            self._count("namespaces")
            if state != "live":
                continue
            if not await self.bridge.call(self.storage.namespace_exists, record):
                self._found("namespace", record.ns_id, "missing from the store")

    # -- live files ---------------------------------------------------------------

    async def _files(self) -> None:
        for node in self._steps("files", self.index.file_inodes()):
            assert node.ns_id is not None
            self._count("files")
            if node.content_gen == 0 or self.index.ino_has_pending(node.ino):
                continue
            await self._file(node, node.ns_id)

    async def _file(self, node: Inode, ns_id: str) -> None:
        name = self._show(node)
        if node.stored_gen != node.content_gen:
            if self.tree.cache.has(node.ino, node.content_gen):
                self._reupload(node, name, "never uploaded")
            else:
                self._found("file", name, "content lost: neither in the store nor in the cache")
            return
        for path in self.tree.store_paths(node):
            problem = await self._check_bytes(ns_id, path, node.size, node.sha256)
            if problem is None:
                continue
            if self._cache_good(node):
                self._reupload(node, name, problem)
            elif node.sha256 and await self._object_good(ns_id, node.sha256, node.size):
                if self.repair:  # the cached copy is the damaged file itself (a hard link)
                    self.tree.cache.drop(node.ino, node.content_gen)
                self._queue_op(ns_id, Op.COPY, object_path(node.sha256), path)
                self._found("file", name, f"{problem}; copied back from a checkpoint", self.repair)
            else:
                self._found("file", name, f"{problem}; no good copy anywhere")
            return

    async def _check_bytes(self, ns_id: str, path: str, size: int, sha: str | None) -> str | None:
        """What is wrong with the store copy at `path`, or None."""
        got = await self.bridge.call(self.storage.size_of, ns_id, path)
        if got is None:
            return "missing from the store"
        if got != size:
            return f"store copy has {got} bytes, the index says {size}"
        if self.full and sha is not None:
            digest = await self.bridge.call(self.storage.sha256_of, ns_id, path)
            if digest != sha:
                return "store copy's sha256 differs from the index"
        return None

    def _cache_good(self, node: Inode) -> bool:
        """Whether the cache holds this generation, separate from the damaged store copy."""
        path = self.tree.cache.path(node.ino, node.content_gen)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        # A local store's copy is a hard link of the cache file: the same damage.
        return st.st_size == node.size and st.st_nlink == 1

    def _reupload(self, node: Inode, name: str, problem: str) -> None:
        assert node.ns_id is not None
        for path in self.tree.store_paths(node):
            self._queue_op(node.ns_id, Op.PUT, path, ino=node.ino)
        self._found("file", name, f"{problem}; uploaded again from the cache", self.repair)

    def _queue_op(
        self, ns_id: str, op: Op, path: str, path2: str | None = None, ino: int | None = None
    ) -> None:
        if self.repair:
            with self.index.transaction():
                self.index.enqueue(ns_id, op.value, ino=ino, path=path, path2=path2)

    def _show(self, node: Inode) -> str:
        return self.tree.drive_path(node.ino)

    # -- checkpoint objects ---------------------------------------------------------

    async def _object_good(self, ns_id: str, sha: str, size: int) -> bool:
        return await self._check_bytes(ns_id, object_path(sha), size, sha) is None

    async def _objects(self) -> None:
        for ns_id, sha, size in self._steps("checkpoint objects", self.cp_catalog.objects()):
            self._count("checkpoint objects")
            if self.index.pending_count(ns_id):
                continue
            problem = await self._check_bytes(ns_id, object_path(sha), size, sha)
            if problem is None:
                continue
            source = await self._live_copy(ns_id, sha, size)
            if source is not None:
                self._queue_op(ns_id, Op.REMOVE, object_path(sha))
                self._queue_op(ns_id, Op.KEEP, source, object_path(sha))
                self._found("object", sha, f"{problem}; copied again from {source}", self.repair)
            else:
                self._found(
                    "object",
                    sha,
                    f"{problem}; no other copy (checkpoints using it cannot restore that file)",
                )

    async def _live_copy(self, ns_id: str, sha: str, size: int) -> str | None:
        """A live file's store path that holds this object's content intact.

        Checked like the object itself: on a local store the object is usually
        a hard link of a live file, and then the same damage."""
        for node in self.index.inodes_with_sha(ns_id, sha):
            if node.stored_gen == node.content_gen and node.nlink > 0:
                for path in self.tree.store_paths(node):
                    if await self._check_bytes(ns_id, path, size, sha) is None:
                        return path
        return None

    def _checkpoints(self) -> None:
        """Checkpoints left invisible because an object failed to store: with
        --repair, checked again once the queue (with the parked entries queued
        again) has been applied."""
        for cp in self.cp_catalog.all(None, complete_only=False):
            self._count("checkpoints")
            if cp.complete or self.index.pending_count(cp.ns_id):
                continue
            self._queue_op(cp.ns_id, Op.READY, cp.name)
            self._incomplete.append((cp.ns_id, cp.name))

    def _incomplete_left(self) -> None:
        for ns_id, name in self._incomplete:
            made = self.cp_catalog.get(ns_id, name) is not None
            self._found(
                "checkpoint",
                f"{self.tree.drive_path_of_namespace(ns_id)}/.snapshots/{name}",
                "incomplete (an object failed to store)"
                + ("; completed" if made else "; delete it or create it again"),
                repaired=made,
            )

    # -- orphans -----------------------------------------------------------------

    async def _orphan_namespaces(self) -> None:
        known = {self.storage.token_of(r) for r, _s in self.index.namespaces()}
        tokens = await self.bridge.call(self.storage.store_tokens)
        for token in tokens:
            self._count("store namespaces")
            if token in known:
                await self._orphan_files(token)
                continue
            placed = await self._adopt(token) if self.repair else None
            self._found(
                "orphan",
                f"namespace {token}",
                "not in the index" + (f"; adopted as {placed}" if placed else ""),
                repaired=placed is not None,
            )

    async def _orphan_files(self, token: str) -> None:
        """Files and temp files in a known namespace that the index does not know."""
        record = next(r for r, _s in self.index.namespaces() if self.storage.token_of(r) == token)
        expected = self._expected_paths(record)
        listed = await self.bridge.call(self.storage.list_files, token)
        for path, _size in listed:
            if path in expected or path.endswith(".meta") or path in LIBRARY_FILES:
                continue
            base = path.rsplit("/", 1)[-1]
            if base.startswith(".tmp_"):
                self._queue_op(record.ns_id, Op.REMOVE, path)
                self._found("temp", f"{record.ns_id}{path}", "temporary file removed", self.repair)
            elif path.startswith("/.chuk-motion/objects/"):
                self._queue_op(record.ns_id, Op.REMOVE, path)
                self._found(
                    "orphan",
                    f"{record.ns_id}{path}",
                    "unreferenced checkpoint object removed",
                    self.repair,
                )
            elif not path.startswith(LIBRARY_PREFIXES):
                adopted = self._adopt_file(record, path, _size) if self.repair else None
                self._found(
                    "orphan",
                    f"{record.ns_id}{path}",
                    "not in the index" + (f"; adopted as {adopted}" if adopted else ""),
                    repaired=adopted is not None,
                )

    def _expected_paths(self, record: NamespaceRecord) -> set[str]:
        expected = {object_path(sha) for _n, sha, _z in self.cp_catalog.objects(record.ns_id)}
        for node in self.index.nodes_of_namespace(record.ns_id):
            if node.is_reg and node.nlink > 0:
                expected.update(self.tree.store_paths(node))
        return {self.storage.listed_as(record.ns_id, p) for p in expected}

    # -- adoption and rebuild -------------------------------------------------------

    async def _rebuild(self) -> bool:
        """An index with no namespaces over a store that has some: rebuild the drive."""
        tokens = await self.bridge.call(self.storage.store_tokens)
        if not tokens:
            return False
        self._found(
            "index",
            str(self.index.path),
            f"knows none of the store's {len(tokens)} namespaces",
            repaired=self.repair,
        )
        if not self.repair:
            return True
        for token in self._steps("namespaces", tokens):
            placed = await self._adopt(token)
            if placed is None:
                self._found("orphan", f"namespace {token}", "could not be adopted")
        return True

    async def _adopt(self, token: str) -> str | None:
        """Give a namespace the index does not know a place in the drive."""
        raw = await self.bridge.call(self.storage.read_record, token, NAMESPACE_RECORD_PATH)
        record, path = await self._record_for(token, raw)
        if record is None:
            return None
        with self.index.transaction():
            self.index.add_namespace(record)
        await self.bridge.call(self.storage.attach, record)
        listed = await self.bridge.call(self.storage.list_files, token)
        t = now_ns()
        uid, gid = self.tree.config.uid, self.tree.config.gid
        with self.tree.changing():
            parent = self._folders(path[:-1], record.scope, t)
            name = self._free_name(parent.ino, path[-1].encode("utf-8", "surrogateescape"))
            if record.kind is NamespaceType.WORKSPACE:
                node = self.tree.new_dir(
                    parent.ino,
                    name,
                    0o755,
                    uid,
                    gid,
                    Role.PROJECT,
                    t,
                    area=Area.PROJECTS.value,
                    scope=parent.scope,
                    ns_id=record.ns_id,
                )
                for file_path, size in listed:
                    if file_path.startswith(LIBRARY_PREFIXES) or file_path.endswith(".meta"):
                        continue
                    if file_path in LIBRARY_FILES or "/.tmp_" in file_path:
                        continue
                    parts = file_path.strip("/").split("/")
                    encoded = [p.encode("utf-8", "surrogateescape") for p in parts]
                    self._adopt_into(node, encoded, size, t, file_path)
            else:
                size = dict(listed).get(BLOB_DATA_PATH, 0)
                node = self._file_node(parent, name, record.ns_id, size, t)
            self.tree.journal_place(record.ns_id, node.ino)
        return self.tree.drive_path(node.ino)

    async def _record_for(
        self, token: str, raw: bytes | None
    ) -> tuple[NamespaceRecord | None, list[str]]:
        """The namespace's own record and place, or a new record where it has none."""
        place: list[str]
        if raw is not None:
            try:
                data = json.loads(raw)
                record = NamespaceRecord.model_validate(data["record"])
                place = [str(p) for p in data["path"]]
                record = record.model_copy(
                    update={"provider_config": self.storage.token_config(token)}
                )
                if self.index.namespace(record.ns_id) is None and place:
                    return record, place
            except (ValueError, KeyError, TypeError) as e:
                log.warning("namespace %s: unreadable %s: %s", token, NAMESPACE_RECORD_PATH, e)
        made = await self.bridge.call(self.storage.describe_token, token, self.tree.config.user)
        if made is None:
            return None, []
        if made.kind is NamespaceType.WORKSPACE:
            place = ["projects", f"lost+found-{token}"]
        else:
            place = ["assets", "lost+found", token]
        return made, place

    def _folders(self, names: list[str], scope: StorageScope, t: int) -> Inode:
        """The folder at `names` (made as plain folders where missing)."""
        node = self.tree.stat(ROOT_INO)
        for text in names:
            name = text.encode("utf-8", "surrogateescape")
            child = self.index.lookup(node.ino, name)
            if child is None:
                if node.role not in (Role.AREA.value, Role.NODE.value) or node.area is None:
                    raise FsError(errno.ENOENT, f"no folder {text!r} to put a namespace in")
                child = self._subfolder(node, name, 0o755, t).ino
            node = self.tree.stat(child)
        return node

    def _subfolder(self, parent: Inode, name: bytes, mode: int, t: int) -> Inode:
        """A plain folder in `parent`, in its area, scope and namespace."""
        return self.tree.new_dir(
            parent.ino,
            name,
            mode,
            self.tree.config.uid,
            self.tree.config.gid,
            Role.NODE,
            t,
            area=parent.area,
            scope=parent.scope,
            ns_id=parent.ns_id,
        )

    def _free_name(self, parent: int, name: bytes) -> bytes:
        candidate, n = name, 1
        while self.index.lookup(parent, candidate) is not None:
            n += 1
            candidate = name + b"-recovered-%d" % n
        return candidate

    def _file_node(self, parent: Inode, name: bytes, ns_id: str, size: int, t: int) -> Inode:
        """A file whose bytes are already in the store (fetched on first read)."""
        node = self.index.create_inode(
            mode=stat.S_IFREG | 0o644,
            uid=self.tree.config.uid,
            gid=self.tree.config.gid,
            nlink=1,
            atime_ns=t,
            mtime_ns=t,
            ctime_ns=t,
            size=size,
            role=Role.NODE.value,
            area=parent.area,
            scope=parent.scope,
            ns_id=ns_id,
            content_gen=1 if size else 0,
            stored_gen=1 if size else 0,
        )
        self.index.link(parent.ino, name, node.ino)
        return node

    def _adopt_into(
        self, folder: Inode, parts: list[bytes], size: int, t: int, found_at: str
    ) -> Inode:
        """A file found at `found_at` in the folder's namespace, linked below `folder`
        at `parts` (folders made as needed); its bytes move to match if they must."""
        assert folder.ns_id is not None
        parent = folder
        for part in parts[:-1]:
            found = self.index.lookup(parent.ino, part)
            if found is None:
                parent = self._subfolder(parent, part, 0o755, t)
            else:
                parent = self.tree.stat(found)
        name = self._free_name(parent.ino, parts[-1])
        node = self._file_node(parent, name, folder.ns_id, size, t)
        stored_at = self.tree.store_paths(node)[0]
        if stored_at != found_at:  # a digest or escaped name, or lost+found
            self.index.enqueue(folder.ns_id, Op.MOVE.value, path=found_at, path2=stored_at)
        return node

    def _adopt_file(self, record: NamespaceRecord, path: str, size: int) -> str | None:
        """An unknown file in a known project: into the project's lost+found folder."""
        project = self.index.project_of(record.ns_id)
        if project is None:
            return None
        t = now_ns()
        with self.tree.changing():
            lost = self.index.lookup(project.ino, LOST_FOUND)
            if lost is None:
                folder = self._subfolder(project, LOST_FOUND, 0o700, t)
                self.index.enqueue(record.ns_id, Op.MKDIR.value, path="/" + LOST_FOUND.decode())
            else:
                folder = self.tree.stat(lost)
            flat = path.strip("/").replace("/", "%").encode("utf-8", "surrogateescape")
            node = self._adopt_into(folder, [flat], size, t, path)
        return self.tree.drive_path(node.ino)


def refuse_while_other_hosts_serve(index: MetaEngine) -> None:
    """A shared index that other hosts serve is mounted, wherever they are."""
    hosts = index.hosts()
    if hosts is None:
        return
    live = [s for s in hosts.all() if s.alive and s.sid != hosts.me]
    if live:
        names = ", ".join(f"{s.host} (pid {s.pid}, {s.mountpoint})" for s in live)
        raise SetupError(
            f"other hosts serve this store: {names} (fsck refuses a mounted store; "
            "--dry-run only reads)"
        )


def check(
    opts: MountOptions,
    full: bool = False,
    repair: bool = False,
    dry_run: bool = False,
    progress: Callable[[str, int], AbstractContextManager[Callable[[int], None]]] | None = None,
) -> FsckReport:
    """fsck one store, as the CLI runs it. SetupError (one line) when it cannot run:
    the store is mounted (unless dry_run, which never changes anything)."""
    store = opts.store
    has_file = opts.sqlite_db is not None and opts.sqlite_db.is_file()
    remote = opts.s3_url is not None or opts.sqlite_db is not None
    if opts.meta_url is not None and remote and not dry_run:
        # The index is in PostgreSQL: this host's folder only keeps cache and log.
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
    has_index = (store / INDEX_FILE).exists() or (opts.meta_url is not None and store.is_dir())
    if not has_index and not (store / "data").is_dir() and not has_file:
        raise SetupError(f"{store} is not a motionfs store (no index, no data)")
    if has_file and not dry_run:
        store.mkdir(mode=0o700, parents=True, exist_ok=True)  # a lost index, to rebuild
    lock_fd: int | None = None
    try:
        lock_fd = lock_store(store)
    except SetupError as e:
        if not dry_run:
            raise SetupError(f"{e} (fsck refuses a mounted store; --dry-run only reads)") from e
    repair = repair and not dry_run
    set_aside_note: list[Finding] = []
    try:
        if repair:
            moved: Path | str | None
            if opts.meta_url is not None:
                set_aside_note.extend(_sequences_repaired(opts.meta_url))
                moved = _foreign_schema_aside(opts.meta_url, store)
            else:
                moved = _unusable_index_aside(store / INDEX_FILE)
            if moved is not None:
                set_aside_note.append(
                    Finding(
                        kind="index",
                        what=str(moved),
                        problem="damaged or another store's; set aside, rebuilt from the store",
                        repaired=True,
                    )
                )
        # A dry run may read a store a daemon serves (it changes nothing).
        daemon = Daemon(opts, check_store=False, exclusive=not dry_run)
        try:
            if not dry_run:
                refuse_while_other_hosts_serve(daemon.index)
            try:
                daemon.bridge.run(daemon.storage.start)
            except StoreUnavailable as e:
                raise SetupError(str(e)) from e
            if repair:
                if daemon.index.namespace_count() == 0:
                    _cache_aside(daemon.cache.root)
                daemon.tree.ensure_layout()
                daemon.tree.recover()
            else:
                for record, _state in daemon.index.namespaces():
                    try:
                        daemon.bridge.run(daemon.storage.attach, record)
                    except StoreUnavailable as e:
                        log.warning("cannot attach %s: %s", record.ns_id, e)
            run = Fsck(daemon.tree, full=full, repair=repair, progress=progress)
            run.findings.extend(set_aside_note)
            trio.run(run.run)
            if repair:
                _adopt_identity(daemon.index, store)
        finally:
            daemon.close(mounted=False)
    finally:
        if lock_fd is not None:
            release_store(lock_fd)
    return FsckReport(
        store=opts.s3_url or (f"sqlite://{opts.sqlite_db}" if opts.sqlite_db else str(store)),
        meta=None if opts.meta_url is None else redact(opts.meta_url),
        checked=run.checked,
        findings=run.findings,
        exit_code=run.exit_code(),
    )


def _unusable_index_aside(path: Path) -> Path | None:
    """An index SQLite cannot open, or another store's (by store.json's uuid), is
    moved aside (kept) so that a new one is built from the store."""
    if not path.exists():
        return None
    try:
        mine = StoreIdentity.model_validate_json((path.parent / IDENTITY_FILE).read_bytes()).uuid
    except (OSError, ValueError):
        mine = None
    try:
        recorded = Index.recorded_store_uuid(path)
        if mine is None or recorded is None or recorded == mine:
            return None
    except IndexUnusable:
        pass
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    return set_aside(path)


def _sequences_repaired(url: str) -> list[Finding]:
    """A PostgreSQL index's sequences set past the numbers its tables hold (the
    only damage its integrity check knows that a repair can undo in place)."""
    from motionfs.meta.migrate import MigrationRefused, advance_sequences

    try:
        changed = advance_sequences(url)
    except MigrationRefused as e:
        raise SetupError(str(e)) from e
    return [
        Finding(kind="index", what=redact(url), problem=line, repaired=True) for line in changed
    ]


def _foreign_schema_aside(url: str, store: Path) -> str | None:
    """A PostgreSQL index that records another store's uuid (by store.json) is
    renamed aside (kept) so that a new one is built from the store; where it went."""
    try:
        mine = StoreIdentity.model_validate_json((store / IDENTITY_FILE).read_bytes()).uuid
    except (OSError, ValueError):
        return None
    try:
        index = open_engine(store / PG_INDEX_FILE, readonly=True, url=url)
    except (IndexUnusable, ValueError) as e:
        raise SetupError(str(e)) from e
    try:
        recorded = index.get_meta("store_uuid")
    except driver_errors():  # no motionfs tables in the schema yet
        recorded = None
    finally:
        index.close()
    if recorded is None or recorded == mine:
        return None
    from motionfs.meta.migrate import MigrationRefused, set_schema_aside

    try:
        return set_schema_aside(url)
    except MigrationRefused as e:
        raise SetupError(str(e)) from e


def _cache_aside(cache: Path) -> None:
    """Cached content is named by inode numbers that a rebuilt index gives out
    anew: move it aside (kept, it may hold bytes not yet uploaded)."""
    files = [p for p in cache.iterdir() if p.name != "empty"] if cache.is_dir() else []
    if not files:
        return
    dest = cache.with_name(f"{cache.name}.set-aside-{time.strftime('%Y%m%dT%H%M%S')}")
    dest.mkdir(mode=0o700)
    for p in files:
        os.replace(p, dest / p.name)
    log.warning("moved %d cached files to %s before rebuilding the index", len(files), dest)


def _adopt_identity(index: MetaEngine, store: Path) -> None:
    """A rebuilt index belongs to the store it was rebuilt from."""
    try:
        uuid = StoreIdentity.model_validate_json((store / IDENTITY_FILE).read_bytes()).uuid
    except (OSError, ValueError):
        return
    if index.get_meta("store_uuid") != uuid:
        with index.transaction():
            index.set_meta("store_uuid", uuid)


def set_aside(path: Path) -> Path | None:
    """Move a folder out of the way (kept, never deleted); where it went."""
    if not path.exists():
        return None
    dest = path.with_name(f"{path.name}.set-aside-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, dest)
    return dest


def summary(findings: Iterable[Finding]) -> str:
    found = list(findings)
    left = sum(not f.repaired for f in found)
    if not found:
        return "clean: the index and the store agree"
    return f"{len(found)} problems, {len(found) - left} repaired, {left} left"


__all__ = ["Finding", "Fsck", "FsckReport", "StoreUnavailable", "set_aside", "summary"]
