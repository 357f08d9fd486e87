"""The SQLite engine's journal table: store operations still to be applied.

Every metadata change enqueues the store work it implies in the same
transaction, so a crash leaves the index and its queue in agreement; the
journal applies entries in seq order per namespace. Entries that can never
succeed are parked (kept for status and fsck) until unparked.
"""

from __future__ import annotations

import sqlite3

from motionfs.meta.records import JOURNAL_FIELDS, JournalEntry

JOURNAL_SCHEMA = """
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


class JournalTable:
    """The journal's queries, mixed into the SQLite Index (same connection and
    transactions; pending_report joins the inodes table)."""

    db: sqlite3.Connection
    _touched: set[str]  # namespaces given journal entries lately

    def enqueue(
        self,
        ns_id: str,
        op: str,
        ino: int | None = None,
        path: str | None = None,
        path2: str | None = None,
        durable: bool = False,
    ) -> None:
        self.db.execute(
            "INSERT INTO journal(ns_id, op, ino, path, path2, durable) VALUES (?, ?, ?, ?, ?, ?)",
            (ns_id, op, ino, path, path2, int(durable)),
        )
        self._touched.add(ns_id)

    def replace_puts(self, ns_id: str, ino: int, paths: list[str], durable: bool) -> None:
        durable = self.drop_puts(ino) or durable
        for path in paths:
            self.enqueue(ns_id, "put", ino=ino, path=path, durable=durable)

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
        return [
            JournalEntry.model_construct(**dict(zip(JOURNAL_FIELDS, r, strict=True))) for r in rows
        ]

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

    def pending_count(self, ns_id: str | None = None, owner: str | None = None) -> int:
        """Pending entries (of one namespace); one host queued them all, whatever `owner`."""
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
