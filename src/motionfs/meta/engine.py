"""The metadata-engine interface: what the layers above need from the index.

The tree, the journal, the checkpoints, the FUSE views, fsck and the CLI see
the index only through `MetaEngine` and `CheckpointCatalog`, with the records of
`motionfs.meta.records` and builtins as arguments and results. SQLite
(`motionfs.meta.sqlite`) is one engine; another (PostgreSQL, shared by many
hosts) plugs in by keeping this contract:

* Atomicity. Every method's change is all there or not at all. Callers make
  their writes inside `transaction()`: everything done in it commits as one
  group or, when the block raises, is rolled back as one (and the exception
  goes on). `transaction()` nests: an inner block joins the outer group, only
  the outermost one commits. It yields nothing a caller uses. Reads may run
  outside a transaction and see committed state.
* Durability. A committed group survives the daemon crashing. It survives the
  host losing power only once `sync()` has returned (fsync, fsyncdir and
  checkpoints call it); `sync()` covers every group committed before it.
* Identity. Inode numbers and journal sequence numbers are never reused: the
  journal and the cache (`cache/<ino>.<gen>`) name inodes by number, and the
  journal is applied in `seq` order per namespace.
* Caches. `get` and `parents` may return shared objects that callers must not
  modify. `dir_moves` grows whenever a directory (or an entry whose inode the
  engine does not hold) is unlinked or moved, and whenever a group is rolled
  back: callers keep path caches and drop them when it changes.
* Several hosts. An engine that hosts share (PostgreSQL) hands out inode
  numbers, journal seqs and content generations (`new_generation`) that are
  unique across every host, and answers `hosts()` with the sessions of the
  daemons serving it: their heartbeats, and the changes the other hosts made
  (`HostSessions.poll`), which it has already applied to its own caches (and
  `dir_moves`) by the time it returns them. Journal entries carry the session
  that queued them (`JournalEntry.owner`): a put's bytes are in that host's
  cache. An engine one host serves (SQLite) answers `hosts()` with None.
* Errors. A full disk (or any store of the engine that is out of space) makes
  the failing group raise `FsError(ENOSPC)` after calling `on_full` (the space
  guard releases its reserve then), never a driver error. An index the engine
  cannot serve (made by a newer version, of another format) raises
  `IndexUnusable` when opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from motionfs.meta.records import (
    Checkpoint,
    CpEntry,
    HostSession,
    Inode,
    JournalEntry,
    NamespaceRecord,
)


class IndexUnusable(Exception):
    """The index cannot be used by this version (a newer schema, not a database)."""


class MetaEngine(Protocol):
    """Namespaces, inodes, directory entries, xattrs, motion metadata, the
    journal of store operations and key/values: the durable authority for
    everything but file bytes."""

    on_full: Callable[[], None]
    """Called when a commit finds the disk full, before FsError(ENOSPC) is raised."""

    @property
    def path(self) -> Path:
        """Where the index lives on this host; its folder holds cache and space reserve."""
        ...

    @property
    def dir_moves(self) -> int:
        """Grows when a directory is unlinked or moved, or a group rolled back."""
        ...

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write group: commits as one, rolls back as one, nests by joining."""
        ...

    def sync(self) -> None:
        """Make every committed group durable against power loss."""
        ...

    def integrity_errors(self) -> list[str]:
        """What the engine finds damaged in its own storage (none: [])."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # -- namespaces -------------------------------------------------------------------

    def add_namespace(self, record: NamespaceRecord) -> None: ...

    def namespace(self, ns_id: str) -> NamespaceRecord | None: ...

    def namespaces(self) -> list[tuple[NamespaceRecord, str]]:
        """Every namespace with its state ('live' or 'destroying'), by ns_id."""
        ...

    def namespace_count(self) -> int: ...

    def namespace_state(self, ns_id: str) -> str | None: ...

    def set_namespace_state(self, ns_id: str, state: str) -> None: ...

    def update_namespace(self, record: NamespaceRecord) -> None: ...

    def remove_namespace(self, ns_id: str) -> None:
        """Forget the namespace and its motion metadata."""
        ...

    def get_motion_meta(self, ns_id: str) -> str | None: ...

    def set_motion_meta(self, ns_id: str, text: str) -> None: ...

    # -- inodes -----------------------------------------------------------------------

    def get(self, ino: int) -> Inode | None:
        """An inode; the returned object is shared and must not be modified."""
        ...

    def create_inode(self, **fields: object) -> Inode:
        """A new inode from Inode fields; a new number unless `ino` is given."""
        ...

    def update(self, ino: int, **fields: object) -> None: ...

    def new_generation(self, ino: int, after: int) -> int:
        """A content generation for `ino` above `after` that no host sharing this
        index was or will be given (the cache names content by it)."""
        ...

    def delete_inode(self, ino: int) -> None:
        """Forget the inode and its xattrs."""
        ...

    def orphans(self) -> list[Inode]:
        """Inodes with no links left that no live host holds (their content
        waits to be dropped)."""
        ...

    def hold(self, ino: int) -> None:
        """This host may still use the inode whose last link just went (an open
        file, the kernel's reference): other hosts leave it out of `orphans`
        until it is deleted or this host's session expires."""
        ...

    def file_inodes(self) -> list[Inode]:
        """Every linked regular file that lives in a namespace (for fsck)."""
        ...

    def nodes_of_namespace(self, ns_id: str) -> list[Inode]: ...

    def inodes_with_sha(self, ns_id: str, sha: str) -> list[Inode]: ...

    def project_of(self, ns_id: str) -> Inode | None:
        """The project folder whose namespace this is."""
        ...

    def inodes_with_content(self) -> Iterator[tuple[int, int]]:
        """(ino, content_gen) of every inode with content (the cache keeps these)."""
        ...

    # -- directory entries --------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> int | None: ...

    def link(self, parent: int, name: bytes, ino: int) -> None: ...

    def unlink(self, parent: int, name: bytes) -> None: ...

    def listing(self, parent: int) -> list[tuple[bytes, Inode]]:
        """A directory's entries with their inodes, in name order."""
        ...

    def links_of_namespace(self, ns_id: str) -> list[tuple[int, bytes, Inode]]:
        """(parent, name, inode) of the folder or files whose own namespace this is."""
        ...

    def has_children(self, parent: int) -> bool: ...

    def parents(self, ino: int) -> list[tuple[int, bytes]]:
        """Every (parent, name) linking to `ino`, in a stable order (shared list)."""
        ...

    # -- xattrs -------------------------------------------------------------------------

    def get_xattr(self, ino: int, name: bytes) -> bytes | None: ...

    def set_xattr(self, ino: int, name: bytes, value: bytes) -> None: ...

    def remove_xattr(self, ino: int, name: bytes) -> bool:
        """Whether there was one to remove."""
        ...

    def list_xattrs(self, ino: int) -> list[bytes]: ...

    # -- the journal of store operations ---------------------------------------------------

    def enqueue(
        self,
        ns_id: str,
        op: str,
        ino: int | None = None,
        path: str | None = None,
        path2: str | None = None,
        durable: bool = False,
    ) -> None:
        """Queue a store operation (its seq is drawn when the group reaches the
        engine's store, which may be at commit: next_ops reads it back)."""
        ...

    def take_touched(self) -> set[str]:
        """Namespaces that got journal entries since the last call."""
        ...

    def next_ops(self, ns_id: str, limit: int) -> list[JournalEntry]:
        """The namespace's first `limit` pending entries, in order."""
        ...

    def finish_op(self, seq: int) -> None: ...

    def fail_op(self, seq: int, error: str) -> None:
        """Count a failed attempt (the entry stays queued)."""
        ...

    def park_op(self, seq: int, error: str) -> None:
        """Move an entry that can never succeed out of the queue (kept for status and fsck)."""
        ...

    def parked_ops(self) -> list[JournalEntry]: ...

    def failing_ops(self) -> list[JournalEntry]:
        """Queued entries that have failed at least once (still being retried)."""
        ...

    def parked_put(self, ino: int) -> str | None:
        """Why the latest upload of `ino` failed for good, if it did."""
        ...

    def parked_report(self) -> tuple[int, str | None]:
        """(entries that failed for good, the latest reason) for status."""
        ...

    def unpark_ops(self) -> int:
        """Queue parked entries again (after their cause was fixed); how many."""
        ...

    def drop_ops(self, ns_id: str) -> None:
        """Drop the namespace's queued and parked entries."""
        ...

    def pending_namespaces(self) -> list[str]: ...

    def pending_count(self, ns_id: str | None = None, owner: str | None = None) -> int:
        """Pending entries (of one namespace; with `owner`, only that session's)."""
        ...

    def backlog(self) -> int:
        """About how many entries are pending (an upper bound, cheap to ask)."""
        ...

    def pending_report(self) -> tuple[int, int, str | None]:
        """(entries, bytes of pending uploads, the latest failure) for status."""
        ...

    def pending_for_paths(self, ns_id: str, ino: int, paths: list[str]) -> bool:
        """Whether a pending entry of `ns_id` may change what the store holds at
        `paths` (an upload of `ino`, or an entry on one of the paths or a parent)."""
        ...

    def last_seq(self, ns_id: str) -> int | None: ...

    def ino_has_pending(self, ino: int) -> bool: ...

    def pending_puts(self, ino: int) -> list[tuple[int, str]]:
        """(seq, path) of the pending uploads of `ino`, in order."""
        ...

    def drop_puts(self, ino: int) -> bool:
        """Drop pending uploads of `ino`; True if one of them was durable (fsync)."""
        ...

    def replace_puts(self, ns_id: str, ino: int, paths: list[str], durable: bool) -> None:
        """Supersede the pending uploads of `ino` by uploads to `paths` (new
        content), durable if this one or one it replaces was."""
        ...

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint_catalog(self) -> CheckpointCatalog:
        """The checkpoint records kept with this index (the same transactions)."""
        ...

    # -- several hosts ----------------------------------------------------------------------

    def hosts(self) -> HostSessions | None:
        """The sessions of the hosts sharing this index; None when one host serves it."""
        ...


class RemoteChanges(BaseModel):
    """What other hosts changed since the last poll (already dropped from the
    engine's own caches): the kernel's caches and waiting callers need telling."""

    inodes: set[int] = set()
    entries: set[tuple[int, bytes]] = set()  # (parent, name) linked or unlinked
    namespaces: set[str] = set()  # their journals moved (entries queued or applied)
    everything: bool = False  # notifications may have been missed: assume anything changed

    def __bool__(self) -> bool:
        return bool(self.inodes or self.entries or self.namespaces or self.everything)


class HostSessions(Protocol):
    """This daemon's session in a shared index and what the other hosts do."""

    @property
    def me(self) -> str:
        """This daemon's session id (journal entries it queues carry it)."""
        ...

    @property
    def beat_every(self) -> float:
        """Seconds between heartbeats (well within the session timeout)."""
        ...

    def begin(self, mountpoint: str | None) -> None:
        """Register this daemon (and clean up after sessions that expired)."""
        ...

    def beat(self) -> None:
        """Say this daemon is alive; expired sessions of others are cleaned up."""
        ...

    def end(self) -> None:
        """Unregister this daemon (a clean exit)."""
        ...

    def all(self) -> list[HostSession]:
        """Every registered session, this one too, oldest first."""
        ...

    def alive(self, sid: str) -> bool:
        """Whether that session beat within the session timeout."""
        ...

    def describe(self, sid: str) -> str:
        """A session as people know it (host, pid, mountpoint, last heartbeat)."""
        ...

    def poll(self) -> RemoteChanges:
        """The changes other hosts committed since the last poll."""
        ...


class CheckpointCatalog(Protocol):
    """Checkpoint manifests (a frozen tree of entries per checkpoint) and the
    content objects they reference, per namespace. Writes join the owning
    engine's `transaction()`."""

    def get(self, ns_id: str, name: str, complete_only: bool = True) -> Checkpoint | None:
        """A checkpoint by name; one still being stored only with complete_only=False."""
        ...

    def by_id(self, cp_id: int) -> Checkpoint | None: ...

    def all(self, ns_id: str | None, complete_only: bool = True) -> list[Checkpoint]:
        """A project's checkpoints (every project's with ns_id None), oldest first."""
        ...

    def mark_complete(self, ns_id: str, name: str) -> None: ...

    def objects(self, ns_id: str | None = None) -> list[tuple[str, str, int]]:
        """(namespace, sha256, size) of the checkpoint objects the index knows."""
        ...

    def add(self, ns_id: str, name: str, description: str | None, created_ns: int) -> int:
        """A new, not yet complete checkpoint; its cp_id."""
        ...

    def set_totals(self, cp_id: int, file_count: int, logical_size: int) -> None: ...

    def add_entry(self, cp_id: int, parent_eid: int | None, name: bytes, inode: Inode) -> int:
        """Freeze `inode`'s attributes as an entry of the checkpoint; its eid."""
        ...

    def copy_xattrs(self, ino: int, eid: int) -> None:
        """Freeze the inode's xattrs into the entry."""
        ...

    def entry(self, eid: int) -> CpEntry | None: ...

    def root(self, cp_id: int) -> CpEntry: ...

    def child(self, parent_eid: int, name: bytes) -> CpEntry | None: ...

    def children(self, parent_eid: int) -> list[CpEntry]:
        """An entry's children, in name order."""
        ...

    def xattrs(self, eid: int) -> dict[bytes, bytes]: ...

    def delete(self, cp_id: int) -> list[str]:
        """Delete a checkpoint; return the content hashes no checkpoint uses any more."""
        ...

    def delete_namespace(self, ns_id: str) -> None:
        """Delete every checkpoint and object record of the namespace."""
        ...

    def has_object(self, ns_id: str, sha: str) -> bool: ...

    def add_object(self, ns_id: str, sha: str, size: int) -> None: ...

    def exclusive_bytes(self, cp: Checkpoint) -> int:
        """Bytes of content that only this checkpoint references."""
        ...
