"""Kernel-level POSIX behaviour inside a motionfs project folder: files, reads and
writes, renames, removal and names (metadata, persistence and the motionfs
layout are in test_posix_attrs.py).

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
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import NATIVE, Drive
from helpers import expect_errno, read_file, sha256_file, write_file

motionfs_only = pytest.mark.skipif(NATIVE, reason="motionfs layout")

MiB = 1 << 20


# --------------------------------------------------------------------------- helpers


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
