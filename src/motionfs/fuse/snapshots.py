"""The `.snapshots` folders: read-only views of checkpoints, and the drive facade.

Every project has a virtual `.snapshots` directory (hidden from listings
unless the mount says otherwise, reachable by name) holding one read-only
directory per checkpoint and a `latest` symlink. `mkdir .snapshots/NAME`
creates a checkpoint and `rmdir` deletes one; every other change is EROFS.
Virtual inode numbers live far above the index's own.

`Drive` is what the FUSE layer talks to: it routes virtual inodes here and
everything else to the live tree.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from motionfs.core.checkpoints import LATEST, SNAPDIR, Checkpoints, object_path
from motionfs.core.tree import Ctx, Tree
from motionfs.errors import FsError, StoreUnavailable
from motionfs.layout import Role
from motionfs.meta.records import Checkpoint, CpEntry, Inode
from motionfs.motion.xattrs import PREFIX as MOTION_PREFIX
from motionfs.motion.xattrs import MotionMetadata

log = logging.getLogger(__name__)

SNAPDIR_BASE = 1 << 40  # + a project's inode: its .snapshots folder
LATEST_BASE = 1 << 41  # + a project's inode: its `latest` symlink
ENTRY_BASE = 1 << 42  # + a checkpoint entry id

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def is_virtual(ino: int) -> bool:
    return ino >= SNAPDIR_BASE


def _erofs(what: str = "checkpoints are read-only") -> FsError:
    return FsError(errno.EROFS, what)


def _virtual(
    ino: int, mode: int, project: Inode, t: int, nlink: int = 1, target: bytes | None = None
) -> Inode:
    """A `.snapshots` folder or `latest` link: owned like its project, read-only."""
    return Inode.model_construct(
        ino=ino,
        mode=mode,
        uid=project.uid,
        gid=project.gid,
        nlink=nlink,
        size=len(target) if target else 0,
        rdev=0,
        atime_ns=t,
        mtime_ns=t,
        ctime_ns=t,
        target=target,
        role="snapshots",
        area=project.area,
        scope=project.scope,
        ns_id=project.ns_id,
        content_gen=0,
        stored_gen=0,
        sha256=None,
    )


@dataclass
class SnapHandle:
    fd: int | None
    size: int


class SnapshotView:
    def __init__(self, tree: Tree, checkpoints: Checkpoints, visible: bool) -> None:
        self.tree = tree
        self.checkpoints = checkpoints
        self.visible = visible
        self.handles: dict[int, SnapHandle] = {}

    # -- inodes ---------------------------------------------------------------------------

    def _project_of(self, ino: int, base: int) -> Inode:
        project = self.tree.index.get(ino - base)
        if project is None or project.role != Role.PROJECT.value:
            raise FsError(errno.ENOENT)
        return project

    def _checkpoints(self, project: Inode) -> list[Checkpoint]:
        assert project.ns_id is not None
        return self.checkpoints.records.all(project.ns_id)

    def snapdir(self, project: Inode) -> Inode:
        cps = self._checkpoints(project)
        t = max([project.ctime_ns, *(c.created_ns for c in cps)])
        return _virtual(
            SNAPDIR_BASE + project.ino, stat.S_IFDIR | 0o555, project, t, nlink=2 + len(cps)
        )

    def latest(self, project: Inode) -> Inode | None:
        cps = self._checkpoints(project)
        if not cps:
            return None
        newest = cps[-1]
        return _virtual(
            LATEST_BASE + project.ino,
            stat.S_IFLNK | 0o777,
            project,
            newest.created_ns,
            target=newest.name.encode(),
        )

    def entry_inode(self, e: CpEntry) -> Inode:
        return Inode.model_construct(
            ino=ENTRY_BASE + e.eid,
            mode=e.mode,
            uid=e.uid,
            gid=e.gid,
            nlink=e.nlink,
            size=e.size,
            rdev=e.rdev,
            atime_ns=e.atime_ns,
            mtime_ns=e.mtime_ns,
            ctime_ns=e.ctime_ns,
            target=e.target,
            role="snapshot",
            area=None,
            scope=None,
            ns_id=None,
            content_gen=0,
            stored_gen=0,
            sha256=e.sha256,
        )

    def _entry(self, ino: int) -> CpEntry:
        e = self.checkpoints.records.entry(ino - ENTRY_BASE)
        if e is None:
            raise FsError(errno.ENOENT, "checkpoint deleted")
        return e

    def stat(self, ino: int) -> Inode:
        if ino >= ENTRY_BASE:
            return self.entry_inode(self._entry(ino))
        if ino >= LATEST_BASE:
            link = self.latest(self._project_of(ino, LATEST_BASE))
            if link is None:
                raise FsError(errno.ENOENT)
            return link
        return self.snapdir(self._project_of(ino, SNAPDIR_BASE))

    def lookup(self, parent: int, name: bytes) -> Inode:
        if parent >= ENTRY_BASE:
            e = self._entry(parent)
            if name == b"..":
                if e.parent_eid is None:
                    cp = self.checkpoints.records.by_id(e.cp_id)
                    assert cp is not None
                    return self.snapdir(self._project_for_ns(cp.ns_id))
                return self.stat(ENTRY_BASE + e.parent_eid)
            child = self.checkpoints.records.child(e.eid, name)
            if child is None:
                raise FsError(errno.ENOENT)
            return self.entry_inode(child)
        project = self._project_of(parent, SNAPDIR_BASE)
        if name == b"..":
            return project
        if name == LATEST:
            link = self.latest(project)
            if link is None:
                raise FsError(errno.ENOENT)
            return link
        assert project.ns_id is not None
        cp = self.checkpoints.records.get(project.ns_id, name.decode("utf-8", "replace"))
        if cp is None:
            raise FsError(errno.ENOENT)
        return self.entry_inode(self.checkpoints.records.root(cp.cp_id))

    def _project_for_ns(self, ns_id: str) -> Inode:
        for _parent, _name, node in self.tree.index.links_of_namespace(ns_id):
            return node
        raise FsError(errno.ENOENT, "project gone")

    def listing(self, ino: int) -> list[tuple[bytes, Inode]]:
        if ino >= ENTRY_BASE:
            e = self._entry(ino)
            if not stat.S_ISDIR(e.mode):
                raise FsError(errno.ENOTDIR)
            return [(c.name, self.entry_inode(c)) for c in self.checkpoints.records.children(e.eid)]
        project = self._project_of(ino, SNAPDIR_BASE)
        out = [
            (cp.name.encode(), self.entry_inode(self.checkpoints.records.root(cp.cp_id)))
            for cp in self._checkpoints(project)
        ]
        link = self.latest(project)
        if link is not None:
            out.append((LATEST, link))
        return sorted(out, key=lambda item: item[0])

    def readlink(self, ino: int) -> bytes:
        node = self.stat(ino)
        if node.target is None:
            raise FsError(errno.EINVAL)
        return node.target

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if ino < ENTRY_BASE:
            raise FsError(errno.ENODATA)
        value = self.checkpoints.records.xattrs(self._entry(ino).eid).get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        if ino < ENTRY_BASE:
            return []
        return sorted(self.checkpoints.records.xattrs(self._entry(ino).eid))

    # -- reading ------------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> int:
        if flags & WRITE_FLAGS or (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise _erofs()
        if ino < ENTRY_BASE:
            raise FsError(errno.EISDIR)
        e = self._entry(ino)
        if not stat.S_ISREG(e.mode):
            raise FsError(errno.EISDIR if stat.S_ISDIR(e.mode) else errno.ENXIO)
        fd = None
        if e.size and e.sha256:
            path = await self._fetch(e)
            fd = os.open(path, os.O_RDONLY)
        fh = self.tree.allocate_fh()
        self.handles[fh] = SnapHandle(fd, e.size)
        return fh

    async def _fetch(self, e: CpEntry) -> os.PathLike[str]:
        """Stream a checkpointed object into the cache once (objects never change)."""
        assert e.sha256 is not None
        cache = self.tree.cache
        path = cache.object_path(e.sha256)
        if path.exists():
            return path
        cp = self.checkpoints.records.by_id(e.cp_id)
        assert cp is not None
        await self.tree.wait_stored(cp.ns_id)
        part = path.with_name(path.name + ".part")
        try:
            found = await self.tree.bridge.call(
                self.tree.storage.get, cp.ns_id, object_path(e.sha256), part
            )
        except StoreUnavailable as err:
            raise FsError(errno.EIO, f"reading checkpoint content failed: {err}") from err
        if not found:
            raise FsError(errno.EIO, f"checkpoint content {e.sha256} is missing from the store")
        part.rename(path)
        return path

    def owns_handle(self, fh: int) -> bool:
        return fh in self.handles

    def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        if h.fd is None or off >= h.size:
            return b""
        return os.pread(h.fd, min(size, h.size - off), off)

    def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None and h.fd is not None:
            os.close(h.fd)


class Drive:
    """The FUSE layer's view: the live tree with `.snapshots` views mounted in."""

    def __init__(self, tree: Tree, view: SnapshotView, motion: MotionMetadata) -> None:
        self.tree = tree
        self.view = view
        self.checkpoints = view.checkpoints
        self.motion = motion

    def note_request(self) -> None:
        """A file system request arrived: store work waits for a quiet moment."""
        self.tree.journal.last_request = trio.current_time()

    def statfs_path(self) -> Path:
        return self.tree.statfs_path()

    def _is_snapdir_name(self, parent: int, name: bytes) -> bool:
        if name != SNAPDIR or is_virtual(parent):
            return False
        node = self.tree.index.get(parent)
        return node is not None and node.role == Role.PROJECT.value

    def _refuse(self, *inos: int) -> None:
        if any(is_virtual(i) for i in inos):
            raise _erofs()

    def _refuse_name(self, parent: int, name: bytes, err: int = errno.EEXIST) -> None:
        self._refuse(parent)
        if self._is_snapdir_name(parent, name):
            raise FsError(err, ".snapshots is reserved for checkpoints")

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> Inode:
        if is_virtual(parent):
            return self.view.lookup(parent, name)
        if self._is_snapdir_name(parent, name):
            project = self.tree.node(parent)
            return self.view.snapdir(project)
        return self.tree.lookup(parent, name)

    def forget(self, ino: int, nlookup: int) -> None:
        if not is_virtual(ino):
            self.tree.forget(ino, nlookup)

    def forget_all(self, pairs: Sequence[tuple[int, int]]) -> None:
        """The kernel's batch of forgets: purging deleted inodes is one transaction."""
        with self.tree.index.transaction():
            for ino, nlookup in pairs:
                try:
                    self.forget(ino, nlookup)
                except Exception:
                    log.exception("forget(%d) failed", ino)

    def remember(self, ino: int) -> None:
        if not is_virtual(ino):
            self.tree.remember(ino)

    def stat(self, ino: int) -> Inode:
        return self.view.stat(ino) if is_virtual(ino) else self.tree.stat(ino)

    def readlink(self, ino: int) -> bytes:
        return self.view.readlink(ino) if is_virtual(ino) else self.tree.readlink(ino)

    def listing_with_dots(self, ino: int) -> list[tuple[bytes, Inode]]:
        if not is_virtual(ino):
            entries = self.tree.listing_with_dots(ino)
            node = self.tree.node(ino)
            if self.view.visible and node.role == Role.PROJECT.value:
                entries.append((SNAPDIR, self.view.snapdir(node)))
            return entries
        me = self.view.stat(ino)
        parent = self.view.lookup(ino, b"..")
        return [(b".", me), (b"..", parent), *self.view.listing(ino)]

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if is_virtual(ino):
            return self.view.getxattr(ino, name)
        if name.startswith(MOTION_PREFIX):  # the kernel asks security.* on every write
            value = self.motion.get(self.tree.stat(ino), name)
            if value is not None:
                return value
        return self.tree.getxattr(ino, name)

    def listxattr(self, ino: int) -> list[bytes]:
        if is_virtual(ino):
            return self.view.listxattr(ino)
        return [*self.motion.names(self.tree.stat(ino)), *self.tree.listxattr(ino)]

    async def open(self, ino: int, flags: int) -> int:
        if is_virtual(ino):
            return await self.view.open(ino, flags)
        return await self.tree.open(ino, flags)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if self.view.owns_handle(fh):
            return self.view.read(fh, off, size)
        return await self.tree.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.tree.write(fh, off, buf)  # snapshot handles are never writable

    async def flush(self, fh: int) -> None:
        if not self.view.owns_handle(fh):
            await self.tree.flush(fh)

    async def release(self, fh: int) -> None:
        if self.view.owns_handle(fh):
            self.view.release(fh)
        else:
            await self.tree.release(fh)

    async def fsync(self, fh: int) -> None:
        if not self.view.owns_handle(fh):
            await self.tree.fsync(fh)

    async def fsyncdir(self, ino: int) -> None:
        if not is_virtual(ino):
            await self.tree.fsyncdir(ino)

    # -- changes --------------------------------------------------------------------------------

    async def create_checkpoint(
        self, project_ino: int, name: bytes, description: str | None
    ) -> Checkpoint:
        cp = await self.checkpoints.create(project_ino, name, description)
        self._snapshots_changed(project_ino, name)
        return cp

    def delete_checkpoint(self, project_ino: int, name: bytes) -> None:
        self.checkpoints.delete(project_ino, name)
        self._snapshots_changed(project_ino, name)

    def _snapshots_changed(self, project_ino: int, name: bytes) -> None:
        """Tell the kernel: this name in .snapshots, and `latest`, changed."""
        snapdir = SNAPDIR_BASE + project_ino
        self.tree.notify_entry(snapdir, name)
        self.tree.notify_entry(snapdir, LATEST)
        self.tree.notify_inode(LATEST_BASE + project_ino)
        self.tree.notify_inode(snapdir)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Inode:
        if SNAPDIR_BASE <= parent < LATEST_BASE:
            project = self.view._project_of(parent, SNAPDIR_BASE)
            cp = await self.create_checkpoint(project.ino, name, None)
            return self.view.entry_inode(self.checkpoints.records.root(cp.cp_id))
        self._refuse_name(parent, name)
        return await self.tree.mkdir(parent, name, mode, ctx)

    async def rmdir(self, parent: int, name: bytes) -> None:
        if SNAPDIR_BASE <= parent < LATEST_BASE:
            if name == LATEST:
                raise FsError(errno.ENOTDIR)
            project = self.view._project_of(parent, SNAPDIR_BASE)
            self.delete_checkpoint(project.ino, name)
            return
        self._refuse_name(parent, name, errno.EBUSY)
        await self.tree.rmdir(parent, name)

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx
    ) -> tuple[int, Inode]:
        self._refuse_name(parent, name)
        return await self.tree.create(parent, name, mode, flags, ctx)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Inode:
        self._refuse_name(parent, name)
        return await self.tree.mknod(parent, name, mode, rdev, ctx)

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Inode:
        self._refuse_name(parent, name)
        return await self.tree.symlink(parent, name, target, ctx)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Inode:
        self._refuse(ino)
        self._refuse_name(new_parent, new_name)
        return await self.tree.link(ino, new_parent, new_name)

    async def unlink(self, parent: int, name: bytes) -> None:
        self._refuse_name(parent, name, errno.EISDIR)
        await self.tree.unlink(parent, name)

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        self._refuse_name(old_parent, old_name, errno.EBUSY)
        self._refuse_name(new_parent, new_name, errno.EBUSY)
        await self.tree.rename(old_parent, old_name, new_parent, new_name, flags)

    async def setattr(self, ino: int, **changes: Any) -> Inode:
        self._refuse(ino)
        return await self.tree.setattr(ino, **changes)

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._refuse(ino)
        if not self.motion.set(self.tree.stat(ino), name, value):
            self.tree.setxattr(ino, name, value)

    def removexattr(self, ino: int, name: bytes) -> None:
        self._refuse(ino)
        if self.motion.get(self.tree.stat(ino), name) is not None:
            raise FsError(errno.EACCES, "motion metadata can be changed, not removed")
        self.tree.removexattr(ino, name)
