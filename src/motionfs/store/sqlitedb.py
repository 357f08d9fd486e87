"""The `sqlite:///path/store.db` store: every namespace's bytes in one SQLite
file, in the schema of chuk-virtual-fs's sqlite provider (tables `nodes` and
`file_content`, one JSON node and one blob per path), so that provider opened
on the same file reads what the drive wrote. Each namespace lives under its
own prefix, `/ns/<token>`, since the provider keeps one tree per file; the
store's identity is `/store.json` at the top.

Why not the stock provider: it opens a connection per call, finds children
with LIKE (a `_` or `%` in a name matches other names), replaces a file by
deleting it before writing the new one, moves a folder without its entries,
and reads and writes each file whole in memory. Here one connection serves
every namespace of the file; every change is one transaction (a crash leaves
the old state or the new, never a half, so there is nothing to sweep); and
content streams through SQLite's incremental blob I/O in 1 MiB pieces, so
memory stays bounded. A file is one blob: past SQLite's limit on one row
(`MAX_FILE_SIZE`, 64 KiB under 1,000,000,000 bytes in Debian's build) it is
EFBIG.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import posixpath
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from chuk_virtual_fs.node_info import EnhancedNodeInfo
from chuk_virtual_fs.provider_base import AsyncStorageProvider

from motionfs.errors import StoreUnavailable
from motionfs.store.backend import CHUNK, open_source

T = TypeVar("T")

SCHEME = "sqlite://"
SMALL = 1 << 20  # files up to this size also record it in file_content.size
NS_ROOT = "/ns"

# The stock provider's tables, as it creates them (so it can open our file).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nodes (path TEXT PRIMARY KEY, node_data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS file_content (path TEXT PRIMARY KEY, content BLOB, "
    "size INTEGER DEFAULT 0, FOREIGN KEY (path) REFERENCES nodes (path) ON DELETE CASCADE)",
)


def _blob_limit() -> int:
    """The build's limit on one value, which SQLite also applies to a whole row
    (SQLITE_MAX_LENGTH, the same for every connection), less room for the
    row's path and header."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - (64 << 10)


MAX_FILE_SIZE = _blob_limit()


def _split(path: str) -> tuple[str, str]:
    parent, name = posixpath.split(path)
    return parent or "/", name


def _node_json(path: str, is_dir: bool, size: int = 0, old: dict[str, Any] | None = None) -> str:
    """The node record the stock provider writes (an EnhancedNodeInfo as a dict)."""
    parent, name = _split(path)
    if old is not None:
        data = dict(old)
        data.update(name=name, parent_path=parent, size=size)
        data["modified_at"] = datetime.now(UTC).isoformat()
        return json.dumps(data)
    info = EnhancedNodeInfo(name=name, is_dir=is_dir, parent_path=parent, size=size)
    info.provider = "sqlite"
    return json.dumps(info.to_dict())


def _below(path: str) -> tuple[str, str]:
    """Bounds of the paths strictly below `path`: every string that starts
    with `path/` sorts between `path/` and `path0` ('0' follows '/')."""
    base = path.rstrip("/")
    return base + "/", base + "0"


class SqliteFile:
    """One store file and the one connection every namespace in it shares.

    Calls are blocking and serialised by a lock; `call` runs one in a worker
    thread. WAL with synchronous=FULL: a committed change survives a power loss.
    """

    def __init__(self, path: Path, exclusive: bool = True) -> None:
        self.path = path
        self.exclusive = exclusive
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._flock: int | None = None

    @property
    def max_file_size(self) -> int:
        """The largest file the store holds: SQLite's limit on one blob."""
        return MAX_FILE_SIZE

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the store is private, as a store folder is
            if self.exclusive:
                held, fd = fd, -1
                self._hold(held)  # closes it if the lock is taken
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        except BaseException:
            self.close()
            raise
        conn.isolation_level = None  # transactions are explicit
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT 1 FROM nodes WHERE path = '/'").fetchone() is None:
                conn.execute("INSERT INTO nodes VALUES ('/', ?)", (_node_json("/", True),))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            self.close()
            raise
        self._conn = conn

    def _hold(self, fd: int) -> None:
        """One daemon per store file, whatever its index folder: an flock held
        while open (SQLite's own locks are fcntl locks, which flock leaves be)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreUnavailable(
                    f"store file {self.path} is in use by another motionfs daemon "
                    "(with another index folder): unmount that drive first"
                ) from None
            raise
        self._flock = fd

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._flock is not None:
                os.close(self._flock)
                self._flock = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"store file {self.path} is not open")
        return self._conn

    def run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """`fn(conn, *args)` under the lock; with `write`, in one transaction."""
        with self._lock:
            conn = self._db()
            if not write:
                return fn(conn, *args)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        return await asyncio.to_thread(lambda: self.run(fn, *args, write=write))

    # -- the operations, each on a connection (run them through `run`/`call`) --

    @staticmethod
    def node(conn: sqlite3.Connection, path: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT node_data FROM nodes WHERE path = ?", (path,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @staticmethod
    def children(conn: sqlite3.Connection, path: str) -> list[str]:
        lo, hi = _below(path)
        rows = conn.execute(
            "SELECT path FROM nodes WHERE path >= ? AND path < ? ORDER BY path", (lo, hi)
        )
        return [p[len(lo) :] for (p,) in rows if p != lo and "/" not in p[len(lo) :]]

    @staticmethod
    def files_below(conn: sqlite3.Connection, path: str) -> list[tuple[str, int]]:
        """(path, size) of every file below `path`."""
        lo, hi = _below(path)
        rows = conn.execute(
            "SELECT path, length(content) FROM file_content WHERE path > ? AND path < ? "
            "ORDER BY path",
            (lo, hi),
        )
        return [(p, int(size or 0)) for p, size in rows]

    @classmethod
    def mkdirs(cls, conn: sqlite3.Connection, path: str) -> None:
        cur = ""
        for part in [p for p in path.split("/") if p]:
            cur += "/" + part
            found = cls.node(conn, cur)
            if found is None:
                conn.execute("INSERT INTO nodes VALUES (?, ?)", (cur, _node_json(cur, True)))
            elif not found.get("is_dir"):
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", cur)

    @classmethod
    def remove(cls, conn: sqlite3.Connection, path: str) -> None:
        """A file or a whole tree; the top of the store is never removed."""
        if path.rstrip("/") in ("", NS_ROOT):
            raise IsADirectoryError(errno.EISDIR, "refusing to remove the store's top", path)
        lo, hi = _below(path)
        for table in ("nodes", "file_content"):
            conn.execute(
                f"DELETE FROM {table} WHERE path = ? OR (path > ? AND path < ?)", (path, lo, hi)
            )

    @classmethod
    def replace(
        cls, conn: sqlite3.Connection, path: str, size: int, max_size: int
    ) -> tuple[int, dict[str, Any] | None]:
        """Make `path` a file of `size` zero bytes (parents made); its rowid
        in file_content, for writing the content through a blob handle."""
        if size > max_size:
            raise OSError(errno.EFBIG, f"{size} bytes: over the store's limit of {max_size}")
        cls.mkdirs(conn, _split(path)[0])
        old = cls.node(conn, path)
        if old is not None and old.get("is_dir"):
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", path)
        conn.execute(
            "INSERT OR REPLACE INTO nodes VALUES (?, ?)", (path, _node_json(path, False, size, old))
        )
        conn.execute("DELETE FROM file_content WHERE path = ?", (path,))
        # SQLite writes a zeroblob without making it in memory only when no
        # byte of the row follows it: past SMALL the `size` column (after
        # `content`) is NULL, not a number; length(content) is always exact.
        cur = conn.execute(
            "INSERT INTO file_content (path, content, size) VALUES (?, zeroblob(?), ?)",
            (path, size, size if size <= SMALL else None),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid, old

    @staticmethod
    def rowid(conn: sqlite3.Connection, path: str) -> tuple[int, int] | None:
        """(rowid, size) of the file at `path`, None if there is none."""
        row = conn.execute(
            "SELECT rowid, length(content) FROM file_content WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1] or 0))

    @classmethod
    def write_from(
        cls, conn: sqlite3.Connection, path: str, src: BinaryIO, size: int, max_size: int
    ) -> str:
        """Replace `path` with `size` bytes of `src`; their sha256."""
        rowid, _old = cls.replace(conn, path, size, max_size)
        digest = hashlib.sha256()
        done = 0
        with conn.blobopen("file_content", "content", rowid) as blob:
            while done < size:
                chunk = src.read(min(CHUNK, size - done))
                if not chunk:
                    raise StoreUnavailable(f"{path}: the source ended at {done} of {size} bytes")
                blob.write(chunk)
                digest.update(chunk)
                done += len(chunk)
        return digest.hexdigest()

    @classmethod
    def read_into(cls, conn: sqlite3.Connection, path: str, out: Callable[[bytes], object]) -> bool:
        """Hand the content of `path` to `out` piece by piece; False if missing."""
        found = cls.rowid(conn, path)
        if found is None:
            return False
        rowid, size = found
        if size:
            with conn.blobopen("file_content", "content", rowid, readonly=True) as blob:
                while chunk := blob.read(CHUNK):
                    out(chunk)
        return True

    @classmethod
    def move(cls, conn: sqlite3.Connection, src: str, dst: str) -> None:
        """Rename a file or a folder with everything below it, replacing `dst`."""
        if cls.node(conn, src) is None:
            return  # moved already, or never stored
        cls.remove(conn, dst)
        cls.mkdirs(conn, _split(dst)[0])
        lo, hi = _below(src)
        rows = conn.execute(
            "SELECT path, node_data FROM nodes WHERE path = ? OR (path > ? AND path < ?)",
            (src, lo, hi),
        ).fetchall()
        for old_path, data in rows:
            new_path = dst + old_path[len(src) :]
            node = json.loads(data)
            conn.execute(
                "UPDATE nodes SET path = ?, node_data = ? WHERE path = ?",
                (
                    new_path,
                    _node_json(new_path, node.get("is_dir", False), node.get("size", 0), node),
                    old_path,
                ),
            )
            found = cls.rowid(conn, old_path)
            if found is None or found[1] <= SMALL:
                conn.execute(
                    "UPDATE file_content SET path = ? WHERE path = ?", (new_path, old_path)
                )
                continue
            # Changing a row's path rewrites it whole, in memory: copy a large
            # blob piece by piece instead.
            cur = conn.execute(
                "INSERT INTO file_content (path, content, size) VALUES (?, zeroblob(?), NULL)",
                (new_path, found[1]),
            )
            assert cur.lastrowid is not None
            cls.copy_blob(conn, found[0], cur.lastrowid)
            conn.execute("DELETE FROM file_content WHERE rowid = ?", (found[0],))

    @staticmethod
    def copy_blob(conn: sqlite3.Connection, src_row: int, dst_row: int) -> None:
        """Copy one content blob into another of the same size, 1 MiB at a time."""
        with (
            conn.blobopen("file_content", "content", src_row, readonly=True) as a,
            conn.blobopen("file_content", "content", dst_row) as b,
        ):
            while chunk := a.read(CHUNK):
                b.write(chunk)

    @classmethod
    def copy(
        cls, conn: sqlite3.Connection, src: str, dst: str, if_missing: bool, max_size: int
    ) -> bool:
        """Copy a file blob to blob (bounded memory); see Backend.copy."""
        source = cls.rowid(conn, src)
        if if_missing:
            target = cls.rowid(conn, dst)
            if target is not None and (source is None or target[1] == source[1]):
                return True
        if source is None:
            return False
        src_row, size = source
        dst_row, _old = cls.replace(conn, dst, size, max_size)
        if size:
            cls.copy_blob(conn, src_row, dst_row)
        return True

    @classmethod
    def write_bytes(cls, conn: sqlite3.Connection, path: str, data: bytes, max_size: int) -> None:
        rowid, _old = cls.replace(conn, path, len(data), max_size)
        if data:
            with conn.blobopen("file_content", "content", rowid) as blob:
                blob.write(data)


SQLITE_HEADER = b"SQLite format 3\x00"


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a store file (None: it can, or it is new)."""
    if not path.exists():
        return None if path.parent.is_dir() else f"folder {path.parent} does not exist"
    if path.is_dir():
        return "it is a folder: name a file in it"
    if not path.is_file():
        return "it is not a regular file"
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        return e.strerror or str(e)
    if head and head != SQLITE_HEADER:
        return "it is not a SQLite database"
    return None


def parse_path(url: str) -> Path:
    """The file of a `sqlite://` address: `sqlite:///abs/x.db`, `sqlite://~/x.db`."""
    rest = url.removeprefix(SCHEME)
    if not rest or rest.endswith("/"):
        raise ValueError(f"{url}: name the store file, e.g. sqlite:///srv/motion/store.db")
    return Path(rest).expanduser().absolute()


class SqliteNamespaceProvider(AsyncStorageProvider):
    """One namespace of a store file as a chuk-virtual-fs provider: what
    chuk-artifacts and the Python API's `get_project_vfs` see. `db_path` and
    `prefix` are the namespace's provider_config (kept in the index)."""

    def __init__(self, db: SqliteFile, db_path: str, prefix: str) -> None:
        super().__init__()
        self.db = db
        self.db_path = db_path
        self.prefix = "/" + prefix.strip("/")
        self._initialized = False

    def full(self, path: str) -> str:
        """The path in the store file of the namespace's `path`."""
        rel = posixpath.normpath("/" + (path or "/").lstrip("/"))
        return self.prefix if rel == "/" else self.prefix + rel

    def _local(self, data: dict[str, Any]) -> EnhancedNodeInfo:
        info = EnhancedNodeInfo.from_dict(data)
        full = posixpath.join(info.parent_path, info.name)
        rel = full[len(self.prefix) :] or "/"
        parent, name = _split(rel)
        info.name, info.parent_path = ("", "/") if rel == "/" else (name, parent)
        return info

    async def initialize(self) -> bool:
        if str(self.db.path) != str(Path(self.db_path)):
            return False  # a namespace of another store file
        await self.db.call(SqliteFile.mkdirs, self.prefix, write=True)
        self._initialized = True
        return True

    async def close(self) -> None:
        self._initialized = False  # the file is the store's, closed with it

    async def create_node(self, node_info: EnhancedNodeInfo) -> bool:
        path = self.full(node_info.get_path())

        def create(conn: sqlite3.Connection) -> bool:
            parent = SqliteFile.node(conn, _split(path)[0])
            if SqliteFile.node(conn, path) is not None or not (parent and parent.get("is_dir")):
                return False
            conn.execute(
                "INSERT INTO nodes VALUES (?, ?)", (path, _node_json(path, node_info.is_dir))
            )
            if not node_info.is_dir:
                conn.execute("INSERT INTO file_content VALUES (?, zeroblob(0), 0)", (path,))
            return True

        return await self.db.call(create, write=True)

    async def delete_node(self, path: str) -> bool:
        full = self.full(path)

        def delete(conn: sqlite3.Connection) -> bool:
            if full == self.prefix or SqliteFile.node(conn, full) is None:
                return False
            if SqliteFile.children(conn, full):
                return False  # a folder that is not empty
            SqliteFile.remove(conn, full)
            return True

        return await self.db.call(delete, write=True)

    async def get_node_info(self, path: str) -> EnhancedNodeInfo | None:
        data = await self.db.call(SqliteFile.node, self.full(path))
        return None if data is None else self._local(data)

    async def list_directory(self, path: str) -> list[str]:
        return await self.db.call(SqliteFile.children, self.full(path))

    async def write_file(self, path: str, content: bytes) -> bool:
        full = self.full(path)
        await self.db.call(
            SqliteFile.write_bytes, full, bytes(content), self.db.max_file_size, write=True
        )
        return True

    async def read_file(self, path: str) -> bytes | None:
        parts: list[bytes] = []
        found = await self.db.call(SqliteFile.read_into, self.full(path), parts.append)
        return b"".join(parts) if found else None

    async def exists(self, path: str) -> bool:
        return await self.db.call(SqliteFile.node, self.full(path)) is not None

    async def get_storage_stats(self) -> dict[str, Any]:
        files = await self.db.call(SqliteFile.files_below, self.prefix)
        return {"total_size_bytes": sum(z for _p, z in files), "file_count": len(files)}

    async def cleanup(self) -> dict[str, Any]:
        return {"cleaned_up": 0}  # transactions leave no temporary files

    async def get_metadata(self, path: str) -> dict[str, Any]:
        info = await self.get_node_info(path)
        return {} if info is None else info.to_dict()

    async def set_metadata(self, path: str, metadata: dict[str, Any]) -> bool:
        full = self.full(path)

        def update(conn: sqlite3.Connection) -> bool:
            node = SqliteFile.node(conn, full)
            if node is None:
                return False
            node.setdefault("custom_meta", {}).update(metadata)
            conn.execute("UPDATE nodes SET node_data = ? WHERE path = ?", (json.dumps(node), full))
            return True

        return await self.db.call(update, write=True)

    async def move_node(self, source: str, destination: str) -> bool:
        src, dst = self.full(source), self.full(destination)
        if await self.db.call(SqliteFile.node, src) is None:
            return False
        await self.db.call(SqliteFile.move, src, dst, write=True)
        return True

    async def copy_node(self, source: str, destination: str) -> bool:
        src, dst = self.full(source), self.full(destination)
        return await self.db.call(
            SqliteFile.copy, src, dst, False, self.db.max_file_size, write=True
        )

    async def stream_write(
        self, path: str, stream: Any, chunk_size: int = 8192, progress_callback: Any = None
    ) -> bool:
        """Spooled to a local temporary file (its size is needed before the
        blob is made), then written in one transaction."""
        with tempfile.TemporaryFile() as spool:
            written = 0
            async for chunk in stream:
                await asyncio.to_thread(spool.write, chunk)
                written += len(chunk)
                if progress_callback is not None:
                    progress_callback(written, -1)
            spool.seek(0)
            await self.db.call(
                SqliteFile.write_from,
                self.full(path),
                spool,
                written,
                self.db.max_file_size,
                write=True,
            )
        return True

    async def stream_read(self, path: str, chunk_size: int = 8192) -> AsyncIterator[bytes]:
        """Piece by piece, each read under the lock on its own."""
        full = self.full(path)

        def piece(conn: sqlite3.Connection, offset: int) -> bytes | None:
            found = SqliteFile.rowid(conn, full)
            if found is None:
                return None
            with conn.blobopen("file_content", "content", found[0], readonly=True) as blob:
                blob.seek(offset)
                return blob.read(max(chunk_size, CHUNK))

        offset = 0
        while chunk := await self.db.call(piece, offset):
            yield chunk
            offset += len(chunk)


class SqliteBackend:
    """A namespace of a store file behind the Backend protocol: each change
    one transaction, content through blob handles."""

    ranged = False

    def __init__(self, provider: SqliteNamespaceProvider) -> None:
        self.db = provider.db
        self.full = provider.full
        self.prefix = provider.prefix

    async def put(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        f = await open_source(source)
        try:
            size = os.fstat(f.fileno()).st_size
            f.seek(0)
            # synchronous=FULL: every commit is durable, `durable` or not.
            return await self.db.call(
                SqliteFile.write_from, self.full(path), f, size, self.db.max_file_size, write=True
            )
        finally:
            f.close()

    async def get(self, path: str, dest: Path) -> bool:
        with open(dest, "wb") as out:
            return await self.db.call(SqliteFile.read_into, self.full(path), out.write)

    async def exists(self, path: str) -> bool:
        return await self.db.call(SqliteFile.node, self.full(path)) is not None

    async def read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        raise StoreUnavailable("ranged reads need an s3 namespace")

    async def remove(self, path: str) -> None:
        if self.full(path) != self.prefix:
            await self.db.call(SqliteFile.remove, self.full(path), write=True)

    async def move(self, src: str, dst: str) -> None:
        await self.db.call(SqliteFile.move, self.full(src), self.full(dst), write=True)

    async def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        return await self.db.call(
            SqliteFile.copy,
            self.full(src),
            self.full(dst),
            if_missing,
            self.db.max_file_size,
            write=True,
        )

    async def mkdirs(self, path: str) -> None:
        await self.db.call(SqliteFile.mkdirs, self.full(path), write=True)

    async def write_small(self, path: str, data: bytes) -> None:
        await self.db.call(
            SqliteFile.write_bytes, self.full(path), data, self.db.max_file_size, write=True
        )

    async def read_small(self, path: str) -> bytes | None:
        parts: list[bytes] = []
        found = await self.db.call(SqliteFile.read_into, self.full(path), parts.append)
        return b"".join(parts) if found else None

    async def size(self, path: str) -> int | None:
        found = await self.db.call(SqliteFile.rowid, self.full(path))
        return None if found is None else found[1]

    async def sha256(self, path: str) -> str | None:
        digest = hashlib.sha256()
        found = await self.db.call(SqliteFile.read_into, self.full(path), digest.update)
        return digest.hexdigest() if found else None

    def listed_as(self, path: str) -> str:
        return path

    def sweep_temps(self) -> int:
        return 0  # every change is one transaction: nothing is left half-written

    async def destroy(self, forget: Callable[[], Awaitable[None]]) -> None:
        await forget()
        await self.db.call(SqliteFile.remove, self.prefix, write=True)
