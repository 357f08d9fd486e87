"""The metadata engine: inodes, links, xattrs, the journal table and checkpoint records.

`engine` is the interface the other layers use, `records` the shapes it
passes, `sqlite` the one engine so far; `open_engine` is where a daemon, fsck
or the CLI gets one, so that choosing another engine happens here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from motionfs.meta.engine import MetaEngine


def open_engine(path: Path, readonly: bool = False) -> MetaEngine:
    """The index at `path` (today always a SQLite file), or a read-only view
    of it for status reports. Raises what the engine raises: IndexUnusable for
    an index made by a newer version, sqlite3.DatabaseError for a damaged file."""
    # Imported here: importing motionfs.meta.records must not load an engine.
    from motionfs.meta.sqlite import Index

    return Index.open_readonly(path) if readonly else Index(path)
