"""The storage layer: the only module that talks to chuk-artifacts / chuk-virtual-fs.

Everything here runs on the asyncio loop of the bridge. It creates, reattaches
and destroys namespaces, streams file bytes in and out of a namespace's VFS,
and works around the libraries' quirks (each one pinned by
tests/test_library_quirks.py):

* `create_namespace` ignores the store's provider: we always pass
  `provider_type` and `provider_config` (a root_path under our store dir).
* The namespace registry lives in process memory only: the metadata index is
  the registry and `attach` re-registers a namespace under its original id.
* BLOB `write_namespace` ignores `path`: metadata files are written through the
  namespace VFS directly.
* Missing files read as None/False: callers check existence explicitly, and a
  failed write (False) becomes StoreUnavailable, never silent success.
* `write_file`/`stream_write` into a missing parent fails: parents are created.
* filesystem provider: hides and clobbers `*.meta` (sidecars), its stream_write
  temp file needs 14 bytes beside the name, rename refuses an existing target,
  and nothing is fsynced. Names are escaped by `store_name`, targets removed
  before a move, and durable commits fsync the file and its directory.

For the filesystem provider the journal's file work goes straight to the
provider's directory (`HostTree`): the on-disk layout is the provider's own
(a file at its path, written through a temp file and a rename, as its
stream_write does), pinned by the quirk tests, and it costs a few system calls
instead of milliseconds of library work per file. Content is hard-linked from
the cache when both share a disk: sealed cache generations never change.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

from chuk_artifacts import ArtifactStore
from chuk_artifacts import NamespaceInfo as ChukNamespaceInfo
from chuk_artifacts import NamespaceType as ChukNamespaceType
from chuk_artifacts import StorageScope as ChukStorageScope
from chuk_virtual_fs import AsyncVirtualFileSystem
from pydantic import BaseModel

from .errors import StoreUnavailable
from .models import NamespaceType, ProviderType, StorageScope

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ESCAPE_SUFFIX = "~mfs"
HASHED_PREFIX = "~mfs-"
# filesystem provider: stream_write's temp name is ".tmp_" + 8 random + "_" + name.
MAX_PLAIN_NAME = 255 - 14
# Names the libraries keep at a namespace's root.
RESERVED_ROOT_NAMES = {".workspace", ".chuk-motion", "_meta.json", "_data"}
BLOB_DATA_PATH = "/_data"
MOTION_METADATA_PATH = "/.chuk-motion/metadata.json"


def store_name(name: bytes, at_root: bool = False) -> str:
    """Map a POSIX name to a name every provider can hold.

    Readable names stay as they are. Names the filesystem provider would hide
    or clobber (`*.meta`), names that collide with library files at the root
    and names ending in the escape suffix get the suffix appended (strip one
    to decode). Names that are not UTF-8 or too long for the provider become a
    digest; the metadata index keeps the real name, so the API can translate.
    """
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return _hashed(name)
    if (
        text.endswith(".meta")
        or text.endswith(ESCAPE_SUFFIX)
        or (at_root and text in RESERVED_ROOT_NAMES)
    ):
        text += ESCAPE_SUFFIX
    if text.startswith(HASHED_PREFIX) or len(text.encode()) > MAX_PLAIN_NAME:
        return _hashed(name)
    return text


def _hashed(name: bytes) -> str:
    digest = base64.b32encode(hashlib.sha256(name).digest()).decode().rstrip("=").lower()
    return HASHED_PREFIX + digest[:40]


def store_path(names: list[bytes]) -> str:
    return "/" + "/".join(store_name(n, at_root=(i == 0)) for i, n in enumerate(names))


P = ParamSpec("P")
R = TypeVar("R")


def _store_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The libraries retry, then raise anything (RetryError, botocore errors...):
    to callers every backend failure is StoreUnavailable, which they retry or
    report as EIO."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (StoreUnavailable, asyncio.CancelledError):
            raise
        except Exception as e:
            raise StoreUnavailable(f"{type(e).__name__}: {e}") from e

    return wrapper


class NamespaceRecord(BaseModel):
    """What the metadata index keeps about a namespace to reattach it later."""

    ns_id: str
    kind: NamespaceType
    name: str | None
    scope: StorageScope
    user_id: str | None
    session_id: str | None
    provider_type: ProviderType
    provider_config: dict[str, Any]
    grid_path: str
    created_at: str
    expires_at: str | None
    info_json: str


_TO_CHUK_SCOPE = {
    StorageScope.SESSION: ChukStorageScope.SESSION,
    StorageScope.USER: ChukStorageScope.USER,
    StorageScope.SANDBOX: ChukStorageScope.SANDBOX,
}
_TO_CHUK_TYPE = {
    NamespaceType.BLOB: ChukNamespaceType.BLOB,
    NamespaceType.WORKSPACE: ChukNamespaceType.WORKSPACE,
}


class Storage:
    """chuk-artifacts namespaces on one provider, rooted in the store directory."""

    def __init__(self, data_root: Path, sandbox_id: str) -> None:
        self.data_root = data_root
        self.sandbox_id = sandbox_id
        self.provider = ProviderType.FILESYSTEM
        self._store: ArtifactStore | None = None

    async def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        store = ArtifactStore(
            storage_provider="memory", session_provider="memory", sandbox_id=self.sandbox_id
        )
        await store.__aenter__()
        self._store = store

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.__aexit__(None, None, None)
            self._store = None

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            raise RuntimeError("storage not started")
        return self._store

    # -- namespaces -------------------------------------------------------

    @_store_errors
    async def create_namespace(
        self,
        kind: NamespaceType,
        name: str | None,
        scope: StorageScope,
        user_id: str | None,
        ttl_hours: int = 24,
    ) -> NamespaceRecord:
        # The library's namespace id is only known after creation, and its
        # filesystem default root is under /tmp: give it a root in our store.
        token = hashlib.sha256(os.urandom(16)).hexdigest()[:16]
        config: dict[str, Any] = {"root_path": str(self.data_root / "ns" / token)}
        info: ChukNamespaceInfo = await self.store.create_namespace(  # type: ignore[no-untyped-call]
            type=_TO_CHUK_TYPE[kind],
            name=name,
            scope=_TO_CHUK_SCOPE[scope],
            user_id=user_id,
            ttl_hours=ttl_hours,
            provider_type=self.provider.value,
            provider_config=dict(config),
        )
        return NamespaceRecord(
            ns_id=info.namespace_id,
            kind=kind,
            name=name,
            scope=scope,
            user_id=user_id,
            session_id=info.session_id,
            provider_type=self.provider,
            provider_config=config,
            grid_path=info.grid_path,
            created_at=info.created_at,
            expires_at=info.expires_at,
            info_json=info.model_dump_json(),
        )

    async def attach(self, record: NamespaceRecord) -> None:
        """Re-register a namespace from the index under its original id."""
        ops = self.store._namespace
        if record.ns_id in ops._namespaces:
            return
        provider_name = record.provider_type.value.replace("vfs-", "")
        config = dict(record.provider_config)
        if record.provider_type is ProviderType.FILESYSTEM:
            # A missing root means lost data (or an unmounted disk), not a new namespace.
            config["create_root"] = False
        vfs = AsyncVirtualFileSystem(provider_name, **config)
        await vfs.initialize()  # returns None whatever happens: check the provider
        if not getattr(vfs.provider, "_initialized", False):
            raise StoreUnavailable(f"cannot open namespace {record.ns_id} ({config})")
        info = ChukNamespaceInfo.model_validate_json(record.info_json)
        ops._namespaces[record.ns_id] = (vfs, info)

    def is_attached(self, ns_id: str) -> bool:
        return ns_id in self.store._namespace._namespaces

    @_store_errors
    async def destroy_namespace(self, record: NamespaceRecord) -> None:
        """Destroy a namespace and its bytes (the library only forgets it)."""
        if not self.is_attached(record.ns_id):
            await self.attach(record)
        await self.store.destroy_namespace(record.ns_id)
        root = record.provider_config.get("root_path")
        if record.provider_type is ProviderType.FILESYSTEM and root:
            await asyncio.to_thread(shutil.rmtree, root, True)

    def direct(self, ns_id: str) -> HostTree | None:
        """The namespace's host directory when its provider keeps files on this disk."""
        root = getattr(self.vfs(ns_id).provider, "root_path", None)
        return None if root is None else HostTree(Path(root))

    def vfs(self, ns_id: str) -> AsyncVirtualFileSystem:
        try:
            vfs: AsyncVirtualFileSystem = self.store.get_namespace_vfs(ns_id)
            return vfs
        except ValueError as e:
            raise StoreUnavailable(f"namespace {ns_id} is not attached") from e

    def _local_path(self, ns_id: str, path: str) -> Path | None:
        """The host path of a filesystem-provider node (for fsync and rmtree)."""
        provider = self.vfs(ns_id).provider
        root = getattr(provider, "root_path", None)
        if root is None:
            return None
        return Path(root) / path.lstrip("/")

    # -- bytes --------------------------------------------------------------

    @_store_errors
    async def mkdirs(self, ns_id: str, path: str) -> None:
        vfs = self.vfs(ns_id)
        parts = [p for p in path.split("/") if p]
        cur = ""
        for part in parts:
            cur += "/" + part
            if await vfs.is_dir(cur):
                continue
            if not await vfs.mkdir(cur) and not await vfs.is_dir(cur):
                raise StoreUnavailable(f"mkdir {cur} failed in {ns_id}")

    @_store_errors
    async def put(
        self, ns_id: str, path: str, source: Path | BinaryIO, durable: bool = False
    ) -> str:
        """Stream a local file to `path`, atomically replacing it; return its sha256.

        `source` may be an open file: the caller opened it so that a newer
        version replacing the file meanwhile cannot pull it away.
        """
        vfs = self.vfs(ns_id)
        await self.mkdirs(ns_id, path.rsplit("/", 1)[0])
        digest = hashlib.sha256()
        f = source if not isinstance(source, Path) else await asyncio.to_thread(open, source, "rb")

        def read_chunk() -> bytes:
            chunk = f.read(CHUNK)
            digest.update(chunk)
            return chunk

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(read_chunk):
                yield chunk

        try:
            ok = await vfs.stream_write(path, chunks(), chunk_size=CHUNK)
        finally:
            f.close()
        if not ok:
            raise StoreUnavailable(f"writing {path} in {ns_id} failed")
        if durable:
            await self._fsync(ns_id, path)
        return digest.hexdigest()

    async def _fsync(self, ns_id: str, path: str) -> None:
        local = self._local_path(ns_id, path)
        if local is None:
            return

        def sync() -> None:
            for target in (local, local.parent):
                fd = os.open(target, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

        await asyncio.to_thread(sync)

    @_store_errors
    async def get(self, ns_id: str, path: str, dest: Path) -> bool:
        """Stream `path` into the local file `dest`; False if it does not exist."""
        direct = self.direct(ns_id)
        if direct is not None:
            # The filesystem provider's stream_read reads the whole file into
            # memory first; take its host file instead (bounded memory).
            return await asyncio.to_thread(direct.get, path, dest)
        vfs = self.vfs(ns_id)
        if not await vfs.is_file(path):
            return False
        with open(dest, "wb") as out:
            async for chunk in vfs.stream_read(path, chunk_size=CHUNK):
                await asyncio.to_thread(out.write, chunk)
        return True

    @_store_errors
    async def exists(self, ns_id: str, path: str) -> bool:
        return bool(await self.vfs(ns_id).exists(path))

    @_store_errors
    async def remove(self, ns_id: str, path: str) -> None:
        """Remove a file or a whole directory tree; a missing path is fine."""
        local = self._local_path(ns_id, path)
        if local is not None:
            await asyncio.to_thread(_remove_local, local)
            return
        vfs = self.vfs(ns_id)
        if await vfs.is_dir(path):
            for child in await vfs.ls(path):
                await self.remove(ns_id, path.rstrip("/") + "/" + child)
            await vfs.rmdir(path)
        elif await vfs.exists(path) and not await vfs.rm(path):
            raise StoreUnavailable(f"removing {path} in {ns_id} failed")

    @_store_errors
    async def move(self, ns_id: str, src: str, dst: str) -> None:
        """Rename, replacing `dst`. Re-running after a crash is harmless."""
        vfs = self.vfs(ns_id)
        if not await vfs.exists(src):
            return  # already moved, or never stored: nothing to carry over
        if await vfs.exists(dst):
            await self.remove(ns_id, dst)
        await self.mkdirs(ns_id, dst.rsplit("/", 1)[0])
        if not await vfs.mv(src, dst):
            raise StoreUnavailable(f"moving {src} to {dst} in {ns_id} failed")

    @_store_errors
    async def copy(self, ns_id: str, src: str, dst: str, if_missing: bool = False) -> bool:
        """Copy a file within a namespace, atomically replacing `dst`.

        With if_missing an existing `dst` is kept (content-addressed objects).
        False when `src` does not exist.
        """
        if if_missing and await self.exists(ns_id, dst):
            return True
        tmp_dir = self.data_root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, dir=tmp_dir)
        os.close(fd)
        tmp = Path(name)
        try:
            if not await self.get(ns_id, src, tmp):
                return False
            await self.put(ns_id, dst, tmp)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    @_store_errors
    async def write_small(self, ns_id: str, path: str, data: bytes) -> None:
        vfs = self.vfs(ns_id)
        await self.mkdirs(ns_id, path.rsplit("/", 1)[0])
        if not await vfs.write_file(path, data):
            raise StoreUnavailable(f"writing {path} in {ns_id} failed")

    @_store_errors
    async def read_small(self, ns_id: str, path: str) -> bytes | None:
        vfs = self.vfs(ns_id)
        if not await vfs.is_file(path):
            return None
        data = await vfs.read_file(path)
        return data.encode() if isinstance(data, str) else data


class HostTree:
    """File work done directly in a filesystem-provider namespace's directory.

    Paths are store paths (already escaped by `store_name`). Every method is
    idempotent, blocking, and raises OSError on failure (the journal retries).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def put(self, path: str, source: BinaryIO, durable: bool = False) -> None:
        """Atomically replace `path` with the content of the open file `source`.

        No hash is computed here (the index computes one on first need), so an
        fsync costs what the disk's own flush costs.
        """
        dest = self.host(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The provider's own temp-name pattern, so its 14 bytes of room suffice.
        tmp = dest.with_name(f".tmp_{secrets.token_hex(4)}_{dest.name}")
        try:
            try:
                # By name: the open file pins the content; if the name is gone (a
                # newer generation superseded it) or on another disk, copy. Empty
                # files are made anew (the cache's one empty file is shared).
                if os.fstat(source.fileno()).st_size == 0:
                    raise OSError("empty")
                os.link(source.name, tmp)
                content = source.fileno()
            except (OSError, TypeError):
                with open(tmp, "wb") as out:
                    source.seek(0)
                    shutil.copyfileobj(source, out, CHUNK)
                content = -1
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            # Rename first, then flush: on journaling filesystems the file's
            # flush commits the rename too, and the directory's costs little.
            if content < 0:
                fd = os.open(dest, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                os.fsync(content)
            _fsync_dir(dest.parent)

    def get(self, path: str, dest: Path) -> bool:
        """Put the content of `path` at the local file `dest`; False if missing."""
        src = self.host(path)
        if not src.is_file():
            return False
        dest.unlink(missing_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        return True

    def mkdirs(self, path: str) -> None:
        self.host(path).mkdir(parents=True, exist_ok=True)

    def remove(self, path: str) -> None:
        _remove_local(self.host(path))

    def move(self, src: str, dst: str) -> None:
        """Rename, replacing `dst`; a missing `src` was moved already."""
        s, d = self.host(src), self.host(dst)
        if not os.path.lexists(s):
            return
        if os.path.lexists(d):
            _remove_local(d)
        d.parent.mkdir(parents=True, exist_ok=True)
        os.replace(s, d)
        sidecar = s.with_name(s.name + ".meta")
        if sidecar.exists():
            os.replace(sidecar, d.with_name(d.name + ".meta"))


def file_sha256(f: BinaryIO) -> str:
    """sha256 of an open file's whole content (blocking; hashlib releases the GIL)."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    f.seek(0)
    while n := f.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_local(local: Path) -> None:
    if local.is_dir() and not local.is_symlink():
        shutil.rmtree(local, ignore_errors=False)
    elif local.exists():
        local.unlink()
    sidecar = local.with_name(local.name + ".meta")
    if sidecar.exists():
        sidecar.unlink()
