"""Descriptor-level file work for the local backend: directories opened one
name at a time (no whole host path ever reaches the kernel, so paths longer
than PATH_MAX work and planted symlinks are never followed), files replaced
through a temp file and a rename, trees removed and walked with a bounded
number of open descriptors."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from motionfs.store.backend import CHUNK

# Directories are opened without following symlinks (the root itself may be one).
ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
DIR_FLAGS = ROOT_FLAGS | os.O_NOFOLLOW
# O_NONBLOCK: opening a FIFO someone put in the tree must not hang.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX = 255  # bytes in one name


def parts(path: str) -> list[str]:
    names = [n for n in path.split("/") if n]
    for n in names:
        if n in (".", "..") or "\0" in n:
            raise OSError(errno.EINVAL, f"not a store path: {path!r}")
    return names


def temp_name(name: str) -> str:
    """`.tmp_<hex>_<name>` (the provider's pattern: 14 bytes beside the name,
    which MAX_PLAIN_NAME leaves), or `.tmp_<hex>` when that would not fit."""
    token = secrets.token_hex(4)
    tmp = f".tmp_{token}_{name}"
    return tmp if len(os.fsencode(tmp)) <= NAME_MAX else f".tmp_{token}"


def sidecar_of(name: str) -> str | None:
    """The filesystem provider's metadata file beside `name` (None: cannot exist)."""
    side = name + ".meta"
    return side if len(os.fsencode(side)) <= NAME_MAX else None


def open_subdir(fd: int, name: str, create: bool) -> int | None:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            return None
    except NotADirectoryError:  # a file or a symlink is in the way
        if not create:
            return None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=fd)
    return os.open(name, DIR_FLAGS, dir_fd=fd)


def open_file(dfd: int, name: str) -> int | None:
    """An fd of the regular file `name` in `dfd`; None if there is none."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def lstat_at(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def link_source(source: BinaryIO, dfd: int, tmp: str) -> bool:
    """Hard-link the open file `source` (by its name) as `tmp` in `dfd`.

    False when that cannot be done: no name, the name is gone or is another
    file now, another disk; or the file is empty (empty files are made anew,
    the cache's one empty file is shared).
    """
    try:
        st = os.fstat(source.fileno())
        name = source.name
        if st.st_size == 0 or not isinstance(name, str | bytes):
            return False
        os.link(name, tmp, dst_dir_fd=dfd)
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return _is_link_of(dfd, tmp, st)


def _is_link_of(dfd: int, tmp: str, st: os.stat_result) -> bool:
    """Whether the link just made at `tmp` is the file `st` (a name can be
    another file by the time it is linked); if not, it is removed."""
    linked = lstat_at(dfd, tmp)
    if linked is None or (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        return False
    return True


def link_over(sfd: int, s_dfd: int, s_name: str, d_dfd: int, d_name: str) -> bool:
    """Make `d_name` a hard link of the open file `sfd` (named `s_name`),
    atomically replacing what is there; False when that cannot be done
    (another disk, a link limit, the name is another file now).

    Only for store files: they are never written in place, so two names of
    one file stay two names of the same bytes.
    """
    st = os.fstat(sfd)
    there = lstat_at(d_dfd, d_name)
    if there is not None and (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
        return True  # rename(2) would leave both names: nothing to do anyway
    tmp = temp_name(d_name)
    try:
        os.link(s_name, tmp, src_dir_fd=s_dfd, dst_dir_fd=d_dfd, follow_symlinks=False)
    except OSError:
        return False
    if not _is_link_of(d_dfd, tmp, st):
        return False
    try:
        os.replace(tmp, d_name, src_dir_fd=d_dfd, dst_dir_fd=d_dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=d_dfd)
        raise
    return True


def copy_fd(src: int, dst: int) -> None:
    """Copy the whole file `src` into the empty file `dst` (in the kernel when it can)."""
    size = os.fstat(src).st_size
    offset = 0
    in_kernel = True
    while in_kernel and offset < size:
        try:
            n = os.copy_file_range(src, dst, size - offset, offset, offset)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = 0
        in_kernel = n > 0
        offset += n
    # Whatever copy_file_range did not do (another disk, a file that grew).
    while chunk := os.pread(src, CHUNK, offset):
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, offset)
            offset += written
            view = view[written:]


def replace_via_temp(dfd: int, name: str, fill: Callable[[int], None]) -> None:
    """Write a temp file beside `name` with `fill(fd)`, then rename it over `name`."""
    tmp = temp_name(name)
    fd = os.open(tmp, NEW_FLAGS, 0o666, dir_fd=dfd)
    try:
        try:
            fill(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def move_sidecar(sfd: int, sname: str, dfd: int, dname: str) -> None:
    s_side, d_side = sidecar_of(sname), sidecar_of(dname)
    assert s_side is not None
    if d_side is None:  # no sidecar can sit beside a name that long
        remove_at(sfd, s_side)
    else:
        os.replace(s_side, d_side, src_dir_fd=sfd, dst_dir_fd=dfd)


def remove_at(dfd: int, name: str) -> None:
    """Remove the file or the whole tree `name` in `dfd`; missing is fine."""
    st = lstat_at(dfd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        return
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return remove_at(dfd, name)  # replaced meanwhile: look again

    def unlink(sub: int, entry: os.DirEntry[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.name, dir_fd=sub)

    def rmdir(parent: int, sub_name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(sub_name, dir_fd=parent)

    try:
        walk_below(fd, unlink, rmdir)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dfd)


def walk_below(
    top: int,
    on_file: Callable[[int, os.DirEntry[str]], None],
    after_dir: Callable[[int, str], None] | None,
) -> None:
    """Depth-first walk of everything below the open directory `top`.

    `on_file(dir_fd, entry)` for each entry that is not a directory (symlinks
    are not followed); `after_dir(parent_fd, name)` once a subdirectory has
    been walked. At most three descriptors are open at a time whatever the
    depth: the walk climbs back by "..", checking that it reaches the
    directory it came from.
    """
    cur = os.dup(top)
    # Per directory above `cur`: its identity, subdirectories still to walk,
    # and the name of the one `cur` is.
    stack: list[tuple[tuple[int, int], list[str], str]] = []
    try:
        pending = scan_dir(cur, on_file)
        while True:
            if pending:
                name = pending.pop()
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=cur)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone or replaced meanwhile
                st = os.fstat(cur)
                stack.append(((st.st_dev, st.st_ino), pending, name))
                os.close(cur)
                cur = sub
                pending = scan_dir(cur, on_file)
                continue
            if not stack:
                return
            ident, pending, name = stack.pop()
            up = os.open("..", DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = up
            st = os.fstat(cur)
            if (st.st_dev, st.st_ino) != ident:
                raise OSError(errno.ESTALE, "a directory moved during a walk of the store")
            if after_dir is not None:
                after_dir(cur, name)
    finally:
        os.close(cur)


def scan_dir(fd: int, on_file: Callable[[int, os.DirEntry[str]], None]) -> list[str]:
    """Call on_file for the directory's non-directories; return its subdirectories."""
    with os.scandir(fd) as it:
        entries = list(it)
    subdirs: list[str] = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
        else:
            on_file(fd, entry)
    return subdirs


def entry_size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return -1


def sweep_folder(folder: Path) -> int:
    """Remove everything in `folder` (a temp folder); how many entries. Blocking."""
    try:
        fd = os.open(folder, ROOT_FLAGS)
    except FileNotFoundError:
        return 0
    try:
        with os.scandir(fd) as it:
            names = [entry.name for entry in it]
        for name in names:
            remove_at(fd, name)
    finally:
        os.close(fd)
    return len(names)
