"""Ownership and permissions of the layout, seen by a second local user (uid 65534)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

import pytest

from conftest import NATIVE

pytestmark = pytest.mark.skipif(NATIVE, reason="the motionfs layout")

NOBODY = 65534


def as_nobody(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child as uid/gid 65534; return its result or raise its errno."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = repr(fn()).encode()
        except OSError as e:
            result = f"errno:{e.errno}".encode()
        except BaseException as e:  # report, never run the parent's code
            result = f"error:{e!r}".encode()
            code = 1
        os.write(w, result)
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    text = out.decode()
    if text.startswith("errno:"):
        raise OSError(int(text[6:]), os.strerror(int(text[6:])))
    assert not text.startswith("error:"), text
    return eval(text)  # repr of plain values only


def test_user_scope_is_private_and_shared_scope_is_open(make_drive: Any) -> None:
    """With --allow-other: projects/ is the owner's alone (0700); shared/projects is 1777."""
    drive = make_drive("--allow-other")
    root_fd = os.open(drive.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert stat.S_IMODE(os.stat(drive.path / "projects").st_mode) == 0o700
        assert os.stat(drive.path / "projects").st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(drive.path / "shared" / "projects").st_mode) == 0o1777
        drive.project("mine")
        # The mount root is readable by others; the USER scope is not.
        assert "projects" in as_nobody(lambda: os.listdir(root_fd))
        with pytest.raises(OSError) as e:
            as_nobody(lambda: os.listdir(os.open("projects", os.O_RDONLY, dir_fd=root_fd)))
        assert e.value.errno == errno.EACCES

        def make_shared_project() -> tuple[int, int]:
            shared = os.open("shared/projects", os.O_RDONLY, dir_fd=root_fd)
            os.mkdir("theirs", dir_fd=shared)
            fd = os.open("theirs/f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=shared)
            os.write(fd, b"hi")
            os.close(fd)
            st = os.stat("theirs/f", dir_fd=shared)
            return st.st_uid, st.st_gid

        assert as_nobody(make_shared_project) == (NOBODY, NOBODY)
        # The sticky bit: another user cannot remove root's shared project.
        os.mkdir(drive.path / "shared" / "projects" / "roots")
        with pytest.raises(OSError) as e:
            as_nobody(
                lambda: os.rmdir(
                    "roots", dir_fd=os.open("shared/projects", os.O_RDONLY, dir_fd=root_fd)
                )
            )
        assert e.value.errno in (errno.EPERM, errno.EACCES)
        assert (drive.path / "shared" / "projects" / "theirs" / "f").read_bytes() == b"hi"
    finally:
        os.close(root_fd)


def test_without_allow_other_other_users_are_kept_out(drive: Any) -> None:
    """FUSE's default: only the mounting user reaches the drive at all."""
    root_fd = os.open(drive.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as e:
            as_nobody(lambda: os.listdir(root_fd))
        assert e.value.errno == errno.EACCES
    finally:
        os.close(root_fd)
