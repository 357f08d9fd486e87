"""Copy a SQLite index into a new PostgreSQL schema (`motionfs migrate`).

Every table goes across as it is: namespaces, inodes, entries, xattrs, motion
metadata, the meta keys (store identity, sandbox, the store's address), the
journal and the parked entries, checkpoints with their entries, xattrs and
objects. Inode numbers, journal seqs and checkpoint and entry ids keep their
values, because the cache names files `<ino>.<gen>` and the journal names
inodes; each sequence is set past the highest number the SQLite index ever
handed out (`sqlite_sequence`, which remembers deleted rows too), so none is
given out twice.

The PostgreSQL side is one transaction, schema creation included: a failure
(a refused schema, a full disk, a lost connection) leaves the schema as it was.
The schema must be new or an empty motionfs index (one a refused mount left
behind); anything holding rows, or tables that are not motionfs's, is refused.
Pending journal entries are carried over, not refused: they name inodes by
number and cache files in the index folder, and both stay the same, so the
next mount on PostgreSQL resumes them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from pydantic import BaseModel

from motionfs.meta.engine import IndexUnusable
from motionfs.meta.postgres import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    redact,
    split_url,
)
from motionfs.meta.sqlite import Index

Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]

# (table, its columns): the tables both engines share, in the order they are copied.
JOURNAL_COLUMNS = "seq ns_id op ino path path2 durable attempts last_error"
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (table, tuple(columns.split()))
    for table, columns in (
        ("meta", "key value"),
        ("namespaces", "ns_id record state"),
        (
            "inodes",
            "ino mode uid gid nlink size rdev atime_ns mtime_ns ctime_ns target role area "
            "scope ns_id content_gen stored_gen sha256",
        ),
        ("entries", "parent name ino"),
        ("xattrs", "ino name value"),
        ("motion_meta", "ns_id json"),
        ("journal", JOURNAL_COLUMNS),
        ("parked", JOURNAL_COLUMNS),
        (
            "checkpoints",
            "cp_id ns_id name description created_ns file_count logical_size complete",
        ),
        (
            "cp_entries",
            "eid cp_id parent_eid name mode uid gid nlink size rdev atime_ns mtime_ns "
            "ctime_ns target sha256",
        ),
        ("cp_xattrs", "eid name value"),
        ("objects", "ns_id sha256 size"),
    )
)
# What only hosts sharing an index have: it starts empty (the copied journal
# belongs to the first host that mounts, which takes its ownerless entries).
SHARED_ONLY_TABLES = frozenset({"sessions", "held"})
SHARED_ONLY_COLUMNS = frozenset({("journal", "owner"), ("parked", "owner")})
# SQLite keeps these as 0/1 integers, PostgreSQL as booleans.
BOOLEANS = {("journal", "durable"), ("parked", "durable"), ("checkpoints", "complete")}
# bytea on PostgreSQL: a value SQLite holds as text goes across as its bytes.
BYTEAS = {
    ("inodes", "target"),
    ("entries", "name"),
    ("xattrs", "name"),
    ("xattrs", "value"),
    ("cp_entries", "name"),
    ("cp_entries", "target"),
    ("cp_xattrs", "name"),
    ("cp_xattrs", "value"),
}
# Meta keys only the SQLite engine uses (PostgreSQL has its schema_version table).
SQLITE_ONLY_META = {"schema_version", "last_sync"}
# (sequence, the SQLite AUTOINCREMENT tables and (table, column)s whose numbers it gives)
SEQUENCES = (
    ("inode_numbers", ("inodes",), (("inodes", "ino"),)),
    ("journal_seq", ("journal",), (("journal", "seq"), ("parked", "seq"))),
    ("checkpoint_ids", ("checkpoints",), (("checkpoints", "cp_id"),)),
    ("cp_entry_ids", ("cp_entries",), (("cp_entries", "eid"),)),
    # SQLite numbers generations per inode; the shared sequence starts past them all.
    ("content_gens", (), (("inodes", "content_gen"),)),
)
BATCH = 2000


class MigrationRefused(Exception):
    """The migration cannot run; the message is one line, nothing was changed."""


class MigrateResult(BaseModel):
    """What was copied, for the command's report."""

    url: str  # without a password
    schema_name: str
    rows: dict[str, int]
    pending: int  # journal entries carried over: the next mount applies them
    parked: int  # entries that failed for good, for fsck --repair as before


def read_source(path: Path) -> None:
    """Refuse a SQLite index that cannot be copied whole: missing, damaged, or
    made by a newer motionfs. Opening it also brings an older one up to date."""
    if not path.is_file():
        raise MigrationRefused(f"no SQLite index at {path}: nothing to migrate")
    try:
        index = Index(path)
    except IndexUnusable as e:
        raise MigrationRefused(str(e)) from e
    except sqlite3.DatabaseError as e:
        raise MigrationRefused(
            f"index {path} is damaged ({e}): repair it with motionfs fsck --repair first"
        ) from e
    try:
        errors = index.integrity_errors()
    finally:
        index.close()
    if errors:
        raise MigrationRefused(
            f"index {path} is damaged ({errors[0]}): repair it with motionfs fsck --repair first"
        )


def copy_index(source: Path, url: str, progress: Progress | None = None) -> MigrateResult:
    """Copy the SQLite index at `source` into the schema `url` names, in one
    PostgreSQL transaction. MigrationRefused (one line) when it cannot."""
    try:
        conninfo, schema = split_url(url)
    except ValueError as e:
        raise MigrationRefused(f"{redact(url)}: {e}") from e
    read_source(source)
    where = f"schema {schema} of {redact(url)}"
    try:
        target = psycopg.connect(
            conninfo,
            autocommit=True,
            options=f"-c search_path={schema} -c synchronous_commit=on",
            application_name="motionfs migrate",
        )
    except psycopg.OperationalError as e:
        raise MigrationRefused(f"cannot reach PostgreSQL at {redact(url)}: {_line(e)}") from e
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows: dict[str, int] = {}
        with target.transaction():
            _prepare_schema(target, schema, where)
            for table, columns in TABLES:
                rows[table] = _copy_table(db, target, table, columns, progress)
            for seq, autoincrement, numbered in SEQUENCES:
                _set_sequence(db, target, seq, autoincrement, numbered)
        return MigrateResult(
            url=redact(url),
            schema_name=schema,
            rows=rows,
            pending=rows["journal"],
            parked=rows["parked"],
        )
    except psycopg.errors.DiskFull as e:
        raise MigrationRefused(f"{where}: the database's disk is full; nothing changed") from e
    except psycopg.Error as e:
        raise MigrationRefused(f"{where}: {_line(e)}; nothing changed") from e
    finally:
        db.close()
        target.close()


def _prepare_schema(target: psycopg.Connection[Any], schema: str, where: str) -> None:
    """Create the schema (or take an empty motionfs one), at SCHEMA_VERSION."""
    target.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK, schema))
    target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    row = target.execute("SELECT to_regclass('schema_version')").fetchone()
    if row is None or row[0] is None:
        found = target.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname=%s", (schema,)
        ).fetchone()
        if found is not None and found[0]:
            raise MigrationRefused(f"{where} holds tables that are not a motionfs index")
        target.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = 0
    else:
        got = target.execute("SELECT max(version) FROM schema_version").fetchone()
        version = 0 if got is None or got[0] is None else int(got[0])
    if version > SCHEMA_VERSION:
        raise MigrationRefused(
            f"{where} was made by a newer motionfs (schema {version}): upgrade motionfs"
        )
    for v in range(version + 1, SCHEMA_VERSION + 1):
        target.execute(MIGRATIONS[v].encode())
        target.execute("INSERT INTO schema_version(version) VALUES (%s)", (v,))
    for table, _columns in TABLES:
        if table == "meta":  # a refused mount leaves its sandbox id: replaced below
            continue
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        held = target.execute(query).fetchone()
        if held is not None and held[0]:
            raise MigrationRefused(
                f"{where} already holds a motionfs index ({table} has rows): "
                "name a new schema (?schema=NAME)"
            )
    target.execute("DELETE FROM meta")


def _copy_table(
    db: sqlite3.Connection,
    target: psycopg.Connection[Any],
    table: str,
    columns: tuple[str, ...],
    progress: Progress | None,
) -> int:
    """COPY one table's rows across; how many."""
    cols = ", ".join(columns)
    where = " WHERE key NOT IN ('schema_version', 'last_sync')" if table == "meta" else ""
    (total,) = db.execute(f"SELECT count(*) FROM {table}{where}").fetchone()
    booleans = [i for i, c in enumerate(columns) if (table, c) in BOOLEANS]
    byteas = [i for i, c in enumerate(columns) if (table, c) in BYTEAS]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    done = 0
    with (
        _steps(progress, f"copying {table}", int(total)) as advance,
        target.cursor() as cur,
        cur.copy(copy_sql) as copy,
    ):
        source = db.execute(f"SELECT {cols} FROM {table}{where}")
        while batch := source.fetchmany(BATCH):
            for raw in batch:
                row = list(raw)
                for i in booleans:
                    row[i] = bool(row[i])
                for i in byteas:
                    if isinstance(row[i], str):
                        row[i] = row[i].encode("utf-8", "surrogateescape")
                copy.write_row(row)
            done += len(batch)
            advance(len(batch))
    return done


def _set_sequence(
    db: sqlite3.Connection,
    target: psycopg.Connection[Any],
    seq: str,
    autoincrement: tuple[str, ...],
    numbered: tuple[tuple[str, str], ...],
) -> None:
    """Set `seq` past every number SQLite handed out (deleted rows included)."""
    highest = 0
    for table in autoincrement:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        if row is not None and row[0] is not None:
            highest = max(highest, int(row[0]))
    for table, column in numbered:
        (top,) = db.execute(f"SELECT max({column}) FROM {table}").fetchone()
        if top is not None:
            highest = max(highest, int(top))
    if highest:
        target.execute("SELECT setval(%s, %s)", (seq, highest))


def advance_sequences(url: str) -> list[str]:
    """Set every sequence of the URL's schema that is behind the numbers in its
    tables past them (fsck's repair: it would hand a number out again); what it
    changed, one line each."""
    conninfo, schema = split_url(url)
    changed: list[str] = []
    try:
        with (
            psycopg.connect(
                conninfo,
                autocommit=True,
                options=f"-c search_path={schema}",
                application_name="motionfs fsck",
            ) as db,
            db.transaction(),
        ):
            found = db.execute("SELECT to_regclass('schema_version')").fetchone()
            if found is None or found[0] is None:
                return changed  # no motionfs index here (yet): nothing to advance
            for seq, _autoincrement, numbered in SEQUENCES:
                top = 0
                for table, column in numbered:
                    query = sql.SQL("SELECT max({}) FROM {}").format(
                        sql.Identifier(column), sql.Identifier(table)
                    )
                    row = db.execute(query).fetchone()
                    if row is not None and row[0] is not None:
                        top = max(top, int(row[0]))
                got = db.execute(
                    sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}").format(
                        sql.Identifier(seq)
                    )
                ).fetchone()
                now = 0 if got is None else int(got[0])
                if top > now:
                    db.execute("SELECT setval(%s, %s)", (seq, top))
                    changed.append(f"sequence {seq} moved from {now} past {top}")
    except psycopg.Error as e:
        raise MigrationRefused(f"schema {schema} of {redact(url)}: {_line(e)}") from e
    return changed


def set_schema_aside(url: str) -> str:
    """Rename the URL's schema out of the way (kept, never dropped), so that a
    new index can be built under its name; says where it went."""
    conninfo, schema = split_url(url)
    aside = f"{schema[:40]}_set_aside_{time.strftime('%Y%m%dt%H%M%S')}"
    try:
        with psycopg.connect(conninfo, autocommit=True, application_name="motionfs") as db:
            db.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(aside)
                )
            )
    except psycopg.Error as e:
        raise MigrationRefused(f"cannot rename schema {schema} of {redact(url)}: {_line(e)}") from e
    return f"schema {aside} of {redact(url)}"


def _line(e: BaseException) -> str:
    """A driver's message (libpq's spans lines) as one line."""
    return " ".join(str(e).split()) or type(e).__name__


class _NoBar:
    def __enter__(self) -> Callable[[int], None]:
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None


def _steps(
    progress: Progress | None, label: str, total: int
) -> AbstractContextManager[Callable[[int], None]]:
    """A progress bar for `label` when the caller gave one (and there is work)."""
    if progress is None or total == 0:
        return _NoBar()
    return progress(label, total)


def tables() -> Iterator[tuple[str, tuple[str, ...]]]:
    """The tables copied and their columns (tests compare them with both schemas)."""
    yield from TABLES


__all__ = [
    "MigrateResult",
    "MigrationRefused",
    "advance_sequences",
    "copy_index",
    "read_source",
    "set_schema_aside",
    "tables",
]
