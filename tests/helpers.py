"""Helpers the mount-level test modules share: files, hashes, errno checks,
tree snapshots and the command line. One copy each, imported where used."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from motionfs.daemon import is_mounted

MiB = 1 << 20


def expect_errno(
    codes: int | tuple[int, ...], fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> OSError:
    """Call fn and assert it fails with one of the given errno values."""
    wanted = codes if isinstance(codes, tuple) else (codes,)
    names = "/".join(errno.errorcode[c] for c in wanted)
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    got = errno.errorcode.get(info.value.errno or 0, str(info.value.errno))
    assert info.value.errno in wanted, f"{fn.__name__}{args}: expected {names}, got {got}"
    return info.value


def write_file(path: Path | str, data: bytes, mode: int | None = None, fsync: bool = False) -> None:
    """Create or replace `path` with `data` (then chmod it, or fsync it first)."""
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    if mode is not None:
        os.chmod(path, mode)


def read_file(path: Path | str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """sha256 of a file, read 1 MiB at a time (files may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def pattern(size: int, seed: int) -> bytes:
    """`size` reproducible bytes that differ per seed (and do not compress)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    return (block * (size // len(block) + 1))[:size]


def write_pattern(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` bytes (1 MiB at a time) and return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(0, size, MiB):
            chunk = pattern(min(MiB, size - i), seed + i // MiB)
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def xattrs_of(path: Path | str, prefix: str = "") -> dict[str, str]:
    """The extended attributes (names starting with `prefix`), values in hex."""
    names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith(prefix)]
    return {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(names)}


def snapshot(
    root: Path, xattrs: bool = True, hardlinks: bool = True, dir_links: bool = False
) -> dict[str, Any]:
    """lstat fields, content hashes, link targets and xattrs of a tree, keyed by
    relative path, and which names share an inode: what a copy or a remount keeps.

    Link counts of files and hard-link groups only when `hardlinks`; link counts of
    directories and symlinks (filesystem-specific) only when `dir_links`.
    """
    entries: dict[str, dict[str, Any]] = {}
    inodes: dict[int, list[str]] = {}

    def visit(path: Path, rel: str) -> None:
        st = os.lstat(path)
        info: dict[str, Any] = {
            "type": stat.S_IFMT(st.st_mode),
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
        }
        if dir_links or (hardlinks and stat.S_ISREG(st.st_mode)):
            info["nlink"] = st.st_nlink
        if xattrs:
            info["xattrs"] = xattrs_of(path)
        if stat.S_ISLNK(st.st_mode):
            info["target"] = os.readlink(path)
            info["size"] = st.st_size
        elif stat.S_ISREG(st.st_mode):
            info["size"] = st.st_size
            info["sha256"] = sha256_file(path)
            if hardlinks:
                inodes.setdefault(st.st_ino, []).append(rel)
        entries[rel] = info
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                visit(path / name, f"{rel}/{name}")

    visit(root, ".")
    groups = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return {"entries": entries, "hardlinks": groups}


def force_unmount(path: Path) -> None:
    """Detach a mount lazily, whatever state its daemon is in."""
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)


def close_quietly(*fds: int) -> None:
    """Close fds that may belong to a dead mount (close then fails, but frees the fd)."""
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def motionfs(
    *args: str | Path, timeout: float = 300, cwd: Path | str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line. A mount that should have been refused but serves in
    the foreground is unmounted at the timeout, so the call returns and the test
    fails instead of hanging."""
    words = [str(a) for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "motionfs", *words],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if words[0] == "mount":
            force_unmount(Path(words[1]))
        else:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
