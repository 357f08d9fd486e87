"""Several hosts on one PostgreSQL index: sessions, heartbeats and change notices.

Each daemon serving a PostgreSQL index is a session, named by its host id: a
uuid kept in its index folder, so the same host (the same cache) comes back as
the same session after a restart or a crash, and finds its own journal entries
again (a put's bytes are in that host's cache, nowhere else). The session beats
every BEAT seconds; one silent for SESSION_TIMEOUT is expired: a live host then
takes over its journal entries that need no bytes of its cache (moves, removes,
copies, checkpoint steps), while its puts wait for it to come back, and the
unlinked files it still held (open, or known to its kernel) become orphans
that any host drops.

Every write group that changes something another host may cache sends one
NOTIFY on the schema's channel when it commits (PostgreSQL delivers it only
then, and only if it commits): the inodes it changed, whether it linked or
unlinked names, the namespaces whose journal moved. A listener thread on its
own connection collects them; the engine applies them to its caches before
answering from them, so its caches are never staler than the delivery of a
notice (milliseconds). A listener that lost its connection assumes it missed
notices and has every cache dropped once it is back.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from motionfs.meta.engine import RemoteChanges
from motionfs.meta.records import HostSession

if TYPE_CHECKING:
    from motionfs.meta.postgres import PgIndex

log = logging.getLogger(__name__)

BEAT = 2.0  # seconds between heartbeats
SESSION_TIMEOUT = 10.0  # a session silent this long is a host that died
PAYLOAD_MAX = 7_900  # NOTIFY payloads stop at 8,000 bytes: past this, "everything"
HOST_ID_FILE = "host-id"

# Schema version 2: sessions, the owner of each journal entry, content generations.
HOSTS_SCHEMA = """
CREATE TABLE sessions (
    sid text COLLATE "C" PRIMARY KEY,   -- the host id (one per index folder)
    host text NOT NULL,
    pid integer NOT NULL,
    mountpoint text,
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE journal ADD COLUMN owner text COLLATE "C";
ALTER TABLE parked ADD COLUMN owner text COLLATE "C";
CREATE TABLE held (                     -- unlinked inodes a host still uses
    ino bigint NOT NULL,
    sid text COLLATE "C" NOT NULL,
    PRIMARY KEY (ino, sid)
);
CREATE SEQUENCE content_gens AS bigint;
SELECT setval('content_gens', (SELECT coalesce(max(content_gen), 0) + 1 FROM inodes), false);
"""


def read_host_id(folder: Path) -> str | None:
    """The folder's host id, if it has one (nothing is made)."""
    try:
        return (folder / HOST_ID_FILE).read_text().strip() or None
    except OSError:
        return None


def host_id(folder: Path) -> str:
    """This index folder's host id, made once (the folder holds this host's cache)."""
    path = folder / HOST_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        sid = uuid.uuid4().hex
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{HOST_ID_FILE}.{os.getpid()}")
        tmp.write_text(sid + "\n")
        os.replace(tmp, path)
        return sid


def channel_of(schema: str) -> str:
    """The schema's NOTIFY channel (an identifier: at most 63 bytes)."""
    return f"motionfs_{schema}"[:63]


class ChangeNotes:
    """What the current write group changed, sent as one NOTIFY before it commits."""

    def __init__(self) -> None:
        self.inodes: set[int] = set()
        self.entries: set[tuple[int, bytes]] = set()  # names linked or unlinked
        self.namespaces: set[str] = set()

    def clear(self) -> None:
        self.inodes.clear()
        self.entries.clear()
        self.namespaces.clear()

    def __bool__(self) -> bool:
        return bool(self.inodes or self.entries or self.namespaces)

    def payload(self, sid: str) -> str:
        text = json.dumps(
            {
                "s": sid,
                "i": sorted(self.inodes),
                "e": sorted([parent, name.hex()] for parent, name in self.entries),
                "n": sorted(self.namespaces),
            },
            separators=(",", ":"),
        )
        if len(text.encode()) > PAYLOAD_MAX:
            return json.dumps({"s": sid, "a": True}, separators=(",", ":"))
        return text


class Listener:
    """LISTEN on the schema's channel in a thread; notices of other sessions
    wait in `inbox` (a deque: appends and pops need no lock)."""

    def __init__(self, conninfo: str, channel: str, me: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.me = me
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        # Grows each time the listener is connected again after losing the
        # server: connections made before may be dead without knowing it yet.
        self.epoch = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="motionfs-listen", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)  # the first LISTEN is in place before anything is cached

    def _run(self) -> None:
        missed = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo, autocommit=True, connect_timeout=5, application_name="motionfs"
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._ready.set()
                    if missed:  # notices may have gone by meanwhile
                        self.epoch += 1
                        self.inbox.append({"a": True})
                        missed = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._take(note.payload)
            except psycopg.Error as e:
                if not self._stop.is_set():
                    log.warning("change notices from other hosts interrupted: %s", e)
                    missed = True
                    self._stop.wait(1.0)

    def _take(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            note = {"a": True}
        if isinstance(note, dict) and note.get("s") != self.me:
            self.inbox.append(note)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class PgHosts:
    """The HostSessions of a PgIndex."""

    def __init__(self, index: PgIndex, me: str) -> None:
        self.index = index
        self._me = me
        self._remote = RemoteChanges()

    @property
    def me(self) -> str:
        return self._me

    @property
    def beat_every(self) -> float:
        return BEAT

    def begin(self, mountpoint: str | None) -> None:
        with self.index.transaction():
            self.index.db.execute(
                "INSERT INTO sessions(sid, host, pid, mountpoint) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (sid) DO UPDATE SET host=EXCLUDED.host, pid=EXCLUDED.pid, "
                "mountpoint=EXCLUDED.mountpoint, started_at=now(), beat_at=now()",
                (self._me, socket.gethostname(), os.getpid(), mountpoint),
            )
            # A daemon that starts holds nothing yet (its kernel knows no inode).
            self.index.db.execute("DELETE FROM held WHERE sid=%s", (self._me,))
            # Entries from before sessions existed (an index one host served, or
            # one `motionfs migrate` copied) belong to the first host back.
            rows = self.index.db.execute(
                "UPDATE journal SET owner=%s WHERE owner IS NULL RETURNING ns_id", (self._me,)
            ).fetchall()
            self.index.notes.namespaces.update(str(r[0]) for r in rows)
        self.beat()

    def beat(self) -> None:
        """Beat, and take over what expired sessions left that needs none of their bytes."""
        with self.index.transaction():
            self.index.db.execute("UPDATE sessions SET beat_at=now() WHERE sid=%s", (self._me,))
            rows = self.index.db.execute(
                "UPDATE journal SET owner=%s WHERE op <> 'put' AND owner IN ("
                "SELECT sid FROM sessions WHERE beat_at < now() - make_interval(secs => %s)) "
                "RETURNING ns_id",
                (self._me, SESSION_TIMEOUT),
            ).fetchall()
            self.index.notes.namespaces.update(str(r[0]) for r in rows)

    def end(self) -> None:
        with self.index.transaction():
            self.index.db.execute("DELETE FROM sessions WHERE sid=%s", (self._me,))

    def all(self) -> list[HostSession]:
        rows = self.index.db.execute(
            "SELECT sid, host, pid, mountpoint, extract(epoch FROM started_at), "
            "extract(epoch FROM beat_at), beat_at >= now() - make_interval(secs => %s) "
            "FROM sessions ORDER BY started_at, sid",
            (SESSION_TIMEOUT,),
        )
        return [
            HostSession(
                sid=r[0],
                host=r[1],
                pid=r[2],
                mountpoint=r[3],
                started_at=float(r[4]),
                beat_at=float(r[5]),
                alive=bool(r[6]),
            )
            for r in rows
        ]

    def alive(self, sid: str) -> bool:
        if sid == self._me:
            return True
        row = self.index.db.execute(
            "SELECT beat_at >= now() - make_interval(secs => %s) FROM sessions WHERE sid=%s",
            (SESSION_TIMEOUT, sid),
        ).fetchone()
        return row is not None and bool(row[0])

    def describe(self, sid: str) -> str:
        """A session as people know it: host, pid and mountpoint."""
        for s in self.all():
            if s.sid == sid:
                ago = time.time() - s.beat_at
                return f"host {s.host} (pid {s.pid}, {s.mountpoint}; last seen {ago:.0f}s ago)"
        return f"host session {sid} (gone)"

    def note(self, changes: RemoteChanges) -> None:
        """Keep what the engine applied until the next poll."""
        self._remote.inodes |= changes.inodes
        self._remote.entries |= changes.entries
        self._remote.namespaces |= changes.namespaces
        self._remote.everything |= changes.everything

    def poll(self) -> RemoteChanges:
        self.index.apply_notices()
        out, self._remote = self._remote, RemoteChanges()
        return out


__all__ = [
    "BEAT",
    "HOSTS_SCHEMA",
    "SESSION_TIMEOUT",
    "ChangeNotes",
    "Listener",
    "PgHosts",
    "channel_of",
    "host_id",
    "read_host_id",
]
