"""A minimal passthrough FUSE daemon on motionfs's stack: the ceiling of pyfuse3 on trio.

Usage: python scripts/benchlib/passthrough.py SRC MOUNTPOINT [--stats FILE]

Every request is forwarded to the directory SRC with plain os calls; the only state is
which paths an inode has (the kernel speaks in inodes) and the open file descriptors. It
mounts with motionfs's kernel-facing choices (1 s entry and attribute timeouts, missing
names cached as long, keep_cache on open, no writeback cache, default_permissions,
read-ahead raised to 1 MiB), so the kernel sends it the same mix of requests it sends
motionfs: the gap between native and this column is the cost of the stack itself, the gap
between this column and motionfs is motionfs's own work.

It counts the requests it serves by type and the time spent in each handler; SIGUSR1
writes them as JSON to the --stats file (a "seq" field tells a new dump from the last).
SIGTERM or SIGINT unmounts. Only the standard library, pyfuse3 and trio.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

TIMEOUT = 1.0  # entry and attribute timeouts, as motionfs's default
READ_AHEAD_KB = 1024  # as motionfs raises it (root only)

P = ParamSpec("P")
R = TypeVar("R")
COUNTS: Counter[str] = Counter()  # requests served, by handler
SECONDS: dict[str, float] = {}  # time spent in each handler


def counted(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Count the request and its handler time; turn an OSError into the FUSE error."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        finally:
            COUNTS[name] += 1
            SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - start

    return wrapper


class Passthrough(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, source: bytes) -> None:
        super().__init__()
        self.source = source
        self.root_ino = os.lstat(source).st_ino
        self.paths: dict[int, set[bytes]] = {pyfuse3.ROOT_INODE: {source}}
        self.lookups: Counter[int] = Counter()  # the kernel's references, for forget
        self.open_fds: dict[int, int] = {}  # fd -> inode (getattr of an unlinked open file)
        self.dirs: dict[int, list[bytes]] = {}  # directory handle -> its listing
        self.next_dh = 1

    # --- inodes and paths -------------------------------------------------------------

    def ino(self, st: os.stat_result) -> int:
        return pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino

    def path(self, inode: int) -> bytes:
        try:
            return next(iter(self.paths[inode]))
        except (KeyError, StopIteration):
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def child(self, parent: int, name: bytes) -> bytes:
        return os.path.join(self.path(parent), name)

    def remember(self, path: bytes, st: os.stat_result) -> pyfuse3.EntryAttributes:
        """An entry handed to the kernel: one more reference to its inode."""
        inode = self.ino(st)
        self.paths.setdefault(inode, set()).add(path)
        self.lookups[inode] += 1
        return self.entry(st)

    def entry(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.ino(st)
        a.generation = 0
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def drop_path(self, path: bytes) -> None:
        """path no longer names what it named (unlinked, or replaced by a rename)."""
        try:
            inode = self.ino(os.lstat(path))
        except FileNotFoundError:
            return
        self.paths.get(inode, set()).discard(path)

    def moved(self, old: bytes, new: bytes) -> None:
        """A rename: the paths at and under old now start with new."""
        prefix = old + b"/"
        for paths in self.paths.values():
            for p in [p for p in paths if p == old or p.startswith(prefix)]:
                paths.discard(p)
                paths.add(new + p[len(old) :])

    # --- requests --------------------------------------------------------------------

    @counted
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            path = self.path(parent_inode)
        elif name == b"..":
            path = os.path.dirname(self.path(parent_inode))
        else:
            path = self.child(parent_inode, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            missing = pyfuse3.EntryAttributes()  # cached by the kernel like motionfs's
            missing.st_ino = 0
            missing.entry_timeout = TIMEOUT
            return missing
        return self.remember(path, st)

    @counted
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, n in inode_list:
            self.lookups[inode] -= n
            if self.lookups[inode] <= 0:
                del self.lookups[inode]
                if inode != pyfuse3.ROOT_INODE:
                    self.paths.pop(inode, None)

    @counted
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        try:
            return self.entry(os.lstat(self.path(inode)))
        except (pyfuse3.FUSEError, FileNotFoundError):
            for fd, ino in self.open_fds.items():  # open but no longer named
                if ino == inode:
                    return self.entry(os.fstat(fd))
            raise

    @counted
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        target: int | bytes = fh if fh is not None else self.path(inode)
        link = not isinstance(target, int) and stat.S_ISLNK(os.lstat(target).st_mode)
        if fields.update_size:
            os.truncate(target, attr.st_size)
        if fields.update_mode and not link:
            os.chmod(target, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.lchown(target, uid, gid)
        if fields.update_atime or fields.update_mtime:
            st = os.fstat(target) if isinstance(target, int) else os.lstat(target)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            if isinstance(target, int):
                os.utime(target, ns=(atime, mtime))
            else:
                os.utime(target, ns=(atime, mtime), follow_symlinks=False)
        return self.entry(os.fstat(target) if isinstance(target, int) else os.lstat(target))

    @counted
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.readlink(self.path(inode))

    @counted
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self.child(parent_inode, name)
        os.mknod(path, mode, rdev)
        return self.remember(path, os.lstat(path))

    @counted
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self.child(parent_inode, name)
        os.mkdir(path, mode)
        return self.remember(path, os.lstat(path))

    @counted
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = self.child(parent_inode, name)
        self.drop_path(path)
        os.unlink(path)

    @counted
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = self.child(parent_inode, name)
        self.drop_path(path)
        os.rmdir(path)

    @counted
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self.child(parent_inode, name)
        os.symlink(target, path)
        return self.remember(path, os.lstat(path))

    @counted
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        old = self.child(parent_inode_old, name_old)
        new = self.child(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and os.path.lexists(new):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self.drop_path(new)
        os.rename(old, new)
        self.moved(old, new)

    @counted
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self.child(new_parent_inode, new_name)
        os.link(self.path(inode), path, follow_symlinks=False)
        return self.remember(path, os.lstat(path))

    @counted
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fd = os.open(self.path(inode), flags & ~os.O_CREAT)
        self.open_fds[fd] = inode
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    @counted
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self.child(parent_inode, name)
        fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(mode))
        entry = self.remember(path, os.fstat(fd))
        self.open_fds[fd] = entry.st_ino
        return pyfuse3.FileInfo(fh=fd, keep_cache=True), entry

    @counted
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    @counted
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    @counted
    async def flush(self, fh: int) -> None:
        pass  # the data is in the host's page cache already

    @counted
    async def release(self, fh: int) -> None:
        self.open_fds.pop(fh, None)
        os.close(fh)

    @counted
    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    @counted
    async def opendir(self, inode: int, ctx: Any) -> int:
        dh = self.next_dh
        self.next_dh += 1
        self.dirs[dh] = [self.path(inode), *sorted(os.listdir(self.path(inode)))]
        return dh

    @counted
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        where, *names = self.dirs[fh]
        for i in range(start_id, len(names)):
            path = os.path.join(where, names[i])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not pyfuse3.readdir_reply(token, names[i], self.entry(st), i + 1):
                break
            self.remember(path, st)

    @counted
    async def releasedir(self, fh: int) -> None:
        del self.dirs[fh]

    @counted
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        fd = os.open(self.dirs[fh][0], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @counted
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        sv = os.statvfs(self.source)
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(out, name, getattr(sv, name))
        for name in ("f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(sv, name))
        return out

    @counted
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        os.setxattr(self.path(inode), name, value, follow_symlinks=False)

    @counted
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return os.getxattr(self.path(inode), name, follow_symlinks=False)

    @counted
    async def listxattr(self, inode: int, ctx: Any) -> Sequence[bytes]:
        return [n.encode() for n in os.listxattr(self.path(inode), follow_symlinks=False)]

    @counted
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        os.removexattr(self.path(inode), name, follow_symlinks=False)


def raise_read_ahead(mountpoint: Path) -> None:
    """Read-ahead of 1 MiB on this mount, as motionfs sets it (sysfs; root only)."""
    target = str(mountpoint)
    try:
        with open("/proc/self/mountinfo") as f:
            devices = [line.split()[2] for line in f if line.split()[4] == target]
        if devices:
            Path(f"/sys/class/bdi/{devices[-1]}/read_ahead_kb").write_text(f"{READ_AHEAD_KB}\n")
    except OSError:
        pass  # the kernel default stays


def dump_stats(path: Path, seq: int) -> None:
    """The counters as JSON, replaced atomically (the bench may read it any time)."""
    record = {
        "seq": seq,
        "counts": dict(COUNTS),
        "seconds": dict(SECONDS),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


async def serve(mountpoint: Path, stats: Path | None) -> None:
    async def signals() -> None:
        seq = 0
        with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM, signal.SIGINT) as got:
            async for signum in got:
                if signum == signal.SIGUSR1:
                    if stats is not None:
                        seq += 1
                        dump_stats(stats, seq)
                else:
                    pyfuse3.terminate()

    async def read_ahead() -> None:
        # The kernel has its INIT reply once a stat of the mountpoint returns.
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
        await trio.to_thread.run_sync(raise_read_ahead, mountpoint, abandon_on_cancel=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(signals)
        nursery.start_soon(read_ahead)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description="Passthrough FUSE mount of SRC on MOUNTPOINT.")
    p.add_argument("source", type=Path, metavar="SRC")
    p.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    p.add_argument("--stats", type=Path, metavar="FILE", help="where SIGUSR1 writes counters")
    args = p.parse_args()
    source, mountpoint = args.source.resolve(), args.mountpoint.resolve()
    ops = Passthrough(os.fsencode(source))
    options = set(pyfuse3.default_options)
    options |= {"fsname=motionfs-passthrough", "subtype=passthrough", "default_permissions"}
    pyfuse3.init(ops, str(mountpoint), options)
    try:
        trio.run(serve, mountpoint, args.stats)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
