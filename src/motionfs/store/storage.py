"""The storage layer: the only place that talks to chuk-artifacts.

It creates, reattaches and destroys namespaces, answers fsck's questions
about the store, and hands each byte operation to the namespace's backend
(`backend.Backend`: `host`, `s3` or `vfs`). Everything here runs on the
asyncio loop of the bridge. It works around the libraries' quirks (each one
pinned by tests/test_library_quirks.py):

* `create_namespace` ignores the store's provider: we always pass
  `provider_type` and `provider_config` (a root_path under our store dir).
* The namespace registry lives in process memory only: the metadata index is
  the registry and `attach` re-registers a namespace under its original id
  (`_registry`: the library has no public API for that).
* BLOB `write_namespace` ignores `path`: metadata files are written through the
  namespace VFS directly.
* Missing files read as None/False: callers check existence explicitly, and a
  failed write (False) becomes StoreUnavailable, never silent success.
* `write_file`/`stream_write` into a missing parent fails: parents are created.
* filesystem provider: hides and clobbers `*.meta` (sidecars), its stream_write
  temp file needs 14 bytes beside the name, rename refuses an existing target,
  and nothing is fsynced. Names are escaped by `store_name`, targets removed
  before a move, and durable commits fsync the file and its directory.
* s3 provider: see `s3`.

`failures.is_permanent` tells failures that retrying cannot fix (a name too
long, a key S3 refuses) from those that may pass, through `store_errors`'
wrapping.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from chuk_artifacts import ArtifactStore
from chuk_artifacts import NamespaceInfo as ChukNamespaceInfo
from chuk_artifacts import NamespaceType as ChukNamespaceType
from chuk_artifacts import StorageScope as ChukStorageScope
from chuk_virtual_fs import AsyncVirtualFileSystem
from chuk_virtual_fs.providers import register_provider
from chuk_virtual_fs.providers.filesystem import AsyncFilesystemStorageProvider

from motionfs.errors import StoreUnavailable
from motionfs.meta.records import NamespaceRecord
from motionfs.motion.models import NamespaceType, ProviderType, StorageScope
from motionfs.store import backend as changes
from motionfs.store.backend import Backend, Change, scratch_in
from motionfs.store.failures import store_errors
from motionfs.store.host import HostBackend, HostTree
from motionfs.store.hostfs import sweep_folder
from motionfs.store.names import BLOB_DATA_PATH
from motionfs.store.s3 import S3Backend, S3Connection, S3Settings, SharedClientS3Provider
from motionfs.store.sqlitedb import NS_ROOT, SqliteBackend, SqliteFile, SqliteNamespaceProvider
from motionfs.store.vfs import VfsBackend

_TO_CHUK_SCOPE = {
    StorageScope.SESSION: ChukStorageScope.SESSION,
    StorageScope.USER: ChukStorageScope.USER,
    StorageScope.SANDBOX: ChukStorageScope.SANDBOX,
}
_TO_CHUK_TYPE = {
    NamespaceType.BLOB: ChukNamespaceType.BLOB,
    NamespaceType.WORKSPACE: ChukNamespaceType.WORKSPACE,
}


def _registry(store: ArtifactStore) -> dict[str, tuple[AsyncVirtualFileSystem, ChukNamespaceInfo]]:
    """chuk-artifacts' in-memory namespace registry (id -> (VFS, info)).

    A library quirk: it has no public API to register a namespace under a
    given id (reattaching after a restart), to replace a namespace's info, or
    to ask whether one is registered, so this is the one place that reaches
    into its private state.
    """
    namespaces: dict[str, tuple[AsyncVirtualFileSystem, ChukNamespaceInfo]]
    namespaces = store._namespace._namespaces
    return namespaces


class NoInPlaceWrites(AsyncFilesystemStorageProvider):
    """The filesystem provider, but no file's bytes are ever changed in place.

    Its writes rewrite an existing file in place, but a local store's files
    share their bytes with the cache and with checkpoint objects (hard links;
    motionfs itself never writes them in place), so such a write would change
    those too. Here a write replaces the file through a temp file and a rename
    (the provider's own `stream_write`). Its copies never overwrite.
    """

    async def _is_file(self, path: str) -> bool:
        info = await self.get_node_info(path)
        return info is not None and not info.is_dir

    async def write_file(self, path: str, content: bytes) -> bool:
        if not await self._is_file(path):
            return False  # as the provider's: a file is made with create_node first

        async def chunks() -> AsyncIterator[bytes]:
            yield content

        return bool(await self.stream_write(path, chunks()))

    async def batch_write(self, operations: list[tuple[str, bytes]]) -> list[bool]:
        done = []
        for path, content in operations:
            if await self._is_file(path):
                done.append(await self.write_file(path, content))
            else:  # a new file: nothing shares it
                done.extend(await super().batch_write([(path, content)]))
        return done


class Storage:
    """chuk-artifacts namespaces on one provider: the filesystem provider rooted
    in the store directory, (with `s3`) the s3 provider in a bucket, (with
    `sqlite`) one SQLite file in the sqlite provider's schema, or (with
    `memory`) chuk-virtual-fs's memory provider, whose bytes live in this
    process and are gone when it ends."""

    _instances = 0

    def __init__(
        self,
        data_root: Path,
        sandbox_id: str,
        s3: S3Settings | None = None,
        memory: bool = False,
        sqlite: Path | None = None,
        exclusive: bool = True,
    ) -> None:
        self.data_root = data_root
        self.sandbox_id = sandbox_id
        self.s3 = s3
        self.provider = (
            ProviderType.S3
            if s3 is not None
            else ProviderType.SQLITE
            if sqlite is not None
            else ProviderType.MEMORY
            if memory
            else ProviderType.FILESYSTEM
        )
        self._store: ArtifactStore | None = None
        self._s3_conn: S3Connection | None = None
        # `exclusive`: this process serves the store (a reader beside it says False).
        self.sqlite = None if sqlite is None else SqliteFile(sqlite, exclusive)
        # Copies and hashes that no backend does server-side go through here.
        self._scratch = scratch_in(data_root / "tmp")
        # The library builds providers by registry name: ours carries this
        # storage's shared connection (a name per instance, several may live
        # in one process).
        Storage._instances += 1
        self._s3_provider_name = f"motionfs-s3-{os.getpid()}-{Storage._instances}"
        self._sqlite_provider_name = f"motionfs-sqlite-{os.getpid()}-{Storage._instances}"

    @property
    def where(self) -> str:
        """The store as a user names it (for messages)."""
        if self.s3 is not None:
            return self.s3.url
        if self.sqlite is not None:
            return f"sqlite://{self.sqlite.path}"
        if self.provider is ProviderType.MEMORY:
            return "memory://"
        return str(self.data_root.parent)

    @property
    def local(self) -> bool:
        """Whether the store is the folder its index lives in (the filesystem provider)."""
        return self.provider is ProviderType.FILESYSTEM

    async def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        if self.s3 is not None:
            conn = S3Connection(self.s3)
            await conn.open()
            try:
                await conn.check_bucket()
            except Exception as e:
                await conn.close()
                raise StoreUnavailable(
                    f"cannot reach bucket {self.s3.bucket}"
                    f"{' at ' + self.s3.endpoint_url if self.s3.endpoint_url else ''}: {e}"
                ) from e
            self._s3_conn = conn
            register_provider(
                self._s3_provider_name,
                functools.partial(SharedClientS3Provider, conn),  # type: ignore[arg-type]
            )
        if self.sqlite is not None:
            try:
                await asyncio.to_thread(self.sqlite.open)
            except (OSError, sqlite3.Error) as e:
                raise StoreUnavailable(f"cannot open store file {self.sqlite.path}: {e}") from e
            register_provider(
                self._sqlite_provider_name,
                functools.partial(SqliteNamespaceProvider, self.sqlite),  # type: ignore[arg-type]
            )
        store = ArtifactStore(
            storage_provider="memory", session_provider="memory", sandbox_id=self.sandbox_id
        )
        await store.__aenter__()
        self._store = store

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.__aexit__(None, None, None)
            self._store = None
        if self._s3_conn is not None:
            await self._s3_conn.close()
            self._s3_conn = None
        if self.sqlite is not None:
            self.sqlite.close()

    def _provider_name(self, provider_type: ProviderType) -> str:
        if provider_type is ProviderType.S3:
            if self._s3_conn is None:
                raise StoreUnavailable("an s3 namespace needs an s3 store (s3://BUCKET/PREFIX)")
            return self._s3_provider_name
        if provider_type is ProviderType.SQLITE:
            if self.sqlite is None:
                raise StoreUnavailable("a sqlite namespace needs a sqlite:///FILE store")
            return self._sqlite_provider_name
        return provider_type.value.replace("vfs-", "")

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            raise RuntimeError("storage not started")
        return self._store

    # -- namespaces -------------------------------------------------------

    @store_errors
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
        config: dict[str, Any]
        if self.s3 is not None:
            # Persisted in the index: where the bytes are, never credentials
            # or the endpoint (those are the mount's, at attach time).
            config = {"bucket_name": self.s3.bucket, "prefix": self.s3.namespace_prefix(token)}
        elif self.provider is ProviderType.MEMORY:
            config = {}  # each namespace's provider instance is its own RAM
        else:
            config = self.token_config(token)
        info: ChukNamespaceInfo = await self.store.create_namespace(  # type: ignore[no-untyped-call]
            type=_TO_CHUK_TYPE[kind],
            name=name,
            scope=_TO_CHUK_SCOPE[scope],
            user_id=user_id,
            ttl_hours=ttl_hours,
            provider_type="vfs-" + self._provider_name(self.provider),
            provider_config=dict(config),
        )
        if self.provider is not ProviderType.FILESYSTEM:
            # The library recorded our registry name; the API shows the real type.
            info = info.model_copy(update={"provider_type": self.provider.value})
            registry = _registry(self.store)
            vfs, _ = registry[info.namespace_id]
            registry[info.namespace_id] = (vfs, info)
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
        registry = _registry(self.store)
        if record.ns_id in registry:
            return
        provider_name = self._provider_name(record.provider_type)
        config = dict(record.provider_config)
        if record.provider_type is ProviderType.FILESYSTEM:
            # A missing root means lost data (or an unmounted disk), not a new namespace.
            config["create_root"] = False
        vfs = AsyncVirtualFileSystem(provider_name, **config)
        await vfs.initialize()  # returns None whatever happens: check the provider
        if not _provider_initialized(vfs):
            raise StoreUnavailable(f"cannot open namespace {record.ns_id} ({config})")
        info = ChukNamespaceInfo.model_validate_json(record.info_json)
        registry[record.ns_id] = (vfs, info)

    def is_attached(self, ns_id: str) -> bool:
        return ns_id in _registry(self.store)

    @store_errors
    async def destroy_namespace(self, record: NamespaceRecord) -> None:
        """Destroy a namespace and its bytes (the library only forgets it)."""
        if not self.is_attached(record.ns_id):
            await self.attach(record)
        forget = functools.partial(self.store.destroy_namespace, record.ns_id)
        await self.backend(record.ns_id).destroy(forget)

    def backend(self, ns_id: str) -> Backend:
        """Where the namespace's bytes are: a folder on this disk, S3 keys, or
        any other provider through its VFS."""
        vfs = self.vfs(ns_id)
        provider = vfs.provider
        if isinstance(provider, SharedClientS3Provider):
            return S3Backend(provider, self._scratch)
        if isinstance(provider, SqliteNamespaceProvider):
            return SqliteBackend(provider)
        root = getattr(provider, "root_path", None)
        if root is not None:
            return HostBackend(HostTree(Path(root)))
        return VfsBackend(vfs, ns_id, self._scratch)

    def direct(self, ns_id: str) -> HostTree | None:
        """The namespace's host directory when its provider keeps files on this
        disk: blocking calls cheap enough to run on the caller's thread."""
        backend = self.backend(ns_id)
        return backend.tree if isinstance(backend, HostBackend) else None

    def user_vfs(self, ns_id: str) -> AsyncVirtualFileSystem:
        """The namespace's VFS for the API's users: on a local store its writes
        never change a file in place (see NoInPlaceWrites)."""
        vfs = self.vfs(ns_id)
        if type(vfs.provider) is AsyncFilesystemStorageProvider:
            vfs.provider.__class__ = NoInPlaceWrites  # the library made it; only writes differ
        return vfs

    def vfs(self, ns_id: str) -> AsyncVirtualFileSystem:
        try:
            vfs: AsyncVirtualFileSystem = self.store.get_namespace_vfs(ns_id)
            return vfs
        except ValueError as e:
            raise StoreUnavailable(f"namespace {ns_id} is not attached") from e

    # -- bytes: each the namespace's backend's, failures as StoreUnavailable ------

    @store_errors
    async def apply(self, ns_id: str, change: Change) -> str | None:
        """One journal change (SourceMissing passes through as it is)."""
        return await changes.apply(self.backend(ns_id), change)

    @store_errors
    async def mkdirs(self, ns_id: str, path: str) -> None:
        await self.backend(ns_id).mkdirs(path)

    @store_errors
    async def put(
        self, ns_id: str, path: str, source: Path | BinaryIO, durable: bool = False
    ) -> str | None:
        """Stream a local file to `path`, atomically replacing it; return its sha256.

        `source` may be an open file: the caller opened it so that a newer
        version replacing the file meanwhile cannot pull it away. It is
        copied (the caller's file may change after this returns) and closed.
        """
        return await self.backend(ns_id).put(path, source, durable)

    @store_errors
    async def get(self, ns_id: str, path: str, dest: Path) -> bool:
        """Stream `path` into the local file `dest`; False if it does not exist."""
        return await self.backend(ns_id).get(path, dest)

    @store_errors
    async def exists(self, ns_id: str, path: str) -> bool:
        return await self.backend(ns_id).exists(path)

    @property
    def max_file_size(self) -> int | None:
        """The largest file the store can hold, None where only the disk limits it."""
        return None if self.sqlite is None else self.sqlite.max_file_size

    @property
    def ranged(self) -> bool:
        """Whether reads fetch byte ranges on demand (a remote store) instead
        of copying whole files into the cache first."""
        return self.s3 is not None

    @store_errors
    async def read_range(
        self, ns_id: str, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        """Fetch bytes [start, start+length) of `path` into `fd` at `start`.

        Returns (version tag, object size), None if `path` does not exist;
        ContentChanged if the object is no longer version `etag`.
        """
        return await self.backend(ns_id).read_range(path, start, length, fd, etag)

    @store_errors
    async def remove(self, ns_id: str, path: str) -> None:
        """Remove a file or a whole directory tree; a missing path is fine."""
        await self.backend(ns_id).remove(path)

    @store_errors
    async def move(self, ns_id: str, src: str, dst: str) -> None:
        """Rename, replacing `dst`. Re-running after a crash is harmless."""
        await self.backend(ns_id).move(src, dst)

    @store_errors
    async def copy(self, ns_id: str, src: str, dst: str, if_missing: bool = False) -> bool:
        """Copy a file within a namespace, atomically replacing `dst`.

        With if_missing an existing `dst` of `src`'s size is kept
        (content-addressed objects); one of another size (a leftover of an
        interrupted write) is replaced. False when `src` does not exist
        (with if_missing: and `dst` does not either).
        """
        return await self.backend(ns_id).copy(src, dst, if_missing)

    @store_errors
    async def write_small(self, ns_id: str, path: str, data: bytes) -> None:
        await self.backend(ns_id).write_small(path, data)

    @store_errors
    async def read_small(self, ns_id: str, path: str) -> bytes | None:
        return await self.backend(ns_id).read_small(path)

    @store_errors
    async def size_of(self, ns_id: str, path: str) -> int | None:
        """The size of the store's copy at `path`; None if there is none."""
        return await self.backend(ns_id).size(path)

    @store_errors
    async def sha256_of(self, ns_id: str, path: str) -> str | None:
        """The sha256 of the store's copy at `path` (an s3 object is read whole)."""
        return await self.backend(ns_id).sha256(path)

    def listed_as(self, ns_id: str, path: str) -> str:
        """How list_files names the file at `path` (s3 keys hold some names as digests)."""
        return self.backend(ns_id).listed_as(path)

    # -- leftovers of interrupted work (call at start, before any store work) ----

    def sweep_temps(self, ns_id: str) -> int:
        """Remove the temp files interrupted writes left in a local namespace;
        return how many (0 for other namespaces). Blocking."""
        return self.backend(ns_id).sweep_temps()

    def local_tree(self, record: NamespaceRecord) -> HostTree | None:
        """The folder of a local namespace, attached or not, if it exists (to
        sweep at start)."""
        root = record.provider_config.get("root_path")
        if record.provider_type is ProviderType.FILESYSTEM and root and Path(root).is_dir():
            return HostTree(Path(root))
        return None

    def sweep_store_tmp(self) -> int:
        """Empty the store's own temp directory (`copy` through a local file);
        return how many entries were removed. Blocking."""
        return sweep_folder(self.data_root / "tmp")

    # -- what fsck asks --------------------------------------------------------

    def token_of(self, record: NamespaceRecord) -> str:
        """The namespace's folder (local) or key-prefix (s3) name in the store."""
        where = record.provider_config.get("root_path") or record.provider_config.get("prefix")
        return str(where).rstrip("/").rsplit("/", 1)[-1]

    def token_config(self, token: str) -> dict[str, Any]:
        """The provider config of the namespace stored under `token` in this store."""
        if self.s3 is not None:
            return {"bucket_name": self.s3.bucket, "prefix": self.s3.namespace_prefix(token)}
        if self.sqlite is not None:
            return {"db_path": str(self.sqlite.path), "prefix": f"{NS_ROOT}/{token}"}
        return {"root_path": str(self.data_root / "ns" / token)}

    def _token_host(self, token: str) -> HostTree:
        return HostTree(self.data_root / "ns" / token)

    def _connection(self) -> S3Connection:
        assert self._s3_conn is not None
        return self._s3_conn

    @store_errors
    async def store_tokens(self) -> list[str]:
        """The names of every namespace the store holds, known to the index or not."""
        if self.s3 is not None:
            return sorted(await self._connection().list_prefixes(self.s3.namespace_prefix("")))
        if self.sqlite is not None:
            return await self.sqlite.call(SqliteFile.children, NS_ROOT)
        folder = self.data_root / "ns"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())

    @store_errors
    async def list_files(self, token: str) -> list[tuple[str, int]]:
        """(store path, size) of every file of the namespace stored under `token`
        (sidecars and the libraries' own files included)."""
        if self.s3 is not None:
            base = self.s3.namespace_prefix(token) + "/"
            return [("/" + key, size) for key, size in await self._connection().list_files(base)]
        if self.sqlite is not None:
            top = f"{NS_ROOT}/{token}"
            found = await self.sqlite.call(SqliteFile.files_below, top)
            return [(p[len(top) :], size) for p, size in found]
        return await asyncio.to_thread(self._token_host(token).files)

    @store_errors
    async def namespace_exists(self, record: NamespaceRecord) -> bool:
        if self.s3 is not None:
            return bool(await self.list_files(self.token_of(record)))
        if self.sqlite is not None:
            top = f"{NS_ROOT}/{self.token_of(record)}"
            return await self.sqlite.call(SqliteFile.node, top) is not None
        return (self.data_root / "ns" / self.token_of(record)).is_dir() or Path(
            str(record.provider_config.get("root_path", ""))
        ).is_dir()

    @store_errors
    async def read_record(self, token: str, path: str) -> bytes | None:
        """A small file of a namespace the index may not know (by its token)."""
        if self.s3 is not None:
            key = f"{self.s3.namespace_prefix(token)}/{path.lstrip('/')}"
            return await self._connection().read_object(key)
        if self.sqlite is not None:
            return await self._sqlite_read(f"{NS_ROOT}/{token}/{path.lstrip('/')}")
        return await asyncio.to_thread(self._token_host(token).read_small, path)

    async def _sqlite_read(self, path: str) -> bytes | None:
        assert self.sqlite is not None
        parts: list[bytes] = []
        found = await self.sqlite.call(SqliteFile.read_into, path, parts.append)
        return b"".join(parts) if found else None

    def _store_file_key(self, name: str) -> str:
        assert self.s3 is not None
        return f"{self.s3.prefix}/{name}" if self.s3.prefix else name

    @store_errors
    async def read_store_file(self, name: str) -> bytes | None:
        """A file of the store itself (its identity): beside `data/` on a local
        store, at the store's prefix in the bucket on s3."""
        if self.s3 is not None:
            return await self._connection().read_object(self._store_file_key(name))
        if self.sqlite is not None:
            return await self._sqlite_read("/" + name)
        try:
            return (self.data_root.parent / name).read_bytes()
        except FileNotFoundError:
            return None

    @store_errors
    async def write_store_file(self, name: str, data: bytes) -> None:
        """Write a store file atomically and durably."""
        if self.s3 is not None:
            await self._connection().write_object(self._store_file_key(name), data)
            return
        if self.sqlite is not None:
            limit = self.sqlite.max_file_size
            await self.sqlite.call(SqliteFile.write_bytes, "/" + name, data, limit, write=True)
            return
        await asyncio.to_thread(HostTree(self.data_root.parent).write_small, "/" + name, data)

    async def describe_token(self, token: str, user: str) -> NamespaceRecord | None:
        """A new record for a namespace that has none of its own (made before
        motionfs kept one): a project if it looks like a workspace, else a blob."""
        files = {p for p, _z in await self.list_files(token)}
        if not files:
            return None
        kind = (
            NamespaceType.WORKSPACE
            if any(p.startswith("/.workspace/") for p in files) or BLOB_DATA_PATH not in files
            else NamespaceType.BLOB
        )
        ns_id = f"ns-{uuid.uuid4().hex[:12]}"
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        provider = self.provider.value
        info = ChukNamespaceInfo(
            namespace_id=ns_id,
            type=_TO_CHUK_TYPE[kind],
            name=token,
            provider_type=provider,
            scope=ChukStorageScope.USER,
            session_id=f"sess-{user}-adopted",
            sandbox_id=self.sandbox_id,
            user_id=user,
            owner_id=user,
            created_at=now,
            expires_at=None,
            ttl_seconds=0,
            grid_path=f"grid/{self.sandbox_id}/user-{user}/{ns_id}",
            metadata={},
        )
        return NamespaceRecord(
            ns_id=ns_id,
            kind=kind,
            name=token,
            scope=StorageScope.USER,
            user_id=user,
            session_id=info.session_id,
            provider_type=self.provider,
            provider_config=self.token_config(token),
            grid_path=info.grid_path,
            created_at=now,
            expires_at=None,
            info_json=info.model_dump_json(),
        )


def _provider_initialized(vfs: AsyncVirtualFileSystem) -> bool:
    """Whether the namespace's provider opened. A library quirk:
    `AsyncVirtualFileSystem.initialize` returns None whatever happens and the
    providers have no public flag, so this reads the one they all set."""
    return bool(getattr(vfs.provider, "_initialized", False))
