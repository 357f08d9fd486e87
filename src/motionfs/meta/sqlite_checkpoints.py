"""The SQLite engine's checkpoint catalog: manifests, entries and objects.

A checkpoint freezes a project's tree as entries (attributes, symlink targets,
xattrs, content hashes) in the index's own database, so a checkpoint and the
store work it implies commit in one transaction of the Index. Content lives in
the namespace as objects named by sha256; `objects` records which are stored.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from motionfs.meta.records import Checkpoint, CpEntry, Inode

if TYPE_CHECKING:
    from motionfs.meta.sqlite import Index

CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    cp_id INTEGER PRIMARY KEY AUTOINCREMENT,
    ns_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    created_ns INTEGER NOT NULL,
    file_count INTEGER NOT NULL DEFAULT 0,
    logical_size INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0,  -- 1 once every object it references is stored
    UNIQUE (ns_id, name)
);
CREATE TABLE IF NOT EXISTS cp_entries (
    eid INTEGER PRIMARY KEY AUTOINCREMENT,
    cp_id INTEGER NOT NULL,
    parent_eid INTEGER,            -- NULL for the checkpoint's root
    name BLOB NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    size INTEGER NOT NULL,
    rdev INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    target BLOB,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS cp_entries_by_parent ON cp_entries (parent_eid, name);
CREATE INDEX IF NOT EXISTS cp_entries_by_cp ON cp_entries (cp_id);
CREATE INDEX IF NOT EXISTS cp_entries_by_sha ON cp_entries (sha256);
CREATE TABLE IF NOT EXISTS cp_xattrs (
    eid INTEGER NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (eid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (    -- checkpoint content kept in a namespace
    ns_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (ns_id, sha256)
) WITHOUT ROWID;
"""

CP_COLUMNS = "cp_id, ns_id, name, description, created_ns, file_count, logical_size, complete"
ENTRY_COLUMNS = (
    "eid, cp_id, parent_eid, name, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, "
    "ctime_ns, target, sha256"
)


def _cp(row: sqlite3.Row | tuple[Any, ...]) -> Checkpoint:
    return Checkpoint.model_construct(**dict(zip(Checkpoint.model_fields, row, strict=True)))


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> CpEntry:
    fields: dict[str, Any] = dict(zip(CpEntry.model_fields, row, strict=True))
    fields["name"] = bytes(fields["name"])
    return CpEntry.model_construct(**fields)


class CheckpointIndex:
    """Checkpoint manifests and their content objects, in the same database."""

    def __init__(self, index: Index) -> None:
        self.db = index.db

    def get(self, ns_id: str, name: str, complete_only: bool = True) -> Checkpoint | None:
        """A checkpoint by name; one still being stored only with complete_only=False."""
        row = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE ns_id=? AND name=? AND complete>=?",
            (ns_id, name, int(complete_only)),
        ).fetchone()
        return None if row is None else _cp(row)

    def by_id(self, cp_id: int) -> Checkpoint | None:
        row = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE cp_id=?", (cp_id,)
        ).fetchone()
        return None if row is None else _cp(row)

    def all(self, ns_id: str | None, complete_only: bool = True) -> list[Checkpoint]:
        """A project's checkpoints (every project's with ns_id None), oldest first."""
        rows = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE coalesce(ns_id=?, 1) AND complete>=? "
            "ORDER BY created_ns, cp_id",
            (ns_id, int(complete_only)),
        )
        return [_cp(r) for r in rows]

    def mark_complete(self, ns_id: str, name: str) -> None:
        self.db.execute("UPDATE checkpoints SET complete=1 WHERE ns_id=? AND name=?", (ns_id, name))

    def objects(self, ns_id: str | None = None) -> list[tuple[str, str, int]]:
        """(namespace, sha256, size) of the checkpoint objects the index knows."""
        rows = self.db.execute(
            "SELECT ns_id, sha256, size FROM objects WHERE coalesce(ns_id=?, 1)", (ns_id,)
        )
        return [(str(n), str(h), int(z)) for n, h, z in rows]

    def add(self, ns_id: str, name: str, description: str | None, created_ns: int) -> int:
        cur = self.db.execute(
            "INSERT INTO checkpoints(ns_id, name, description, created_ns) VALUES (?, ?, ?, ?)",
            (ns_id, name, description, created_ns),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def set_totals(self, cp_id: int, file_count: int, logical_size: int) -> None:
        self.db.execute(
            "UPDATE checkpoints SET file_count=?, logical_size=? WHERE cp_id=?",
            (file_count, logical_size, cp_id),
        )

    def add_entry(self, cp_id: int, parent_eid: int | None, name: bytes, inode: Inode) -> int:
        cur = self.db.execute(
            "INSERT INTO cp_entries(cp_id, parent_eid, name, mode, uid, gid, nlink, size, rdev, "
            "atime_ns, mtime_ns, ctime_ns, target, sha256) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cp_id,
                parent_eid,
                name,
                inode.mode,
                inode.uid,
                inode.gid,
                inode.nlink,
                inode.size,
                inode.rdev,
                inode.atime_ns,
                inode.mtime_ns,
                inode.ctime_ns,
                inode.target,
                inode.sha256,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def copy_xattrs(self, ino: int, eid: int) -> None:
        self.db.execute(
            "INSERT INTO cp_xattrs(eid, name, value) SELECT ?, name, value FROM xattrs WHERE ino=?",
            (eid, ino),
        )

    def entry(self, eid: int) -> CpEntry | None:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE eid=?", (eid,)
        ).fetchone()
        return None if row is None else _entry(row)

    def root(self, cp_id: int) -> CpEntry:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE cp_id=? AND parent_eid IS NULL",
            (cp_id,),
        ).fetchone()
        assert row is not None
        return _entry(row)

    def child(self, parent_eid: int, name: bytes) -> CpEntry | None:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE parent_eid=? AND name=?",
            (parent_eid, name),
        ).fetchone()
        return None if row is None else _entry(row)

    def children(self, parent_eid: int) -> list[CpEntry]:
        rows = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE parent_eid=? ORDER BY name",
            (parent_eid,),
        )
        return [_entry(r) for r in rows]

    def xattrs(self, eid: int) -> dict[bytes, bytes]:
        rows = self.db.execute("SELECT name, value FROM cp_xattrs WHERE eid=?", (eid,))
        return {bytes(n): bytes(v) for n, v in rows}

    def delete(self, cp_id: int) -> list[str]:
        """Delete a checkpoint; return the content hashes no checkpoint uses any more."""
        cp = self.by_id(cp_id)
        assert cp is not None
        shas = [
            str(r[0])
            for r in self.db.execute(
                "SELECT DISTINCT sha256 FROM cp_entries WHERE cp_id=? AND sha256 IS NOT NULL",
                (cp_id,),
            )
        ]
        self.db.execute(
            "DELETE FROM cp_xattrs WHERE eid IN (SELECT eid FROM cp_entries WHERE cp_id=?)",
            (cp_id,),
        )
        self.db.execute("DELETE FROM cp_entries WHERE cp_id=?", (cp_id,))
        self.db.execute("DELETE FROM checkpoints WHERE cp_id=?", (cp_id,))
        unused = [s for s in shas if not self.sha_in_use(cp.ns_id, s)]
        for sha in unused:
            self.db.execute("DELETE FROM objects WHERE ns_id=? AND sha256=?", (cp.ns_id, sha))
        return unused

    def delete_namespace(self, ns_id: str) -> None:
        for cp in self.all(ns_id, complete_only=False):
            self.delete(cp.cp_id)
        self.db.execute("DELETE FROM objects WHERE ns_id=?", (ns_id,))

    def sha_in_use(self, ns_id: str, sha: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM cp_entries e JOIN checkpoints c ON c.cp_id=e.cp_id "
            "WHERE e.sha256=? AND c.ns_id=? LIMIT 1",
            (sha, ns_id),
        ).fetchone()
        return row is not None

    def has_object(self, ns_id: str, sha: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM objects WHERE ns_id=? AND sha256=?", (ns_id, sha)
        ).fetchone()
        return row is not None

    def add_object(self, ns_id: str, sha: str, size: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO objects(ns_id, sha256, size) VALUES (?, ?, ?)",
            (ns_id, sha, size),
        )

    def exclusive_bytes(self, cp: Checkpoint) -> int:
        """Bytes of content that only this checkpoint references."""
        row = self.db.execute(
            "SELECT coalesce(sum(o.size), 0) FROM objects o "
            "WHERE o.ns_id=? AND o.sha256 IN (SELECT sha256 FROM cp_entries WHERE cp_id=?) "
            "AND NOT EXISTS (SELECT 1 FROM cp_entries e JOIN checkpoints c ON c.cp_id=e.cp_id "
            "WHERE e.sha256=o.sha256 AND c.ns_id=o.ns_id AND c.cp_id<>?)",
            (cp.ns_id, cp.cp_id, cp.cp_id),
        ).fetchone()
        return int(row[0])
