"""The PostgreSQL engine's checkpoint catalog: manifests, entries and objects.

The same records as the SQLite engine's (`sqlite_checkpoints`), in the store's
schema, written on the engine's connection so that a checkpoint and the store
work it implies commit in one PgIndex transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from motionfs.meta.records import Checkpoint, CpEntry, Inode

if TYPE_CHECKING:
    from motionfs.meta.postgres import PgIndex

CHECKPOINT_SCHEMA = """
CREATE SEQUENCE checkpoint_ids AS bigint;
CREATE TABLE checkpoints (
    cp_id bigint PRIMARY KEY DEFAULT nextval('checkpoint_ids'),
    ns_id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    description text,
    created_ns bigint NOT NULL,
    file_count bigint NOT NULL DEFAULT 0,
    logical_size bigint NOT NULL DEFAULT 0,
    complete boolean NOT NULL DEFAULT false,  -- once every object it references is stored
    UNIQUE (ns_id, name)
);
ALTER SEQUENCE checkpoint_ids OWNED BY checkpoints.cp_id;
CREATE SEQUENCE cp_entry_ids AS bigint;
CREATE TABLE cp_entries (
    eid bigint PRIMARY KEY DEFAULT nextval('cp_entry_ids'),
    cp_id bigint NOT NULL,
    parent_eid bigint,             -- NULL for the checkpoint's root
    name bytea NOT NULL,
    mode bigint NOT NULL,
    uid bigint NOT NULL,
    gid bigint NOT NULL,
    nlink bigint NOT NULL,
    size bigint NOT NULL,
    rdev bigint NOT NULL,
    atime_ns bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    ctime_ns bigint NOT NULL,
    target bytea,
    sha256 text COLLATE "C"
);
ALTER SEQUENCE cp_entry_ids OWNED BY cp_entries.eid;
CREATE INDEX cp_entries_by_parent ON cp_entries (parent_eid, name);
CREATE INDEX cp_entries_by_cp ON cp_entries (cp_id);
CREATE INDEX cp_entries_by_sha ON cp_entries (sha256);
CREATE TABLE cp_xattrs (
    eid bigint NOT NULL,
    name bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (eid, name)
);
CREATE TABLE objects (             -- checkpoint content kept in a namespace
    ns_id text COLLATE "C" NOT NULL,
    sha256 text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    PRIMARY KEY (ns_id, sha256)
);
"""

CP_COLUMNS = "cp_id, ns_id, name, description, created_ns, file_count, logical_size, complete"
ENTRY_COLUMNS = (
    "eid, cp_id, parent_eid, name, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, "
    "ctime_ns, target, sha256"
)


def _cp(row: tuple[Any, ...]) -> Checkpoint:
    return Checkpoint.model_construct(**dict(zip(Checkpoint.model_fields, row, strict=True)))


def _entry(row: tuple[Any, ...]) -> CpEntry:
    return CpEntry.model_construct(**dict(zip(CpEntry.model_fields, row, strict=True)))


class PgCheckpoints:
    """Checkpoint manifests and their content objects, in the store's schema."""

    def __init__(self, index: PgIndex) -> None:
        self.index = index

    @property
    def db(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The index's connection (a new one after a reconnect)."""
        return self.index.db

    def get(self, ns_id: str, name: str, complete_only: bool = True) -> Checkpoint | None:
        """A checkpoint by name; one still being stored only with complete_only=False."""
        row = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE ns_id=%s AND name=%s "
            "AND (complete OR NOT %s)",
            (ns_id, name, complete_only),
        ).fetchone()
        return None if row is None else _cp(row)

    def by_id(self, cp_id: int) -> Checkpoint | None:
        row = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE cp_id=%s", (cp_id,)
        ).fetchone()
        return None if row is None else _cp(row)

    def all(self, ns_id: str | None, complete_only: bool = True) -> list[Checkpoint]:
        """A project's checkpoints (every project's with ns_id None), oldest first."""
        rows = self.db.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE (%s::text IS NULL OR ns_id=%s) "
            "AND (complete OR NOT %s) ORDER BY created_ns, cp_id",
            (ns_id, ns_id, complete_only),
        )
        return [_cp(r) for r in rows]

    def mark_complete(self, ns_id: str, name: str) -> None:
        self.db.execute(
            "UPDATE checkpoints SET complete=true WHERE ns_id=%s AND name=%s", (ns_id, name)
        )

    def objects(self, ns_id: str | None = None) -> list[tuple[str, str, int]]:
        """(namespace, sha256, size) of the checkpoint objects the index knows."""
        rows = self.db.execute(
            "SELECT ns_id, sha256, size FROM objects WHERE (%s::text IS NULL OR ns_id=%s) "
            "ORDER BY ns_id, sha256",
            (ns_id, ns_id),
        )
        return [(str(n), str(h), int(z)) for n, h, z in rows]

    def add(self, ns_id: str, name: str, description: str | None, created_ns: int) -> int:
        row = self.db.execute(
            "INSERT INTO checkpoints(ns_id, name, description, created_ns) "
            "VALUES (%s, %s, %s, %s) RETURNING cp_id",
            (ns_id, name, description, created_ns),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def set_totals(self, cp_id: int, file_count: int, logical_size: int) -> None:
        self.db.execute(
            "UPDATE checkpoints SET file_count=%s, logical_size=%s WHERE cp_id=%s",
            (file_count, logical_size, cp_id),
        )

    def add_entry(self, cp_id: int, parent_eid: int | None, name: bytes, inode: Inode) -> int:
        row = self.db.execute(
            "INSERT INTO cp_entries(cp_id, parent_eid, name, mode, uid, gid, nlink, size, rdev, "
            "atime_ns, mtime_ns, ctime_ns, target, sha256) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING eid",
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
        ).fetchone()
        assert row is not None
        return int(row[0])

    def copy_xattrs(self, ino: int, eid: int) -> None:
        self.db.execute(
            "INSERT INTO cp_xattrs(eid, name, value) "
            "SELECT %s::bigint, name, value FROM xattrs WHERE ino=%s",
            (eid, ino),
        )

    def entry(self, eid: int) -> CpEntry | None:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE eid=%s", (eid,)
        ).fetchone()
        return None if row is None else _entry(row)

    def root(self, cp_id: int) -> CpEntry:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE cp_id=%s AND parent_eid IS NULL",
            (cp_id,),
        ).fetchone()
        assert row is not None
        return _entry(row)

    def child(self, parent_eid: int, name: bytes) -> CpEntry | None:
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE parent_eid=%s AND name=%s",
            (parent_eid, name),
        ).fetchone()
        return None if row is None else _entry(row)

    def children(self, parent_eid: int) -> list[CpEntry]:
        """An entry's children, in name order."""
        rows = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM cp_entries WHERE parent_eid=%s ORDER BY name",
            (parent_eid,),
        )
        return [_entry(r) for r in rows]

    def xattrs(self, eid: int) -> dict[bytes, bytes]:
        rows = self.db.execute("SELECT name, value FROM cp_xattrs WHERE eid=%s", (eid,))
        return {bytes(n): bytes(v) for n, v in rows}

    def delete(self, cp_id: int) -> list[str]:
        """Delete a checkpoint; return the content hashes no checkpoint uses any more."""
        cp = self.by_id(cp_id)
        assert cp is not None
        shas = [
            str(r[0])
            for r in self.db.execute(
                "SELECT DISTINCT sha256 FROM cp_entries WHERE cp_id=%s AND sha256 IS NOT NULL "
                "ORDER BY sha256",
                (cp_id,),
            )
        ]
        self.db.execute(
            "DELETE FROM cp_xattrs WHERE eid IN (SELECT eid FROM cp_entries WHERE cp_id=%s)",
            (cp_id,),
        )
        self.db.execute("DELETE FROM cp_entries WHERE cp_id=%s", (cp_id,))
        self.db.execute("DELETE FROM checkpoints WHERE cp_id=%s", (cp_id,))
        unused = [s for s in shas if not self.sha_in_use(cp.ns_id, s)]
        for sha in unused:
            self.db.execute("DELETE FROM objects WHERE ns_id=%s AND sha256=%s", (cp.ns_id, sha))
        return unused

    def delete_namespace(self, ns_id: str) -> None:
        """Delete every checkpoint and object record of the namespace."""
        for cp in self.all(ns_id, complete_only=False):
            self.delete(cp.cp_id)
        self.db.execute("DELETE FROM objects WHERE ns_id=%s", (ns_id,))

    def sha_in_use(self, ns_id: str, sha: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM cp_entries e JOIN checkpoints c ON c.cp_id=e.cp_id "
            "WHERE e.sha256=%s AND c.ns_id=%s LIMIT 1",
            (sha, ns_id),
        ).fetchone()
        return row is not None

    def has_object(self, ns_id: str, sha: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM objects WHERE ns_id=%s AND sha256=%s", (ns_id, sha)
        ).fetchone()
        return row is not None

    def add_object(self, ns_id: str, sha: str, size: int) -> None:
        self.db.execute(
            "INSERT INTO objects(ns_id, sha256, size) VALUES (%s, %s, %s) "
            "ON CONFLICT (ns_id, sha256) DO NOTHING",
            (ns_id, sha, size),
        )

    def exclusive_bytes(self, cp: Checkpoint) -> int:
        """Bytes of content that only this checkpoint references."""
        row = self.db.execute(
            "SELECT coalesce(sum(o.size), 0) FROM objects o "
            "WHERE o.ns_id=%s AND o.sha256 IN (SELECT sha256 FROM cp_entries WHERE cp_id=%s) "
            "AND NOT EXISTS (SELECT 1 FROM cp_entries e JOIN checkpoints c ON c.cp_id=e.cp_id "
            "WHERE e.sha256=o.sha256 AND c.ns_id=o.ns_id AND c.cp_id<>%s)",
            (cp.ns_id, cp.cp_id, cp.cp_id),
        ).fetchone()
        assert row is not None
        return int(row[0])
