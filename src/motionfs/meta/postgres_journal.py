"""The PostgreSQL engine's journal table: store operations still to be applied.

The same queue as the SQLite engine's (`sqlite_journal`): every metadata change
enqueues the store work it implies in the same transaction, entries are applied
in seq order per namespace, and entries that can never succeed are parked until
unparked. Sequence numbers come from the `journal_seq` sequence, which never
hands out a number twice (not even after a rollback).

With several hosts, each entry names the session that queued it (`owner`:
the bytes of a put are in that host's cache), and an enqueue holds a lock on
its namespace until its group commits, so entries become visible in seq order
in each namespace whichever host queued them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from motionfs.meta.postgres_hosts import ChangeNotes
from motionfs.meta.records import JournalEntry

JOURNAL_SCHEMA = """
CREATE SEQUENCE journal_seq AS bigint;
CREATE TABLE journal (
    seq bigint PRIMARY KEY DEFAULT nextval('journal_seq'),
    ns_id text COLLATE "C" NOT NULL,
    op text NOT NULL,              -- see journal.Op
    ino bigint,
    path text COLLATE "C",
    path2 text COLLATE "C",
    durable boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
ALTER SEQUENCE journal_seq OWNED BY journal.seq;
CREATE INDEX journal_by_ns ON journal (ns_id, seq);
CREATE INDEX journal_by_ino ON journal (ino);
CREATE TABLE parked (              -- store operations that failed for good
    seq bigint PRIMARY KEY,        -- its journal seq
    ns_id text COLLATE "C" NOT NULL,
    op text NOT NULL,
    ino bigint,
    path text COLLATE "C",
    path2 text COLLATE "C",
    durable boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
"""

Params = tuple[object, ...] | dict[str, object]
ENTRY_COLUMNS = "seq, ns_id, op, ino, path, path2, durable, attempts, last_error, owner"
# The first half of the advisory lock each enqueue holds on its namespace.
NAMESPACE_LOCK = 0x6A726E6C  # "jrnl"


class PgJournal:
    """The journal's queries, mixed into PgIndex (same connection and
    transactions; pending_report joins the inodes table)."""

    _touched: set[str]  # namespaces whose journal moved lately (here or on another host)
    notes: ChangeNotes  # what the open write group changed, for the other hosts
    locked_namespaces: set[str]  # namespaces whose journal lock the open group holds
    me: str  # this host's session id
    # seq -> namespace of the entries next_ops returned, so that finishing one
    # needs no answer from the server.
    handed_out: dict[int, str]

    @property
    def db(self) -> psycopg.Connection[tuple[Any, ...]]:
        raise NotImplementedError  # PgIndex's connection

    def defer(self, query: str, params: Params = ()) -> None:
        raise NotImplementedError  # PgIndex's: sent with the group's next trip

    def ask(self, query: str, params: Params = ()) -> psycopg.Cursor[Any]:
        raise NotImplementedError  # PgIndex's: a statement whose answer is read

    def enqueue(
        self,
        ns_id: str,
        op: str,
        ino: int | None = None,
        path: str | None = None,
        path2: str | None = None,
        durable: bool = False,
    ) -> None:
        self._lock(ns_id)
        self.defer(
            "INSERT INTO journal(ns_id, op, ino, path, path2, durable, owner) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (ns_id, op, ino, path, path2, durable, self.me),
        )
        self._queued(ns_id)

    def replace_puts(self, ns_id: str, ino: int, paths: list[str], durable: bool) -> None:
        """Drop the pending uploads of `ino` and queue uploads to `paths`, durable
        if this one or a dropped one was: one statement, sent with the group."""
        self._lock(ns_id)
        self.defer(
            "WITH gone AS (DELETE FROM journal WHERE ino=%s AND op='put' RETURNING durable), "
            "gone_parked AS (DELETE FROM parked WHERE ino=%s AND op='put') "
            "INSERT INTO journal(ns_id, op, ino, path, durable, owner) "
            "SELECT %s, 'put', %s, u.p, %s OR coalesce((SELECT bool_or(durable) FROM gone), "
            "false), %s FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) ORDER BY u.n",
            (ino, ino, ns_id, ino, durable, self.me, paths),
        )
        self._queued(ns_id)

    def _lock(self, ns_id: str) -> None:
        """Take the namespace's journal lock before the group's first insert
        into it, held until the group commits: every seq is drawn under it. A
        statement of its own, sent in the same message as the insert."""
        if ns_id not in self.locked_namespaces:
            self.locked_namespaces.add(ns_id)
            self.defer("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (NAMESPACE_LOCK, ns_id))

    def _queued(self, ns_id: str) -> None:
        self._touched.add(ns_id)
        self.notes.namespaces.add(ns_id)

    def take_touched(self) -> set[str]:
        """Namespaces that got journal entries since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def _entries(self, table: str, where: str, args: tuple[object, ...] = ()) -> list[JournalEntry]:
        rows = self.db.execute(f"SELECT {ENTRY_COLUMNS} FROM {table} WHERE {where}", args)
        names = JournalEntry.model_fields.keys()
        return [JournalEntry.model_construct(**dict(zip(names, r, strict=True))) for r in rows]

    def next_ops(self, ns_id: str, limit: int) -> list[JournalEntry]:
        """The namespace's first `limit` pending entries, in order."""
        found = self._entries("journal", "ns_id=%s ORDER BY seq LIMIT %s", (ns_id, limit))
        if len(self.handed_out) > 100_000:
            self.handed_out.clear()
        self.handed_out.update((e.seq, e.ns_id) for e in found)
        return found

    def finish_op(self, seq: int) -> None:
        ns_id = self.handed_out.pop(seq, None)
        if ns_id is None:  # not handed out here: which namespace it was is the answer
            rows = self.ask("DELETE FROM journal WHERE seq=%s RETURNING ns_id", (seq,))
            self.notes.namespaces.update(str(r[0]) for r in rows)
            return
        self.defer("DELETE FROM journal WHERE seq=%s", (seq,))
        self.notes.namespaces.add(ns_id)

    def fail_op(self, seq: int, error: str) -> None:
        self.defer(
            "UPDATE journal SET attempts=attempts+1, last_error=%s WHERE seq=%s", (error, seq)
        )

    def park_op(self, seq: int, error: str) -> None:
        """Move an entry that can never succeed out of the queue (kept for status and fsck)."""
        self.db.execute(
            f"INSERT INTO parked({ENTRY_COLUMNS}) SELECT seq, ns_id, op, ino, path, path2, "
            "durable, attempts + 1, %s, owner FROM journal WHERE seq=%s "
            "ON CONFLICT (seq) DO UPDATE SET attempts=EXCLUDED.attempts, "
            "last_error=EXCLUDED.last_error",
            (error, seq),
        )
        rows = self.db.execute("DELETE FROM journal WHERE seq=%s RETURNING ns_id", (seq,))
        self.notes.namespaces.update(str(r[0]) for r in rows)

    def parked_ops(self) -> list[JournalEntry]:
        return self._entries("parked", "true ORDER BY seq")

    def failing_ops(self) -> list[JournalEntry]:
        """Queued entries that have failed at least once (still being retried)."""
        return self._entries("journal", "attempts > 0 ORDER BY seq")

    def parked_put(self, ino: int) -> str | None:
        """Why the latest upload of `ino` failed for good, if it did."""
        row = self.db.execute(
            "SELECT last_error FROM parked WHERE ino=%s AND op='put' ORDER BY seq DESC LIMIT 1",
            (ino,),
        ).fetchone()
        return None if row is None else str(row[0])

    def parked_report(self) -> tuple[int, str | None]:
        """(entries that failed for good, the latest reason) for status."""
        row = self.db.execute(
            "SELECT count(*), (SELECT last_error FROM parked ORDER BY seq DESC LIMIT 1) FROM parked"
        ).fetchone()
        assert row is not None
        return int(row[0]), None if row[1] is None else str(row[1])

    def unpark_ops(self) -> int:
        """Queue parked entries again (after their cause was fixed); how many.
        One insert per entry, in seq order, so their new seqs keep that order."""
        rows = self.db.execute(
            "DELETE FROM parked RETURNING seq, ns_id, op, ino, path, path2, durable, owner"
        ).fetchall()
        rows.sort(key=lambda r: int(r[0]))
        namespaces = sorted({str(r[1]) for r in rows})
        for ns_id in namespaces:
            self._lock(ns_id)
        with self.db.cursor() as cur:  # the locks go first (`db` sends what is held)
            cur.executemany(
                "INSERT INTO journal(ns_id, op, ino, path, path2, durable, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [r[1:] for r in rows],
            )
        for ns_id in namespaces:
            self._queued(ns_id)
        return len(rows)

    def drop_ops(self, ns_id: str) -> None:
        self.db.execute("DELETE FROM journal WHERE ns_id=%s", (ns_id,))
        self.db.execute("DELETE FROM parked WHERE ns_id=%s", (ns_id,))

    def pending_namespaces(self) -> list[str]:
        # A loose index scan over (ns_id, seq): one probe per namespace, not a
        # pass over the thousands of entries a burst can queue.
        rows = self.db.execute(
            "WITH RECURSIVE n(ns) AS (SELECT min(ns_id) FROM journal UNION ALL "
            "SELECT (SELECT min(ns_id) FROM journal WHERE ns_id > n.ns) FROM n "
            "WHERE n.ns IS NOT NULL) SELECT ns FROM n WHERE ns IS NOT NULL"
        )
        return [str(r[0]) for r in rows]

    def pending_count(self, ns_id: str | None = None, owner: str | None = None) -> int:
        """Pending entries (of one namespace; with `owner`, only that session's)."""
        row = self.db.execute(
            "SELECT count(*) FROM journal WHERE (%(ns)s::text IS NULL OR ns_id=%(ns)s) "
            "AND (%(owner)s::text IS NULL OR owner=%(owner)s)",
            {"ns": ns_id, "owner": owner},
        ).fetchone()
        assert row is not None
        return int(row[0])

    def backlog(self) -> int:
        """About how many entries are pending (an upper bound, from two index probes)."""
        row = self.db.execute("SELECT max(seq) - min(seq) + 1 FROM journal").fetchone()
        assert row is not None
        return int(row[0] or 0)

    def pending_report(self) -> tuple[int, int, str | None]:
        """(entries, bytes of pending uploads, the latest failure) for status:
        this host's (its host id), which is what its daemon has to do."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN j.op='put' THEN i.size END), 0), "
            "(SELECT last_error FROM journal WHERE last_error IS NOT NULL "
            " AND (owner=%(me)s OR owner IS NULL) ORDER BY attempts DESC, seq LIMIT 1) "
            "FROM journal j LEFT JOIN inodes i ON i.ino = j.ino "
            "WHERE j.owner=%(me)s OR j.owner IS NULL",
            {"me": self.me},
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), None if row[2] is None else str(row[2])

    def pending_for_paths(self, ns_id: str, ino: int, paths: list[str]) -> bool:
        """Whether a pending entry of `ns_id` may change what the store holds at
        `paths` (an upload of `ino`, or an entry on one of the paths or a parent)."""
        if self.db.execute(
            "SELECT 1 FROM journal WHERE ns_id=%s AND (ino=%s OR op='destroy') LIMIT 1",
            (ns_id, ino),
        ).fetchone():
            return True
        if not paths:
            return False
        # p is under `path` when p starts with path || '/'.
        row = self.db.execute(
            "SELECT 1 FROM journal j, unnest(%s::text[]) AS p(p) WHERE j.ns_id=%s AND ("
            "j.path=p.p OR left(p.p, length(j.path) + 1) = j.path || '/' OR "
            "(j.op IN ('move', 'copy', 'keep') AND "
            "(j.path2=p.p OR left(p.p, length(j.path2) + 1) = j.path2 || '/'))) LIMIT 1",
            (paths, ns_id),
        ).fetchone()
        return row is not None

    def last_seq(self, ns_id: str) -> int | None:
        row = self.db.execute("SELECT max(seq) FROM journal WHERE ns_id=%s", (ns_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def ino_has_pending(self, ino: int) -> bool:
        row = self.db.execute("SELECT 1 FROM journal WHERE ino=%s LIMIT 1", (ino,)).fetchone()
        return row is not None

    def pending_puts(self, ino: int) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "SELECT seq, path FROM journal WHERE ino=%s AND op='put' ORDER BY seq", (ino,)
        )
        return [(int(s), str(p)) for s, p in rows]

    def drop_puts(self, ino: int) -> bool:
        """Drop pending uploads of `ino`; True if one of them was durable (fsync)."""
        rows = self.db.execute(
            "WITH parked_puts AS (DELETE FROM parked WHERE ino=%(ino)s AND op='put') "
            "DELETE FROM journal WHERE ino=%(ino)s AND op='put' RETURNING durable",
            {"ino": ino},
        ).fetchall()
        return any(bool(d) for (d,) in rows)
