"""The local backend: a filesystem-provider namespace's folder on this disk.

For the filesystem provider every byte operation goes straight to the
provider's directory: the on-disk layout is the provider's own (a file at its
path, written through a temp file and a rename, as its stream_write does),
pinned by the quirk tests, and it costs a few system calls instead of
milliseconds of library work per file. `HostTree` walks directories by file
descriptor, so store paths longer than PATH_MAX work, and never writes a file
in place, so a crash leaves no partial file at a name (temp files it leaves
are swept at start). Content is hard-linked from the cache when both share a
disk: sealed cache generations never change.

`HostTree` is blocking (the journal runs its cheap calls inline);
`HostBackend` is the same tree behind the async `Backend` protocol, each call
in a worker thread off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from motionfs.errors import StoreUnavailable
from motionfs.store.backend import (
    CHUNK,
    Change,
    Copy,
    MakeDirs,
    Move,
    Put,
    Remove,
    Write,
    file_sha256,
)
from motionfs.store.failures import SourceMissing
from motionfs.store.hostfs import (
    NEW_FLAGS,
    ROOT_FLAGS,
    copy_fd,
    entry_size,
    link_over,
    link_source,
    lstat_at,
    move_sidecar,
    open_file,
    open_subdir,
    parts,
    remove_at,
    replace_via_temp,
    scan_dir,
    sidecar_of,
    temp_name,
    walk_below,
)
from motionfs.store.names import TEMP_NAME

log = logging.getLogger(__name__)


class HostTree:
    """File work done directly in a filesystem-provider namespace's directory.

    Paths are store paths (already escaped by `store_name`). Every method is
    idempotent, blocking, and raises OSError on failure (the journal retries
    what `is_permanent` does not rule out).

    The tree is walked one directory at a time by file descriptor (openat,
    mkdirat, renameat, linkat, unlinkat...): no whole host path is ever given
    to the kernel, so a store path longer than PATH_MAX works like a short
    one, and a symlink planted in the tree is never followed. A file is only
    ever replaced through a temp file in its directory and a rename: after a
    crash at any point the name holds the old or the new content, never a
    part of it, and at worst a temp file is left that `sweep_temps` removes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, path: str) -> Path:
        """The host path of `path`, to look at (it may be longer than PATH_MAX)."""
        return self.root / path.lstrip("/")

    @contextlib.contextmanager
    def batch(self) -> Iterator[HostTree]:
        """The same tree for a run of changes on one thread at a time, keeping
        the directories it walks open until the run ends (a change then costs
        its own system calls, not a walk from the root)."""
        run = HostBatch(self.root)
        try:
            yield run
        finally:
            run.close()

    # -- walking by file descriptor ------------------------------------------

    def _open_root(self, create: bool) -> int | None:
        try:
            return os.open(self.root, ROOT_FLAGS)
        except FileNotFoundError:
            if not create:
                return None
        os.makedirs(self.root, exist_ok=True)
        return os.open(self.root, ROOT_FLAGS)

    def _open_dir(self, names: list[str], create: bool) -> int | None:
        """An fd of the directory root/names...; None if it is missing (not
        created) or something else is in the way (only when not creating)."""
        fd = self._open_root(create)
        if fd is None:
            return None
        done = False
        try:
            for name in names:
                sub = open_subdir(fd, name, create)
                if sub is None:
                    return None
                os.close(fd)
                fd = sub
            done = True
            return fd
        finally:
            if not done:
                os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str] | None]:
        """(fd of the directory holding `path`, its name); None if that is missing."""
        names = parts(path)
        if not names:
            raise IsADirectoryError(errno.EISDIR, "the namespace root is a directory", path)
        fd = self._open_dir(names[:-1], create)
        if fd is None:
            yield None
            return
        try:
            yield fd, names[-1]
        finally:
            os.close(fd)

    # -- operations ---------------------------------------------------------------

    def put(self, path: str, source: BinaryIO, durable: bool = False, link: bool = True) -> None:
        """Atomically replace `path` with the content of the open file `source`.

        With `link`, the file is hard-linked when it can be: only for files
        that never change once written (the cache's sealed generations).
        No hash is computed here (the index computes one on first need), so an
        fsync costs what the disk's own flush costs.
        """
        with self._parent(path, create=True) as at:
            assert at is not None
            dfd, name = at
            tmp = temp_name(name)
            # By name: the open file pins the content; if the name is gone (a
            # newer generation superseded it) or on another disk, copy.
            linked = link and link_source(source, dfd, tmp)
            fd = -1
            try:
                if linked:
                    content = source.fileno()
                else:
                    fd = content = os.open(tmp, NEW_FLAGS, 0o666, dir_fd=dfd)
                    with open(fd, "wb", closefd=False) as out:
                        if source.seekable():  # else a stream (a pipe): from where it is
                            source.seek(0)
                        shutil.copyfileobj(source, out, CHUNK)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                if linked:  # rename(2) of two links of one file leaves both: drop ours
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                if fd >= 0:
                    os.close(fd)
                raise
            try:
                if durable:
                    # Rename first, then flush: on journaling filesystems the file's
                    # flush commits the rename too, and the directory's costs little.
                    os.fsync(content)
                    os.fsync(dfd)
            finally:
                if fd >= 0:
                    os.close(fd)

    def get(self, path: str, dest: Path) -> bool:
        """Put the content of `path` at the local file `dest`; False if missing.

        `dest` is a short local path (the cache's): linked when on the same
        disk, else copied.
        """
        with self._parent(path) as at:
            if at is None:
                return False
            dfd, name = at
            fd = open_file(dfd, name)
            if fd is None:
                return False
            try:
                dest.unlink(missing_ok=True)
                try:
                    os.link(name, dest, src_dir_fd=dfd, follow_symlinks=False)
                    linked = True
                except OSError:
                    linked = False
                if not linked:
                    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
                    try:
                        copy_fd(fd, out)
                    finally:
                        os.close(out)
            finally:
                os.close(fd)
            return True

    def exists(self, path: str) -> bool:
        """Whether anything (file, directory...) is at `path`."""
        if not parts(path):
            return self.root.is_dir()
        with self._parent(path) as at:
            return at is not None and lstat_at(*at) is not None

    def read_small(self, path: str) -> bytes | None:
        """The whole content of the file `path`; None if it is not a file."""
        with self._parent(path) as at:
            if at is None:
                return None
            fd = open_file(*at)
            if fd is None:
                return None
            with open(fd, "rb") as f:
                return f.read()

    def write_small(self, path: str, data: bytes) -> None:
        """Atomically replace `path` with `data` (temp file, then rename)."""

        def fill(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        with self._parent(path, create=True) as at:
            assert at is not None
            replace_via_temp(*at, fill)

    def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        """Put the content of the file `src` at `dst`, atomically replacing it;
        False if `src` is missing.

        `dst` becomes a hard link of `src` when it can (same disk, below the
        link limit), else a copy: store files are never written in place, so
        sharing is safe, and a checkpoint of a 1 GiB project costs links
        rather than a gigabyte of copying.

        With if_missing an existing file `dst` of `src`'s size is kept
        (content-addressed objects): a different size is a leftover and is
        replaced. When `src` is gone, an existing `dst` is kept (True).
        """
        shared = self.share(src, dst, if_missing)
        if shared is not None:
            return shared
        with self._parent(src) as at:
            sfd = None if at is None else open_file(*at)
        if sfd is None:
            return if_missing and self.exists(dst)
        try:
            with self._parent(dst, create=True) as d_at:
                assert d_at is not None
                replace_via_temp(*d_at, functools.partial(copy_fd, sfd))
            return True
        finally:
            os.close(sfd)

    def share(self, src: str, dst: str, if_missing: bool = False) -> bool | None:
        """`copy` without copying bytes: `dst` linked to `src` or kept; None
        when only a copy can do it (another disk, the link limit)."""
        with self._parent(src) as at:
            sfd = None if at is None else open_file(*at)
            if sfd is None:
                return if_missing and self.exists(dst)
            assert at is not None
            # Our own fd of src's folder: a batch may close the fds it keeps.
            s_dir, s_name = os.dup(at[0]), at[1]
        try:
            size = os.fstat(sfd).st_size
            with self._parent(dst, create=True) as d_at:
                assert d_at is not None
                if if_missing:
                    st = lstat_at(*d_at)
                    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size:
                        return True
                return True if link_over(sfd, s_dir, s_name, *d_at) else None
        finally:
            os.close(sfd)
            os.close(s_dir)

    def mkdirs(self, path: str) -> None:
        fd = self._open_dir(parts(path), create=True)
        assert fd is not None
        os.close(fd)

    def remove(self, path: str) -> None:
        """Remove a file or a whole tree (and the provider's `.meta` sidecar
        beside it); a missing path is fine. "/" removes the namespace root."""
        if not parts(path):
            try:
                pfd = os.open(self.root.parent, ROOT_FLAGS)
            except FileNotFoundError:
                return
            try:
                remove_at(pfd, self.root.name)
            finally:
                os.close(pfd)
            return
        with self._parent(path) as at:
            if at is None:
                return
            dfd, name = at
            remove_at(dfd, name)
            sidecar = sidecar_of(name)
            if sidecar is not None:
                remove_at(dfd, sidecar)

    def move(self, src: str, dst: str) -> None:
        """Rename, replacing `dst` (and carrying the `.meta` sidecar); a missing
        `src` was moved already."""
        if parts(src) == parts(dst):
            return
        with self._parent(src) as s_at:
            if s_at is None:
                return
            sfd, sname = s_at
            s_side = sidecar_of(sname)
            has_side = s_side is not None and lstat_at(sfd, s_side) is not None
            s_st = lstat_at(sfd, sname)
            if s_st is None:
                # Moved before a crash: finish carrying the sidecar, if that is left.
                if has_side:
                    with self._parent(dst) as d_at:
                        if d_at is not None and lstat_at(*d_at) is not None:
                            move_sidecar(sfd, sname, *d_at)
                return
            with self._parent(dst, create=True) as d_at:
                assert d_at is not None
                dfd, dname = d_at
                d_side = sidecar_of(dname)
                if not has_side and d_side is not None:
                    remove_at(dfd, d_side)  # the old target's sidecar is not ours
                d_st = lstat_at(dfd, dname)
                if d_st is not None and (
                    stat.S_ISDIR(d_st.st_mode)
                    or stat.S_ISDIR(s_st.st_mode)
                    or (d_st.st_dev, d_st.st_ino) == (s_st.st_dev, s_st.st_ino)
                ):
                    # rename() cannot replace a directory that is not empty, nor a
                    # file by a directory; and it keeps both names of one inode.
                    remove_at(dfd, dname)
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                if has_side:
                    move_sidecar(sfd, sname, dfd, dname)

    def size(self, path: str) -> int | None:
        """The size of the file at `path`; None if there is no file."""
        with self._parent(path) as at:
            st = None if at is None else lstat_at(*at)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def sha256(self, path: str) -> str | None:
        with self._parent(path) as at:
            fd = None if at is None else open_file(*at)
        if fd is None:
            return None
        with open(fd, "rb") as f:
            return file_sha256(f)

    def files(self) -> list[tuple[str, int]]:
        """(store path, size) of every file below the root (walked by descriptor)."""
        found: list[tuple[str, int]] = []
        root = self._open_root(create=False)
        if root is None:
            return found

        def walk(fd: int, prefix: str) -> None:
            for sub in scan_dir(fd, lambda dfd, e: found.append((prefix + e.name, entry_size(e)))):
                child = open_subdir(fd, sub, create=False)
                if child is not None:
                    try:
                        walk(child, prefix + sub + "/")
                    finally:
                        os.close(child)

        try:
            walk(root, "/")
        finally:
            os.close(root)
        return found

    def sweep_temps(self) -> int:
        """Remove temp files (ours and the provider's stream_write's) that an
        interrupted write left anywhere in the tree; return how many.

        Only while nothing writes to the namespace (at start, before the journal
        runs): a temp file of a write in progress would be pulled away.
        """
        fd = self._open_root(create=False)
        if fd is None:
            return 0
        removed = 0

        def on_file(dfd: int, entry: os.DirEntry[str]) -> None:
            nonlocal removed
            if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=dfd)
                    removed += 1

        try:
            walk_below(fd, on_file, None)
        finally:
            os.close(fd)
        return removed

    def apply(self, change: Change) -> str | None:
        """One change, blocking (see `backend.apply`, its async twin)."""
        match change:
            case Put(path, source, durable, sealed):
                return self.put_file(path, source, durable, sealed)
            case MakeDirs(path):
                self.mkdirs(path)
            case Remove(path):
                self.remove(path)
            case Move(src, dst):
                self.move(src, dst)
            case Copy(src, dst, if_missing):
                if not self.copy(src, dst, if_missing):
                    raise SourceMissing(f"copy {src} -> {dst}: the source is missing")
            case Write(path, data):
                self.write_small(path, data)
        return None

    def apply_if_cheap(self, change: Change) -> bool:
        """Apply `change` now if it needs no copy of bytes (all but some
        copies); False, doing nothing, if it does."""
        if isinstance(change, Copy):
            shared = self.share(change.src, change.dst, change.if_missing)
            if shared is None:
                return False
            if not shared:
                raise SourceMissing(f"copy {change.src} -> {change.dst}: the source is missing")
            return True
        self.apply(change)
        return True

    def put_file(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        """`put` for any source: a sealed one is linked and not hashed; any
        other is hashed and copied (the caller's file may change afterwards)."""
        if sealed and not isinstance(source, Path):
            self.put(path, source, durable)
            return None
        f = open(source, "rb") if isinstance(source, Path) else source  # noqa: SIM115
        with f:
            sha = file_sha256(f)
            self.put(path, f, durable, link=False)
        return sha


class HostBatch(HostTree):
    """A HostTree that keeps the directories it opened, by their names below the
    root; a removal or a move forgets those at or below the paths it changed.
    Not for concurrent use, and only for as long as nothing else changes the
    tree's folders (one run of the journal, which alone writes there)."""

    MAX_OPEN = 256  # directories kept open at once

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._dirs: dict[tuple[str, ...], int] = {}

    def close(self) -> None:
        dirs, self._dirs = self._dirs, {}
        for fd in dirs.values():
            os.close(fd)

    def _forget(self, path: str) -> None:
        """Close the kept directories at or below `path` (it was removed or moved)."""
        names = tuple(parts(path))
        n = len(names)
        for key in [k for k in self._dirs if k[:n] == names]:
            os.close(self._dirs.pop(key))

    def _kept_dir(self, names: list[str], create: bool) -> int | None:
        """A kept fd of root/names..., opened from its nearest kept ancestor."""
        key = tuple(names)
        fd = self._dirs.get(key)
        if fd is not None:
            return fd
        if len(self._dirs) >= self.MAX_OPEN:
            self.close()
        depth = len(key)
        while depth and key[:depth] not in self._dirs:
            depth -= 1
        if depth == 0 and () not in self._dirs:
            root = self._open_root(create)
            if root is None:
                return None
            self._dirs[()] = root
        fd = self._dirs[key[:depth]]
        for i in range(depth, len(key)):
            sub = open_subdir(fd, key[i], create)
            if sub is None:
                return None
            fd = self._dirs[key[: i + 1]] = sub
        return fd

    @contextlib.contextmanager
    def _parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str] | None]:
        names = parts(path)
        if not names:
            raise IsADirectoryError(errno.EISDIR, "the namespace root is a directory", path)
        fd = self._kept_dir(names[:-1], create)
        yield None if fd is None else (fd, names[-1])

    def mkdirs(self, path: str) -> None:
        fd = self._kept_dir(parts(path), create=True)
        assert fd is not None

    def remove(self, path: str) -> None:
        try:
            super().remove(path)
        finally:
            self._forget(path)

    def move(self, src: str, dst: str) -> None:
        try:
            super().move(src, dst)
        finally:
            self._forget(src)
            self._forget(dst)


class HostBackend:
    """A HostTree behind the Backend protocol: every call in a worker thread."""

    ranged = False

    def __init__(self, tree: HostTree) -> None:
        self.tree = tree

    async def put(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        return await asyncio.to_thread(self.tree.put_file, path, source, durable, sealed)

    async def get(self, path: str, dest: Path) -> bool:
        # The filesystem provider's stream_read reads the whole file into
        # memory first; take its host file instead (bounded memory).
        return await asyncio.to_thread(self.tree.get, path, dest)

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(self.tree.exists, path)

    async def read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        raise StoreUnavailable("ranged reads need an s3 namespace")

    async def remove(self, path: str) -> None:
        await asyncio.to_thread(self.tree.remove, path)

    async def move(self, src: str, dst: str) -> None:
        await asyncio.to_thread(self.tree.move, src, dst)

    async def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        return await asyncio.to_thread(self.tree.copy, src, dst, if_missing)

    async def mkdirs(self, path: str) -> None:
        await asyncio.to_thread(self.tree.mkdirs, path)

    async def write_small(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self.tree.write_small, path, data)

    async def read_small(self, path: str) -> bytes | None:
        return await asyncio.to_thread(self.tree.read_small, path)

    async def size(self, path: str) -> int | None:
        return await asyncio.to_thread(self.tree.size, path)

    async def sha256(self, path: str) -> str | None:
        return await asyncio.to_thread(self.tree.sha256, path)

    def listed_as(self, path: str) -> str:
        return path

    def sweep_temps(self) -> int:
        return self.tree.sweep_temps()

    async def destroy(self, forget: Callable[[], Awaitable[None]]) -> None:
        """The library forgets the namespace first (it only forgets), then its
        folder goes."""
        await forget()
        await asyncio.to_thread(destroy_root, self.tree.root)


def destroy_root(root: Path) -> None:
    """Remove a destroyed namespace's directory, best effort (the index has
    forgotten it already)."""
    try:
        HostTree(root).remove("/")
    except OSError as e:
        log.warning("could not remove all of %s: %s", root, e)
        shutil.rmtree(root, ignore_errors=True)
