"""Kernel-level POSIX behaviour inside a motionfs project folder.

Every test drives the mount through the kernel (os.*, open(), mmap, fcntl and
command-line tools), never through motionfs' Python classes. Run against a
plain directory (MOTIONFS_TEST_TARGET=native) every test here passes, which is
what proves the test itself right; tests of motionfs' own layout are marked
`motionfs_only` and skipped there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import stat
import struct
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LAYOUT, NATIVE, Drive, needs_tool
from helpers import expect_errno, read_file, sha256_file, snapshot, write_file

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


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test; restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


# --------------------------------------------------------------------------- create / read / write


def test_create_and_read_back(project: Path) -> None:
    """A new file exists, has the bytes written, the right size, and is a regular file."""
    f = project / "hello.txt"
    write_file(f, b"hello motionfs\n")
    st = os.stat(f)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == 15
    assert read_file(f) == b"hello motionfs\n"
    assert os.listdir(project) == ["hello.txt"]


def test_create_empty_file(project: Path) -> None:
    """O_CREAT without writing gives an empty regular file; reading at EOF returns b''."""
    fd = os.open(project / "empty", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    assert os.stat(project / "empty").st_size == 0
    fd = os.open(project / "empty", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b""
        assert os.pread(fd, 10, 1000) == b""
    finally:
        os.close(fd)


def test_create_mode_honours_umask(project: Path, umask: Callable[[int], None]) -> None:
    """open(O_CREAT, 0o666) and mkdir(0o777) are masked by the caller's umask."""
    umask(0o027)
    fd = os.open(project / "f", os.O_CREAT | os.O_WRONLY, 0o666)
    os.close(fd)
    os.mkdir(project / "d", 0o777)
    assert stat.S_IMODE(os.stat(project / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(project / "d").st_mode) == 0o750


def test_new_files_owned_by_creator(project: Path) -> None:
    """Files and directories root creates are owned by uid/gid 0."""
    write_file(project / "f", b"x")
    os.mkdir(project / "d")
    for p in (project / "f", project / "d"):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_setgid_directory_inherits_group(project: Path) -> None:
    """In a setgid directory new entries take its group; new subdirectories keep setgid."""
    d = project / "team"
    os.mkdir(d)
    os.chown(d, 0, 4321)
    os.chmod(d, 0o2775)
    write_file(d / "f", b"x")
    os.mkdir(d / "sub")
    assert os.stat(d / "f").st_gid == 4321
    sub = os.stat(d / "sub")
    assert sub.st_gid == 4321
    assert sub.st_mode & stat.S_ISGID


def test_o_excl_on_existing_file(project: Path) -> None:
    """O_CREAT|O_EXCL fails with EEXIST on an existing file and leaves it alone."""
    f = project / "once"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"first")
    os.close(fd)
    expect_errno(errno.EEXIST, os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    assert read_file(f) == b"first"


def test_o_excl_on_directory_and_dangling_symlink(project: Path) -> None:
    """O_EXCL refuses any existing name, even a directory or a dangling symlink."""
    os.mkdir(project / "d")
    os.symlink("nowhere", project / "dangling")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    expect_errno(errno.EEXIST, os.open, project / "d", flags, 0o644)
    expect_errno(errno.EEXIST, os.open, project / "dangling", flags, 0o644)
    assert not (project / "nowhere").exists()


def test_o_trunc_empties_existing_file(project: Path) -> None:
    """Opening with O_TRUNC drops the old contents."""
    f = project / "t"
    write_file(f, b"old contents")
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(f).st_size == 0
    assert read_file(f) == b""


def test_overwrite_in_the_middle(project: Path) -> None:
    """Writing at an offset inside the file replaces exactly those bytes."""
    f = project / "mid"
    write_file(f, b"0123456789")
    with open(f, "r+b") as fh:
        fh.seek(3)
        fh.write(b"abc")
    assert read_file(f) == b"012abc6789"
    assert os.stat(f).st_size == 10


def test_write_past_eof_leaves_zero_filled_hole(project: Path) -> None:
    """Seeking past EOF and writing extends the file; the gap reads back as zeros."""
    f = project / "gap"
    write_file(f, b"head")
    with open(f, "r+b") as fh:
        fh.seek(10_000)
        fh.write(b"tail")
    data = read_file(f)
    assert len(data) == 10_004
    assert data[:4] == b"head"
    assert data[4:10_000] == bytes(9_996)
    assert data[10_000:] == b"tail"


def test_sparse_file_reads_zeros(project: Path) -> None:
    """A file with a multi-MiB hole reports its full size and reads zeros in the hole."""
    f = project / "sparse"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"start", 0)
        os.pwrite(fd, b"end", 8 * MiB)
        assert os.fstat(fd).st_size == 8 * MiB + 3
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.pread(fd, 5, 0) == b"start"
        assert os.pread(fd, MiB, 3 * MiB) == bytes(MiB)
        assert os.pread(fd, 10, 8 * MiB - 5) == bytes(5) + b"end"
        assert os.pread(fd, 100, 8 * MiB + 3) == b""
    finally:
        os.close(fd)
    assert os.stat(f).st_size == 8 * MiB + 3


def test_pread_pwrite_do_not_move_offset(project: Path) -> None:
    """pread/pwrite work at absolute offsets and leave the file offset untouched."""
    f = project / "p"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"abcdefghij")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        assert os.pwrite(fd, b"XY", 2) == 2
        assert os.pread(fd, 4, 1) == b"bXYe"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        assert os.pwrite(fd, b"Z", 12) == 1
        assert os.pread(fd, 100, 0) == b"abXYefghij\x00\x00Z"
        assert os.fstat(fd).st_size == 13
    finally:
        os.close(fd)


def test_o_append_always_writes_at_end(project: Path) -> None:
    """With O_APPEND every write lands at the current end, even after lseek, across fds."""
    f = project / "log"
    write_file(f, b"start;")
    a = os.open(f, os.O_WRONLY | os.O_APPEND)
    b = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(a, b"a1;")
        os.write(b, b"b1;")
        os.lseek(a, 0, os.SEEK_SET)
        os.write(a, b"a2;")
        assert os.lseek(a, 0, os.SEEK_CUR) == len(b"start;a1;b1;a2;")
    finally:
        os.close(a)
        os.close(b)
    assert read_file(f) == b"start;a1;b1;a2;"


def test_truncate_shrink_and_grow(project: Path) -> None:
    """truncate() cuts the file, and growing it again reads zeros, not the old bytes."""
    f = project / "t"
    write_file(f, b"0123456789")
    os.truncate(f, 4)
    assert os.stat(f).st_size == 4
    assert read_file(f) == b"0123"
    os.truncate(f, 8)
    assert os.stat(f).st_size == 8
    assert read_file(f) == b"0123\x00\x00\x00\x00"
    os.truncate(f, 0)
    assert read_file(f) == b""


def test_ftruncate_on_open_file(project: Path) -> None:
    """ftruncate through an open fd shrinks and grows; fstat and a second fd agree."""
    f = project / "ft"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    other = None
    try:
        os.write(fd, b"x" * 1000)
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        other = os.open(f, os.O_RDONLY)
        assert os.read(other, 2000) == b"x" * 100
        os.ftruncate(fd, 3 * MiB)
        assert os.fstat(other).st_size == 3 * MiB
        assert os.pread(other, 200, 0) == b"x" * 100 + bytes(100)
        assert os.pread(other, 10, 3 * MiB - 10) == bytes(10)
    finally:
        os.close(fd)
        if other is not None:
            os.close(other)
    assert os.stat(f).st_size == 3 * MiB


def test_two_fds_see_each_others_writes(project: Path) -> None:
    """A write through one fd is visible to a read through another before either closes,
    and stat() by path reports the new size while the file is still open."""
    f = project / "shared"
    w = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    r = os.open(f, os.O_RDONLY)
    try:
        os.write(w, b"first")
        assert os.pread(r, 100, 0) == b"first"
        os.pwrite(w, b"SECOND", 3)
        assert os.pread(r, 100, 0) == b"firSECOND"
        assert os.stat(f).st_size == 9
    finally:
        os.close(w)
        os.close(r)


def test_large_file_sha256(project: Path, drive: Drive) -> None:
    """64 MiB written in 1 MiB chunks reads back bit-identical, also at odd offsets,
    and again after a remount."""
    f = project / "big.bin"
    chunks = [os.urandom(MiB) for _ in range(64)]
    expected = hashlib.sha256()
    with open(f, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            expected.update(chunk)
    assert os.stat(f).st_size == 64 * MiB
    assert sha256_file(f) == expected.hexdigest()
    whole = b"".join(chunks)
    fd = os.open(f, os.O_RDONLY)
    try:
        for offset, size in [
            (0, 1),
            (MiB - 7, 14),
            (5 * MiB + 12345, 1_000_003),
            (64 * MiB - 100, 1000),
        ]:
            assert os.pread(fd, size, offset) == whole[offset : offset + size]
    finally:
        os.close(fd)
    drive.remount()
    assert os.stat(f).st_size == 64 * MiB
    assert sha256_file(f) == expected.hexdigest()


def test_many_small_files_in_one_directory(project: Path) -> None:
    """500 files with long names (several getdents batches) are all listed once, with
    the right contents and types."""
    d = project / "many"
    os.mkdir(d)
    names = {f"file-{i:04d}-" + "n" * 100 for i in range(500)}
    for name in names:
        write_file(d / name, name.encode())
    listed = os.listdir(d)
    assert len(listed) == 500
    assert set(listed) == names
    with os.scandir(d) as it:
        for entry in it:
            assert entry.is_file(follow_symlinks=False)
    for name in sorted(names)[::37]:
        assert read_file(d / name) == name.encode()


def test_unlink_while_iterating_directory(project: Path) -> None:
    """Deleting entries during readdir (what rm -r does) neither skips nor repeats any."""
    d = project / "churn"
    os.mkdir(d)
    for i in range(300):
        write_file(d / f"entry-{i:03d}-{'x' * 80}", b"x")
    seen = []
    with os.scandir(d) as it:
        for entry in it:
            seen.append(entry.name)
            os.unlink(entry.path)
    assert len(seen) == 300
    assert len(set(seen)) == 300
    assert os.listdir(d) == []
    os.rmdir(d)


def test_readdir_lists_entries_with_types(project: Path) -> None:
    """readdir returns every entry once with the right d_type; `.` and `..` resolve to
    the directory itself and its parent."""
    d = project / "dir"
    os.mkdir(d)
    write_file(d / "file", b"x")
    os.mkdir(d / "sub")
    os.symlink("file", d / "link")
    with os.scandir(d) as it:
        kinds = {
            e.name: (
                "dir" if e.is_dir(follow_symlinks=False) else "link" if e.is_symlink() else "file"
            )
            for e in it
        }
    assert kinds == {"file": "file", "sub": "dir", "link": "link"}
    assert os.stat(d / ".").st_ino == os.stat(d).st_ino
    assert os.stat(d / "..").st_ino == os.stat(project).st_ino
    assert os.stat(d / "sub" / "..").st_ino == os.stat(d).st_ino
    top = subprocess.run(["ls", "-A1", str(project)], capture_output=True, text=True, check=True)
    assert top.stdout.splitlines() == ["dir"]


def test_readdir_returns_dot_and_dotdot(project: Path) -> None:
    """The raw readdir stream (seen by `ls -a`) contains `.` and `..` like a local disk's,
    in subdirectories and at the project top."""
    d = project / "dir"
    os.mkdir(d)
    write_file(d / "file", b"x")
    out = subprocess.run(["ls", "-a1", str(d)], capture_output=True, text=True, check=True)
    assert sorted(out.stdout.splitlines()) == [".", "..", "file"]
    top = subprocess.run(["ls", "-a1", str(project)], capture_output=True, text=True, check=True)
    assert sorted(top.stdout.splitlines()) == [".", "..", "dir"]


# --------------------------------------------------------------------------- rename


def test_rename_file(project: Path) -> None:
    """Renaming keeps the inode and contents; the old name is gone."""
    write_file(project / "a", b"content")
    ino = os.stat(project / "a").st_ino
    os.rename(project / "a", project / "b")
    assert not (project / "a").exists()
    assert read_file(project / "b") == b"content"
    assert os.stat(project / "b").st_ino == ino
    assert os.listdir(project) == ["b"]


def test_rename_over_existing_file_is_atomic_replace(project: Path) -> None:
    """rename over an existing file replaces it: the old inode disappears from the
    directory, while an fd still open on it keeps reading the old bytes."""
    write_file(project / "new", b"new contents")
    write_file(project / "target", b"old contents")
    new_ino = os.stat(project / "new").st_ino
    old_ino = os.stat(project / "target").st_ino
    fd = os.open(project / "target", os.O_RDONLY)
    try:
        os.rename(project / "new", project / "target")
        assert os.pread(fd, 100, 0) == b"old contents"
    finally:
        os.close(fd)
    assert os.listdir(project) == ["target"]
    assert os.stat(project / "target").st_ino == new_ino
    assert read_file(project / "target") == b"new contents"
    inodes = {os.lstat(project / n).st_ino for n in os.listdir(project)}
    assert old_ino not in inodes


def test_rename_directory_with_contents(project: Path) -> None:
    """A renamed directory takes its whole subtree along."""
    src = project / "src"
    os.makedirs(src / "a" / "b")
    write_file(src / "top", b"top")
    write_file(src / "a" / "b" / "deep", b"deep")
    os.symlink("../top", src / "a" / "link")
    os.rename(src, project / "dst")
    assert not src.exists()
    dst = project / "dst"
    assert read_file(dst / "top") == b"top"
    assert read_file(dst / "a" / "b" / "deep") == b"deep"
    assert read_file(dst / "a" / "link") == b"top"
    assert sorted(os.listdir(dst)) == ["a", "top"]


def test_rename_across_directories(project: Path) -> None:
    """Files and directories move between directories; `..` follows a moved directory."""
    os.makedirs(project / "one")
    os.makedirs(project / "two")
    write_file(project / "one" / "f", b"f")
    os.mkdir(project / "one" / "d")
    os.rename(project / "one" / "f", project / "two" / "f")
    os.rename(project / "one" / "d", project / "two" / "d")
    assert os.listdir(project / "one") == []
    assert sorted(os.listdir(project / "two")) == ["d", "f"]
    assert read_file(project / "two" / "f") == b"f"
    assert os.stat(project / "two" / "d" / "..").st_ino == os.stat(project / "two").st_ino


def test_rename_onto_itself_and_onto_own_hard_link(project: Path) -> None:
    """rename(a, a) and rename over another link to the same inode are no-ops."""
    write_file(project / "a", b"same")
    os.rename(project / "a", project / "a")
    assert read_file(project / "a") == b"same"
    os.link(project / "a", project / "b")
    os.rename(project / "a", project / "b")
    assert sorted(os.listdir(project)) == ["a", "b"]
    assert os.stat(project / "a").st_nlink == 2
    os.mkdir(project / "d")
    os.rename(project / "d", project / "d")
    assert (project / "d").is_dir()


def test_rename_directory_over_empty_directory(project: Path) -> None:
    """A directory may replace an empty directory."""
    os.mkdir(project / "src")
    write_file(project / "src" / "f", b"x")
    os.mkdir(project / "empty")
    os.rename(project / "src", project / "empty")
    assert os.listdir(project) == ["empty"]
    assert read_file(project / "empty" / "f") == b"x"


def test_rename_directory_over_non_empty_directory(project: Path) -> None:
    """A directory cannot replace a non-empty one (ENOTEMPTY); both stay intact."""
    os.mkdir(project / "src")
    os.mkdir(project / "full")
    write_file(project / "full" / "keep", b"keep")
    expect_errno(errno.ENOTEMPTY, os.rename, project / "src", project / "full")
    assert (project / "src").is_dir()
    assert read_file(project / "full" / "keep") == b"keep"


def test_rename_type_mismatch(project: Path) -> None:
    """file over dir is EISDIR, dir over file is ENOTDIR; nothing changes."""
    write_file(project / "f", b"x")
    os.mkdir(project / "d")
    expect_errno(errno.EISDIR, os.rename, project / "f", project / "d")
    expect_errno(errno.ENOTDIR, os.rename, project / "d", project / "f")
    assert read_file(project / "f") == b"x"
    assert (project / "d").is_dir()


def test_rename_into_own_subdirectory(project: Path) -> None:
    """A directory cannot be moved beneath itself (EINVAL)."""
    os.makedirs(project / "a" / "b")
    expect_errno(errno.EINVAL, os.rename, project / "a", project / "a" / "b" / "c")
    expect_errno(errno.EINVAL, os.rename, project / "a", project / "a" / "c")
    assert (project / "a" / "b").is_dir()


def test_rename_missing_source(project: Path) -> None:
    """Renaming a name that does not exist is ENOENT, as is renaming into a missing dir."""
    write_file(project / "f", b"x")
    expect_errno(errno.ENOENT, os.rename, project / "nope", project / "x")
    expect_errno(errno.ENOENT, os.rename, project / "f", project / "nodir" / "f")
    assert read_file(project / "f") == b"x"


def _renameat2() -> Callable[..., int] | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def test_rename_noreplace(project: Path) -> None:
    """renameat2(RENAME_NOREPLACE) refuses an existing target (EEXIST), works otherwise."""
    renameat2 = _renameat2()
    if renameat2 is None:
        pytest.skip("libc has no renameat2")
    at_fdcwd, noreplace = -100, 1

    def call(src: Path, dst: Path) -> int:
        rc = renameat2(at_fdcwd, bytes(src), at_fdcwd, bytes(dst), noreplace)
        return 0 if rc == 0 else ctypes.get_errno()

    write_file(project / "a", b"a")
    write_file(project / "b", b"b")
    assert call(project / "a", project / "b") == errno.EEXIST
    assert read_file(project / "a") == b"a"
    assert read_file(project / "b") == b"b"
    assert call(project / "a", project / "c") == 0
    assert sorted(os.listdir(project)) == ["b", "c"]


# --------------------------------------------------------------------------- unlink / rmdir / mkdir


def test_unlinked_open_file_stays_usable(project: Path) -> None:
    """After unlink an open fd still reads and writes; the name (and any hidden stand-in)
    is gone from the directory; nlink drops to 0."""
    f = project / "doomed"
    write_file(f, b"still here")
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        assert not f.exists()
        assert os.listdir(project) == []
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b" and growing", 10)
        assert os.pread(fd, 100, 0) == b"still here and growing"
        st = os.fstat(fd)
        assert st.st_nlink == 0
        assert st.st_size == 22
        write_file(f, b"a new file")
        assert os.pread(fd, 100, 0) == b"still here and growing"
    finally:
        os.close(fd)
    assert read_file(f) == b"a new file"
    assert os.listdir(project) == ["doomed"]


def test_unlink_and_rmdir_errors(project: Path) -> None:
    """unlink(dir) is EISDIR, rmdir(non-empty) ENOTEMPTY, rmdir(file) ENOTDIR,
    mkdir(existing) EEXIST."""
    os.mkdir(project / "d")
    write_file(project / "d" / "f", b"x")
    write_file(project / "f", b"x")
    expect_errno(errno.EISDIR, os.unlink, project / "d")
    expect_errno(errno.ENOTEMPTY, os.rmdir, project / "d")
    expect_errno(errno.ENOTDIR, os.rmdir, project / "f")
    expect_errno(errno.EEXIST, os.mkdir, project / "d")
    expect_errno(errno.EEXIST, os.mkdir, project / "f")
    assert sorted(os.listdir(project)) == ["d", "f"]
    os.unlink(project / "d" / "f")
    os.rmdir(project / "d")
    assert os.listdir(project) == ["f"]


def test_enoent_cases(project: Path) -> None:
    """Every way of touching a missing name reports ENOENT."""
    missing = project / "missing"
    expect_errno(errno.ENOENT, os.stat, missing)
    expect_errno(errno.ENOENT, os.lstat, missing)
    expect_errno(errno.ENOENT, os.open, missing, os.O_RDONLY)
    expect_errno(errno.ENOENT, os.unlink, missing)
    expect_errno(errno.ENOENT, os.rmdir, missing)
    expect_errno(errno.ENOENT, os.readlink, missing)
    expect_errno(errno.ENOENT, os.listdir, missing)
    expect_errno(errno.ENOENT, os.chmod, missing, 0o644)
    expect_errno(errno.ENOENT, os.truncate, missing, 0)
    expect_errno(errno.ENOENT, os.getxattr, missing, "user.x")
    expect_errno(errno.ENOENT, os.open, missing / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.ENOENT, os.mkdir, missing / "d")
    expect_errno(errno.ENOENT, os.link, missing, project / "l")
    assert os.listdir(project) == []


def test_enotdir_and_eisdir_opens(project: Path) -> None:
    """A file used as a directory is ENOTDIR; a directory opened for writing is EISDIR."""
    write_file(project / "f", b"x")
    os.mkdir(project / "d")
    expect_errno(errno.ENOTDIR, os.stat, project / "f" / "x")
    expect_errno(errno.ENOTDIR, os.open, project / "f", os.O_RDONLY | os.O_DIRECTORY)
    expect_errno(errno.ENOTDIR, os.listdir, project / "f")
    expect_errno(errno.EISDIR, os.open, project / "d", os.O_WRONLY)
    fd = os.open(project / "d", os.O_RDONLY)
    try:
        expect_errno(errno.EISDIR, os.read, fd, 10)
    finally:
        os.close(fd)


ODD_NAMES = {
    "space": "with space",
    "edges": " leading and trailing ",
    "emoji": "clip 🎬🎞️.mp4",
    "cjk": "视频项目ファイル",
    "combining": "cafe\u0301",
    "precomposed": "caf\u00e9",
    "newline": "new\nline",
    "tab": "tab\tname",
    "dash": "-rf",
    "dots": "...",
    "meta": "x.meta",
    "bare_meta": ".meta",
    "workspace": ".workspace",
    "data": "_data",
    "chuk": ".chuk-motion",
    "metajson": "_meta.json",
    "escape_suffix": "clip~mfs",
    "escape_twice": "clip.meta~mfs",
    "hash_prefix": "~mfs-abcdefghijklmnopqrstuvwxyz234567abcdef",
    "tmp_prefix": ".tmp_12345678_x",
    "snapshotish": ".snapshot",
    "long": "L" * 255,
    "long_meta": "m" * 250 + ".meta",
    "long_suffix": "s" * 251 + "~mfs",
    "long_multibyte": "é" * 127 + "a",
}


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("key", list(ODD_NAMES))
def test_odd_names_behave_like_any_name(project: Path, key: str, where: str) -> None:
    """Unusual and backend-reserved names work as files and as directories: create,
    list, read, rename away and back, delete."""
    name = ODD_NAMES[key]
    assert len(name.encode()) <= 255
    base = project if where == "top" else project / "sub"
    base.mkdir(exist_ok=True)
    f = base / name
    write_file(f, name.encode() * 3)
    assert os.listdir(base) == [name]
    assert read_file(f) == name.encode() * 3
    assert os.stat(f).st_size == len(name.encode()) * 3
    os.rename(f, base / "plain")
    assert os.listdir(base) == ["plain"]
    os.rename(base / "plain", f)
    assert os.listdir(base) == [name]
    os.unlink(f)
    assert os.listdir(base) == []
    os.mkdir(f)
    write_file(f / name, b"inner")
    assert os.listdir(base) == [name]
    assert os.listdir(f) == [name]
    assert read_file(f / name) == b"inner"
    shutil.rmtree(f)
    assert os.listdir(base) == []


def test_names_that_escape_alike_stay_distinct(project: Path) -> None:
    """Names an escaping scheme might confuse (x / x.meta / x~mfs / ...) are all distinct
    files, at the project top and in a subdirectory."""
    group = [
        "x",
        "x.meta",
        "x.meta~mfs",
        "x~mfs",
        "x~mfs~mfs",
        "_data",
        "_data~mfs",
        ".workspace",
        ".workspace~mfs",
        "~mfs-x",
        "A",
        "a",
        "cafe\u0301",
        "caf\u00e9",
    ]
    os.mkdir(project / "sub")
    for base in (project, project / "sub"):
        for i, name in enumerate(group):
            write_file(base / name, f"{i}:{name}".encode())
    assert sorted(os.listdir(project)) == sorted([*group, "sub"])
    assert sorted(os.listdir(project / "sub")) == sorted(group)
    for base in (project, project / "sub"):
        for i, name in enumerate(group):
            assert read_file(base / name) == f"{i}:{name}".encode()
    os.unlink(project / "x")
    assert read_file(project / "x.meta") == b"1:x.meta"


def test_long_names_sharing_a_prefix_stay_distinct(project: Path) -> None:
    """Two 255-byte names differing only in the last byte are two files."""
    a, b = "p" * 254 + "a", "p" * 254 + "b"
    write_file(project / a, b"a")
    write_file(project / b, b"b")
    assert sorted(os.listdir(project)) == [a, b]
    assert read_file(project / a) == b"a"
    assert read_file(project / b) == b"b"


def test_non_utf8_names(project: Path) -> None:
    """Names are bytes: invalid UTF-8 names round-trip through readdir unchanged."""
    base = bytes(project)
    names = [b"latin1-\xe9t\xe9", b"\xff\xfe", b"half-\xe2\x82"]
    for n in names:
        with open(os.path.join(base, n), "wb") as fh:
            fh.write(n)
    assert sorted(os.listdir(base)) == sorted(names)
    for n in names:
        with open(os.path.join(base, n), "rb") as fh:
            assert fh.read() == n


def test_name_length_limit(project: Path) -> None:
    """255-byte names are fine; 256 bytes is ENAMETOOLONG for every call that makes one."""
    ok = project / ("n" * 255)
    write_file(ok, b"ok")
    assert read_file(ok) == b"ok"
    os.mkdir(project / ("d" * 255))
    for long in ("n" * 256, "é" * 128, "n" * 300):
        p = project / long
        expect_errno(errno.ENAMETOOLONG, os.open, p, os.O_CREAT | os.O_WRONLY, 0o644)
        expect_errno(errno.ENAMETOOLONG, os.mkdir, p)
        expect_errno(errno.ENAMETOOLONG, os.symlink, "target", p)
        expect_errno(errno.ENAMETOOLONG, os.rename, ok, p)
        expect_errno(errno.ENAMETOOLONG, os.link, ok, p)
        expect_errno(errno.ENAMETOOLONG, os.stat, p)
    assert sorted(os.listdir(project)) == ["d" * 255, "n" * 255]


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
