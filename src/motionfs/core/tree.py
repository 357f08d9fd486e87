"""The tree: motionfs's directory layout and POSIX semantics over the index.

It decides what each inode is (the root, a scope folder, an area such as
`projects/`, a project, or a node inside a project, `renders/` or `assets/`),
keeps POSIX metadata in the index, keeps file bytes in the data cache, and
journals what the store must do. It knows nothing of FUSE: the operations
layer translates requests into these calls and FsError into errno.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from motionfs.bridge import AsyncioBridge
from motionfs.data.blocks import BLOCK as BLOCK_SIZE
from motionfs.data.blocks import PartialContent
from motionfs.data.cache import DataCache
from motionfs.data.journal import Journal, Op
from motionfs.data.space import SpaceGuard
from motionfs.errors import FsError, StoreUnavailable
from motionfs.layout import NAMESPACE_RECORD_PATH, ROOT_INO, SCOPE_FOLDERS, Area, Role
from motionfs.meta.records import Inode
from motionfs.meta.sqlite import CheckpointIndex, Index
from motionfs.motion.models import NamespaceType, ProjectMetadata, StorageScope, utcnow
from motionfs.store.backend import file_sha256
from motionfs.store.names import BLOB_DATA_PATH, MOTION_METADATA_PATH, store_name, store_path
from motionfs.store.storage import Storage

log = logging.getLogger(__name__)

NAME_MAX = 255
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
S3_KEY_MAX = 1024  # bytes in an S3 object key


class Ctx(Protocol):
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def umask(self) -> int: ...


@dataclass
class TreeConfig:
    user: str
    uid: int
    gid: int
    io_timeout: float = 30.0


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


def now_ns() -> int:
    return time.time_ns()


def _scope_of(inode: Inode) -> StorageScope:
    if inode.scope is None:
        raise FsError(errno.EPERM, "outside every scope")
    return StorageScope(inode.scope)


def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes")
    if name in (b".", b"..") or b"/" in name or b"\0" in name or not name:
        raise FsError(errno.EINVAL, f"invalid name {name!r}")


class Tree:
    def __init__(
        self,
        index: Index,
        storage: Storage,
        bridge: AsyncioBridge,
        journal: Journal,
        cache: DataCache,
        config: TreeConfig,
    ) -> None:
        self.index = index
        self.storage = storage
        self.bridge = bridge
        self.journal = journal
        self.cache = cache
        self.config = config
        self.lookups: dict[int, int] = {}
        self.open_files: dict[int, OpenFile] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._fetch_locks: dict[int, trio.Lock] = {}
        self._dir_paths: dict[int, str] = {}
        self._dir_paths_at = 0
        self._partials: dict[int, PartialContent] = {}  # ranged stores: partly cached content
        self.space = SpaceGuard(index.path.parent)
        index.on_full = self.space.release
        # Set by the FUSE layer: tell the kernel that cached data or names changed.
        self.notify_inode: Callable[[int], None] = lambda ino: None
        self.notify_entry: Callable[[int, bytes], None] = lambda parent, name: None

    # -- start-up ---------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the fixed folders on first use of a store."""
        if self.index.get(ROOT_INO) is not None:
            return
        cfg = self.config
        t = now_ns()
        with self.index.transaction():
            self.index.create_inode(
                ino=ROOT_INO,
                mode=stat.S_IFDIR | 0o755,
                uid=cfg.uid,
                gid=cfg.gid,
                nlink=2,
                atime_ns=t,
                mtime_ns=t,
                ctime_ns=t,
                role=Role.ROOT.value,
            )
            self._make_areas(ROOT_INO, StorageScope.USER, 0o700, t)
            for scope, folder in SCOPE_FOLDERS.items():
                node = self.new_dir(ROOT_INO, folder, 0o755, cfg.uid, cfg.gid, Role.SCOPE, t)
                self._make_areas(node.ino, scope, 0o1777, t)

    def _make_areas(self, parent: int, scope: StorageScope, perm: int, t: int) -> None:
        for area in Area:
            node = self.new_dir(
                parent,
                area.value.encode(),
                perm,
                self.config.uid,
                self.config.gid,
                Role.AREA,
                t,
                area=area.value,
                scope=scope.value,
            )
            assert node.is_dir

    def new_dir(
        self,
        parent: int,
        name: bytes,
        perm: int,
        uid: int,
        gid: int,
        role: Role,
        t: int,
        area: str | None = None,
        scope: str | None = None,
        ns_id: str | None = None,
    ) -> Inode:
        node = self.index.create_inode(
            mode=stat.S_IFDIR | perm,
            uid=uid,
            gid=gid,
            nlink=2,
            atime_ns=t,
            mtime_ns=t,
            ctime_ns=t,
            role=role.value,
            area=area,
            scope=scope,
            ns_id=ns_id,
        )
        self.index.link(parent, name, node.ino)
        parent_node = self.node(parent)
        self.index.update(parent, nlink=parent_node.nlink + 1, mtime_ns=t, ctime_ns=t)
        return node

    def recover(self) -> None:
        """Reattach namespaces, drop orphans and unsealed work after a restart."""
        for rec, _state in self.index.namespaces():
            try:
                self.bridge.run(self.storage.attach, rec)
            except StoreUnavailable as e:
                log.error("cannot reattach namespace %s: %s", rec.ns_id, e)
        with self.index.transaction():
            for orphan in self.index.orphans():
                self.index.delete_inode(orphan.ino)
        self.cache.recover(dict(self.index.inodes_with_content()))
        self.journal.kick()

    # -- helpers ------------------------------------------------------------------

    def node(self, ino: int) -> Inode:
        inode = self.index.get(ino)
        if inode is None:
            raise FsError(errno.ENOENT, f"inode {ino} does not exist")
        return inode

    def _child(self, parent: int, name: bytes) -> Inode | None:
        ino = self.index.lookup(parent, name)
        return None if ino is None else self.node(ino)

    def stat(self, ino: int) -> Inode:
        inode = self.node(ino)
        of = self.open_files.get(ino)
        if of is not None and of.work:
            inode = inode.model_copy(
                update={"size": of.size, "mtime_ns": of.mtime_ns, "ctime_ns": of.ctime_ns}
            )
        return inode

    def _names_from_project(self, ino: int) -> list[bytes]:
        """The names leading from a node's project root down to the node."""
        names: list[bytes] = []
        cur = ino
        while True:
            inode = self.node(cur)
            if inode.role == Role.PROJECT.value:
                names.reverse()
                return names
            links = self.index.parents(cur)
            if not links:
                raise FsError(errno.ENOENT, f"inode {ino} is not linked")
            parent, name = links[0]
            names.append(name)
            cur = parent

    def _in_project(self, inode: Inode) -> bool:
        return inode.role == Role.NODE.value and inode.area == Area.PROJECTS.value

    def entry_store_path(self, parent: int, name: bytes) -> str:
        prefix = self._dir_store_path(parent)
        return prefix + "/" + store_name(name, at_root=not prefix)

    def _new_store_path(self, parent: int, name: bytes, subtree: Inode | None = None) -> str:
        """The store path of a name about to exist; ENAMETOOLONG where an S3 key
        for it (or for anything in the `subtree` moving there) would pass S3's
        1,024-byte limit, so every path the mount takes can be stored."""
        path = self.entry_store_path(parent, name)
        if self.storage.s3 is not None:
            room = S3_KEY_MAX - len(self.storage.s3.namespace_prefix("0" * 16).encode())
            deepest = len(path.encode()) + (self._deepest(subtree.ino) if subtree else 0)
            if deepest > room:
                raise FsError(errno.ENAMETOOLONG, f"S3 keys are limited to {S3_KEY_MAX} bytes")
        return path

    def _deepest(self, ino: int) -> int:
        """Bytes the longest store path below directory `ino` adds to its own."""
        longest = 0
        for name, node in self.index.listing(ino):
            extra = 1 + len(store_name(name).encode())
            longest = max(longest, extra + (self._deepest(node.ino) if node.is_dir else 0))
        return longest

    def _dir_store_path(self, ino: int) -> str:
        """A directory's store path ("" for the project itself), remembered until
        some directory moves or goes away."""
        if self._dir_paths_at != self.index.dir_moves:
            self._dir_paths.clear()
            self._dir_paths_at = self.index.dir_moves
        path = self._dir_paths.get(ino)
        if path is None:
            names = self._names_from_project(ino)
            path = self._dir_paths[ino] = store_path(names) if names else ""
        return path

    def store_paths(self, inode: Inode) -> list[str]:
        """Where the store keeps a file's bytes: each hard link's path, or the blob."""
        if not self._in_project(inode):
            return [BLOB_DATA_PATH]
        return [self.entry_store_path(p, n) for p, n in self.index.parents(inode.ino)]

    def is_blob_file(self, inode: Inode) -> bool:
        return (
            inode.role == Role.NODE.value
            and inode.area != Area.PROJECTS.value
            and (inode.ns_id is not None)
        )

    def drive_path_of_namespace(self, ns_id: str) -> str:
        """Where the drive shows a namespace (its project folder or file)."""
        links = self.index.links_of_namespace(ns_id)
        return self.drive_path(links[0][2].ino) if links else f"(namespace {ns_id})"

    def drive_path(self, ino: int) -> str:
        """Where a node is in the drive, for messages and reports."""
        names = self._names_from_root(ino)
        if names is None:
            return f"(unlinked inode {ino})"
        return "/" + b"/".join(names).decode("utf-8", "backslashreplace")

    def _names_from_root(self, ino: int) -> list[bytes] | None:
        """The names leading from the drive's root to a node (its first link);
        None if it is not linked."""
        names: list[bytes] = []
        cur = ino
        while cur != ROOT_INO:
            links = self.index.parents(cur)
            if not links:
                return None
            cur, name = links[0]
            names.append(name)
        names.reverse()
        return names

    def _domain(self, inode: Inode) -> tuple[str | None, ...]:
        """Renames and links never leave a domain (else EXDEV)."""
        if self._in_project(inode):
            return ("ns", inode.ns_id)
        return ("area", inode.area, inode.scope)

    def _new_node_domain(self, parent: Inode) -> tuple[str | None, ...]:
        if parent.role == Role.PROJECT.value or self._in_project(parent):
            return ("ns", parent.ns_id)
        return ("area", parent.area, parent.scope)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """A metadata transaction; its store operations start once it commits."""
        with self.index.transaction():
            yield
        self.journal.kick()

    def _touch_dir(self, ino: int, t: int, nlink_delta: int = 0) -> None:
        if nlink_delta:
            node = self.node(ino)
            self.index.update(ino, mtime_ns=t, ctime_ns=t, nlink=node.nlink + nlink_delta)
        else:
            self.index.update(ino, mtime_ns=t, ctime_ns=t)

    def _owner(self, parent: Inode, ctx: Ctx, mode: int) -> tuple[int, int, int]:
        """uid, gid, mode for a new node (setgid directories pass their group on)."""
        gid = ctx.gid
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return ctx.uid, gid, mode & ~ctx.umask if not stat.S_ISLNK(mode) else mode

    def _refuse_layout(self, parent: Inode, what: str) -> None:
        if parent.role in (Role.ROOT.value, Role.SCOPE.value):
            raise FsError(errno.EPERM, f"{what}: the top-level layout is fixed")

    # -- lookup and attributes ---------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> Inode:
        if name == b".":
            inode = self.stat(parent)
        elif name == b"..":
            links = self.index.parents(parent)
            inode = self.stat(links[0][0] if links else ROOT_INO)
        else:
            if len(name) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, "name too long")
            ino = self.index.lookup(parent, name)
            if ino is None:
                raise FsError(errno.ENOENT)
            inode = self.stat(ino)
        self.remember(inode.ino)
        return inode

    def remember(self, ino: int) -> None:
        self.lookups[ino] = self.lookups.get(ino, 0) + 1

    def forget(self, ino: int, nlookup: int) -> None:
        left = self.lookups.get(ino, 0) - nlookup
        if left > 0:
            self.lookups[ino] = left
            return
        self.lookups.pop(ino, None)
        self._maybe_purge(ino)

    def _maybe_purge(self, ino: int) -> None:
        """Delete an unlinked inode once nothing refers to it any more."""
        if ino in self.lookups or ino in self.open_files:
            return
        inode = self.index.get(ino)
        if inode is None or inode.nlink > 0:
            return
        with self.index.transaction():
            self.index.delete_inode(ino)
        self._drop_partial(ino)
        self.cache.drop_inode(ino, inode.content_gen)

    async def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Inode:
        inode = self.node(ino)
        t = now_ns()
        changes: dict[str, object] = {}
        if size is not None:
            if not inode.is_reg:
                raise FsError(errno.EISDIR if inode.is_dir else errno.EINVAL, "truncate")
            await self._truncate(inode, size, t)
        if mode is not None:
            self._refuse_layout_change(inode)
            changes["mode"] = stat.S_IFMT(inode.mode) | (mode & 0o7777)
        if uid is not None and uid != inode.uid:
            changes["uid"] = uid
        if gid is not None and gid != inode.gid:
            changes["gid"] = gid
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        if changes or size is not None:
            changes["ctime_ns"] = t
            with self.changing():
                self.index.update(ino, **changes)
            of = self.open_files.get(ino)
            if of is not None:
                of.ctime_ns = t
                if mtime_ns is not None:
                    of.mtime_ns = mtime_ns
        return self.stat(ino)

    def _refuse_layout_change(self, inode: Inode) -> None:
        if inode.role in (Role.ROOT.value, Role.SCOPE.value, Role.AREA.value):
            raise FsError(errno.EPERM, "the layout folders' modes are fixed")

    def readlink(self, ino: int) -> bytes:
        inode = self.node(ino)
        if not inode.is_symlink or inode.target is None:
            raise FsError(errno.EINVAL, "not a symlink")
        return inode.target

    # -- creating -------------------------------------------------------------------

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Inode:
        _check_name(name)
        p = self.node(parent)
        if not p.is_dir:
            raise FsError(errno.ENOTDIR)
        self._refuse_layout(p, "mkdir")
        if self.index.lookup(parent, name) is not None:
            raise FsError(errno.EEXIST)
        uid, gid, mode = self._owner(p, ctx, stat.S_IFDIR | (mode & 0o7777))
        t = now_ns()
        if p.role == Role.AREA.value and p.area == Area.PROJECTS.value:
            inode = await self._create_project(p, name, mode & 0o7777, uid, gid, t)
        else:
            ns_id = p.ns_id if (p.role == Role.PROJECT.value or self._in_project(p)) else None
            area = p.area
            with self.changing():
                inode = self.new_dir(
                    parent,
                    name,
                    mode & 0o7777,
                    uid,
                    gid,
                    Role.NODE,
                    t,
                    area=area,
                    scope=p.scope,
                    ns_id=ns_id,
                )
                if ns_id is not None:
                    self.index.enqueue(
                        ns_id, Op.MKDIR.value, path=self._new_store_path(parent, name)
                    )
        self.remember(inode.ino)
        return inode

    async def _create_project(
        self, area: Inode, name: bytes, perm: int, uid: int, gid: int, t: int
    ) -> Inode:
        try:
            project_name = name.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FsError(errno.EINVAL, "project names must be UTF-8") from e
        scope = _scope_of(area)
        record = await self.bridge.call(
            self.storage.create_namespace,
            NamespaceType.WORKSPACE,
            project_name,
            scope,
            self.config.user,
        )
        if self.index.lookup(area.ino, name) is not None:  # lost a race while awaiting
            await self.bridge.call(self.storage.destroy_namespace, record)
            raise FsError(errno.EEXIST)
        metadata = ProjectMetadata(project_name=project_name)
        with self.changing():
            self.index.add_namespace(record)
            inode = self.new_dir(
                area.ino,
                name,
                perm,
                uid,
                gid,
                Role.PROJECT,
                t,
                area=Area.PROJECTS.value,
                scope=area.scope,
                ns_id=record.ns_id,
            )
            self.save_motion_meta(record.ns_id, metadata.model_dump_json())
            self.journal_place(record.ns_id, inode.ino)
            renders = self.area_dir(scope, Area.RENDERS)
            if self.index.lookup(renders.ino, name) is None:
                self.new_dir(
                    renders.ino,
                    name,
                    perm,
                    uid,
                    gid,
                    Role.NODE,
                    t,
                    area=Area.RENDERS.value,
                    scope=area.scope,
                )
        log.info("created project %r as namespace %s", project_name, record.ns_id)
        return inode

    def save_motion_meta(self, ns_id: str, text: str) -> None:
        """A namespace's chuk-motion model: in the index, and journalled to its
        /.chuk-motion/metadata.json (inside the caller's transaction)."""
        self.index.set_motion_meta(ns_id, text)
        self.index.enqueue(ns_id, Op.WRITE.value, path=MOTION_METADATA_PATH, path2=text)

    def journal_place(self, ns_id: str, ino: int) -> None:
        """Journal /.chuk-motion/namespace.json: the namespace's record and where
        the drive shows it, so that fsck can rebuild a lost index from the store
        (inside the caller's transaction). A later rename of a parent folder
        does not rewrite it: fsck then puts the namespace where it was."""
        record = self.index.namespace(ns_id)
        names = self._names_from_root(ino)
        if record is None or names is None:
            return
        path = [n.decode("utf-8", "surrogateescape") for n in names]
        text = json.dumps({"record": record.model_dump(mode="json"), "path": path})
        self.index.enqueue(ns_id, Op.WRITE.value, path=NAMESPACE_RECORD_PATH, path2=text)

    def area_dir(self, scope: StorageScope, area: Area) -> Inode:
        base = ROOT_INO
        if scope in SCOPE_FOLDERS:
            found = self.index.lookup(ROOT_INO, SCOPE_FOLDERS[scope])
            assert found is not None
            base = found
        ino = self.index.lookup(base, area.value.encode())
        assert ino is not None
        return self.node(ino)

    async def _new_file_node(
        self,
        p: Inode,
        name: bytes,
        mode: int,
        ctx: Ctx,
        rdev: int = 0,
        target: bytes | None = None,
    ) -> Inode:
        """Create a non-directory node (file, symlink, fifo...) in directory p."""
        _check_name(name)
        if not p.is_dir:
            raise FsError(errno.ENOTDIR)
        self._refuse_layout(p, "create")
        if p.role == Role.AREA.value and p.area != Area.ASSETS.value:
            raise FsError(
                errno.EPERM,
                "files go inside a project folder"
                if p.area == Area.PROJECTS.value
                else "renders go in renders/<project>/",
            )
        if self.index.lookup(p.ino, name) is not None:
            raise FsError(errno.EEXIST)
        uid, gid, mode = self._owner(p, ctx, mode)
        t = now_ns()
        in_project = p.role == Role.PROJECT.value or self._in_project(p)
        ns_id = p.ns_id if in_project else None
        record = None
        if not in_project and stat.S_ISREG(mode):
            record = await self.bridge.call(
                self.storage.create_namespace,
                NamespaceType.BLOB,
                name.decode("utf-8", "replace"),
                _scope_of(p),
                self.config.user,
            )
            ns_id = record.ns_id
        elif not in_project and not stat.S_ISLNK(mode):
            raise FsError(errno.EPERM, "only files and symlinks belong in renders/ and assets/")
        if record is not None and self.index.lookup(p.ino, name) is not None:
            # lost a race while awaiting the new namespace
            await self.bridge.call(self.storage.destroy_namespace, record)
            raise FsError(errno.EEXIST)
        with self.changing():
            if record is not None:
                self.index.add_namespace(record)
            inode = self.index.create_inode(
                mode=mode,
                uid=uid,
                gid=gid,
                nlink=1,
                rdev=rdev,
                atime_ns=t,
                mtime_ns=t,
                ctime_ns=t,
                target=target,
                size=len(target) if target is not None else 0,
                role=Role.NODE.value,
                area=p.area,
                scope=p.scope,
                ns_id=ns_id,
            )
            self.index.link(p.ino, name, inode.ino)
            self._touch_dir(p.ino, t)
            if stat.S_ISREG(mode) and ns_id is not None:
                # An empty file exists in the store too, until content replaces it.
                path = self._new_store_path(p.ino, name) if in_project else BLOB_DATA_PATH
                self.index.enqueue(ns_id, Op.PUT.value, ino=inode.ino, path=path)
            if record is not None:
                self.journal_place(record.ns_id, inode.ino)
        self.remember(inode.ino)
        return inode

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Inode:
        return await self._new_file_node(self.node(parent), name, mode, ctx, rdev=rdev)

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Inode:
        if len(target) > 4095:
            raise FsError(errno.ENAMETOOLONG, "symlink target too long")
        return await self._new_file_node(
            self.node(parent), name, stat.S_IFLNK | 0o777, ctx, target=target
        )

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx
    ) -> tuple[int, Inode]:
        inode = await self._new_file_node(
            self.node(parent), name, stat.S_IFREG | (mode & 0o7777), ctx
        )
        fh = self._open_handle(inode, flags)
        return fh, inode

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Inode:
        _check_name(new_name)
        inode = self.node(ino)
        p = self.node(new_parent)
        if inode.is_dir:
            raise FsError(errno.EPERM, "hard links to directories")
        self._refuse_layout(p, "link")
        if self._domain(inode) != self._new_node_domain(p) or (
            p.role == Role.AREA.value and p.area != Area.ASSETS.value
        ):
            raise FsError(errno.EXDEV, "hard links stay within one project or area")
        if self.index.lookup(new_parent, new_name) is not None:
            raise FsError(errno.EEXIST)
        if inode.is_reg and self._in_project(inode):
            await self.ensure_cached(inode)
        t = now_ns()
        with self.changing():
            self.index.link(new_parent, new_name, ino)
            self.index.update(ino, nlink=inode.nlink + 1, ctime_ns=t)
            self._touch_dir(new_parent, t)
            if inode.is_reg and self._in_project(inode):
                assert inode.ns_id is not None
                self.index.enqueue(
                    inode.ns_id,
                    Op.PUT.value,
                    ino=ino,
                    path=self._new_store_path(new_parent, new_name),
                )
        self.remember(ino)
        return self.stat(ino)

    # -- removing ---------------------------------------------------------------------

    async def unlink(self, parent: int, name: bytes) -> None:
        victim = self._child(parent, name)
        if victim is None:
            raise FsError(errno.ENOENT)
        if victim.is_dir:
            raise FsError(errno.EISDIR, "unlink of a directory")
        await self._prepare_drop(victim)
        t = now_ns()
        with self.changing():
            self._drop_link(parent, name, victim, t)
            self._touch_dir(parent, t)
        self._maybe_purge(victim.ino)

    async def _prepare_drop(self, victim: Inode) -> None:
        """An open file that loses its last link stays readable: cache it first."""
        if victim.is_reg and victim.nlink == 1 and victim.ino in self.open_files:
            await self.ensure_cached(victim)

    def _drop_link(self, parent: int, name: bytes, victim: Inode, t: int) -> None:
        """Remove one link (in the current transaction) and what the store holds for it."""
        store = self._in_project(victim) and not victim.is_symlink and victim.is_reg
        if store:
            assert victim.ns_id is not None
            self.index.enqueue(
                victim.ns_id, Op.REMOVE.value, path=self.entry_store_path(parent, name)
            )
        self.index.unlink(parent, name)
        nlink = 0 if victim.is_dir else victim.nlink - 1
        self.index.update(victim.ino, nlink=nlink, ctime_ns=t)
        if nlink == 0 and self.is_blob_file(victim):
            assert victim.ns_id is not None
            self.destroy_namespace_of(victim.ns_id)

    def destroy_namespace_of(self, ns_id: str) -> None:
        self.index.drop_ops(ns_id)
        self.index.set_namespace_state(ns_id, "destroying")
        self.index.enqueue(ns_id, Op.DESTROY.value)

    async def rmdir(self, parent: int, name: bytes) -> None:
        victim = self._child(parent, name)
        if victim is None:
            raise FsError(errno.ENOENT)
        if not victim.is_dir:
            raise FsError(errno.ENOTDIR)
        if victim.role in (Role.ROOT.value, Role.SCOPE.value, Role.AREA.value):
            raise FsError(errno.EPERM, "the top-level layout is fixed")
        if self.index.has_children(victim.ino):
            raise FsError(errno.ENOTEMPTY)
        t = now_ns()
        with self.changing():
            self._remove_dir(parent, name, victim, t)
        self._maybe_purge(victim.ino)

    def _remove_dir(self, parent: int, name: bytes, victim: Inode, t: int) -> None:
        if victim.role == Role.PROJECT.value:
            assert victim.ns_id is not None
            CheckpointIndex(self.index).delete_namespace(victim.ns_id)
            self.destroy_namespace_of(victim.ns_id)
            log.info("deleted project %r (namespace %s)", name, victim.ns_id)
        elif self._in_project(victim):
            assert victim.ns_id is not None
            self.index.enqueue(
                victim.ns_id, Op.REMOVE.value, path=self.entry_store_path(parent, name)
            )
        self.index.unlink(parent, name)
        self.index.update(victim.ino, nlink=0, ctime_ns=t)
        self._touch_dir(parent, t, nlink_delta=-1)

    def remove_subtree(
        self, parent: int, name: bytes, node: Inode, t: int, removed: list[int]
    ) -> None:
        """`rm -r` inside the current transaction; collects the inodes it unlinked."""
        removed.append(node.ino)
        if node.is_dir:
            for child_name, child in self.index.listing(node.ino):
                self.remove_subtree(node.ino, child_name, child, t, removed)
            self._remove_dir(parent, name, node, t)
        else:
            self._drop_link(parent, name, node, t)

    # -- rename -----------------------------------------------------------------------

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        rename_noreplace = getattr(os, "RENAME_NOREPLACE", 1)
        if flags & ~rename_noreplace:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE and other flags are not supported")
        _check_name(new_name)
        src = self._child(old_parent, old_name)
        if src is None:
            raise FsError(errno.ENOENT)
        dst = self._child(new_parent, new_name)
        if dst is not None and flags & rename_noreplace:
            raise FsError(errno.EEXIST)
        if src.role in (Role.ROOT.value, Role.SCOPE.value, Role.AREA.value):
            raise FsError(errno.EPERM, "the top-level layout is fixed")
        np = self.node(new_parent)
        self._refuse_layout(np, "rename")
        if src.role == Role.PROJECT.value:
            if np.role != Role.AREA.value or (np.area, np.scope) != (src.area, src.scope):
                raise FsError(errno.EXDEV, "a project moves only within its projects folder")
        else:
            if self._domain(src) != self._new_node_domain(np):
                raise FsError(errno.EXDEV, "renames stay within one project or area")
            if np.role == Role.AREA.value and not src.is_dir and np.area != Area.ASSETS.value:
                raise FsError(errno.EPERM, "files go inside a project or renders/<project>/")
        if dst is not None and dst.ino == src.ino:
            return
        if src.is_dir:
            self._refuse_into_itself(src.ino, new_parent)
        if dst is not None:
            if src.is_dir and not dst.is_dir:
                raise FsError(errno.ENOTDIR)
            if not src.is_dir and dst.is_dir:
                raise FsError(errno.EISDIR)
            if dst.is_dir and self.index.has_children(dst.ino):
                raise FsError(errno.ENOTEMPTY)
            await self._prepare_drop(dst)
        in_project = self._in_project(src)
        old_path = new_path = None
        if in_project and (src.is_dir or src.is_reg):
            old_path = self.entry_store_path(old_parent, old_name)
            new_path = self._new_store_path(new_parent, new_name, src if src.is_dir else None)
        t = now_ns()
        with self.changing():
            if dst is not None:
                if dst.is_dir:
                    self._remove_dir(new_parent, new_name, dst, t)
                else:
                    self._drop_link(new_parent, new_name, dst, t)
            self.index.unlink(old_parent, old_name)
            self.index.link(new_parent, new_name, src.ino)
            self.index.update(src.ino, ctime_ns=t)
            delta = 1 if src.is_dir and old_parent != new_parent else 0
            self._touch_dir(old_parent, t, nlink_delta=-delta)
            self._touch_dir(new_parent, t, nlink_delta=delta)
            if old_path is not None and new_path is not None:
                assert src.ns_id is not None
                self.index.enqueue(src.ns_id, Op.MOVE.value, path=old_path, path2=new_path)
            if src.role == Role.PROJECT.value:
                self._rename_project(src, old_name, new_name, t)
            if src.ns_id is not None and (src.role == Role.PROJECT.value or self.is_blob_file(src)):
                self.journal_place(src.ns_id, src.ino)
        if dst is not None:
            self._maybe_purge(dst.ino)

    def _refuse_into_itself(self, ino: int, new_parent: int) -> None:
        cur = new_parent
        while cur != ROOT_INO:
            if cur == ino:
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            links = self.index.parents(cur)
            if not links:
                return
            cur = links[0][0]

    def _rename_project(self, project: Inode, old_name: bytes, new_name: bytes, t: int) -> None:
        """A renamed project keeps its name in the registry, its metadata and its
        renders folder (renders/<old> moves to renders/<new> unless that exists)."""
        assert project.ns_id is not None
        record = self.index.namespace(project.ns_id)
        if record is None:
            return
        name = new_name.decode("utf-8", "replace")
        self.index.update_namespace(record.model_copy(update={"name": name}))
        raw = self.index.get_motion_meta(project.ns_id)
        if raw is not None:
            meta = ProjectMetadata.model_validate_json(raw)
            renamed = meta.model_copy(update={"project_name": name, "updated_at": utcnow()})
            self.save_motion_meta(project.ns_id, renamed.model_dump_json())
        renders = self.area_dir(_scope_of(project), Area.RENDERS)
        folder = self.index.lookup(renders.ino, old_name)
        if folder is not None and self.index.lookup(renders.ino, new_name) is None:
            self.index.unlink(renders.ino, old_name)
            self.index.link(renders.ino, new_name, folder)
            self._touch_dir(renders.ino, t)
            self.notify_entry(renders.ino, old_name)
            self.notify_entry(renders.ino, new_name)

    # -- directories ------------------------------------------------------------------

    def listing(self, ino: int) -> list[tuple[bytes, Inode]]:
        inode = self.node(ino)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        entries = self.index.listing(ino)
        return [(name, self.overlay(node)) for name, node in entries]

    def listing_with_dots(self, ino: int) -> list[tuple[bytes, Inode]]:
        entries = self.listing(ino)
        links = self.index.parents(ino)
        parent = self.stat(links[0][0]) if links else self.stat(ino)
        return [(b".", self.stat(ino)), (b"..", parent), *entries]

    def overlay(self, inode: Inode) -> Inode:
        of = self.open_files.get(inode.ino)
        if of is None or not of.work:
            return inode
        return inode.model_copy(
            update={"size": of.size, "mtime_ns": of.mtime_ns, "ctime_ns": of.ctime_ns}
        )

    async def fsyncdir(self, ino: int) -> None:
        inode = self.node(ino)
        if inode.ns_id is not None:
            await self.wait_stored(inode.ns_id)
        self.index.sync()

    # -- file data ----------------------------------------------------------------------

    def _open_handle(self, inode: Inode, flags: int) -> int:
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

    async def open(self, ino: int, flags: int) -> int:
        inode = self.node(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        if not inode.is_reg:
            raise FsError(errno.ENXIO, "special files cannot be opened here")
        fh = self._open_handle(inode, flags)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            try:
                await self._truncate(inode, 0, now_ns())
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
        t = now_ns()
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
        self._maybe_purge(of.ino)

    async def fsync(self, fh: int) -> None:
        _h, of = self._handle(fh)
        await self._fsync_inode(of)

    async def _fsync_inode(self, of: OpenFile) -> None:
        inode = self.node(of.ino)
        if of.work:
            await self._seal(of, durable=True)
        if inode.ns_id is not None:
            await self._wait_store(self.journal.wait_for_uploads(of.ino, self.config.io_timeout))
            failed = self.index.parked_put(of.ino)
            if failed is not None:  # the data is safe in the cache; fsck reports it
                raise FsError(errno.EIO, f"the store refused the data: {failed}")
        self.index.sync()

    async def wait_stored(self, ns_id: str) -> None:
        """Wait until everything queued for the namespace is in the store (EIO
        once the store has been failing for --io-timeout)."""
        await self._wait_store(self.journal.drain(ns_id, self.config.io_timeout))

    async def _wait_store(self, waiting: object) -> None:
        try:
            await waiting  # type: ignore[misc]
        except StoreUnavailable as e:
            raise FsError(errno.EIO, f"the store did not take the data: {e}") from e

    async def _open_content(self, of: OpenFile) -> None:
        async with of.lock:
            if of.fd is not None:
                return
            inode = self.node(of.ino)
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
            for path in self.store_paths(inode):
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
        await self.ensure_cached(inode)
        gen = inode.content_gen
        try:
            f = open(self.cache.source(inode.ino, gen), "rb")  # noqa: SIM115
        except FileNotFoundError:
            return self.node(inode.ino)  # replaced or evicted meanwhile: try later
        with f:
            digest = await trio.to_thread.run_sync(file_sha256, f)
        current = self.node(inode.ino)
        if current.content_gen == gen and current.sha256 is None:
            with self.index.transaction():
                self.index.update(inode.ino, sha256=digest)
            current = self.node(inode.ino)
        return current

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
            inode = self.node(partial.ino)
            assert inode.ns_id is not None
            if partial.etag is None and self.index.pending_for_paths(
                inode.ns_id, inode.ino, self.store_paths(inode)
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
        timeout = self.config.io_timeout
        with trio.move_on_after(timeout) as scope:
            for path in self.store_paths(inode):
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

    async def _start_work(self, of: OpenFile, keep: int | None) -> None:
        """Switch an open file to a fresh work generation (copy-on-write)."""
        inode = self.node(of.ino)
        base = inode.content_gen
        if base and keep != 0:
            await self.ensure_cached(inode)
        gen = max(inode.content_gen, of.fd_gen) + 1
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

    async def _truncate(self, inode: Inode, size: int, t: int) -> None:
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
            inode = self.node(of.ino)
            old = inode.content_gen
            with self.changing():
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
                    durable = self.index.drop_puts(of.ino) or durable
                    for path in self.store_paths(inode):
                        self.index.enqueue(
                            inode.ns_id, Op.PUT.value, ino=of.ino, path=path, durable=durable
                        )
            of.work = False
            if old != of.fd_gen:
                self._drop_partial(of.ino, old)
                self.cache.drop(of.ino, old)

    # -- xattrs -------------------------------------------------------------------------

    def getxattr(self, ino: int, name: bytes) -> bytes:
        self.node(ino)
        value = self.index.get_xattr(ino, name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self.node(ino)
        if len(name) > XATTR_NAME_MAX:
            raise FsError(errno.ERANGE, "xattr name too long")
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG, "xattr value too large")
        if name.startswith(b"system."):
            raise FsError(errno.ENOTSUP, "system.* attributes (ACLs) are not supported")
        with self.changing():
            self.index.set_xattr(ino, name, value)
            self.index.update(ino, ctime_ns=now_ns())

    def listxattr(self, ino: int) -> list[bytes]:
        self.node(ino)
        return self.index.list_xattrs(ino)

    def removexattr(self, ino: int, name: bytes) -> None:
        self.node(ino)
        with self.changing():
            if not self.index.remove_xattr(ino, name):
                raise FsError(errno.ENODATA)
            self.index.update(ino, ctime_ns=now_ns())

    # -- whole-drive --------------------------------------------------------------------

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

    def allocate_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def seal_namespace(self, ns_id: str) -> None:
        """Seal every open file of a namespace (before a checkpoint or restore)."""
        for of in list(self.open_files.values()):
            inode = self.index.get(of.ino)
            if of.work and inode is not None and inode.ns_id == ns_id:
                await self._seal(of)

    def content_replaced(
        self,
        reopen: list[int],
        changed: list[int],
        entries: list[tuple[int, bytes]],
        removed: list[int],
    ) -> None:
        """Files changed behind the kernel's back (a restore): reopen and invalidate.

        `reopen`: content replaced; `changed`: attributes changed; `entries`:
        names added or removed; `removed`: inodes that lost their last link.
        """
        for ino in reopen:
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
        for ino in {*reopen, *changed}:
            self.notify_inode(ino)
        for parent, name in entries:
            self.notify_entry(parent, name)
        for ino in removed:
            self._maybe_purge(ino)

    def statfs_path(self) -> Path:
        return self.cache.root

    async def flush_all(self) -> None:
        for of in list(self.open_files.values()):
            if of.work:
                await self._seal(of)
