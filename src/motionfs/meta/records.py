"""The records the metadata engine keeps: one shape for every engine.

The layers above (tree, data, store, fsck) see only these models, never rows.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from motionfs.motion.models import NamespaceType, ProviderType, StorageScope


class NamespaceRecord(BaseModel):
    """What the metadata index keeps about a namespace to reattach it later."""

    ns_id: str
    kind: NamespaceType
    name: str | None
    scope: StorageScope
    user_id: str | None
    session_id: str | None
    provider_type: ProviderType
    provider_config: dict[str, Any]
    grid_path: str
    created_at: str
    expires_at: str | None
    info_json: str


class Inode(BaseModel):
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int = 0
    rdev: int = 0
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: bytes | None = None
    role: str
    area: str | None = None
    scope: str | None = None
    ns_id: str | None = None
    content_gen: int = 0
    stored_gen: int = 0
    sha256: str | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


# Every Inode an engine builds shares one fields-set. pydantic keeps a set per
# model object (about 700 bytes for 18 names, half of what a cached Inode
# costs), and these records always carry every field. Sharing is safe: the set
# already holds every name, so neither an assignment nor a copy changes it.
_EVERY_INODE_FIELD: set[str] = set(Inode.model_fields)
INODE_FIELD_ORDER = tuple(Inode.model_fields)


def inode_of(values: Mapping[str, Any]) -> Inode:
    """An Inode from trusted values (an index row; fields checked by the engine)."""
    return Inode.model_construct(_fields_set=_EVERY_INODE_FIELD, **values)


def inode_from_row(row: Sequence[Any]) -> Inode:
    """An Inode from a row of the inode columns in field order."""
    return inode_of(dict(zip(INODE_FIELD_ORDER, row, strict=True)))


def changed_inode(inode: Inode, changes: Mapping[str, object]) -> Inode:
    """A new Inode: `inode` with `changes` (callers may hold the old one)."""
    return inode_of({**{f: getattr(inode, f) for f in INODE_FIELD_ORDER}, **changes})


class JournalEntry(BaseModel):
    seq: int
    ns_id: str
    op: str
    ino: int | None
    path: str | None
    path2: str | None
    durable: bool
    attempts: int
    last_error: str | None
    owner: str | None = None  # the host session that queued it (shared engines only)


JOURNAL_FIELDS = ("seq", "ns_id", "op", "ino", "path", "path2", "durable", "attempts", "last_error")


class HostSession(BaseModel):
    """A daemon serving a shared index: who it is and when it last said so."""

    sid: str
    host: str
    pid: int
    mountpoint: str | None
    started_at: float  # seconds since the epoch
    beat_at: float
    alive: bool  # beat within the session timeout


class Checkpoint(BaseModel):
    cp_id: int
    ns_id: str
    name: str
    description: str | None
    created_ns: int
    file_count: int
    logical_size: int
    complete: bool


class CpEntry(BaseModel):
    eid: int
    cp_id: int
    parent_eid: int | None
    name: bytes
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: bytes | None
    sha256: str | None
