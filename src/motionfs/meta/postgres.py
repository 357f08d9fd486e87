"""The PostgreSQL metadata engine: the index in a PostgreSQL database.

`PgIndex` keeps the contract of `motionfs.meta.engine` with the same tables
as the SQLite engine (`sqlite.py`), so the tree, journal, checkpoints and
fsck run on it unchanged. This module holds the connection, the schema and
its migrations, namespaces, inodes, links and xattrs; the journal queries are
in `postgres_journal`, the checkpoint catalog in `postgres_checkpoints`.

How it keeps the contract:

* Atomicity: one connection in autocommit mode (a read outside a transaction
  sees committed state); `transaction()` is one BEGIN..COMMIT, nested blocks
  join it, an exception rolls the whole group back.
* Round trips: every statement is a round trip to the server, the cost of a
  change. Inside a write group, writes whose result nobody reads (`defer`)
  are held and go with the next statement that needs an answer, or with the
  COMMIT, as one multi-statement message: a create or an unlink is one round
  trip, not seven. Reads never miss a held write (the connection is only
  reached through `db`, which sends them first). New inode numbers come in
  blocks from the sequence, so an insert needs no answer either. Lookups,
  xattrs and inodes are cached and kept fresh by the other hosts' notices.
* Durability, as the contract asks and as the SQLite engine gives it: a
  COMMIT is on the server once it returns, so it survives this daemon
  crashing, and every host sees it; the session runs with
  `synchronous_commit=off`, so it does not wait for the server's disk (the
  server's WAL writer flushes within a fraction of a second). `sync()` (fsync,
  fsyncdir, checkpoints) waits for that flush, so what it covers survives
  the server crashing or losing power too. (A server run with `fsync=off`
  breaks that: it is logged at open.)
* Identity: inode numbers, journal seqs, checkpoint and entry ids come from
  sequences, which never hand out a number twice, not even after a rollback.
  The layout's fixed inodes (given numbers) push the inode sequence past them.
* Errors: SQLSTATE 53100 (disk_full) fails the group with FsError(ENOSPC)
  after `on_full`; a schema made by a newer version is IndexUnusable.

One store, one PostgreSQL schema: the URL's `schema=NAME` query parameter
(default `motionfs`; stripped before libpq sees the URL) names it, every table
lives in it and the connection's search_path is set to it alone, so several
stores share a database by naming different schemas. Its `schema_version`
table records each migration applied (MIGRATIONS, applied in order when the
index is opened, under an advisory lock so two openers never race).

`path` is host-local: a small file in the index directory (DIR/index.postgres,
naming the database and schema, never a password) whose folder holds the
data cache and the space reserve, as the SQLite file's folder does.

Several hosts share one schema (`postgres_hosts`): each write group sends
one NOTIFY of what it changed when it commits, and the inode and parent
caches below drop what other hosts changed before they answer; journal
entries carry the session that queued them, and an enqueue takes a
per-namespace lock until its group commits, so seq order is commit order in
each namespace whichever host queued; content generations come from a
sequence, so two hosts never name different bytes by the same generation.
A lost connection is made again at the next call (the call that found it
lost fails with EIO).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from motionfs.errors import FsError
from motionfs.meta.engine import (
    CheckpointCatalog,
    HostSessions,
    IndexUnusable,
    MetaEngine,
    RemoteChanges,
)
from motionfs.meta.postgres_checkpoints import CHECKPOINT_SCHEMA, PgCheckpoints
from motionfs.meta.postgres_hosts import (
    HOSTS_SCHEMA,
    SESSION_TIMEOUT,
    ChangeNotes,
    Listener,
    PgHosts,
    channel_of,
    host_id,
    read_host_id,
)
from motionfs.meta.postgres_journal import JOURNAL_SCHEMA, Params, PgJournal
from motionfs.meta.records import (
    INODE_FIELD_ORDER,
    Inode,
    NamespaceRecord,
    changed_inode,
    inode_from_row,
    inode_of,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DEFAULT_SCHEMA = "motionfs"
MIN_SERVER = 120000  # PostgreSQL 12: what the SQL here was written against
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# First half of the advisory lock key that serializes migrations of one schema.
MIGRATION_LOCK = 0x6D6F7469  # "moti"

BASE_SCHEMA = """
CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE namespaces (
    ns_id text COLLATE "C" PRIMARY KEY,
    record text NOT NULL,          -- NamespaceRecord JSON
    state text NOT NULL DEFAULT 'live'  -- 'live' | 'destroying'
);
CREATE SEQUENCE inode_numbers AS bigint;
CREATE TABLE inodes (
    ino bigint PRIMARY KEY DEFAULT nextval('inode_numbers'),  -- never reused
    mode bigint NOT NULL,
    uid bigint NOT NULL,
    gid bigint NOT NULL,
    nlink bigint NOT NULL,
    size bigint NOT NULL DEFAULT 0,
    rdev bigint NOT NULL DEFAULT 0,
    atime_ns bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    ctime_ns bigint NOT NULL,
    target bytea,                  -- symlink target
    role text NOT NULL,            -- see layout.Role
    area text,                     -- projects | renders | assets (None for layout dirs)
    scope text,                    -- StorageScope value
    ns_id text COLLATE "C",        -- namespace holding this node's bytes
    content_gen bigint NOT NULL DEFAULT 0,  -- 0: empty; else cache/<ino>.<gen> or the store
    stored_gen bigint NOT NULL DEFAULT 0,   -- last generation written to the store
    sha256 text
);
ALTER SEQUENCE inode_numbers OWNED BY inodes.ino;
CREATE INDEX inodes_by_ns ON inodes (ns_id);
CREATE TABLE entries (
    parent bigint NOT NULL,
    name bytea NOT NULL,
    ino bigint NOT NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX entries_by_ino ON entries (ino);
CREATE TABLE xattrs (
    ino bigint NOT NULL,
    name bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (ino, name)
);
CREATE TABLE motion_meta (         -- Project/Render/AssetMetadata JSON per namespace
    ns_id text COLLATE "C" PRIMARY KEY,
    json text NOT NULL
);
"""

# Schema version -> the SQL that brings version-1 to it. Append, never edit.
MIGRATIONS: dict[int, str] = {
    1: BASE_SCHEMA + JOURNAL_SCHEMA + CHECKPOINT_SCHEMA,
    2: HOSTS_SCHEMA,
}

INODE_COLUMNS = (
    "ino, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, target, "
    "role, area, scope, ns_id, content_gen, stored_gen, sha256"
)
JOINED_INODE_COLUMNS = ", ".join(f"i.{c.strip()}" for c in INODE_COLUMNS.split(","))
INODE_FIELDS = frozenset(INODE_FIELD_ORDER)
INODE_CACHE_MAX = 100_000  # as the SQLite engine: a hot lookup is a dict hit
NUMBER_BLOCK = 64  # inode numbers or content generations taken from a sequence at a time
CONNECT_TIMEOUT = 5  # seconds: an unreachable server fails a call, never hangs it


IDLE = TransactionStatus.IDLE


def _inode(row: tuple[Any, ...]) -> Inode:
    return inode_from_row(row)


def split_url(url: str) -> tuple[str, str]:
    """(the libpq URL, the schema) of a `postgresql://...[?schema=NAME]` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {url}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    rest = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema {schema!r}: use lower-case letters, digits and _ (at most 63, "
            "not starting with a digit)"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def redact(url: str) -> str:
    """The URL without its password, for logs, messages and the marker file."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


@contextmanager
def _lost_is_eio(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A lost server is the caller's EIO, never a driver error: FUSE answers it,
    the daemon stays up, and the next call connects again."""
    try:
        yield
    except psycopg.OperationalError as e:
        if not conn.broken and not conn.closed:
            raise  # a statement's own failure (e.g. a full disk): the caller's
        raise FsError(errno.EIO, f"the metadata server went away: {e}") from e


class _EioCursor(psycopg.Cursor[Any]):
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with _lost_is_eio(self.connection):
            return super().execute(*args, **kwargs)


class _BatchCursor(psycopg.ClientCursor[Any]):
    """Sends held writes and a final statement as one message (parameters are
    bound on this side, which is what lets a message hold several statements);
    positioned on the last statement's result."""

    def run(self, statements: list[str]) -> _BatchCursor:
        with _lost_is_eio(self.connection):
            self.execute("; ".join(statements).encode())
            while self.nextset():
                pass
        return self


def _connect(conninfo: str, schema: str, readonly: bool = False) -> psycopg.Connection[Any]:
    # UTF8: held writes are rendered here and sent as UTF-8 text.
    options = f"-c search_path={schema} -c synchronous_commit=off -c client_encoding=UTF8"
    if readonly:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            conninfo,
            autocommit=True,
            options=options,
            application_name="motionfs",
            connect_timeout=CONNECT_TIMEOUT,
            cursor_factory=_EioCursor,
        )
    except psycopg.OperationalError as e:
        raise IndexUnusable(f"cannot reach PostgreSQL at {redact(conninfo)}: {e}") from e


class PgIndex(PgJournal):
    """The PostgreSQL MetaEngine (the journal's queries come from PgJournal)."""

    def __init__(self, url: str, path: Path, readonly: bool = False) -> None:
        self.url = redact(url)
        self.path = path
        self._conninfo, self.schema = split_url(url)
        self._readonly = readonly
        self._depth = 0
        self._inodes: dict[int, Inode] = {}
        self._parents: dict[int, list[tuple[int, bytes]]] = {}
        self._names: dict[tuple[int, bytes], int | None] = {}  # lookups, misses too
        self._xattrs: dict[int, dict[bytes, bytes | None]] = {}  # per inode, misses too
        self._bare: set[int] = set()  # inodes made here that have no xattrs yet
        self._free_inos: list[int] = []  # taken from the sequences, not used yet
        self._free_gens: list[int] = []
        self._complete: set[int] = set()  # folders all of whose names _names holds
        self._held: list[str] = []  # the open group's writes not sent yet (BEGIN first)
        self.handed_out: dict[int, str] = {}
        self._touched: set[str] = set()
        self._dir_moves = 0
        self.on_full: Callable[[], None] = lambda: None
        self.notes = ChangeNotes()  # what the open write group changed, for other hosts
        self.locked_namespaces: set[str] = set()  # journal locks the open group holds
        self._db = _connect(self._conninfo, self.schema, readonly)
        self._listener: Listener | None = None
        self._db_epoch = 0  # the listener's epoch when the connection was made
        try:
            self._check_server()
            if readonly:
                self._check_version(self._found_version())
                # The host whose folder this is, when it has been one (status
                # reports that host's queue); nothing is written here.
                self.me = read_host_id(path.parent) or "status-" + uuid.uuid4().hex
            else:
                self._migrate()
                self._write_marker()
                self.me = host_id(path.parent)
                self._listener = Listener(self._conninfo, channel_of(self.schema), self.me)
        except BaseException:
            self._db.close()
            raise
        self._hosts = PgHosts(self, self.me)

    @property
    def db(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection; a lost one is made again here (outside a write group),
        also one made before the listener saw the server go away and come back."""
        listener = self._listener
        if listener is not None and listener.epoch != self._db_epoch and not self._depth:
            self._db_epoch = listener.epoch
            self._db.close()
        if self._held:  # whoever reads next must see the group's writes
            self._send([])
        if self._db.closed or self._db.broken:
            if self._depth:
                raise FsError(errno.EIO, f"lost the connection to {self.url}")
            try:
                self._db = _connect(self._conninfo, self.schema, self._readonly)
            except IndexUnusable as e:
                raise FsError(errno.EIO, str(e)) from e
            log.info("connected to %s again", self.url)
            self._drop_caches()  # what other hosts did meanwhile is unknown
            # A server that crashed may have lost the log of the blocks we hold
            # (commits do not wait for the flush): its sequences may give them again.
            self._free_inos, self._free_gens = [], []
        return self._db

    @property
    def dir_moves(self) -> int:
        self.apply_notices()
        return self._dir_moves

    def hosts(self) -> HostSessions:
        return self._hosts

    def _drop_caches(self) -> None:
        self._inodes.clear()
        self._parents.clear()
        self._names.clear()
        self._complete.clear()
        self._xattrs.clear()
        self._bare.clear()
        self._dir_moves += 1

    # -- round trips ------------------------------------------------------------

    def defer(self, query: str, params: Params = ()) -> None:
        """A write whose result nobody reads: held until the group next talks to
        the server (outside a group it runs at once)."""
        if not self._depth:
            self.db.execute(query.encode(), params)
            return
        self._held.append(self._mogrify(query, params))

    def _mogrify(self, query: str, params: Params) -> str:
        return _BatchCursor(self._db).mogrify(query.encode(), params)

    def _send(self, tail: list[str]) -> _BatchCursor:
        """The held writes and `tail` in one message; the cursor of the last."""
        statements, self._held = [*self._held, *tail], []
        if self._db.closed or self._db.broken:
            raise FsError(errno.EIO, f"lost the connection to {self.url}")
        return _BatchCursor(self._db).run(statements)

    def ask(self, query: str, params: Params = ()) -> psycopg.Cursor[Any]:
        """A statement whose result is read: in the same message as the held writes."""
        if self._held:
            return self._send([self._mogrify(query, params)])
        return self.db.execute(query.encode(), params)

    def apply_notices(self) -> None:
        """Drop from the caches what other hosts changed (their NOTIFYs so far)."""
        if self._listener is None or not self._listener.inbox:
            return
        changes = RemoteChanges()
        inbox = self._listener.inbox
        while inbox:
            note = inbox.popleft()
            if note.get("a"):
                changes.everything = True
                continue
            changes.inodes.update(int(i) for i in note.get("i", ()))
            changes.namespaces.update(str(n) for n in note.get("n", ()))
            entries = note.get("e", ())
            changes.entries.update((int(p), bytes.fromhex(n)) for p, n in entries)
            if entries:  # names moved: paths cached from them may be stale
                self._dir_moves += 1
        if changes.everything:
            self._drop_caches()
            changes.namespaces.update(self.pending_namespaces())
        for ino in changes.inodes:
            self._inodes.pop(ino, None)
            self._parents.pop(ino, None)
            self._xattrs.pop(ino, None)
            self._bare.discard(ino)
        for key in changes.entries:
            self._names.pop(key, None)
            self._complete.discard(key[0])
        self._touched |= changes.namespaces
        self._hosts.note(changes)

    @classmethod
    def open_readonly(cls, url: str, path: Path) -> PgIndex:
        """A read-only view for status and progress reports (no schema changes)."""
        return cls(url, path, readonly=True)

    def _where(self) -> str:
        return f"schema {self.schema} of {self.url}"

    def _check_server(self) -> None:
        version = self.db.info.server_version
        if version < MIN_SERVER:
            raise IndexUnusable(f"{self.url}: PostgreSQL {version} is too old (12 or newer)")
        row = self.db.execute("SELECT current_setting('fsync')").fetchone()
        if row is not None and row[0] != "on":
            log.warning(
                "%s runs with fsync=%s: commits do not survive a power loss", self.url, row[0]
            )

    def _found_version(self) -> int | None:
        """The schema's version; None for no motionfs schema yet (IndexUnusable
        when the schema holds tables that are not a motionfs index's)."""
        row = self.db.execute("SELECT to_regclass('schema_version')").fetchone()
        if row is None or row[0] is None:
            tables = self.db.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname=%s", (self.schema,)
            ).fetchone()
            if tables is not None and tables[0]:
                raise IndexUnusable(f"{self._where()} holds tables that are not a motionfs index")
            return None
        found = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise IndexUnusable(
                f"{self._where()} was made by a newer motionfs (schema {version}; this one "
                f"knows up to {SCHEMA_VERSION}): upgrade motionfs"
            )

    def _migrate(self) -> None:
        """Create the schema or bring it up to SCHEMA_VERSION; refuse a newer one."""
        with self.transaction():
            self.db.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK, self.schema)
            )
            self.db.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            version = self._found_version()
            self._check_version(version)
            if version is None:
                self.db.execute(
                    "CREATE TABLE schema_version (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
                version = 0
            for v in range(version + 1, SCHEMA_VERSION + 1):
                log.info("%s: applying schema migration %d", self._where(), v)
                self.db.execute(MIGRATIONS[v].encode())
                self.db.execute("INSERT INTO schema_version(version) VALUES (%s)", (v,))

    def _write_marker(self) -> None:
        """The host-local file naming where this index lives (no password)."""
        text = json.dumps({"engine": "postgresql", "url": self.url, "schema": self.schema})
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists() or self.path.read_text() != text:
                self.path.write_text(text + "\n")
        except OSError as e:
            log.warning("cannot write %s: %s", self.path, e.strerror)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; nested use joins the outer one. Its BEGIN and
        writes are held (`defer`) and sent with its first read or its COMMIT."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        db = self.db
        self._depth = 1
        self.notes.clear()
        self.locked_namespaces.clear()
        self._held = ["BEGIN"]
        try:
            try:
                yield
                if self.notes:  # delivered to the other hosts when this commits
                    self.defer(
                        "SELECT pg_notify(%s, %s)",
                        (channel_of(self.schema), self.notes.payload(self.me)),
                    )
                if self._held != ["BEGIN"]:  # nothing held and nothing sent: no trip
                    done = self._send(["COMMIT"])
                    if done.statusmessage != "COMMIT":  # an error was caught and ignored
                        raise FsError(errno.EIO, f"the write group failed: {done.statusmessage}")
                self._held = []
            except BaseException:
                self._held = []
                self._drop_caches()  # they may hold rolled-back changes
                self._roll_back(db)
                raise
        except psycopg.errors.DiskFull as e:
            # The operation fails, not the daemon: its caller answers ENOSPC.
            self.on_full()
            raise FsError(errno.ENOSPC, "the index database's disk is full") from e
        except psycopg.errors.UniqueViolation as e:
            if e.diag.constraint_name != "entries_pkey":
                raise FsError(errno.EIO, f"the index at {self.url} refused a change: {e}") from e
            # Another host made the same name a moment ago (before its notice came).
            raise FsError(errno.EEXIST, f"made meanwhile by another host: {e}") from e
        except psycopg.errors.DivisionByZero as e:  # unlink's check, below
            raise FsError(errno.ESTALE, "changed meanwhile by another host") from e
        except psycopg.OperationalError as e:
            raise FsError(errno.EIO, f"the index at {self.url} failed: {e}") from e
        finally:
            self._depth = 0
            self.notes.clear()

    def _roll_back(self, db: psycopg.Connection[Any]) -> None:
        """End a failed group; a connection that cannot is closed (the next call
        connects again), so no later group commits what this one left."""
        if db.broken or db.closed or db.info.transaction_status == IDLE:
            return
        with contextlib.suppress(psycopg.Error, FsError):
            db.execute("ROLLBACK")
        if db.info.transaction_status != IDLE:
            db.close()

    def sync(self) -> None:
        """Wait until every commit so far is on the server's disk: a commit that
        waits for its own log flush covers every commit before it (it must
        write to the log: a transaction that wrote nothing commits without
        waiting)."""
        with self.transaction():
            self.defer("SET LOCAL synchronous_commit = on")
            self.defer(
                "INSERT INTO meta(key, value) VALUES ('synced_at', now()::text) "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value"
            )

    def checkpoint_catalog(self) -> CheckpointCatalog:
        """The checkpoint records, in this schema and its transactions."""
        return PgCheckpoints(self)

    # -- meta -----------------------------------------------------------------

    def integrity_errors(self) -> list[str]:
        """What is inconsistent in the schema: a sequence behind the numbers it
        handed out (it would give one again) or an unknown schema version."""
        errors: list[str] = []
        version = self._found_version()
        if version != SCHEMA_VERSION:
            errors.append(f"schema version {version}, expected {SCHEMA_VERSION}")
        for seq, table, column in (
            ("inode_numbers", "inodes", "ino"),
            ("journal_seq", "journal", "seq"),
            ("journal_seq", "parked", "seq"),
            ("checkpoint_ids", "checkpoints", "cp_id"),
            ("cp_entry_ids", "cp_entries", "eid"),
        ):
            row = self.db.execute(
                f"SELECT (SELECT max({column}) FROM {table}), "
                f"(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq})"
            ).fetchone()
            assert row is not None
            if row[0] is not None and row[0] > row[1]:
                errors.append(f"sequence {seq} ({row[1]}) is behind {table}.{column} ({row[0]})")
        return errors

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
            (key, value),
        )

    # -- namespaces -------------------------------------------------------------

    def add_namespace(self, record: NamespaceRecord) -> None:
        self.db.execute(
            "INSERT INTO namespaces(ns_id, record) VALUES (%s, %s)",
            (record.ns_id, record.model_dump_json()),
        )

    def namespace(self, ns_id: str) -> NamespaceRecord | None:
        row = self.db.execute("SELECT record FROM namespaces WHERE ns_id=%s", (ns_id,)).fetchone()
        return None if row is None else NamespaceRecord.model_validate_json(row[0])

    def namespaces(self) -> list[tuple[NamespaceRecord, str]]:
        rows = self.db.execute("SELECT record, state FROM namespaces ORDER BY ns_id")
        return [(NamespaceRecord.model_validate_json(r), str(s)) for r, s in rows]

    def namespace_count(self) -> int:
        row = self.db.execute("SELECT count(*) FROM namespaces").fetchone()
        assert row is not None
        return int(row[0])

    def namespace_state(self, ns_id: str) -> str | None:
        row = self.db.execute("SELECT state FROM namespaces WHERE ns_id=%s", (ns_id,)).fetchone()
        return None if row is None else str(row[0])

    def set_namespace_state(self, ns_id: str, state: str) -> None:
        self.db.execute("UPDATE namespaces SET state=%s WHERE ns_id=%s", (state, ns_id))

    def update_namespace(self, record: NamespaceRecord) -> None:
        self.db.execute(
            "UPDATE namespaces SET record=%s WHERE ns_id=%s",
            (record.model_dump_json(), record.ns_id),
        )

    def remove_namespace(self, ns_id: str) -> None:
        """Forget the namespace and its motion metadata."""
        self.db.execute("DELETE FROM namespaces WHERE ns_id=%s", (ns_id,))
        self.db.execute("DELETE FROM motion_meta WHERE ns_id=%s", (ns_id,))

    def get_motion_meta(self, ns_id: str) -> str | None:
        row = self.db.execute("SELECT json FROM motion_meta WHERE ns_id=%s", (ns_id,)).fetchone()
        return None if row is None else str(row[0])

    def set_motion_meta(self, ns_id: str, text: str) -> None:
        self.db.execute(
            "INSERT INTO motion_meta(ns_id, json) VALUES (%s, %s) "
            "ON CONFLICT (ns_id) DO UPDATE SET json=EXCLUDED.json",
            (ns_id, text),
        )

    # -- inodes -----------------------------------------------------------------

    def get(self, ino: int) -> Inode | None:
        """An inode; the returned object is shared and must not be modified."""
        self.apply_notices()
        inode = self._inodes.get(ino)
        if inode is not None:
            return inode
        row = self.ask(f"SELECT {INODE_COLUMNS} FROM inodes WHERE ino=%s", (ino,)).fetchone()
        if row is None:
            return None
        return self._cache(_inode(row))

    def _cache(self, inode: Inode) -> Inode:
        """Keep `inode` in the inode cache, which never holds more than
        INODE_CACHE_MAX (emptied when full: memory stays bounded)."""
        if len(self._inodes) >= INODE_CACHE_MAX and inode.ino not in self._inodes:
            self._inodes.clear()
            self._parents.clear()
        self._inodes[inode.ino] = inode
        return inode

    @staticmethod
    def _columns(fields: dict[str, object]) -> list[str]:
        unknown = set(fields) - INODE_FIELDS
        if unknown:
            raise TypeError(f"not inode fields: {sorted(unknown)}")
        return list(fields)

    def create_inode(self, **fields: object) -> Inode:
        """A new inode from Inode fields; a new number unless `ino` is given."""
        self._columns(fields)
        given = "ino" in fields
        row = {**fields} if given else {"ino": self._new_ino(), **fields}
        marks = ", ".join("%s" for _ in row)
        self.defer(f"INSERT INTO inodes({', '.join(row)}) VALUES ({marks})", tuple(row.values()))
        inode = inode_of(dict(Inode.model_validate(row)))  # a wrong field fails here
        if given:  # the layout's fixed inodes: never hand this number out again
            self.db.execute(
                "SELECT setval('inode_numbers', greatest(%s, "
                "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM inode_numbers)))",
                (inode.ino,),
            )
            found = self.get(inode.ino)
            assert found is not None
            return found
        if len(self._bare) >= INODE_CACHE_MAX or len(self._complete) >= INODE_CACHE_MAX:
            self._bare.clear()
            self._complete.clear()
        self._cache(inode)
        self._parents[inode.ino] = []  # a new number: nothing links to it yet
        self._bare.add(inode.ino)  # nor has it xattrs
        if inode.is_dir:
            self._complete.add(inode.ino)  # nor names
        return inode

    def _new_ino(self) -> int:
        if not self._free_inos:
            self._free_inos = self._numbers("inode_numbers")
        return self._free_inos.pop()

    def update(self, ino: int, **fields: object) -> None:
        sets = ", ".join(f"{k}=%s" for k in self._columns(fields))
        self.defer(f"UPDATE inodes SET {sets} WHERE ino=%s", (*fields.values(), ino))
        self.notes.inodes.add(ino)
        cached = self._inodes.get(ino)
        if cached is not None:  # a new object: callers may hold the old one
            self._inodes[ino] = changed_inode(cached, fields)

    def delete_inode(self, ino: int) -> None:
        """Forget the inode and its xattrs."""
        self.defer("DELETE FROM inodes WHERE ino=%s", (ino,))
        self.defer("DELETE FROM xattrs WHERE ino=%s", (ino,))
        self.defer("DELETE FROM held WHERE ino=%s", (ino,))
        self._inodes.pop(ino, None)
        self._xattrs.pop(ino, None)
        self._bare.discard(ino)
        self.notes.inodes.add(ino)

    def new_generation(self, ino: int, after: int) -> int:
        """From one sequence for every host, a block at a time: no two hosts
        seal the same generation."""
        while True:
            while self._free_gens and self._free_gens[-1] <= after:
                self._free_gens.pop()  # another host's block was drawn after ours
            if self._free_gens:
                return self._free_gens.pop()
            self._free_gens = self._numbers("content_gens")
            if self._free_gens[0] <= after:  # numbers given before the sequence (a migration)
                self.db.execute(
                    "SELECT setval('content_gens', greatest(%s, last_value)) FROM content_gens",
                    (after,),
                )  # never back: other hosts hold blocks below last_value

    def _numbers(self, sequence: str) -> list[int]:
        """NUMBER_BLOCK numbers from a sequence, the smallest last (one round
        trip for a block; a crash skips the rest of it, which is harmless)."""
        rows = self.ask(
            f"SELECT nextval('{sequence}') FROM generate_series(1, %s)", (NUMBER_BLOCK,)
        ).fetchall()
        return sorted((int(r[0]) for r in rows), reverse=True)

    def _inodes_where(self, where: str, args: tuple[object, ...] = ()) -> list[Inode]:
        rows = self.db.execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE {where}", args)
        return [_inode(r) for r in rows]

    def orphans(self) -> list[Inode]:
        """Inodes with no links left that no live host holds."""
        return self._inodes_where(
            "nlink=0 AND NOT EXISTS (SELECT 1 FROM held h JOIN sessions s ON s.sid=h.sid "
            "WHERE h.ino=inodes.ino AND s.beat_at >= now() - make_interval(secs => %s)) "
            "ORDER BY ino",
            (SESSION_TIMEOUT,),
        )

    def hold(self, ino: int) -> None:
        self.defer(
            "INSERT INTO held(ino, sid) VALUES (%s, %s) ON CONFLICT DO NOTHING", (ino, self.me)
        )

    def file_inodes(self) -> list[Inode]:
        """Every linked regular file that lives in a namespace (for fsck)."""
        return self._inodes_where(
            "ns_id IS NOT NULL AND nlink > 0 AND (mode & %s) = %s ORDER BY ino",
            (stat.S_IFMT(0o170000), stat.S_IFREG),
        )

    def nodes_of_namespace(self, ns_id: str) -> list[Inode]:
        return self._inodes_where("ns_id=%s ORDER BY ino", (ns_id,))

    def inodes_with_sha(self, ns_id: str, sha: str) -> list[Inode]:
        return self._inodes_where("ns_id=%s AND sha256=%s ORDER BY ino", (ns_id, sha))

    def project_of(self, ns_id: str) -> Inode | None:
        """The project folder whose namespace this is."""
        found = self._inodes_where("ns_id=%s AND role='project' LIMIT 1", (ns_id,))
        return found[0] if found else None

    def inodes_with_content(self) -> Iterator[tuple[int, int]]:
        """(ino, content_gen) of every inode with content (the cache keeps these)."""
        rows = self.db.execute("SELECT ino, content_gen FROM inodes WHERE content_gen > 0")
        for ino, gen in rows:
            yield int(ino), int(gen)

    # -- entries ------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> int | None:
        self.apply_notices()
        key = (parent, name)
        if key in self._names:
            return self._names[key]
        if parent in self._complete:
            return None
        row = self.ask("SELECT ino FROM entries WHERE parent=%s AND name=%s", key).fetchone()
        self._make_room(1)
        found = self._names[key] = None if row is None else int(row[0])
        return found

    def _make_room(self, names: int) -> None:
        if len(self._names) + names >= INODE_CACHE_MAX:
            self._names.clear()
            self._complete.clear()

    def link(self, parent: int, name: bytes, ino: int) -> None:
        self.defer(
            "INSERT INTO entries(parent, name, ino) VALUES (%s, %s, %s)", (parent, name, ino)
        )
        self._names[(parent, name)] = ino
        links = self._parents.get(ino)
        if links is not None:  # a new list: callers may hold the old one
            self._parents[ino] = sorted([*links, (parent, name)])
        self.notes.inodes.add(ino)
        self.notes.entries.add((parent, name))

    def unlink(self, parent: int, name: bytes) -> None:
        ino = self.lookup(parent, name)
        if ino is None:
            return
        # The name must still be this inode's: another host may have moved
        # another file onto it a moment ago. If not, 1/0 fails the group (ESTALE).
        self.defer(
            "WITH gone AS (DELETE FROM entries WHERE parent=%s AND name=%s AND ino=%s "
            "RETURNING 1) SELECT 1 / count(*) FROM gone",
            (parent, name, ino),
        )
        self._names[(parent, name)] = None
        self._parents.pop(ino, None)
        self.notes.inodes.add(ino)
        self.notes.entries.add((parent, name))
        node = self._inodes.get(ino)
        if node is None or node.is_dir:
            self._dir_moves += 1

    def _links(
        self, where: str, args: tuple[object, ...], order: str = ""
    ) -> list[tuple[int, bytes, Inode]]:
        """(parent, name, inode) of the entries matching `where`, in one query."""
        rows = self.db.execute(
            f"SELECT e.parent, e.name, {JOINED_INODE_COLUMNS} FROM entries e "
            f"JOIN inodes i ON i.ino=e.ino WHERE {where} {order}",
            args,
        )
        return [(int(r[0]), bytes(r[1]), _inode(r[2:])) for r in rows]

    def listing(self, parent: int) -> list[tuple[bytes, Inode]]:
        """A directory's entries with their inodes, in name order."""
        found = [
            (name, node)
            for _p, name, node in self._links("e.parent=%s", (parent,), "ORDER BY e.name")
        ]
        self._make_room(len(found))
        for name, node in found:  # a listing's lookups and getattrs need no trip
            self._names[(parent, name)] = node.ino
            if node.ino not in self._inodes:
                self._cache(node)
        self._complete.add(parent)  # and a miss in it neither
        return found

    def links_of_namespace(self, ns_id: str) -> list[tuple[int, bytes, Inode]]:
        """(parent, name, inode) of the folder or files whose own namespace this is."""
        return self._links(
            "i.ns_id=%s AND (i.role='project' OR (i.role='node' AND i.area<>'projects'))",
            (ns_id,),
            "ORDER BY e.parent, e.name",
        )

    def has_children(self, parent: int) -> bool:
        row = self.db.execute("SELECT 1 FROM entries WHERE parent=%s LIMIT 1", (parent,)).fetchone()
        return row is not None

    def parents(self, ino: int) -> list[tuple[int, bytes]]:
        """Every (parent, name) linking to `ino`, in a stable order (shared list)."""
        self.apply_notices()
        links = self._parents.get(ino)
        if links is None:
            rows = self.ask(
                "SELECT parent, name FROM entries WHERE ino=%s ORDER BY parent, name", (ino,)
            ).fetchall()
            if len(self._parents) >= INODE_CACHE_MAX:
                self._parents.clear()
            links = self._parents[ino] = [(int(p), bytes(n)) for p, n in rows]
        return links

    # -- xattrs -------------------------------------------------------------------

    def get_xattr(self, ino: int, name: bytes) -> bytes | None:
        """A value; misses are cached too (the kernel asks for security.capability
        before every write)."""
        self.apply_notices()
        if ino in self._bare:
            return None
        known = self._xattrs.get(ino)
        if known is not None and name in known:
            return known[name]
        row = self.ask("SELECT value FROM xattrs WHERE ino=%s AND name=%s", (ino, name)).fetchone()
        value = None if row is None else bytes(row[0])
        self._remember_xattr(ino, name, value)
        return value

    def _remember_xattr(self, ino: int, name: bytes, value: bytes | None) -> None:
        if len(self._xattrs) >= INODE_CACHE_MAX:
            self._xattrs.clear()
        self._xattrs.setdefault(ino, {})[name] = value

    def set_xattr(self, ino: int, name: bytes, value: bytes) -> None:
        self.notes.inodes.add(ino)
        self.defer(
            "INSERT INTO xattrs(ino, name, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (ino, name) DO UPDATE SET value=EXCLUDED.value",
            (ino, name, value),
        )
        self._bare.discard(ino)
        self._remember_xattr(ino, name, value)

    def remove_xattr(self, ino: int, name: bytes) -> bool:
        """Whether there was one to remove."""
        self.notes.inodes.add(ino)
        self._xattrs.pop(ino, None)
        cur = self.db.execute("DELETE FROM xattrs WHERE ino=%s AND name=%s", (ino, name))
        return cur.rowcount > 0

    def list_xattrs(self, ino: int) -> list[bytes]:
        rows = self.db.execute("SELECT name FROM xattrs WHERE ino=%s ORDER BY name", (ino,))
        return [bytes(r[0]) for r in rows]


def _conforms(index: PgIndex) -> MetaEngine:
    """Never called: mypy proves here that PgIndex keeps the MetaEngine contract
    (checkpoint_catalog's return type proves it for PgCheckpoints)."""
    return index


__all__ = ["SCHEMA_VERSION", "PgIndex", "redact", "split_url"]
