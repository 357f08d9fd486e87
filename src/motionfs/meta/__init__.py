"""The metadata engine: inodes, links, xattrs, the journal table and checkpoint records.

`engine` is the interface the other layers use, `records` the shapes it
passes, `sqlite` and `postgres` the engines; `open_engine` is where a daemon,
fsck or the CLI gets one, so that choosing an engine happens here.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from motionfs.meta.engine import MetaEngine


def open_engine(path: Path, readonly: bool = False, url: str | None = None) -> MetaEngine:
    """The index at `path` (a SQLite file), or with `url` (postgresql://...
    [?schema=NAME]) the index in that PostgreSQL schema, `path` then being its
    host-local marker file (its folder keeps the cache and the space reserve);
    readonly: a view for status reports. Raises what the engine raises:
    IndexUnusable for an index made by a newer version (or a server that
    cannot be reached), sqlite3.DatabaseError for a damaged file."""
    # Imported here: importing motionfs.meta.records must not load an engine.
    if url is not None:
        from motionfs.meta.postgres import PgIndex

        return PgIndex.open_readonly(url, path) if readonly else PgIndex(url, path)
    from motionfs.meta.sqlite import Index

    return Index.open_readonly(path) if readonly else Index(path)


def driver_errors() -> tuple[type[Exception], ...]:
    """The database drivers' own exceptions, for callers that turn an engine's
    failure into one line without knowing which engine it was."""
    import psycopg

    return (sqlite3.Error, psycopg.Error)


def redact(url: str) -> str:
    """A postgresql:// URL without its password (for records, logs, messages)."""
    from motionfs.meta.postgres import redact as without_password

    try:
        return without_password(url)
    except ValueError:  # e.g. a port that is not a number: show none of it
        return "(a URL that cannot be parsed)"


def read_marker(path: Path) -> str | None:
    """The URL (no password) a PostgreSQL index's host-local marker file names,
    None when there is no marker (the index is SQLite's)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"see {path}"
    url = data.get("url") if isinstance(data, dict) else None
    return str(url) if url else f"see {path}"
