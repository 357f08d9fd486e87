"""The `.snapshots` folders: read-only views of checkpoints.

Every project has a virtual `.snapshots` directory (hidden from listings
unless the mount says otherwise, reachable by name) holding one read-only
directory per checkpoint and a `latest` symlink. `mkdir .snapshots/NAME`
creates a checkpoint and `rmdir` deletes one; every other change is EROFS.
Virtual inode numbers live far above the index's own; the drive
(fuse/drive.py) routes them here.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from motionfs.core.checkpoints import LATEST, Checkpoints, object_path
from motionfs.core.tree import Tree
from motionfs.errors import FsError, StoreUnavailable
from motionfs.layout import Role
from motionfs.meta.records import Checkpoint, CpEntry, Inode

SNAPDIR_BASE = 1 << 40  # + a project's inode: its .snapshots folder
LATEST_BASE = 1 << 41  # + a project's inode: its `latest` symlink
ENTRY_BASE = 1 << 42  # + a checkpoint entry id

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def is_virtual(ino: int) -> bool:
    return ino >= SNAPDIR_BASE


def erofs(what: str = "checkpoints are read-only") -> FsError:
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

    def project_of(self, ino: int, base: int) -> Inode:
        """The project whose `.snapshots` folder (base SNAPDIR_BASE) or `latest`
        link (LATEST_BASE) is virtual inode `ino`; ENOENT once it is gone."""
        project = self.tree.index.get(ino - base)
        if project is None or project.role != Role.PROJECT.value:
            raise FsError(errno.ENOENT)
        return project

    def _checkpoints(self, project: Inode) -> list[Checkpoint]:
        assert project.ns_id is not None
        return self.checkpoints.cp_index.all(project.ns_id)

    def snapdir(self, project: Inode) -> Inode:
        taken = self._checkpoints(project)
        t = max([project.ctime_ns, *(c.created_ns for c in taken)])
        return _virtual(
            SNAPDIR_BASE + project.ino, stat.S_IFDIR | 0o555, project, t, nlink=2 + len(taken)
        )

    def latest(self, project: Inode) -> Inode | None:
        taken = self._checkpoints(project)
        if not taken:
            return None
        newest = taken[-1]
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
        e = self.checkpoints.cp_index.entry(ino - ENTRY_BASE)
        if e is None:
            raise FsError(errno.ENOENT, "checkpoint deleted")
        return e

    def stat(self, ino: int) -> Inode:
        if ino >= ENTRY_BASE:
            return self.entry_inode(self._entry(ino))
        if ino >= LATEST_BASE:
            link = self.latest(self.project_of(ino, LATEST_BASE))
            if link is None:
                raise FsError(errno.ENOENT)
            return link
        return self.snapdir(self.project_of(ino, SNAPDIR_BASE))

    def lookup(self, parent: int, name: bytes) -> Inode:
        if parent >= ENTRY_BASE:
            e = self._entry(parent)
            if name == b"..":
                if e.parent_eid is None:
                    cp = self.checkpoints.cp_index.by_id(e.cp_id)
                    assert cp is not None
                    return self.snapdir(self._project_for_ns(cp.ns_id))
                return self.stat(ENTRY_BASE + e.parent_eid)
            child = self.checkpoints.cp_index.child(e.eid, name)
            if child is None:
                raise FsError(errno.ENOENT)
            return self.entry_inode(child)
        project = self.project_of(parent, SNAPDIR_BASE)
        if name == b"..":
            return project
        if name == LATEST:
            link = self.latest(project)
            if link is None:
                raise FsError(errno.ENOENT)
            return link
        assert project.ns_id is not None
        cp = self.checkpoints.cp_index.get(project.ns_id, name.decode("utf-8", "replace"))
        if cp is None:
            raise FsError(errno.ENOENT)
        return self.entry_inode(self.checkpoints.cp_index.root(cp.cp_id))

    def _project_for_ns(self, ns_id: str) -> Inode:
        for _parent, _name, node in self.tree.index.links_of_namespace(ns_id):
            return node
        raise FsError(errno.ENOENT, "project gone")

    def listing(self, ino: int) -> list[tuple[bytes, Inode]]:
        if ino >= ENTRY_BASE:
            e = self._entry(ino)
            if not stat.S_ISDIR(e.mode):
                raise FsError(errno.ENOTDIR)
            return [
                (c.name, self.entry_inode(c)) for c in self.checkpoints.cp_index.children(e.eid)
            ]
        project = self.project_of(ino, SNAPDIR_BASE)
        out = [
            (cp.name.encode(), self.entry_inode(self.checkpoints.cp_index.root(cp.cp_id)))
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
        value = self.checkpoints.cp_index.xattrs(self._entry(ino).eid).get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        if ino < ENTRY_BASE:
            return []
        return sorted(self.checkpoints.cp_index.xattrs(self._entry(ino).eid))

    # -- reading ------------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> int:
        if flags & WRITE_FLAGS or (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise erofs()
        if ino < ENTRY_BASE:
            raise FsError(errno.EISDIR)
        e = self._entry(ino)
        if not stat.S_ISREG(e.mode):
            raise FsError(errno.EISDIR if stat.S_ISDIR(e.mode) else errno.ENXIO)
        fd = None
        if e.size and e.sha256:
            path = await self._fetch(e)
            fd = os.open(path, os.O_RDONLY)
        fh = self.tree.content.allocate_fh()
        self.handles[fh] = SnapHandle(fd, e.size)
        return fh

    async def _fetch(self, e: CpEntry) -> os.PathLike[str]:
        """Stream a checkpointed object into the cache once (objects never change)."""
        assert e.sha256 is not None
        cache = self.tree.cache
        path = cache.object_path(e.sha256)
        if path.exists():
            return path
        cp = self.checkpoints.cp_index.by_id(e.cp_id)
        assert cp is not None
        await self.tree.content.wait_stored(cp.ns_id)
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
