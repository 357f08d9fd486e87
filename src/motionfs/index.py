"""The metadata index: the durable authority for everything but file bytes.

SQLite in WAL mode holds the namespace registry, inodes, directory entries,
modes, owners, nanosecond times, symlink targets, link counts, xattrs and the
journal of store operations still to be applied. Every metadata change and
the store work it implies commit in one transaction, so a crash leaves either
the old or the new state, and the journal replays what the store still lacks.

All access goes through this class so another engine can replace SQLite.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from .storage import NamespaceRecord

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (
    ns_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,          -- NamespaceRecord JSON
    state TEXT NOT NULL DEFAULT 'live'  -- 'live' | 'destroying'
);
CREATE TABLE IF NOT EXISTS inodes (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the journal names inodes
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    rdev INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    target BLOB,                   -- symlink target
    role TEXT NOT NULL,            -- see tree.Role
    area TEXT,                     -- projects | renders | assets (None for layout dirs)
    scope TEXT,                    -- StorageScope value
    ns_id TEXT,                    -- namespace holding this node's bytes
    content_gen INTEGER NOT NULL DEFAULT 0,  -- 0: empty; else cache/<ino>.<gen> or the store
    stored_gen INTEGER NOT NULL DEFAULT 0,   -- last generation written to the store
    sha256 TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    ino INTEGER NOT NULL,
    PRIMARY KEY (parent, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_ino ON entries (ino);
CREATE TABLE IF NOT EXISTS xattrs (
    ino INTEGER NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ns_id TEXT NOT NULL,
    op TEXT NOT NULL,              -- see journal.Op
    ino INTEGER,
    path TEXT,
    path2 TEXT,
    durable INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_ns ON journal (ns_id, seq);
CREATE INDEX IF NOT EXISTS journal_by_ino ON journal (ino);
"""

INODE_COLUMNS = (
    "ino, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, target, "
    "role, area, scope, ns_id, content_gen, stored_gen, sha256"
)


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


def _inode(row: sqlite3.Row | tuple[object, ...]) -> Inode:
    names = Inode.model_fields.keys()
    return Inode.model_construct(**dict(zip(names, row, strict=True)))


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._depth = 0
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(SCHEMA)
        with self.transaction():
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))

    @classmethod
    def open_readonly(cls, path: Path) -> Index:
        """A read-only view for status and progress reports (no schema changes)."""
        self = cls.__new__(cls)
        self.path = path
        self._depth = 0
        self.db = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=5,
        )
        return self

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested use joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self._depth = 1
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    def sync(self) -> None:
        """Make every committed transaction durable (fsync of the WAL)."""
        self.db.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            self.set_meta("last_sync", "1")
        self.db.execute("PRAGMA synchronous=NORMAL")

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- namespaces -------------------------------------------------------------

    def add_namespace(self, record: NamespaceRecord) -> None:
        self.db.execute(
            "INSERT INTO namespaces(ns_id, record) VALUES (?, ?)",
            (record.ns_id, record.model_dump_json()),
        )

    def namespace(self, ns_id: str) -> NamespaceRecord | None:
        row = self.db.execute("SELECT record FROM namespaces WHERE ns_id=?", (ns_id,)).fetchone()
        return None if row is None else NamespaceRecord.model_validate_json(row[0])

    def namespaces(self) -> list[tuple[NamespaceRecord, str]]:
        rows = self.db.execute("SELECT record, state FROM namespaces ORDER BY ns_id")
        return [(NamespaceRecord.model_validate_json(r), s) for r, s in rows]

    def set_namespace_state(self, ns_id: str, state: str) -> None:
        self.db.execute("UPDATE namespaces SET state=? WHERE ns_id=?", (state, ns_id))

    def update_namespace(self, record: NamespaceRecord) -> None:
        self.db.execute(
            "UPDATE namespaces SET record=? WHERE ns_id=?",
            (record.model_dump_json(), record.ns_id),
        )

    def remove_namespace(self, ns_id: str) -> None:
        self.db.execute("DELETE FROM namespaces WHERE ns_id=?", (ns_id,))

    # -- inodes -----------------------------------------------------------------

    def get(self, ino: int) -> Inode | None:
        row = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE ino=?", (ino,)).fetchone()
        return None if row is None else _inode(row)

    def create_inode(self, **fields: object) -> Inode:
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        cur = self.db.execute(
            f"INSERT INTO inodes({cols}) VALUES ({marks})", tuple(fields.values())
        )
        ino = cur.lastrowid
        assert ino is not None
        inode = self.get(ino)
        assert inode is not None
        return inode

    def update(self, ino: int, **fields: object) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE inodes SET {sets} WHERE ino=?", (*fields.values(), ino))

    def delete_inode(self, ino: int) -> None:
        self.db.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self.db.execute("DELETE FROM xattrs WHERE ino=?", (ino,))

    def orphans(self) -> list[Inode]:
        rows = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE nlink=0")
        return [_inode(r) for r in rows]

    def inodes_with_content(self) -> Iterator[tuple[int, int]]:
        yield from self.db.execute("SELECT ino, content_gen FROM inodes WHERE content_gen > 0")

    # -- entries ------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> int | None:
        row = self.db.execute(
            "SELECT ino FROM entries WHERE parent=? AND name=?", (parent, name)
        ).fetchone()
        return None if row is None else int(row[0])

    def link(self, parent: int, name: bytes, ino: int) -> None:
        self.db.execute(
            "INSERT INTO entries(parent, name, ino) VALUES (?, ?, ?)", (parent, name, ino)
        )

    def unlink(self, parent: int, name: bytes) -> None:
        self.db.execute("DELETE FROM entries WHERE parent=? AND name=?", (parent, name))

    def children(self, parent: int, after: bytes = b"") -> Iterator[tuple[bytes, int]]:
        """Entries of a directory in name order, starting after `after`."""
        yield from self.db.execute(
            "SELECT name, ino FROM entries WHERE parent=? AND name>? ORDER BY name",
            (parent, after),
        )

    def listing(self, parent: int) -> list[tuple[bytes, Inode]]:
        """A directory's entries with their inodes, in name order (one query)."""
        cols = ", ".join(f"i.{c.strip()}" for c in INODE_COLUMNS.split(","))
        rows = self.db.execute(
            f"SELECT e.name, {cols} FROM entries e JOIN inodes i ON i.ino=e.ino "
            "WHERE e.parent=? ORDER BY e.name",
            (parent,),
        )
        return [(bytes(r[0]), _inode(r[1:])) for r in rows]

    def has_children(self, parent: int) -> bool:
        return (
            self.db.execute("SELECT 1 FROM entries WHERE parent=? LIMIT 1", (parent,)).fetchone()
            is not None
        )

    def parents(self, ino: int) -> list[tuple[int, bytes]]:
        """Every (parent, name) linking to `ino`, in a stable order."""
        rows = self.db.execute(
            "SELECT parent, name FROM entries WHERE ino=? ORDER BY parent, name", (ino,)
        ).fetchall()
        return [(int(p), bytes(n)) for p, n in rows]

    def count_subdirs(self, parent: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM entries e JOIN inodes i ON i.ino=e.ino "
            "WHERE e.parent=? AND (i.mode & 61440)=16384",
            (parent,),
        ).fetchone()
        return int(row[0])

    # -- xattrs -------------------------------------------------------------------

    def get_xattr(self, ino: int, name: bytes) -> bytes | None:
        row = self.db.execute(
            "SELECT value FROM xattrs WHERE ino=? AND name=?", (ino, name)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def set_xattr(self, ino: int, name: bytes, value: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO xattrs(ino, name, value) VALUES (?, ?, ?)", (ino, name, value)
        )

    def remove_xattr(self, ino: int, name: bytes) -> bool:
        cur = self.db.execute("DELETE FROM xattrs WHERE ino=? AND name=?", (ino, name))
        return cur.rowcount > 0

    def list_xattrs(self, ino: int) -> list[bytes]:
        rows = self.db.execute("SELECT name FROM xattrs WHERE ino=? ORDER BY name", (ino,))
        return [bytes(r[0]) for r in rows]

    # -- journal ------------------------------------------------------------------

    def enqueue(
        self,
        ns_id: str,
        op: str,
        ino: int | None = None,
        path: str | None = None,
        path2: str | None = None,
        durable: bool = False,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO journal(ns_id, op, ino, path, path2, durable) VALUES (?, ?, ?, ?, ?, ?)",
            (ns_id, op, ino, path, path2, int(durable)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def next_op(self, ns_id: str) -> JournalEntry | None:
        row = self.db.execute(
            "SELECT seq, ns_id, op, ino, path, path2, durable, attempts, last_error "
            "FROM journal WHERE ns_id=? ORDER BY seq LIMIT 1",
            (ns_id,),
        ).fetchone()
        if row is None:
            return None
        names = JournalEntry.model_fields.keys()
        return JournalEntry.model_validate(dict(zip(names, row, strict=True)))

    def finish_op(self, seq: int) -> None:
        self.db.execute("DELETE FROM journal WHERE seq=?", (seq,))

    def fail_op(self, seq: int, error: str) -> None:
        self.db.execute(
            "UPDATE journal SET attempts=attempts+1, last_error=? WHERE seq=?", (error, seq)
        )

    def drop_ops(self, ns_id: str) -> None:
        self.db.execute("DELETE FROM journal WHERE ns_id=?", (ns_id,))

    def pending_namespaces(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT ns_id FROM journal")]

    def pending_count(self, ns_id: str | None = None) -> int:
        if ns_id is None:
            row = self.db.execute("SELECT count(*) FROM journal").fetchone()
        else:
            row = self.db.execute("SELECT count(*) FROM journal WHERE ns_id=?", (ns_id,)).fetchone()
        return int(row[0])

    def last_seq(self, ns_id: str) -> int | None:
        row = self.db.execute("SELECT max(seq) FROM journal WHERE ns_id=?", (ns_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def ino_has_pending(self, ino: int) -> bool:
        return (
            self.db.execute("SELECT 1 FROM journal WHERE ino=? LIMIT 1", (ino,)).fetchone()
            is not None
        )

    def pending_puts(self, ino: int) -> list[tuple[int, str]]:
        return [
            (int(s), str(p))
            for s, p in self.db.execute(
                "SELECT seq, path FROM journal WHERE ino=? AND op='put' ORDER BY seq", (ino,)
            )
        ]

    def drop_puts(self, ino: int) -> bool:
        """Drop pending uploads of `ino`; True if one of them was durable (fsync)."""
        row = self.db.execute(
            "SELECT max(durable) FROM journal WHERE ino=? AND op='put'", (ino,)
        ).fetchone()
        self.db.execute("DELETE FROM journal WHERE ino=? AND op='put'", (ino,))
        return bool(row[0])
