"""The drive: what the FUSE layer talks to.

It is the live tree with each project's `.snapshots` view mounted in: virtual
inodes and snapshot handles go to the view (fuse/snapshots.py), live file
handles to the tree's content layer (data/content.py), everything else to
the tree, and names that would shadow `.snapshots` are refused. The motion
metadata attributes are answered before the tree's own xattrs.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from motionfs.core.checkpoints import LATEST, SNAPDIR
from motionfs.core.rules import Ctx
from motionfs.core.tree import Tree
from motionfs.errors import FsError
from motionfs.fuse.snapshots import (
    LATEST_BASE,
    SNAPDIR_BASE,
    SnapshotView,
    erofs,
    is_virtual,
)
from motionfs.layout import Role
from motionfs.meta.records import Checkpoint, Inode
from motionfs.motion.xattrs import PREFIX as MOTION_PREFIX
from motionfs.motion.xattrs import MotionMetadata

log = logging.getLogger(__name__)


class Drive:
    """The FUSE layer's view: the live tree with `.snapshots` views mounted in."""

    def __init__(self, tree: Tree, view: SnapshotView, motion: MotionMetadata) -> None:
        self.tree = tree
        self.content = tree.content  # open files: handles go straight to the data layer
        self.view = view
        self.checkpoints = view.checkpoints
        self.motion = motion
        # A store that keeps each file as one record (sqlite:///) caps its size.
        self.max_file_size = tree.storage.max_file_size

    def _fits(self, size: int) -> None:
        """EFBIG at the write that would pass the store's limit, not at upload."""
        if self.max_file_size is not None and size > self.max_file_size:
            raise FsError(errno.EFBIG, f"the store holds files of up to {self.max_file_size} bytes")

    def note_request(self) -> None:
        """A file system request arrived: store work waits for a quiet moment."""
        self.tree.journal.last_request = trio.current_time()

    def statfs_path(self) -> Path:
        return self.content.statfs_path()

    def _is_snapdir_name(self, parent: int, name: bytes) -> bool:
        if name != SNAPDIR or is_virtual(parent):
            return False
        node = self.tree.index.get(parent)
        return node is not None and node.role == Role.PROJECT.value

    def _refuse(self, *inos: int) -> None:
        if any(is_virtual(i) for i in inos):
            raise erofs()

    def _refuse_name(self, parent: int, name: bytes, err: int = errno.EEXIST) -> None:
        self._refuse(parent)
        if self._is_snapdir_name(parent, name):
            raise FsError(err, ".snapshots is reserved for checkpoints")

    # -- reads ----------------------------------------------------------------------------------

    def missing_may_be_cached(self, parent: int) -> bool:
        """Whether the kernel may remember that a name in `parent` is missing.
        Not inside `.snapshots`: names appear there as side effects (`latest`
        after a mkdir) and from the CLI, and an invalidation is asynchronous."""
        return not is_virtual(parent)

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

    def keeps_page_cache(self, ino: int) -> bool:
        """Whether the kernel may keep its cached pages of `ino` at this open:
        checkpoint views never change; live files unless another host changed them."""
        return is_virtual(ino) or self.content.page_cache_valid(ino)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if self.view.owns_handle(fh):
            return self.view.read(fh, off, size)
        return await self.content.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._fits(off + len(buf))
        return await self.content.write(fh, off, buf)  # snapshot handles are never writable

    async def flush(self, fh: int) -> None:
        if not self.view.owns_handle(fh):
            await self.content.flush(fh)

    async def release(self, fh: int) -> None:
        if self.view.owns_handle(fh):
            self.view.release(fh)
        else:
            await self.content.release(fh)

    async def fsync(self, fh: int) -> None:
        if not self.view.owns_handle(fh):
            await self.content.fsync(fh)

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
            project = self.view.project_of(parent, SNAPDIR_BASE)
            cp = await self.create_checkpoint(project.ino, name, None)
            return self.view.entry_inode(self.checkpoints.cp_index.root(cp.cp_id))
        self._refuse_name(parent, name)
        return await self.tree.mkdir(parent, name, mode, ctx)

    async def rmdir(self, parent: int, name: bytes) -> None:
        if SNAPDIR_BASE <= parent < LATEST_BASE:
            if name == LATEST:
                raise FsError(errno.ENOTDIR)
            project = self.view.project_of(parent, SNAPDIR_BASE)
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
        if changes.get("size") is not None:
            self._fits(changes["size"])
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
