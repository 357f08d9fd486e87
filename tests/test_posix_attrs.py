"""Kernel-level POSIX behaviour inside a motionfs project folder: metadata, links,
xattrs, mmap, locks and permissions, what a remount keeps, and the motionfs
layout (files, renames and names are in test_posix.py).

Every test drives the mount through the kernel (os.*, open(), mmap, fcntl and
command-line tools), never through motionfs' Python classes. Run against a
plain directory (MOTIONFS_TEST_TARGET=native) every test here passes, which is
what proves the test itself right; tests of motionfs' own layout are marked
`motionfs_only` and skipped there.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import stat
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import LAYOUT, NATIVE, Drive, needs_tool
from helpers import expect_errno, read_file, snapshot, write_file

motionfs_only = pytest.mark.skipif(NATIVE, reason="motionfs layout")

NOBODY = 65534
MiB = 1 << 20
# ext4 without the ea_inode feature keeps an xattr in one 4 KiB block together with
# its headers, so the native run cannot hold a full 4096-byte value; motionfs must.
XATTR_BIG = 4000 if NATIVE else 4096


# --------------------------------------------------------------------------- helpers


def errno_of(fn: Callable[[], Any]) -> int:
    """0 if fn() succeeds, else the errno of the OSError it raised."""
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def in_child(fn: Callable[[], Any], uid: int | None = None, gid: int | None = None) -> Any:
    """Run fn in a forked child (optionally as uid/gid, no supplementary groups).

    fn's JSON-serialisable return value comes back; an exception in the child
    fails the test with its repr.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
            payload = {"ok": fn()}
            code = 0
        except BaseException as e:
            payload = {"error": repr(e)}
        finally:
            try:
                os.write(w, json.dumps(payload).encode())
            finally:
                os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "child wrote nothing"}')
    assert "error" not in result, f"child failed: {result['error']}"
    assert os.waitstatus_to_exitcode(status) == 0
    return result["ok"]


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o755, 0o4755, 0o2750, 0o1777, 0o000])
def test_chmod_file(project: Path, mode: int) -> None:
    """chmod sets exactly the requested permission bits, and changes ctime."""
    f = project / "f"
    write_file(f, b"x")
    os.utime(f, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = os.stat(f).st_ctime_ns
    time.sleep(0.02)
    os.chmod(f, mode)
    st = os.stat(f)
    assert stat.S_IMODE(st.st_mode) == mode
    assert stat.S_ISREG(st.st_mode)
    assert st.st_ctime_ns > before


def test_chmod_directory(project: Path) -> None:
    """Directories keep their chmod bits including setgid and sticky."""
    d = project / "d"
    os.mkdir(d)
    for mode in (0o700, 0o755, 0o2775, 0o1777):
        os.chmod(d, mode)
        assert stat.S_IMODE(os.stat(d).st_mode) == mode
        assert stat.S_ISDIR(os.stat(d).st_mode)


def test_chown_as_root(project: Path) -> None:
    """root can give files away; -1 leaves one id unchanged; lchown changes the link only."""
    f = project / "f"
    write_file(f, b"x")
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(f, -1, 4321)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    os.symlink("f", project / "l")
    os.lchown(project / "l", 2222, 3333)
    assert (os.lstat(project / "l").st_uid, os.lstat(project / "l").st_gid) == (2222, 3333)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 4321)
    os.mkdir(project / "d")
    os.chown(project / "d", 1234, 5678)
    assert (os.stat(project / "d").st_uid, os.stat(project / "d").st_gid) == (1234, 5678)


def test_utimens_nanoseconds(project: Path) -> None:
    """atime and mtime set with nanosecond precision read back exactly, on files,
    directories and (without following) symlinks."""
    f = project / "f"
    write_file(f, b"x")
    os.mkdir(project / "d")
    os.symlink("f", project / "l")
    atime, mtime = 1_234_567_890_123_456_789, 1_600_000_000_987_654_321
    for p in (f, project / "d"):
        os.utime(p, ns=(atime, mtime))
        st = os.stat(p)
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    os.utime(project / "l", ns=(atime + 1, mtime + 1), follow_symlinks=False)
    lst = os.lstat(project / "l")
    assert (lst.st_atime_ns, lst.st_mtime_ns) == (atime + 1, mtime + 1)
    assert os.stat(f).st_mtime_ns == mtime
    os.utime(f)  # UTIME_NOW
    assert abs(os.stat(f).st_mtime_ns - time.time_ns()) < 5 * 10**9


def test_write_updates_mtime_and_ctime_not_atime(project: Path) -> None:
    """A write moves mtime and ctime forward to about now and leaves atime alone;
    truncate does the same."""
    f = project / "f"
    write_file(f, b"x")
    old = 1_000_000_000_123_456_789
    os.utime(f, ns=(old, old))
    ctime0 = os.stat(f).st_ctime_ns
    time.sleep(0.02)
    with open(f, "ab") as fh:
        fh.write(b"more")
    st1 = os.stat(f)
    assert st1.st_mtime_ns > old
    assert abs(st1.st_mtime_ns - time.time_ns()) < 5 * 10**9
    assert st1.st_ctime_ns > ctime0
    assert st1.st_atime_ns == old
    time.sleep(0.05)
    os.truncate(f, 2)
    st2 = os.stat(f)
    assert st2.st_mtime_ns > st1.st_mtime_ns
    assert st2.st_ctime_ns > st1.st_ctime_ns


def test_directory_mtime_changes_on_entry_changes(project: Path) -> None:
    """Creating, renaming and removing entries updates the parent directory's mtime."""
    d = project / "d"
    os.mkdir(d)
    old = 1_000_000_000_000_000_000
    for action in (
        lambda: write_file(d / "f", b"x"),
        lambda: os.rename(d / "f", d / "g"),
        lambda: os.unlink(d / "g"),
    ):
        os.utime(d, ns=(old, old))
        action()
        assert os.stat(d).st_mtime_ns > old


def test_symlinks(project: Path) -> None:
    """Relative, absolute and dangling symlinks: readlink exact, lstat vs stat,
    symlink size is the target length, I/O follows the link."""
    write_file(project / "target.txt", b"pointed at")
    os.mkdir(project / "dir")
    os.symlink("target.txt", project / "rel")
    os.symlink(str(project / "target.txt"), project / "abs")
    os.symlink("does/not/exist", project / "dangling")
    os.symlink("../target.txt", project / "dir" / "up")
    os.symlink("dir", project / "dirlink")
    assert os.readlink(project / "rel") == "target.txt"
    assert os.readlink(project / "abs") == str(project / "target.txt")
    assert os.readlink(project / "dangling") == "does/not/exist"
    for name in ("rel", "abs", "dangling"):
        lst = os.lstat(project / name)
        assert stat.S_ISLNK(lst.st_mode)
        assert lst.st_size == len(os.readlink(project / name).encode())
    for link in (project / "rel", project / "abs", project / "dir" / "up"):
        st = os.stat(link)
        assert stat.S_ISREG(st.st_mode)
        assert st.st_ino == os.stat(project / "target.txt").st_ino
        assert read_file(link) == b"pointed at"
    expect_errno(errno.ENOENT, os.stat, project / "dangling")
    expect_errno(errno.ENOENT, os.open, project / "dangling", os.O_RDONLY)
    assert os.listdir(project / "dirlink") == ["up"]
    expect_errno(errno.EEXIST, os.symlink, "x", project / "rel")
    expect_errno(errno.ELOOP, os.open, project / "rel", os.O_RDONLY | os.O_NOFOLLOW)
    expect_errno(errno.EINVAL, os.readlink, project / "target.txt")


def test_open_creat_through_dangling_symlink_creates_target(project: Path) -> None:
    """O_CREAT through a dangling relative symlink creates the file it points to."""
    os.symlink("made-by-link", project / "link")
    write_file(project / "link", b"via link")
    assert read_file(project / "made-by-link") == b"via link"
    assert stat.S_ISLNK(os.lstat(project / "link").st_mode)


def test_symlink_long_and_odd_targets(project: Path) -> None:
    """Symlink targets are stored verbatim: long, unicode, with spaces and dots."""
    targets = ["a/" * 1000 + "end", "🎬 clip/../x", "./.././//weird", "x" * 4000]
    for i, target in enumerate(targets):
        os.symlink(target, project / f"l{i}")
        assert os.readlink(project / f"l{i}") == target


def test_hard_links(project: Path) -> None:
    """Hard links share an inode and contents; st_nlink counts them; removing one name
    keeps the data under the others."""
    a = project / "a"
    write_file(a, b"shared")
    os.mkdir(project / "sub")
    os.link(a, project / "b")
    os.link(a, project / "sub" / "c")
    for name in (a, project / "b", project / "sub" / "c"):
        st = os.stat(name)
        assert st.st_nlink == 3
        assert st.st_ino == os.stat(a).st_ino
    with open(project / "b", "r+b") as fh:
        fh.write(b"SH")
    assert read_file(project / "sub" / "c") == b"SHared"
    os.chmod(a, 0o600)
    assert stat.S_IMODE(os.stat(project / "b").st_mode) == 0o600
    os.unlink(a)
    assert os.stat(project / "b").st_nlink == 2
    os.unlink(project / "b")
    assert os.stat(project / "sub" / "c").st_nlink == 1
    assert read_file(project / "sub" / "c") == b"SHared"
    expect_errno(errno.EPERM, os.link, project / "sub", project / "sublink")
    write_file(project / "other", b"o")
    expect_errno(errno.EEXIST, os.link, project / "sub" / "c", project / "other")


def test_xattrs(project: Path) -> None:
    """user.* xattrs: set/get/list/remove, ENODATA for missing, XATTR_CREATE/REPLACE
    semantics, binary, empty and ~4 KiB values, also on directories."""
    f = project / "f"
    write_file(f, b"x")
    assert os.listxattr(f) == []
    os.setxattr(f, "user.colour", b"blue")
    os.setxattr(f, "user.binary", b"\x00\x01\xff\x00")
    os.setxattr(f, "user.empty", b"")
    assert os.getxattr(f, "user.colour") == b"blue"
    assert os.getxattr(f, "user.binary") == b"\x00\x01\xff\x00"
    assert os.getxattr(f, "user.empty") == b""
    assert sorted(os.listxattr(f)) == ["user.binary", "user.colour", "user.empty"]
    expect_errno(errno.ENODATA, os.getxattr, f, "user.missing")
    expect_errno(errno.EEXIST, os.setxattr, f, "user.colour", b"red", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, f, "user.new", b"v", os.XATTR_REPLACE)
    assert os.getxattr(f, "user.colour") == b"blue"
    os.setxattr(f, "user.colour", b"red", os.XATTR_REPLACE)
    os.setxattr(f, "user.created", b"c", os.XATTR_CREATE)
    assert os.getxattr(f, "user.colour") == b"red"
    big = bytes(range(256)) * (XATTR_BIG // 256) + b"z" * (XATTR_BIG % 256)
    os.setxattr(f, "user.big", big)
    assert os.getxattr(f, "user.big") == big
    os.removexattr(f, "user.colour")
    expect_errno(errno.ENODATA, os.getxattr, f, "user.colour")
    expect_errno(errno.ENODATA, os.removexattr, f, "user.colour")
    assert sorted(os.listxattr(f)) == ["user.big", "user.binary", "user.created", "user.empty"]
    os.mkdir(project / "d")
    os.setxattr(project / "d", "user.on-dir", b"yes")
    assert os.getxattr(project / "d", "user.on-dir") == b"yes"
    assert read_file(f) == b"x"


def test_xattrs_follow_hard_links_and_rename(project: Path) -> None:
    """xattrs belong to the inode: visible through a hard link and after rename."""
    write_file(project / "a", b"x")
    os.setxattr(project / "a", "user.k", b"v")
    os.link(project / "a", project / "b")
    os.rename(project / "a", project / "c")
    assert os.getxattr(project / "b", "user.k") == b"v"
    assert os.getxattr(project / "c", "user.k") == b"v"


@needs_tool["getfattr"]
@needs_tool["setfattr"]
def test_getfattr_setfattr_tools(project: Path) -> None:
    """The attr tools set and dump user xattrs on project files."""
    f = project / "f"
    write_file(f, b"x")
    subprocess.run(["setfattr", "-n", "user.tool", "-v", "made by setfattr", str(f)], check=True)
    out = subprocess.run(
        ["getfattr", "--only-values", "-n", "user.tool", str(f)], capture_output=True, check=True
    )
    assert out.stdout == b"made by setfattr"
    dump = subprocess.run(
        ["getfattr", "-d", "--absolute-names", str(f)], capture_output=True, text=True, check=True
    )
    assert 'user.tool="made by setfattr"' in dump.stdout
    subprocess.run(["setfattr", "-x", "user.tool", str(f)], check=True)
    assert os.listxattr(f) == []


def test_statvfs(project: Path) -> None:
    """statvfs reports sane, non-zero sizes and a 255-byte name limit."""
    sv = os.statvfs(project)
    assert sv.f_bsize > 0
    assert sv.f_frsize > 0
    assert sv.f_namemax == 255
    assert sv.f_blocks > 0
    assert 0 <= sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert sv.f_favail <= sv.f_ffree <= sv.f_files or sv.f_files == 0
    fd = os.open(project / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.fstatvfs(fd).f_namemax == 255
    finally:
        os.close(fd)


def test_fsync_fdatasync_and_directory_fsync(project: Path) -> None:
    """fsync/fdatasync on files (also read-only fds) and fsync on a directory succeed."""
    f = project / "f"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        os.write(fd, b" data")
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(project, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert read_file(f) == b"durable data"


def test_mmap_read(project: Path) -> None:
    """A read-only mapping shows the file's bytes, also across page boundaries."""
    data = os.urandom(3 * mmap.PAGESIZE + 123)
    f = project / "m"
    write_file(f, data)
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert len(m) == len(data)
        assert m[:] == data
        assert (
            m[mmap.PAGESIZE - 5 : mmap.PAGESIZE + 5] == data[mmap.PAGESIZE - 5 : mmap.PAGESIZE + 5]
        )


def test_mmap_shared_write_reaches_file(project: Path) -> None:
    """Stores through a MAP_SHARED mapping, flushed and closed, are read back by a new fd."""
    f = project / "m"
    write_file(f, b"." * (2 * mmap.PAGESIZE))
    with open(f, "r+b") as fh:
        m = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        m[0:5] = b"hello"
        m[mmap.PAGESIZE + 10 : mmap.PAGESIZE + 15] = b"world"
        m.flush()
        m.close()
    data = read_file(f)
    assert data[0:5] == b"hello"
    assert data[mmap.PAGESIZE + 10 : mmap.PAGESIZE + 15] == b"world"
    assert len(data) == 2 * mmap.PAGESIZE
    assert data.count(b".") == 2 * mmap.PAGESIZE - 10


def test_mmap_sees_write_syscalls(project: Path) -> None:
    """A shared mapping sees later pwrite()s to the same file (one page cache)."""
    f = project / "m"
    write_file(f, bytes(mmap.PAGESIZE))
    fd = os.open(f, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as m:
            os.pwrite(fd, b"fresh", 100)
            assert m[100:105] == b"fresh"
    finally:
        os.close(fd)


def test_posix_and_flock_locks_conflict_between_processes(project: Path) -> None:
    """An exclusive fcntl lock or flock held here blocks a non-blocking attempt in a
    child process (EAGAIN/EACCES) and is free again after release."""
    f = project / "lock"
    write_file(f, b"x")

    def try_lock(kind: str) -> int:
        with open(f, "r+b") as fh:
            op = fcntl.lockf if kind == "posix" else fcntl.flock
            return errno_of(lambda: op(fh, fcntl.LOCK_EX | fcntl.LOCK_NB))

    with open(f, "r+b") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        assert in_child(lambda: try_lock("posix")) in (errno.EAGAIN, errno.EACCES)
        fcntl.lockf(fh, fcntl.LOCK_UN)
        assert in_child(lambda: try_lock("posix")) == 0
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert in_child(lambda: try_lock("flock")) == errno.EWOULDBLOCK
        fcntl.flock(fh, fcntl.LOCK_UN)
        assert in_child(lambda: try_lock("flock")) == 0


def test_permissions_enforced_for_other_users(make_drive: Callable[..., Drive]) -> None:
    """An unprivileged user (uid 65534) cannot read or change root's 0o600 file, cannot
    create in root's 0o755 directory, but can read 0o644 files and create in a 0o777
    directory, where the new file is owned by that user. On motionfs this needs
    --allow-other (and kernel permission checks)."""
    drive = make_drive("--allow-other")
    project = drive.project("p")
    os.chmod(project, 0o755)
    write_file(project / "secret", b"top secret", mode=0o600)
    write_file(project / "public", b"hello all", mode=0o644)
    os.mkdir(project / "locked", 0o700)
    write_file(project / "locked" / "inner", b"x", mode=0o644)
    os.mkdir(project / "open")
    os.chmod(project / "open", 0o777)
    # The pytest tmp dirs above the mountpoint are 0o700, so the child works relative
    # to a directory fd opened here; only the project's own permissions are checked.
    dfd = os.open(project, os.O_RDONLY | os.O_DIRECTORY)

    def probe() -> dict[str, Any]:
        def opened(name: str, flags: int) -> None:
            os.close(os.open(name, flags, 0o644, dir_fd=dfd))

        def read_public() -> None:
            fd = os.open("public", os.O_RDONLY, dir_fd=dfd)
            try:
                assert os.read(fd, 100) == b"hello all"
            finally:
                os.close(fd)

        created = os.open("open/mine", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd)
        st = os.fstat(created)
        os.close(created)
        return {
            "read_public": errno_of(read_public),
            "read_secret": errno_of(lambda: opened("secret", os.O_RDONLY)),
            "write_public": errno_of(lambda: opened("public", os.O_WRONLY)),
            "create_in_project": errno_of(
                lambda: opened("new", os.O_CREAT | os.O_WRONLY | os.O_EXCL)
            ),
            "enter_locked": errno_of(lambda: opened("locked/inner", os.O_RDONLY)),
            "unlink_secret": errno_of(lambda: os.unlink("secret", dir_fd=dfd)),
            "chmod_secret": errno_of(lambda: os.chmod("secret", 0o666, dir_fd=dfd)),
            "utime_secret": errno_of(lambda: os.utime("secret", ns=(1, 1), dir_fd=dfd)),
            "chown_public": errno_of(lambda: os.chown("public", NOBODY, NOBODY, dir_fd=dfd)),
            "mine_owner": [st.st_uid, st.st_gid],
        }

    try:
        result = in_child(probe, uid=NOBODY, gid=NOBODY)
    finally:
        os.close(dfd)
    assert result == {
        "read_public": 0,
        "read_secret": errno.EACCES,
        "write_public": errno.EACCES,
        "create_in_project": errno.EACCES,
        "enter_locked": errno.EACCES,
        "unlink_secret": errno.EACCES,
        "chmod_secret": errno.EPERM,
        "utime_secret": errno.EPERM,
        "chown_public": errno.EPERM,
        "mine_owner": [NOBODY, NOBODY],
    }
    assert read_file(project / "secret") == b"top secret"
    assert stat.S_IMODE(os.stat(project / "secret").st_mode) == 0o600
    assert os.stat(project / "open" / "mine").st_uid == NOBODY
    assert not (project / "new").exists()


# --------------------------------------------------------------------------- persistence


def build_rich_tree(root: Path) -> None:
    """A tree with every kind of POSIX state a remount must keep."""
    os.makedirs(root / "src" / "deep" / "deeper")
    os.mkdir(root / "empty")
    write_file(root / "src" / "Root.tsx", b"export const Root = () => null;\n")
    write_file(root / "src" / "deep" / "deeper" / "blob.bin", os.urandom(300_000))
    write_file(root / "empty-file", b"")
    with open(root / "sparse", "wb") as fh:
        fh.write(b"a")
        fh.seek(3 * MiB)
        fh.write(b"z")
    write_file(root / "private", b"mine", mode=0o600)
    write_file(root / "setuid-tool", b"#!/bin/sh\n", mode=0o4755)
    write_file(root / "given-away", b"theirs")
    os.chown(root / "given-away", 1234, 5678)
    os.chmod(root / "empty", 0o700)
    os.chmod(root / "src" / "deep", 0o2750)
    os.symlink("src/Root.tsx", root / "rel-link")
    os.symlink(str(root / "private"), root / "abs-link")
    os.symlink("gone/away", root / "dangling")
    os.symlink("src/deep", root / "dir-link")
    write_file(root / "linked", b"three names")
    os.link(root / "linked", root / "src" / "linked-2")
    os.link(root / "linked", root / "src" / "deep" / "linked-3")
    os.setxattr(root / "src" / "Root.tsx", "user.motion.note", b"keep me")
    os.setxattr(root / "src" / "Root.tsx", "user.bin", b"\x00\xff")
    os.setxattr(root / "src", "user.dir", b"d")
    os.setxattr(root / "linked", "user.shared", b"via inode")
    for name in ("x.meta", ".workspace", "_data", "clip~mfs", "emoji 🎬", "n" * 255):
        write_file(root / name, name.encode())
    # Times last, deepest first: entries created above changed the directories' mtimes.
    t = 1_700_000_000_000_000_000
    paths = sorted((p for p in root.rglob("*")), key=lambda p: -len(p.parts))
    for i, p in enumerate(paths):
        stamp = t + i * 1_000_000_007 + 123_456_789
        os.utime(p, ns=(stamp, stamp), follow_symlinks=False)
    os.utime(root, ns=(t, t))


def test_remount_keeps_everything(project: Path, drive: Drive) -> None:
    """After a clean unmount and mount, contents, modes, owners, nanosecond mtimes,
    symlinks, hard links and xattrs are identical, and the project stays writable."""
    build_rich_tree(project)
    before = snapshot(project, dir_links=True)
    assert before["hardlinks"] == [["./linked", "./src/deep/linked-3", "./src/linked-2"]]
    assert before["entries"]["./rel-link"]["target"] == "src/Root.tsx"
    drive.remount()
    after = snapshot(project, dir_links=True)
    assert after == before
    write_file(project / "after-remount", b"still writable")
    with open(project / "linked", "ab") as fh:
        fh.write(b"!")
    drive.remount()
    assert read_file(project / "after-remount") == b"still writable"
    assert read_file(project / "src" / "deep" / "linked-3") == b"three names!"
    assert os.stat(project / "src" / "linked-2").st_nlink == 3


# --------------------------------------------------------------------------- motionfs layout

AREAS = ["assets", "projects", "renders"]
LAYOUT_REFUSALS = (errno.EPERM, errno.EACCES)


@motionfs_only
def test_layout_root_and_scopes(drive: Drive) -> None:
    """The mountpoint lists exactly the five areas; shared/ and scratch/ list three each."""
    assert sorted(os.listdir(drive.path)) == sorted(LAYOUT)
    for scope in ("shared", "scratch"):
        assert sorted(os.listdir(drive.path / scope)) == AREAS
    for name in LAYOUT:
        assert (drive.path / name).is_dir()


@motionfs_only
def test_mkdir_makes_an_empty_project(drive: Drive) -> None:
    """mkdir projects/x creates a project whose listing is empty (metadata hidden)."""
    x = drive.path / "projects" / "x"
    os.mkdir(x)
    assert x.is_dir()
    assert os.listdir(drive.path / "projects") == ["x"]
    assert os.listdir(x) == []
    out = subprocess.run(["ls", "-A", str(x)], capture_output=True, text=True, check=True)
    assert out.stdout == ""
    for scope in ("shared", "scratch"):
        y = drive.path / scope / "projects" / "y"
        os.mkdir(y)
        assert os.listdir(y) == []


@motionfs_only
def test_rm_r_removes_project(drive: Drive) -> None:
    """rm -r projects/x deletes the project; a new x starts empty."""
    x = drive.path / "projects" / "x"
    os.mkdir(x)
    os.makedirs(x / "src" / "deep")
    write_file(x / "src" / "deep" / "f", b"x")
    os.symlink("src", x / "link")
    subprocess.run(["rm", "-r", str(x)], check=True)
    assert not x.exists()
    assert os.listdir(drive.path / "projects") == []
    os.mkdir(x)
    assert os.listdir(x) == []


@motionfs_only
def test_renders_folder_for_project(drive: Drive) -> None:
    """After creating project x, renders/x is (or can be made) a directory."""
    os.mkdir(drive.path / "projects" / "x")
    r = drive.path / "renders" / "x"
    os.makedirs(r, exist_ok=True)
    assert r.is_dir()
    assert "x" in os.listdir(drive.path / "renders")


@motionfs_only
def test_copy_into_assets_and_renders(drive: Drive, tmp_path: Path) -> None:
    """Files copied into assets/ and renders/x/ read back identical, with the source's
    size and nanosecond mtime (cp -p), also after a remount."""
    src = tmp_path / "src"
    src.mkdir()
    logo, clip = src / "logo.png", src / "clip.mp4"
    write_file(logo, _tiny_png())
    write_file(clip, os.urandom(2 * MiB + 17))
    os.utime(logo, ns=(1_650_000_000_111_111_111, 1_650_000_000_222_222_222))
    os.utime(clip, ns=(1_650_000_000_333_333_333, 1_650_000_000_444_444_444))
    os.mkdir(drive.path / "projects" / "x")
    os.makedirs(drive.path / "renders" / "x", exist_ok=True)
    subprocess.run(["cp", "-p", str(logo), str(drive.path / "assets") + "/"], check=True)
    subprocess.run(["cp", "-p", str(clip), str(drive.path / "renders" / "x") + "/"], check=True)
    pairs = [
        (logo, drive.path / "assets" / "logo.png"),
        (clip, drive.path / "renders" / "x" / "clip.mp4"),
    ]
    for attempt in range(2):
        for source, copy in pairs:
            assert read_file(copy) == read_file(source), attempt
            assert os.stat(copy).st_size == os.stat(source).st_size
            assert os.stat(copy).st_mtime_ns == os.stat(source).st_mtime_ns
        assert "logo.png" in os.listdir(drive.path / "assets")
        assert os.listdir(drive.path / "renders" / "x") == ["clip.mp4"]
        drive.remount()


def _tiny_png() -> bytes:
    """A valid 2x2 RGB PNG, so asset metadata extraction has a real image to read."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\x00\xff" * 2)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@motionfs_only
def test_rename_between_projects_is_exdev(drive: Drive) -> None:
    """rename(2) of a file or directory between projects is EXDEV; mv copies instead."""
    a, b = drive.path / "projects" / "a", drive.path / "projects" / "b"
    os.mkdir(a)
    os.mkdir(b)
    write_file(a / "f", b"moving")
    os.mkdir(a / "d")
    expect_errno(errno.EXDEV, os.rename, a / "f", b / "f")
    expect_errno(errno.EXDEV, os.rename, a / "d", b / "d")
    assert read_file(a / "f") == b"moving"
    subprocess.run(["mv", str(a / "f"), str(b / "f")], check=True)
    assert read_file(b / "f") == b"moving"
    assert not (a / "f").exists()


@motionfs_only
def test_rename_between_scopes_is_exdev(drive: Drive) -> None:
    """Moving a project from projects/ to shared/projects/ is EXDEV; mv copies it."""
    x = drive.path / "projects" / "x"
    os.mkdir(x)
    write_file(x / "f", b"scoped")
    os.mkdir(drive.path / "shared" / "projects" / "s")
    shared = drive.path / "shared" / "projects"
    expect_errno(errno.EXDEV, os.rename, x, shared / "x")
    expect_errno(errno.EXDEV, os.rename, x / "f", shared / "s" / "f")
    assert read_file(x / "f") == b"scoped"
    subprocess.run(["mv", str(x), str(shared) + "/"], check=True)
    assert read_file(shared / "x" / "f") == b"scoped"
    assert not x.exists()


@motionfs_only
def test_no_plain_files_outside_projects(drive: Drive) -> None:
    """Regular files cannot be created in the mount root, in projects/ itself or in
    shared/projects/ (EPERM or EACCES); nor can stray folders in the root."""
    for where in (
        drive.path,
        drive.path / "projects",
        drive.path / "shared" / "projects",
        drive.path / "shared",
        drive.path / "scratch" / "projects",
    ):
        expect_errno(LAYOUT_REFUSALS, os.open, where / "stray.txt", os.O_CREAT | os.O_WRONLY, 0o644)
        assert "stray.txt" not in os.listdir(where)
    expect_errno(LAYOUT_REFUSALS, os.mkdir, drive.path / "stray")
    assert sorted(os.listdir(drive.path)) == sorted(LAYOUT)


@motionfs_only
def test_layout_folders_cannot_be_removed(drive: Drive) -> None:
    """rmdir of any layout folder fails (EPERM, EBUSY or EACCES) and it stays."""
    folders = [drive.path / name for name in LAYOUT]
    folders += [drive.path / scope / area for scope in ("shared", "scratch") for area in AREAS]
    for folder in folders:
        expect_errno((errno.EPERM, errno.EBUSY, errno.EACCES), os.rmdir, folder)
        assert folder.is_dir()
    assert sorted(os.listdir(drive.path)) == sorted(LAYOUT)
