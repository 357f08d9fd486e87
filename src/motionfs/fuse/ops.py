"""The FUSE operations: a thin pyfuse3 layer over the drive (fuse/drive.py).

Each request becomes one drive call; FsError becomes its errno with a log
line, a store outage becomes EIO, and anything unexpected is logged with its
traceback and answered with EIO rather than crashing the mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from motionfs.errors import FsError, StoreUnavailable
from motionfs.fuse.drive import Drive
from motionfs.meta.records import Inode

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Refusals that are part of normal life (lookups of missing names, probes for
# xattrs) are logged at debug level; everything else at info or above.
QUIET_ERRNOS = {errno.ENOENT, errno.ENODATA, errno.EEXIST, errno.ENOTEMPTY}


def translated(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ops = args[0]
        assert isinstance(ops, Operations)
        ops.drive.note_request()
        try:
            return await fn(*args, **kwargs)
        except FsError as e:
            level = logging.DEBUG if e.errno in QUIET_ERRNOS else logging.INFO
            log.log(
                level,
                "%s%s refused: %s (%s)",
                fn.__name__,
                args[1:3],
                errno.errorcode.get(e.errno, e.errno),
                e.why,
            )
            raise pyfuse3.FUSEError(e.errno) from None
        except StoreUnavailable as e:
            log.error("%s: store unavailable: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            log.error("%s%s: local I/O error: %s", fn.__name__, args[1:3], e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s%s failed unexpectedly", fn.__name__, args[1:3])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, drive: Drive, attr_timeout: float = 1.0) -> None:
        super().__init__()
        self.drive = drive
        self.attr_timeout = attr_timeout
        self._dir_handles: dict[int, tuple[int, list[tuple[bytes, Inode]]]] = {}
        self._next_dh = 1

    def entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode.ino
        a.generation = 0
        a.entry_timeout = self.attr_timeout
        a.attr_timeout = self.attr_timeout
        a.st_mode = inode.mode
        a.st_nlink = inode.nlink
        a.st_uid = inode.uid
        a.st_gid = inode.gid
        a.st_rdev = inode.rdev
        a.st_size = inode.size
        a.st_blksize = 128 * 1024
        a.st_blocks = (inode.size + 511) // 512
        a.st_atime_ns = inode.atime_ns
        a.st_mtime_ns = inode.mtime_ns
        a.st_ctime_ns = inode.ctime_ns
        return a

    @translated
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        try:
            return self.entry(self.drive.lookup(parent_inode, name))
        except FsError as e:
            if e.errno != errno.ENOENT or not self.drive.missing_may_be_cached(parent_inode):
                raise
        # The kernel may remember that the name is missing (git, npm and compilers
        # probe many), as long as it remembers names that exist; changes made behind
        # its back invalidate the name explicitly.
        missing = pyfuse3.EntryAttributes()
        missing.st_ino = 0
        missing.entry_timeout = self.attr_timeout
        return missing

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.drive.forget_all(inode_list)
        except Exception:
            log.exception("forget of %d inodes failed", len(inode_list))

    @translated
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.entry(self.drive.stat(inode))

    @translated
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        node = await self.drive.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self.entry(node)

    @translated
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.drive.readlink(inode)

    @translated
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self.entry(await self.drive.mknod(parent_inode, name, mode, rdev, ctx))

    @translated
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self.entry(await self.drive.mkdir(parent_inode, name, mode, ctx))

    @translated
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.drive.unlink(parent_inode, name)

    @translated
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.drive.rmdir(parent_inode, name)

    @translated
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self.entry(await self.drive.symlink(parent_inode, name, target, ctx))

    @translated
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.drive.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @translated
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self.entry(await self.drive.link(inode, new_parent_inode, new_name))

    @translated
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fh = await self.drive.open(inode, flags)
        # This mount's own writes keep the kernel's page cache coherent, so cached
        # pages survive a reopen, unless another host has changed the content since.
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.drive.keeps_page_cache(inode))

    @translated
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, node = await self.drive.create(parent_inode, name, mode, flags, ctx)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self.entry(node)

    @translated
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.drive.read(fh, off, size)

    @translated
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.drive.write(fh, off, buf)

    @translated
    async def flush(self, fh: int) -> None:
        await self.drive.flush(fh)

    @translated
    async def release(self, fh: int) -> None:
        await self.drive.release(fh)

    @translated
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.drive.fsync(fh)

    @translated
    async def opendir(self, inode: int, ctx: Any) -> int:
        listing = self.drive.listing_with_dots(inode)
        dh = self._next_dh
        self._next_dh += 1
        self._dir_handles[dh] = (inode, listing)
        return dh

    @translated
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        _ino, listing = self._dir_handles.get(fh, (0, []))
        for i in range(start_id, len(listing)):
            name, node = listing[i]
            if not pyfuse3.readdir_reply(token, name, self.entry(node), i + 1):
                return
            if name not in (b".", b".."):  # the kernel counts no lookup for these
                self.drive.remember(node.ino)

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    @translated
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        ino, _listing = self._dir_handles.get(fh, (0, []))
        await self.drive.fsyncdir(ino)

    @translated
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.drive.statfs_path())
        s = pyfuse3.StatvfsData()
        s.f_bsize = st.f_bsize
        s.f_frsize = st.f_frsize
        s.f_blocks = st.f_blocks
        s.f_bfree = st.f_bfree
        s.f_bavail = st.f_bavail
        s.f_files = st.f_files
        s.f_ffree = st.f_ffree
        s.f_favail = st.f_favail
        s.f_namemax = 255
        return s

    @translated
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.drive.setxattr(inode, name, value)

    @translated
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return self.drive.getxattr(inode, name)

    @translated
    async def listxattr(self, inode: int, ctx: Any) -> Sequence[bytes]:
        return self.drive.listxattr(inode)

    @translated
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.drive.removexattr(inode, name)
