"""The tree: motionfs's directory layout and POSIX semantics over the index.

It decides what each inode is (the root, a scope folder, an area such as
`projects/`, a project, or a node inside a project, `renders/` or `assets/`),
keeps names and POSIX metadata in the index and journals what the store must
do. File bytes are the content layer's (data/content.py), store and drive
paths are core/paths.py's and the placement rules core/rules.py's. It knows
nothing of FUSE: the operations layer translates requests into these calls
and FsError into errno.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from motionfs.bridge import AsyncioBridge
from motionfs.core.paths import Paths, in_project, is_blob_file
from motionfs.core.rules import (
    NAME_MAX,
    Ctx,
    check_name,
    domain,
    new_node_domain,
    owner,
    refuse_into_itself,
    refuse_layout,
    refuse_layout_change,
    scope_of,
)
from motionfs.data.cache import DataCache
from motionfs.data.content import Content
from motionfs.data.journal import Journal, Op
from motionfs.data.space import SpaceGuard
from motionfs.errors import FsError, StoreUnavailable
from motionfs.layout import NAMESPACE_RECORD_PATH, ROOT_INO, SCOPE_FOLDERS, Area, Role
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import Inode
from motionfs.motion.models import NamespaceType, ProjectMetadata, StorageScope, utcnow
from motionfs.store.names import BLOB_DATA_PATH, MOTION_METADATA_PATH
from motionfs.store.storage import Storage

log = logging.getLogger(__name__)

XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536


@dataclass
class TreeConfig:
    user: str
    uid: int
    gid: int
    io_timeout: float = 30.0


def now_ns() -> int:
    return time.time_ns()


class Tree:
    """Names and POSIX metadata of the drive; file content through `content`."""

    def __init__(
        self,
        index: MetaEngine,
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
        self.paths = Paths(index, storage)
        space = SpaceGuard(index.path.parent)
        index.on_full = space.release
        # File bytes: open files, work generations, fetches, eviction.
        self.content = Content(
            index, storage, bridge, journal, cache, space, config.io_timeout, names=self
        )
        # A new file's empty upload may wait for its close, which supersedes it.
        journal.still_open = self.content.is_open
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
        self.drop_orphans()
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
        """The inode as its writers see it (an open file's unsealed size and times)."""
        return self.content.overlay(self.node(ino))

    def store_paths(self, inode: Inode) -> list[str]:
        return self.paths.store_paths(inode)

    def drive_path(self, ino: int) -> str:
        return self.paths.drive_path(ino)

    def drive_path_of_namespace(self, ns_id: str) -> str:
        return self.paths.drive_path_of_namespace(ns_id)

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
        self.purge_if_unused(ino)

    def drop_orphans(self) -> int:
        """Delete unlinked inodes nobody uses (at start, and as other hosts'
        sessions expire); how many."""
        dropped = [o for o in self.index.orphans() if o.ino not in self.lookups]
        dropped = [o for o in dropped if not self.content.is_open(o.ino)]
        if dropped:
            with self.index.transaction():
                for orphan in dropped:
                    self.index.delete_inode(orphan.ino)
            for orphan in dropped:
                self.content.drop_inode(orphan.ino, orphan.content_gen)
        return len(dropped)

    def purge_if_unused(self, ino: int) -> None:
        """Delete an unlinked inode once nothing refers to it any more."""
        if ino in self.lookups or self.content.is_open(ino):
            return
        inode = self.index.get(ino)
        if inode is None or inode.nlink > 0:
            return
        with self.index.transaction():
            self.index.delete_inode(ino)
        self.content.drop_inode(ino, inode.content_gen)

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
            await self.content.truncate(inode, size, t)
        if mode is not None:
            refuse_layout_change(inode)
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
            self.content.note_times(ino, t, mtime_ns)
        return self.stat(ino)

    def readlink(self, ino: int) -> bytes:
        inode = self.node(ino)
        if not inode.is_symlink or inode.target is None:
            raise FsError(errno.EINVAL, "not a symlink")
        return inode.target

    # -- creating -------------------------------------------------------------------

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Inode:
        check_name(name)
        p = self.node(parent)
        if not p.is_dir:
            raise FsError(errno.ENOTDIR)
        refuse_layout(p, "mkdir")
        if self.index.lookup(parent, name) is not None:
            raise FsError(errno.EEXIST)
        uid, gid, mode = owner(p, ctx, stat.S_IFDIR | (mode & 0o7777))
        t = now_ns()
        if p.role == Role.AREA.value and p.area == Area.PROJECTS.value:
            inode = await self._create_project(p, name, mode & 0o7777, uid, gid, t)
        else:
            ns_id = p.ns_id if (p.role == Role.PROJECT.value or in_project(p)) else None
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
                        ns_id, Op.MKDIR.value, path=self.paths.new_store_path(parent, name)
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
        scope = scope_of(area)
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
        names = self.paths.names_from_root(ino)
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
        check_name(name)
        if not p.is_dir:
            raise FsError(errno.ENOTDIR)
        refuse_layout(p, "create")
        if p.role == Role.AREA.value and p.area != Area.ASSETS.value:
            raise FsError(
                errno.EPERM,
                "files go inside a project folder"
                if p.area == Area.PROJECTS.value
                else "renders go in renders/<project>/",
            )
        if self.index.lookup(p.ino, name) is not None:
            raise FsError(errno.EEXIST)
        uid, gid, mode = owner(p, ctx, mode)
        t = now_ns()
        inside = p.role == Role.PROJECT.value or in_project(p)
        ns_id = p.ns_id if inside else None
        record = None
        if not inside and stat.S_ISREG(mode):
            record = await self.bridge.call(
                self.storage.create_namespace,
                NamespaceType.BLOB,
                name.decode("utf-8", "replace"),
                scope_of(p),
                self.config.user,
            )
            ns_id = record.ns_id
        elif not inside and not stat.S_ISLNK(mode):
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
                path = self.paths.new_store_path(p.ino, name) if inside else BLOB_DATA_PATH
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
        return self.content.open_handle(inode, flags), inode

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Inode:
        check_name(new_name)
        inode = self.node(ino)
        p = self.node(new_parent)
        if inode.is_dir:
            raise FsError(errno.EPERM, "hard links to directories")
        refuse_layout(p, "link")
        if domain(inode) != new_node_domain(p) or (
            p.role == Role.AREA.value and p.area != Area.ASSETS.value
        ):
            raise FsError(errno.EXDEV, "hard links stay within one project or area")
        if self.index.lookup(new_parent, new_name) is not None:
            raise FsError(errno.EEXIST)
        if inode.is_reg and in_project(inode):
            await self.content.ensure_cached(inode)
        t = now_ns()
        with self.changing():
            self.index.link(new_parent, new_name, ino)
            self.index.update(ino, nlink=inode.nlink + 1, ctime_ns=t)
            self._touch_dir(new_parent, t)
            if inode.is_reg and in_project(inode):
                assert inode.ns_id is not None
                self.index.enqueue(
                    inode.ns_id,
                    Op.PUT.value,
                    ino=ino,
                    path=self.paths.new_store_path(new_parent, new_name),
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
        self.purge_if_unused(victim.ino)

    async def _prepare_drop(self, victim: Inode) -> None:
        """An open file that loses its last link stays readable: cache it first."""
        if victim.is_reg and victim.nlink == 1 and self.content.is_open(victim.ino):
            await self.content.ensure_cached(victim)

    def _drop_link(self, parent: int, name: bytes, victim: Inode, t: int) -> None:
        """Remove one link (in the current transaction) and what the store holds for it."""
        store = in_project(victim) and not victim.is_symlink and victim.is_reg
        if store:
            assert victim.ns_id is not None
            self.index.enqueue(
                victim.ns_id, Op.REMOVE.value, path=self.paths.entry_store_path(parent, name)
            )
        self.index.unlink(parent, name)
        nlink = 0 if victim.is_dir else victim.nlink - 1
        self.index.update(victim.ino, nlink=nlink, ctime_ns=t)
        if nlink == 0:
            self.index.hold(victim.ino)  # until purge_if_unused finds it unused
        if nlink == 0 and is_blob_file(victim):
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
        self.purge_if_unused(victim.ino)

    def _remove_dir(self, parent: int, name: bytes, victim: Inode, t: int) -> None:
        if victim.role == Role.PROJECT.value:
            assert victim.ns_id is not None
            self.index.checkpoint_catalog().delete_namespace(victim.ns_id)
            self.destroy_namespace_of(victim.ns_id)
            log.info("deleted project %r (namespace %s)", name, victim.ns_id)
        elif in_project(victim):
            assert victim.ns_id is not None
            self.index.enqueue(
                victim.ns_id, Op.REMOVE.value, path=self.paths.entry_store_path(parent, name)
            )
        self.index.unlink(parent, name)
        self.index.update(victim.ino, nlink=0, ctime_ns=t)
        self.index.hold(victim.ino)
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
        check_name(new_name)
        src = self._child(old_parent, old_name)
        if src is None:
            raise FsError(errno.ENOENT)
        dst = self._child(new_parent, new_name)
        if dst is not None and flags & rename_noreplace:
            raise FsError(errno.EEXIST)
        if src.role in (Role.ROOT.value, Role.SCOPE.value, Role.AREA.value):
            raise FsError(errno.EPERM, "the top-level layout is fixed")
        np = self.node(new_parent)
        refuse_layout(np, "rename")
        if src.role == Role.PROJECT.value:
            if np.role != Role.AREA.value or (np.area, np.scope) != (src.area, src.scope):
                raise FsError(errno.EXDEV, "a project moves only within its projects folder")
        else:
            if domain(src) != new_node_domain(np):
                raise FsError(errno.EXDEV, "renames stay within one project or area")
            if np.role == Role.AREA.value and not src.is_dir and np.area != Area.ASSETS.value:
                raise FsError(errno.EPERM, "files go inside a project or renders/<project>/")
        if dst is not None and dst.ino == src.ino:
            return
        if src.is_dir:
            refuse_into_itself(self.index, src.ino, new_parent)
        if dst is not None:
            if src.is_dir and not dst.is_dir:
                raise FsError(errno.ENOTDIR)
            if not src.is_dir and dst.is_dir:
                raise FsError(errno.EISDIR)
            if dst.is_dir and self.index.has_children(dst.ino):
                raise FsError(errno.ENOTEMPTY)
            await self._prepare_drop(dst)
        inside = in_project(src)
        old_path = new_path = None
        if inside and (src.is_dir or src.is_reg):
            old_path = self.paths.entry_store_path(old_parent, old_name)
            new_path = self.paths.new_store_path(new_parent, new_name, src if src.is_dir else None)
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
            if src.ns_id is not None and (src.role == Role.PROJECT.value or is_blob_file(src)):
                self.journal_place(src.ns_id, src.ino)
        if dst is not None:
            self.purge_if_unused(dst.ino)

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
        renders = self.area_dir(scope_of(project), Area.RENDERS)
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
        return [(name, self.content.overlay(node)) for name, node in entries]

    def listing_with_dots(self, ino: int) -> list[tuple[bytes, Inode]]:
        entries = self.listing(ino)
        links = self.index.parents(ino)
        parent = self.stat(links[0][0]) if links else self.stat(ino)
        return [(b".", self.stat(ino)), (b"..", parent), *entries]

    async def fsyncdir(self, ino: int) -> None:
        inode = self.node(ino)
        if inode.ns_id is not None:
            await self.content.wait_stored(inode.ns_id)
        self.index.sync()

    # -- file data ---------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> int:
        inode = self.node(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        if not inode.is_reg:
            raise FsError(errno.ENXIO, "special files cannot be opened here")
        return await self.content.open(inode, flags)

    # The handle calls belong to the content layer; these keep the tree's own
    # callers (tools, the fast tests' harness) working without knowing it.

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.content.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.content.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        await self.content.flush(fh)

    async def release(self, fh: int) -> None:
        await self.content.release(fh)

    async def fsync(self, fh: int) -> None:
        await self.content.fsync(fh)

    async def ensure_sha256(self, inode: Inode) -> Inode:
        return await self.content.ensure_sha256(inode)

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
            self.content.replaced(ino)
        for ino in {*reopen, *changed}:
            self.notify_inode(ino)
        for parent, name in entries:
            self.notify_entry(parent, name)
        for ino in removed:
            self.purge_if_unused(ino)
