"""The layout's rules: which names are valid, who owns a new node, and which
links and moves stay inside one project or area.

Pure functions of the nodes involved, so that the tree's operations read as
the steps they take and each rule is stated once.
"""

from __future__ import annotations

import errno
import stat
from typing import Protocol

from motionfs.core.paths import in_project
from motionfs.errors import FsError
from motionfs.layout import ROOT_INO, Role
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import Inode
from motionfs.motion.models import StorageScope

NAME_MAX = 255


class Ctx(Protocol):
    """Who makes a request (pyfuse3's RequestContext, or the API's stand-in)."""

    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def umask(self) -> int: ...


def scope_of(inode: Inode) -> StorageScope:
    if inode.scope is None:
        raise FsError(errno.EPERM, "outside every scope")
    return StorageScope(inode.scope)


def check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes")
    if name in (b".", b"..") or b"/" in name or b"\0" in name or not name:
        raise FsError(errno.EINVAL, f"invalid name {name!r}")


def domain(inode: Inode) -> tuple[str | None, ...]:
    """Renames and links never leave a domain (else EXDEV)."""
    if in_project(inode):
        return ("ns", inode.ns_id)
    return ("area", inode.area, inode.scope)


def new_node_domain(parent: Inode) -> tuple[str | None, ...]:
    """The domain a node made or moved into directory `parent` would have."""
    if parent.role == Role.PROJECT.value or in_project(parent):
        return ("ns", parent.ns_id)
    return ("area", parent.area, parent.scope)


def owner(parent: Inode, ctx: Ctx, mode: int) -> tuple[int, int, int]:
    """uid, gid, mode for a new node (setgid directories pass their group on)."""
    gid = ctx.gid
    if parent.mode & stat.S_ISGID:
        gid = parent.gid
        if stat.S_ISDIR(mode):
            mode |= stat.S_ISGID
    return ctx.uid, gid, mode & ~ctx.umask if not stat.S_ISLNK(mode) else mode


def refuse_layout(parent: Inode, what: str) -> None:
    """Nothing is made in, linked into or moved into the root or a scope folder."""
    if parent.role in (Role.ROOT.value, Role.SCOPE.value):
        raise FsError(errno.EPERM, f"{what}: the top-level layout is fixed")


def refuse_layout_change(inode: Inode) -> None:
    if inode.role in (Role.ROOT.value, Role.SCOPE.value, Role.AREA.value):
        raise FsError(errno.EPERM, "the layout folders' modes are fixed")


def refuse_into_itself(index: MetaEngine, ino: int, new_parent: int) -> None:
    """A directory never moves below itself (EINVAL)."""
    cur = new_parent
    while cur != ROOT_INO:
        if cur == ino:
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        links = index.parents(cur)
        if not links:
            return
        cur = links[0][0]
