"""The metadata index: the durable authority for everything but file bytes.

SQLite in WAL mode holds the namespace registry, inodes, directory entries,
modes, owners, nanosecond times, symlink targets, link counts, xattrs and the
journal of store operations still to be applied. Every metadata change and
the store work it implies commit in one transaction, so a crash leaves either
the old or the new state, and the journal replays what the store still lacks.

All access goes through this class so another engine can replace SQLite.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from motionfs.errors import FsError
from motionfs.meta.records import Checkpoint, CpEntry, Inode, JournalEntry, NamespaceRecord

log = logging.getLogger(__name__)


class IndexUnusable(Exception):
    """The index cannot be used by this version (a newer schema, not a database)."""


SCHEMA_VERSION = 2

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
    role TEXT NOT NULL,            -- see layout.Role
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
CREATE TABLE IF NOT EXISTS motion_meta (  -- Project/Render/AssetMetadata JSON per namespace
    ns_id TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
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
CREATE INDEX IF NOT EXISTS journal_by_ino ON journal (ino);
CREATE TABLE IF NOT EXISTS parked (     -- store operations that failed for good
    seq INTEGER PRIMARY KEY,       -- its journal seq
    ns_id TEXT NOT NULL,
    op TEXT NOT NULL,
    ino INTEGER,
    path TEXT,
    path2 TEXT,
    durable INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
"""

INODE_COLUMNS = (
    "ino, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, target, "
    "role, area, scope, ns_id, content_gen, stored_gen, sha256"
)

JOINED_INODE_COLUMNS = ", ".join(f"i.{c.strip()}" for c in INODE_COLUMNS.split(","))


def _inode(row: sqlite3.Row | tuple[object, ...]) -> Inode:
    names = Inode.model_fields.keys()
    return Inode.model_construct(**dict(zip(names, row, strict=True)))


class WalCheckpointer:
    """Copies the index's WAL into the database in the background, so that the
    WAL stays small without a request ever paying for a checkpoint."""

    INTERVAL = 0.25
    THRESHOLD = 1 << 20  # bytes of WAL worth a checkpoint

    def __init__(self, path: Path) -> None:
        self.wal = path.with_name(path.name + "-wal")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path,), name="index-checkpointer", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path) -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=1)
        try:
            while not self._stop.wait(self.INTERVAL):
                try:
                    if self.wal.stat().st_size >= self.THRESHOLD:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except (OSError, sqlite3.Error) as e:
                    log.debug("index checkpoint skipped: %s", e)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# Inodes kept in memory (a hot-path lookup costs a dict hit instead of a query).
INODE_CACHE_MAX = 200_000


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._depth = 0
        self._inodes: dict[int, Inode] = {}
        self._parents: dict[int, list[tuple[int, bytes]]] = {}
        self._touched: set[str] = set()  # namespaces given journal entries lately
        self.dir_moves = 0  # counts directories unlinked or moved (path caches check it)
        self.on_full: Callable[[], None] = lambda: None  # a commit found the disk full
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        # Small pages: a commit appends every page it touched to the WAL, and
        # our rows are small (applies to new indexes only).
        self.db.execute("PRAGMA page_size=1024")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints (copying the WAL into the database, with fsyncs) run in a
        # thread of their own, never inside a file system request's commit.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._checkpointer: WalCheckpointer | None = WalCheckpointer(path)

    def _migrate(self) -> None:
        """Bring an index made by an older version up to SCHEMA_VERSION; refuse a newer one."""
        with self.transaction():
            found = self.get_meta("schema_version")
            version = SCHEMA_VERSION if found is None else int(found)
            if version > SCHEMA_VERSION:
                raise IndexUnusable(
                    f"index {self.path} was made by a newer motionfs (schema {version})"
                )
            if version < 2:  # checkpoints made before `complete` existed were complete
                columns = {r[1] for r in self.db.execute("PRAGMA table_info(checkpoints)")}
                if "complete" not in columns:
                    self.db.execute(
                        "ALTER TABLE checkpoints ADD COLUMN complete INTEGER NOT NULL DEFAULT 0"
                    )
                self.db.execute("UPDATE checkpoints SET complete=1")
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    @classmethod
    def open_readonly(cls, path: Path) -> Index:
        """A read-only view for status and progress reports (no schema changes)."""
        self = cls.__new__(cls)
        self.path = path
        self._depth = 0
        self._inodes = {}
        self._parents = {}
        self._touched = set()
        self.dir_moves = 0
        self.on_full = lambda: None
        self._checkpointer = None
        self.db = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=5,
        )
        return self

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                self._inodes.clear()  # they may hold rolled-back changes
                self._parents.clear()
                self.dir_moves += 1
                raise
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            # The operation fails, not the daemon: its caller answers ENOSPC.
            self.on_full()
            raise FsError(errno.ENOSPC, "the index's disk is full") from e
        finally:
            self._depth = 0

    def sync(self) -> None:
        """Make every committed transaction durable (fsync of the WAL)."""
        self.db.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            self.set_meta("last_sync", "1")
        self.db.execute("PRAGMA synchronous=NORMAL")

    # -- meta -----------------------------------------------------------------

    def integrity_errors(self) -> list[str]:
        """What SQLite's integrity check finds wrong with the database (none: [])."""
        rows = [str(r[0]) for r in self.db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

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

    def namespace_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM namespaces").fetchone()[0])

    def namespace_state(self, ns_id: str) -> str | None:
        row = self.db.execute("SELECT state FROM namespaces WHERE ns_id=?", (ns_id,)).fetchone()
        return None if row is None else str(row[0])

    def set_namespace_state(self, ns_id: str, state: str) -> None:
        self.db.execute("UPDATE namespaces SET state=? WHERE ns_id=?", (state, ns_id))

    def update_namespace(self, record: NamespaceRecord) -> None:
        self.db.execute(
            "UPDATE namespaces SET record=? WHERE ns_id=?",
            (record.model_dump_json(), record.ns_id),
        )

    def remove_namespace(self, ns_id: str) -> None:
        self.db.execute("DELETE FROM namespaces WHERE ns_id=?", (ns_id,))
        self.db.execute("DELETE FROM motion_meta WHERE ns_id=?", (ns_id,))

    def get_motion_meta(self, ns_id: str) -> str | None:
        row = self.db.execute("SELECT json FROM motion_meta WHERE ns_id=?", (ns_id,)).fetchone()
        return None if row is None else str(row[0])

    def set_motion_meta(self, ns_id: str, text: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO motion_meta(ns_id, json) VALUES (?, ?)", (ns_id, text)
        )

    # -- inodes -----------------------------------------------------------------

    def get(self, ino: int) -> Inode | None:
        """An inode; the returned object is shared and must not be modified."""
        inode = self._inodes.get(ino)
        if inode is not None:
            return inode
        row = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE ino=?", (ino,)).fetchone()
        if row is None:
            return None
        if len(self._inodes) >= INODE_CACHE_MAX:
            self._inodes.clear()
            self._parents.clear()
        inode = self._inodes[ino] = _inode(row)
        return inode

    def create_inode(self, **fields: object) -> Inode:
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        cur = self.db.execute(
            f"INSERT INTO inodes({cols}) VALUES ({marks})", tuple(fields.values())
        )
        ino = cur.lastrowid
        assert ino is not None
        if "ino" in fields:  # the layout's fixed inodes: read back as stored
            inode = self.get(ino)
            assert inode is not None
            return inode
        inode = self._inodes[ino] = Inode(ino=ino, **fields)  # type: ignore[arg-type]
        return inode

    def update(self, ino: int, **fields: object) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE inodes SET {sets} WHERE ino=?", (*fields.values(), ino))
        cached = self._inodes.get(ino)
        if cached is not None:  # a new object: callers may hold the old one
            self._inodes[ino] = cached.model_copy(update=fields)

    def delete_inode(self, ino: int) -> None:
        self.db.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self.db.execute("DELETE FROM xattrs WHERE ino=?", (ino,))
        self._inodes.pop(ino, None)

    def orphans(self) -> list[Inode]:
        rows = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE nlink=0")
        return [_inode(r) for r in rows]

    def file_inodes(self) -> list[Inode]:
        """Every linked regular file that lives in a namespace (for fsck)."""
        rows = self.db.execute(
            f"SELECT {INODE_COLUMNS} FROM inodes WHERE ns_id IS NOT NULL AND nlink > 0 "
            "AND (mode & ?) = ?",
            (stat.S_IFMT(0o170000), stat.S_IFREG),
        )
        return [_inode(r) for r in rows]

    def nodes_of_namespace(self, ns_id: str) -> list[Inode]:
        rows = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE ns_id=?", (ns_id,))
        return [_inode(r) for r in rows]

    def inodes_with_sha(self, ns_id: str, sha: str) -> list[Inode]:
        rows = self.db.execute(
            f"SELECT {INODE_COLUMNS} FROM inodes WHERE ns_id=? AND sha256=?", (ns_id, sha)
        )
        return [_inode(r) for r in rows]

    def project_of(self, ns_id: str) -> Inode | None:
        """The project folder whose namespace this is."""
        row = self.db.execute(
            f"SELECT {INODE_COLUMNS} FROM inodes WHERE ns_id=? AND role='project'", (ns_id,)
        ).fetchone()
        return None if row is None else _inode(row)

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
        self._parents.pop(ino, None)

    def unlink(self, parent: int, name: bytes) -> None:
        for (ino,) in self.db.execute(
            "DELETE FROM entries WHERE parent=? AND name=? RETURNING ino", (parent, name)
        ).fetchall():
            self._parents.pop(ino, None)
            node = self._inodes.get(ino)
            if node is None or node.is_dir:
                self.dir_moves += 1

    def _links(
        self, where: str, params: tuple[object, ...], order: str = ""
    ) -> list[tuple[int, bytes, Inode]]:
        """(parent, name, inode) of the entries matching `where`, in one query."""
        rows = self.db.execute(
            f"SELECT e.parent, e.name, {JOINED_INODE_COLUMNS} FROM entries e "
            f"JOIN inodes i ON i.ino=e.ino WHERE {where} {order}",
            params,
        )
        return [(int(r[0]), bytes(r[1]), _inode(r[2:])) for r in rows]

    def listing(self, parent: int) -> list[tuple[bytes, Inode]]:
        """A directory's entries with their inodes, in name order."""
        return [
            (name, node)
            for _p, name, node in self._links("e.parent=?", (parent,), "ORDER BY e.name")
        ]

    def links_of_namespace(self, ns_id: str) -> list[tuple[int, bytes, Inode]]:
        """(parent, name, inode) of the folder or files whose own namespace this is."""
        return self._links(
            "i.ns_id=? AND (i.role='project' OR (i.role='node' AND i.area<>'projects'))",
            (ns_id,),
        )

    def has_children(self, parent: int) -> bool:
        return (
            self.db.execute("SELECT 1 FROM entries WHERE parent=? LIMIT 1", (parent,)).fetchone()
            is not None
        )

    def parents(self, ino: int) -> list[tuple[int, bytes]]:
        """Every (parent, name) linking to `ino`, in a stable order (shared list)."""
        links = self._parents.get(ino)
        if links is None:
            rows = self.db.execute(
                "SELECT parent, name FROM entries WHERE ino=? ORDER BY parent, name", (ino,)
            ).fetchall()
            if len(self._parents) >= INODE_CACHE_MAX:
                self._parents.clear()
            links = self._parents[ino] = [(int(p), bytes(n)) for p, n in rows]
        return links

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
        self._touched.add(ns_id)
        assert cur.lastrowid is not None
        return cur.lastrowid

    def take_touched(self) -> set[str]:
        """Namespaces that got journal entries since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def next_ops(self, ns_id: str, limit: int) -> list[JournalEntry]:
        """The namespace's first `limit` pending entries, in order."""
        return self._entries("journal", "ns_id=? ORDER BY seq LIMIT ?", (ns_id, limit))

    def _entries(self, table: str, where: str, args: tuple[object, ...] = ()) -> list[JournalEntry]:
        rows = self.db.execute(
            "SELECT seq, ns_id, op, ino, path, path2, durable, attempts, last_error "
            f"FROM {table} WHERE {where}",
            args,
        ).fetchall()
        names = JournalEntry.model_fields.keys()
        return [JournalEntry.model_construct(**dict(zip(names, r, strict=True))) for r in rows]

    def finish_op(self, seq: int) -> None:
        self.db.execute("DELETE FROM journal WHERE seq=?", (seq,))

    def fail_op(self, seq: int, error: str) -> None:
        self.db.execute(
            "UPDATE journal SET attempts=attempts+1, last_error=? WHERE seq=?", (error, seq)
        )

    def park_op(self, seq: int, error: str) -> None:
        """Move an entry that can never succeed out of the queue (kept for status and fsck)."""
        self.db.execute(
            "INSERT OR REPLACE INTO parked SELECT seq, ns_id, op, ino, path, path2, durable, "
            "attempts + 1, ? FROM journal WHERE seq=?",
            (error, seq),
        )
        self.db.execute("DELETE FROM journal WHERE seq=?", (seq,))

    def parked_ops(self) -> list[JournalEntry]:
        return self._entries("parked", "1 ORDER BY seq")

    def failing_ops(self) -> list[JournalEntry]:
        """Queued entries that have failed at least once (still being retried)."""
        return self._entries("journal", "attempts > 0 ORDER BY seq")

    def parked_put(self, ino: int) -> str | None:
        """Why the latest upload of `ino` failed for good, if it did."""
        row = self.db.execute(
            "SELECT last_error FROM parked WHERE ino=? AND op='put' ORDER BY seq DESC LIMIT 1",
            (ino,),
        ).fetchone()
        return None if row is None else str(row[0])

    def parked_report(self) -> tuple[int, str | None]:
        """(entries that failed for good, the latest reason) for status."""
        count = self.db.execute("SELECT count(*) FROM parked").fetchone()[0]
        row = self.db.execute("SELECT last_error FROM parked ORDER BY seq DESC LIMIT 1").fetchone()
        return int(count), None if row is None else str(row[0])

    def unpark_ops(self) -> int:
        """Queue parked entries again (after their cause was fixed); how many."""
        n = self.db.execute(
            "INSERT INTO journal(ns_id, op, ino, path, path2, durable) "
            "SELECT ns_id, op, ino, path, path2, durable FROM parked ORDER BY seq"
        ).rowcount
        self.db.execute("DELETE FROM parked")
        return int(n)

    def drop_ops(self, ns_id: str) -> None:
        self.db.execute("DELETE FROM journal WHERE ns_id=?", (ns_id,))
        self.db.execute("DELETE FROM parked WHERE ns_id=?", (ns_id,))

    def pending_namespaces(self) -> list[str]:
        # A skip scan over the (ns_id, seq) index: cost grows with the number of
        # namespaces, not with the thousands of entries a burst can queue.
        rows = self.db.execute(
            "WITH RECURSIVE n(ns) AS (SELECT min(ns_id) FROM journal UNION ALL "
            "SELECT (SELECT min(ns_id) FROM journal WHERE ns_id > n.ns) FROM n "
            "WHERE n.ns IS NOT NULL) SELECT ns FROM n WHERE ns IS NOT NULL"
        )
        return [str(r[0]) for r in rows]

    def pending_count(self, ns_id: str | None = None) -> int:
        if ns_id is None:
            row = self.db.execute("SELECT count(*) FROM journal").fetchone()
        else:
            row = self.db.execute("SELECT count(*) FROM journal WHERE ns_id=?", (ns_id,)).fetchone()
        return int(row[0])

    def backlog(self) -> int:
        """About how many entries are pending (an upper bound, from two index probes)."""
        row = self.db.execute("SELECT max(seq) - min(seq) + 1 FROM journal").fetchone()
        return int(row[0] or 0)

    def pending_report(self) -> tuple[int, int, str | None]:
        """(entries, bytes of pending uploads, the latest failure) for status."""
        count, size = self.db.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN j.op='put' THEN i.size END), 0) "
            "FROM journal j LEFT JOIN inodes i ON i.ino = j.ino"
        ).fetchone()
        row = self.db.execute(
            "SELECT last_error FROM journal WHERE last_error IS NOT NULL "
            "ORDER BY attempts DESC, seq LIMIT 1"
        ).fetchone()
        return int(count), int(size), None if row is None else str(row[0])

    def pending_for_paths(self, ns_id: str, ino: int, paths: list[str]) -> bool:
        """Whether a pending entry of `ns_id` may change what the store holds at
        `paths` (an upload of `ino`, or an entry on one of the paths or a parent)."""
        if self.db.execute(
            "SELECT 1 FROM journal WHERE ns_id=? AND (ino=? OR op='destroy') LIMIT 1",
            (ns_id, ino),
        ).fetchone():
            return True
        for p in paths:
            row = self.db.execute(
                "SELECT 1 FROM journal WHERE ns_id=? AND ("
                "path=? OR substr(?, 1, length(path) + 1) = path || '/' OR "
                "(op IN ('move', 'copy', 'keep') AND "
                "(path2=? OR substr(?, 1, length(path2) + 1) = path2 || '/'))) LIMIT 1",
                (ns_id, p, p, p, p),
            ).fetchone()
            if row:
                return True
        return False

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
        self.db.execute("DELETE FROM parked WHERE ino=? AND op='put'", (ino,))
        rows = self.db.execute(
            "DELETE FROM journal WHERE ino=? AND op='put' RETURNING durable", (ino,)
        ).fetchall()
        return any(d for (d,) in rows)


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
