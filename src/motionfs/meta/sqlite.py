"""The SQLite metadata engine: one host's index, the durable authority for
everything but file bytes.

SQLite in WAL mode holds the namespace registry, inodes, directory entries,
modes, owners, nanosecond times, symlink targets, link counts, xattrs, the
journal of store operations still to be applied (`sqlite_journal`) and the
checkpoint records (`sqlite_checkpoints`). Every metadata change and the store
work it implies commit in one transaction, so a crash leaves either the old or
the new state, and the journal replays what the store still lacks.

`Index` and `CheckpointIndex` keep the contract of `motionfs.meta.engine`; this
module holds the schema, its migrations, namespaces, inodes, links and xattrs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from motionfs.errors import FsError
from motionfs.meta.engine import CheckpointCatalog, IndexUnusable, MetaEngine
from motionfs.meta.records import (
    Inode,
    NamespaceRecord,
    changed_inode,
    inode_from_row,
    inode_of,
)
from motionfs.meta.sqlite_checkpoints import CHECKPOINT_SCHEMA, CheckpointIndex
from motionfs.meta.sqlite_journal import JOURNAL_SCHEMA, JournalTable

log = logging.getLogger(__name__)


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
CREATE TABLE IF NOT EXISTS motion_meta (  -- Project/Render/AssetMetadata JSON per namespace
    ns_id TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
"""

INODE_COLUMNS = (
    "ino, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, target, "
    "role, area, scope, ns_id, content_gen, stored_gen, sha256"
)

JOINED_INODE_COLUMNS = ", ".join(f"i.{c.strip()}" for c in INODE_COLUMNS.split(","))


def _inode(row: sqlite3.Row | tuple[object, ...]) -> Inode:
    return inode_from_row(tuple(row))


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
INODE_CACHE_MAX = 100_000


class Index(JournalTable):
    """The SQLite MetaEngine (the journal's queries come from JournalTable)."""

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
        self.db.executescript(SCHEMA + JOURNAL_SCHEMA + CHECKPOINT_SCHEMA)
        self._migrate()
        self._durable_fd = self._open_durable()
        self._checkpointer: WalCheckpointer | None = WalCheckpointer(path)

    def _open_durable(self) -> int | None:
        """A descriptor of our own on the WAL, which holds every commit since
        the last checkpoint and stays the same file while the index is open
        (it exists from the first write on: _migrate wrote)."""
        try:
            return os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

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
        self._durable_fd = None
        self.db = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=5,
        )
        return self

    @staticmethod
    def recorded_store_uuid(path: Path) -> str | None:
        """The store uuid an index file records, read without changing the file
        (None: none recorded, or no tables yet), so fsck can tell another
        store's index; IndexUnusable when SQLite cannot read it (damaged)."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                row = db.execute("SELECT value FROM meta WHERE key='store_uuid'").fetchone()
            except sqlite3.OperationalError:  # an empty database: no tables yet
                row = None
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise IndexUnusable(f"index {path} cannot be read: {e}") from e
        return None if row is None else str(row[0])

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self._durable_fd is not None:
            os.close(self._durable_fd)
            self._durable_fd = None
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; nested use joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
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
        """Make every committed transaction durable: flush the WAL, as a commit
        with synchronous=FULL would (with NORMAL a checkpoint flushes the WAL
        before copying it and the database after, so commits already copied
        are durable too). Only a flush, through a descriptor of our own: no
        transaction of its own to write and lock first."""
        if self._durable_fd is not None:
            os.fdatasync(self._durable_fd)
        elif self._checkpointer is not None:  # no WAL file seen at open: commit with FULL
            self.db.execute("PRAGMA synchronous=FULL")
            with self.transaction():
                self.set_meta("last_sync", "1")
            self.db.execute("PRAGMA synchronous=NORMAL")

    def checkpoint_catalog(self) -> CheckpointCatalog:
        """The checkpoint records, in this database and its transactions."""
        return CheckpointIndex(self)

    def hosts(self) -> None:
        """One host serves a SQLite index: no sessions to keep."""
        return None

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
        return self._cache(_inode(row))

    def _cache(self, inode: Inode) -> Inode:
        """Keep `inode` in the inode cache, which never holds more than
        INODE_CACHE_MAX (emptied when full: the daemon's memory stays bounded
        at any file count)."""
        if len(self._inodes) >= INODE_CACHE_MAX and inode.ino not in self._inodes:
            self._inodes.clear()
            self._parents.clear()
        self._inodes[inode.ino] = inode
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
        checked = Inode.model_validate({"ino": ino, **fields})  # a wrong field fails here
        return self._cache(inode_of(dict(checked)))

    def update(self, ino: int, **fields: object) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE inodes SET {sets} WHERE ino=?", (*fields.values(), ino))
        cached = self._inodes.get(ino)
        if cached is not None:  # a new object: callers may hold the old one
            self._inodes[ino] = changed_inode(cached, fields)

    def new_generation(self, ino: int, after: int) -> int:
        """The next number: one host, and the cache names content per inode."""
        return after + 1

    def delete_inode(self, ino: int) -> None:
        self.db.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self.db.execute("DELETE FROM xattrs WHERE ino=?", (ino,))
        self._inodes.pop(ino, None)

    def hold(self, ino: int) -> None:
        """One host: nobody else sweeps its orphans."""

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
        """(parent, name, inode) of the entries matching `where`, in one query.

        The inodes come from the cache where it has them (this engine is the
        index's only writer, so they are current) and go into it otherwise:
        building an Inode costs more than its row (most of a cold `ls -l`).
        """
        rows = self.db.execute(
            f"SELECT e.parent, e.name, {JOINED_INODE_COLUMNS} FROM entries e "
            f"JOIN inodes i ON i.ino=e.ino WHERE {where} {order}",
            params,
        ).fetchall()
        out = []
        for r in rows:
            node = self._inodes.get(r[2])
            if node is None:
                node = self._cache(_inode(r[2:]))
            out.append((int(r[0]), bytes(r[1]), node))
        return out

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


def _conforms(index: Index) -> MetaEngine:
    """Never called: mypy proves here that Index keeps the MetaEngine contract
    (checkpoint_catalog's return type proves it for CheckpointIndex)."""
    return index


__all__ = ["SCHEMA_VERSION", "CheckpointIndex", "Index", "IndexUnusable", "WalCheckpointer"]
