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
* s3 provider: opens a new client (and connection pool) per call, caches
  listings and node info for 60 s, shares keys between namespaces unless each
  has its own `prefix`, turns every error (an unreachable endpoint too) into
  None/False/[], streams even an empty file as a multipart upload (which S3
  refuses), and reads whole objects into memory in `read_file`.
  `SharedClientS3Provider` (a thin subclass) keeps one client for the
  daemon's lifetime with bounded timeouts and no info cache, and the storage
  layer moves bytes through it with calls that raise on failure (single PUT
  or multipart upload, ranged GETs, server-side copies), at the keys the
  provider itself uses, so the library's VFS sees the same files.

For the filesystem provider every byte operation goes straight to the
provider's directory (`HostTree`): the on-disk layout is the provider's own
(a file at its path, written through a temp file and a rename, as its
stream_write does), pinned by the quirk tests, and it costs a few system calls
instead of milliseconds of library work per file. HostTree walks directories
by file descriptor, so store paths longer than PATH_MAX work, and never writes
a file in place, so a crash leaves no partial file at a name (temp files it
leaves are swept at start). Content is hard-linked from the cache when both
share a disk: sealed cache generations never change.

`is_permanent` tells failures that retrying cannot fix (a name too long, a
key S3 refuses) from those that may pass, through `_store_errors`' wrapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from chuk_artifacts import ArtifactStore
from chuk_artifacts import NamespaceInfo as ChukNamespaceInfo
from chuk_artifacts import NamespaceType as ChukNamespaceType
from chuk_artifacts import StorageScope as ChukStorageScope
from chuk_virtual_fs import AsyncVirtualFileSystem
from chuk_virtual_fs.providers import register_provider
from chuk_virtual_fs.providers.s3 import S3StorageProvider

from motionfs.errors import StoreUnavailable
from motionfs.meta.records import NamespaceRecord
from motionfs.motion.models import NamespaceType, ProviderType, StorageScope
from motionfs.store.failures import ContentChanged, store_errors
from motionfs.store.names import BLOB_DATA_PATH, TEMP_NAME, hashed_name

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ASSEMBLY_TIMEOUT = 900.0  # seconds an S3 server may take to complete a multipart upload
_TO_CHUK_SCOPE = {
    StorageScope.SESSION: ChukStorageScope.SESSION,
    StorageScope.USER: ChukStorageScope.USER,
    StorageScope.SANDBOX: ChukStorageScope.SANDBOX,
}
_TO_CHUK_TYPE = {
    NamespaceType.BLOB: ChukNamespaceType.BLOB,
    NamespaceType.WORKSPACE: ChukNamespaceType.WORKSPACE,
}


# -- the s3 store ------------------------------------------------------------------

S3_SMALL_OBJECT = 8 << 20  # up to this size a file is one PUT (read into memory)
S3_PART = 8 << 20  # multipart upload part size (grows for very large files)
S3_MAX_PARTS = 9000  # S3 allows 10,000
S3_MAX_COPY = 5 << 30  # largest single CopyObject; beyond it, multipart copy
S3_COPY_PART = 512 << 20
S3_DELETE_BATCH = 1000


@dataclass(frozen=True)
class S3Settings:
    """Where an s3 store lives. Never persisted with credentials: those come
    from the standard AWS environment variables and config files."""

    bucket: str
    prefix: str = ""  # key prefix of the whole store, without slashes at the ends
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 3

    @classmethod
    def parse(cls, url: str, **kwargs: Any) -> S3Settings:
        """`s3://BUCKET/PREFIX` (PREFIX optional)."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX address")
        prefix = parsed.path.strip("/")
        if "//" in prefix:
            raise ValueError(f"{url!r}: empty path component in the prefix")
        return cls(bucket=parsed.netloc, prefix=prefix, **kwargs)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def namespace_prefix(self, token: str) -> str:
        """Each namespace's own key prefix (the provider would share keys otherwise)."""
        return f"{self.prefix}/ns/{token}" if self.prefix else f"ns/{token}"


class S3Connection:
    """One aiobotocore client (one connection pool) for the daemon's lifetime."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.session: Any = None
        self._cm: Any = None
        self._client: Any = None
        self._slow_cm: Any = None
        self._slow_client: Any = None

    async def open(self) -> None:
        import aioboto3
        from botocore.config import Config

        s = self.settings
        self.session = aioboto3.Session(region_name=s.region) if s.region else aioboto3.Session()
        config = Config(
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            retries={"max_attempts": s.max_attempts, "mode": "standard"},
            max_pool_connections=16,
        )
        self._cm = self.session.client("s3", endpoint_url=s.endpoint_url, config=config)
        self._client = await self._cm.__aenter__()
        # Completing a multipart upload makes the server assemble the object: for
        # GiBs that can outlast the read timeout of ordinary calls (moto takes over
        # a minute for 4 GiB), and a retry after a timeout finds the upload gone.
        slow = config.merge(Config(read_timeout=max(s.read_timeout, ASSEMBLY_TIMEOUT)))
        self._slow_cm = self.session.client("s3", endpoint_url=s.endpoint_url, config=slow)
        self._slow_client = await self._slow_cm.__aenter__()

    async def check_bucket(self) -> None:
        await self.client.head_bucket(Bucket=self.settings.bucket)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("the s3 connection is not open")
        return self._client

    @property
    def slow_client(self) -> Any:
        """The same endpoint, for calls the server may take minutes to answer."""
        if self._slow_client is None:
            raise StoreUnavailable("the s3 connection is not open")
        return self._slow_client

    async def close(self) -> None:
        cm, self._cm, self._client = self._cm, None, None
        slow, self._slow_cm, self._slow_client = self._slow_cm, None, None
        for m in (cm, slow):
            if m is not None:
                await m.__aexit__(None, None, None)


def _missing(e: Exception) -> bool:
    """True for S3's "no such key" answers; every other failure is an outage."""
    from botocore.exceptions import ClientError

    if not isinstance(e, ClientError):
        return False
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


class SharedClientS3Provider(S3StorageProvider):
    """chuk-virtual-fs's s3 provider on a shared client, with calls that raise.

    The library's own methods keep working (the Python API's VFS uses them),
    on the shared client and without the 60 s info/listing cache; motionfs's
    storage layer uses the `strict_*` methods, which tell "missing" from "the
    endpoint failed" and never hold more than one part of a file in memory.
    """

    def __init__(self, connection: S3Connection, bucket_name: str, prefix: str) -> None:
        s = connection.settings
        super().__init__(
            bucket_name=bucket_name,
            prefix=prefix,
            region_name=s.region,
            endpoint_url=s.endpoint_url,
            cache_ttl=0,
        )
        self.connection = connection

    async def initialize(self) -> bool:
        # No network here: the storage layer checked the bucket once at start,
        # and reattaching namespaces must not depend on the endpoint being up.
        self.session = self.connection.session
        self._initialized = True  # what Storage.attach checks, as for the filesystem provider
        return True

    @asynccontextmanager
    async def _get_client(self) -> AsyncIterator[Any]:
        yield self.connection.client

    async def close(self) -> None:
        self._cache.clear()  # the shared client outlives namespaces

    def _get_s3_key(self, path: str) -> str:
        # Control characters (a newline...) in keys need special handling in
        # S3 (XML listings) and are refused by some servers (moto's routing):
        # such a name is stored under its digest, like an over-long name; the
        # index keeps the real name. The library's own calls use this too.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            path = "/".join(
                hashed_name(part.encode("utf-8", "surrogateescape"))
                if any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
                else part
                for part in path.split("/")
            )
        key: str = super()._get_s3_key(path)
        return key

    def key(self, path: str) -> str:
        return self._get_s3_key(path)

    @property
    def _c(self) -> Any:
        return self.connection.client

    @property
    def _slow(self) -> Any:
        return self.connection.slow_client

    async def strict_head(self, path: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._c.head_object(
                Bucket=self.bucket_name, Key=self.key(path)
            )
            return head
        except Exception as e:
            if _missing(e):
                return None
            raise

    async def strict_keys(self, path: str) -> list[str]:
        """Keys of the file at `path`, its directory marker and everything below."""
        base = self.key(path)
        keys: list[str] = []
        paginator = self._c.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket_name, Prefix=base):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key == base or key.startswith(base + "/"):
                    keys.append(key)
        return keys

    async def strict_exists(self, path: str) -> bool:
        if await self.strict_head(path) is not None:
            return True
        r = await self._c.list_objects_v2(
            Bucket=self.bucket_name, Prefix=self.key(path).rstrip("/") + "/", MaxKeys=1
        )
        return bool(r.get("KeyCount", 0))

    async def strict_mkdirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts)):
            await self._c.put_object(
                Bucket=self.bucket_name,
                Key=self.key("/".join(parts[: i + 1])) + "/",
                Body=b"",
                ContentType="application/x-directory",
                Metadata={"type": "directory"},
            )

    async def strict_put(self, path: str, f: BinaryIO, digest: Any) -> None:
        """Upload an open file: one PUT when small, else a multipart upload."""
        size = os.fstat(f.fileno()).st_size
        key = self.key(path)
        meta = {"type": "file"}

        def read(n: int) -> bytes:
            chunk = f.read(n)
            digest.update(chunk)
            return chunk

        if size <= S3_SMALL_OBJECT:
            body = await asyncio.to_thread(read, size + 1)
            await self._c.put_object(Bucket=self.bucket_name, Key=key, Body=body, Metadata=meta)
            return
        part_size = max(S3_PART, -(-size // S3_MAX_PARTS))
        upload = await self._c.create_multipart_upload(
            Bucket=self.bucket_name, Key=key, Metadata=meta
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            number = 1
            while chunk := await asyncio.to_thread(read, part_size):
                r = await self._c.upload_part(
                    Bucket=self.bucket_name,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
                number += 1
                del chunk
            await self._slow.complete_multipart_upload(
                Bucket=self.bucket_name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._c.abort_multipart_upload(
                    Bucket=self.bucket_name, Key=key, UploadId=upload_id
                )
            raise

    async def strict_get(self, path: str, dest: Path) -> bool:
        """Stream an object into a local file; False when it does not exist."""
        try:
            r = await self._c.get_object(Bucket=self.bucket_name, Key=self.key(path))
        except Exception as e:
            if _missing(e):
                return False
            raise
        body = r["Body"]
        try:
            with open(dest, "wb") as out:
                async for chunk in body.iter_chunks(chunk_size=CHUNK):
                    await asyncio.to_thread(out.write, chunk)
        finally:
            body.close()
        return True

    async def strict_read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        """Write bytes [start, start+length) of the object into `fd` at `start`.

        Returns (etag, object size), None when the object does not exist.
        With `etag`, a different object version raises ContentChanged.
        """
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket_name,
            "Key": self.key(path),
            "Range": f"bytes={start}-{start + length - 1}",
        }
        if etag is not None:
            kwargs["IfMatch"] = etag
        try:
            r = await self._c.get_object(**kwargs)
        except Exception as e:
            if _missing(e):
                return None
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code == "PreconditionFailed":
                raise ContentChanged(f"{path} changed in the store while being read") from e
            raise
        total = int(str(r.get("ContentRange", "")).rsplit("/", 1)[-1] or r["ContentLength"])
        body = r["Body"]
        pos = start
        try:
            async for chunk in body.iter_chunks(chunk_size=CHUNK):
                await asyncio.to_thread(os.pwrite, fd, chunk, pos)
                pos += len(chunk)
        finally:
            body.close()
        if pos != min(start + length, total):
            raise StoreUnavailable(f"short read of {path}: {pos - start} of {length} bytes")
        return str(r["ETag"]), total

    async def strict_read(self, path: str) -> bytes | None:
        try:
            r = await self._c.get_object(Bucket=self.bucket_name, Key=self.key(path))
        except Exception as e:
            if _missing(e):
                return None
            raise
        async with r["Body"] as body:
            data: bytes = await body.read()
        return data

    async def strict_write(self, path: str, data: bytes) -> None:
        await self._c.put_object(
            Bucket=self.bucket_name, Key=self.key(path), Body=data, Metadata={"type": "file"}
        )

    async def strict_delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[i : i + S3_DELETE_BATCH]
            r = await self._c.delete_objects(
                Bucket=self.bucket_name,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            if r.get("Errors"):
                raise StoreUnavailable(f"deleting objects failed: {r['Errors'][:3]}")

    async def strict_remove(self, path: str) -> None:
        await self.strict_delete_keys(await self.strict_keys(path))

    async def strict_copy_key(self, src_key: str, dst_key: str, size: int | None = None) -> None:
        if size is None:
            head = await self._c.head_object(Bucket=self.bucket_name, Key=src_key)
            size = int(head["ContentLength"])
        source = {"Bucket": self.bucket_name, "Key": src_key}
        if size <= S3_MAX_COPY:
            await self._c.copy_object(Bucket=self.bucket_name, Key=dst_key, CopySource=source)
            return
        upload = await self._c.create_multipart_upload(
            Bucket=self.bucket_name, Key=dst_key, Metadata={"type": "file"}
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for number, start in enumerate(range(0, size, S3_COPY_PART), 1):
                end = min(size, start + S3_COPY_PART) - 1
                r = await self._c.upload_part_copy(
                    Bucket=self.bucket_name,
                    Key=dst_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
            await self._slow.complete_multipart_upload(
                Bucket=self.bucket_name,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._c.abort_multipart_upload(
                    Bucket=self.bucket_name, Key=dst_key, UploadId=upload_id
                )
            raise

    async def strict_copy(self, src: str, dst: str) -> bool:
        head = await self.strict_head(src)
        if head is None:
            return False
        await self.strict_copy_key(self.key(src), self.key(dst), int(head["ContentLength"]))
        return True

    async def strict_move(self, src: str, dst: str) -> None:
        """Copy every key of `src` (file or tree) to `dst`, then delete them.

        S3 has no rename. Re-running after a crash is harmless: keys already
        moved are gone from `src`, the rest are copied again (same bytes).
        """
        keys = await self.strict_keys(src)
        if not keys:
            return
        base, target = self.key(src), self.key(dst)
        for key in keys:
            await self.strict_copy_key(key, target + key[len(base) :])
        await self.strict_delete_keys(keys)


class Storage:
    """chuk-artifacts namespaces on one provider: the filesystem provider rooted
    in the store directory, or (with `s3`) the s3 provider in a bucket."""

    _instances = 0

    def __init__(self, data_root: Path, sandbox_id: str, s3: S3Settings | None = None) -> None:
        self.data_root = data_root
        self.sandbox_id = sandbox_id
        self.s3 = s3
        self.provider = ProviderType.FILESYSTEM if s3 is None else ProviderType.S3
        self._store: ArtifactStore | None = None
        self._s3_conn: S3Connection | None = None
        # The library builds providers by registry name: ours carries this
        # storage's shared connection (a name per instance, several may live
        # in one process).
        Storage._instances += 1
        self._s3_provider_name = f"motionfs-s3-{os.getpid()}-{Storage._instances}"

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

    def _provider_name(self, provider_type: ProviderType) -> str:
        if provider_type is ProviderType.S3:
            if self._s3_conn is None:
                raise StoreUnavailable("an s3 namespace needs an s3 store (s3://BUCKET/PREFIX)")
            return self._s3_provider_name
        return provider_type.value.replace("vfs-", "")

    def _s3(self, ns_id: str) -> SharedClientS3Provider | None:
        provider = self.vfs(ns_id).provider
        return provider if isinstance(provider, SharedClientS3Provider) else None

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
        else:
            config = {"root_path": str(self.data_root / "ns" / token)}
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
            vfs, _ = self.store._namespace._namespaces[info.namespace_id]
            self.store._namespace._namespaces[info.namespace_id] = (vfs, info)
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
        provider_name = self._provider_name(record.provider_type)
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

    @store_errors
    async def destroy_namespace(self, record: NamespaceRecord) -> None:
        """Destroy a namespace and its bytes (the library only forgets it)."""
        if not self.is_attached(record.ns_id):
            await self.attach(record)
        s3 = self._s3(record.ns_id)
        if s3 is not None:
            await s3.strict_remove("/")
        await self.store.destroy_namespace(record.ns_id)
        root = record.provider_config.get("root_path")
        if record.provider_type is ProviderType.FILESYSTEM and root:
            await asyncio.to_thread(_destroy_root, Path(root))

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

    # -- bytes --------------------------------------------------------------
    #
    # A filesystem-provider namespace (`direct` is not None) is worked on through
    # its HostTree: by file descriptor (paths beyond PATH_MAX work) and through
    # temp files and renames (a crash never leaves a partial file at a name).
    # The library's own filesystem calls do neither.

    @store_errors
    async def mkdirs(self, ns_id: str, path: str) -> None:
        direct = self.direct(ns_id)
        if direct is not None:
            await asyncio.to_thread(direct.mkdirs, path)
            return
        s3 = self._s3(ns_id)
        if s3 is not None:
            await s3.strict_mkdirs(path)
            return
        vfs = self.vfs(ns_id)
        parts = [p for p in path.split("/") if p]
        cur = ""
        for part in parts:
            cur += "/" + part
            if await vfs.is_dir(cur):
                continue
            if not await vfs.mkdir(cur) and not await vfs.is_dir(cur):
                raise StoreUnavailable(f"mkdir {cur} failed in {ns_id}")

    @store_errors
    async def put(
        self, ns_id: str, path: str, source: Path | BinaryIO, durable: bool = False
    ) -> str:
        """Stream a local file to `path`, atomically replacing it; return its sha256.

        `source` may be an open file: the caller opened it so that a newer
        version replacing the file meanwhile cannot pull it away.
        """
        direct = self.direct(ns_id)
        if direct is not None:
            host = direct

            def put_local() -> str:
                f = open(source, "rb") if isinstance(source, Path) else source  # noqa: SIM115
                with f:
                    sha = file_sha256(f)
                    # Copied: the caller's file may change after this returns.
                    host.put(path, f, durable, link=False)
                return sha

            return await asyncio.to_thread(put_local)
        digest = hashlib.sha256()
        s3 = self._s3(ns_id)
        if s3 is not None:
            # Durable when the PUT (or the multipart upload's completion) returns.
            f: BinaryIO = (
                await asyncio.to_thread(open, source, "rb") if isinstance(source, Path) else source
            )
            try:
                await s3.strict_put(path, f, digest)
            finally:
                f.close()
            return digest.hexdigest()
        vfs = self.vfs(ns_id)
        await self.mkdirs(ns_id, path.rsplit("/", 1)[0])
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
        # Not a local disk (that is HostTree's): nothing here to fsync.
        return digest.hexdigest()

    @store_errors
    async def get(self, ns_id: str, path: str, dest: Path) -> bool:
        """Stream `path` into the local file `dest`; False if it does not exist."""
        direct = self.direct(ns_id)
        if direct is not None:
            # The filesystem provider's stream_read reads the whole file into
            # memory first; take its host file instead (bounded memory).
            return await asyncio.to_thread(direct.get, path, dest)
        s3 = self._s3(ns_id)
        if s3 is not None:
            return await s3.strict_get(path, dest)
        vfs = self.vfs(ns_id)
        if not await vfs.is_file(path):
            return False
        with open(dest, "wb") as out:
            async for chunk in vfs.stream_read(path, chunk_size=CHUNK):
                await asyncio.to_thread(out.write, chunk)
        return True

    @store_errors
    async def exists(self, ns_id: str, path: str) -> bool:
        direct = self.direct(ns_id)
        if direct is not None:
            return await asyncio.to_thread(direct.exists, path)
        s3 = self._s3(ns_id)
        if s3 is not None:
            return await s3.strict_exists(path)
        return bool(await self.vfs(ns_id).exists(path))

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
        s3 = self._s3(ns_id)
        if s3 is None:
            raise StoreUnavailable("ranged reads need an s3 namespace")
        return await s3.strict_read_range(path, start, length, fd, etag)

    @store_errors
    async def remove(self, ns_id: str, path: str) -> None:
        """Remove a file or a whole directory tree; a missing path is fine."""
        direct = self.direct(ns_id)
        if direct is not None:
            await asyncio.to_thread(direct.remove, path)
            return
        s3 = self._s3(ns_id)
        if s3 is not None:
            await s3.strict_remove(path)
            return
        vfs = self.vfs(ns_id)
        if await vfs.is_dir(path):
            for child in await vfs.ls(path):
                await self.remove(ns_id, path.rstrip("/") + "/" + child)
            await vfs.rmdir(path)
        elif await vfs.exists(path) and not await vfs.rm(path):
            raise StoreUnavailable(f"removing {path} in {ns_id} failed")

    @store_errors
    async def move(self, ns_id: str, src: str, dst: str) -> None:
        """Rename, replacing `dst`. Re-running after a crash is harmless."""
        direct = self.direct(ns_id)
        if direct is not None:
            await asyncio.to_thread(direct.move, src, dst)
            return
        s3 = self._s3(ns_id)
        if s3 is not None:
            await s3.strict_move(src, dst)
            return
        vfs = self.vfs(ns_id)
        if not await vfs.exists(src):
            return  # already moved, or never stored: nothing to carry over
        if await vfs.exists(dst):
            await self.remove(ns_id, dst)
        await self.mkdirs(ns_id, dst.rsplit("/", 1)[0])
        if not await vfs.mv(src, dst):
            raise StoreUnavailable(f"moving {src} to {dst} in {ns_id} failed")

    @store_errors
    async def copy(self, ns_id: str, src: str, dst: str, if_missing: bool = False) -> bool:
        """Copy a file within a namespace, atomically replacing `dst`.

        With if_missing an existing `dst` of `src`'s size is kept
        (content-addressed objects); one of another size (a leftover of an
        interrupted write) is replaced. False when `src` does not exist
        (with if_missing: and `dst` does not either).
        """
        direct = self.direct(ns_id)
        if direct is not None:
            return await asyncio.to_thread(direct.copy, src, dst, if_missing)
        s3 = self._s3(ns_id)
        if s3 is not None:
            head = await s3.strict_head(src)
            if head is None:
                return if_missing and await s3.strict_exists(dst)
            size = int(head["ContentLength"])
            if if_missing:
                have = await s3.strict_head(dst)
                if have is not None and int(have["ContentLength"]) == size:
                    return True
            await s3.strict_copy_key(s3.key(src), s3.key(dst), size)  # server-side
            return True
        if if_missing and await self.exists(ns_id, dst):
            return True
        async with self._scratch_file() as tmp:
            if not await self.get(ns_id, src, tmp):
                return False
            await self.put(ns_id, dst, tmp)
            return True

    @store_errors
    async def write_small(self, ns_id: str, path: str, data: bytes) -> None:
        direct = self.direct(ns_id)
        if direct is not None:
            await asyncio.to_thread(direct.write_small, path, data)
            return
        s3 = self._s3(ns_id)
        if s3 is not None:
            await s3.strict_write(path, data)
            return
        vfs = self.vfs(ns_id)
        await self.mkdirs(ns_id, path.rsplit("/", 1)[0])
        if not await vfs.write_file(path, data):
            raise StoreUnavailable(f"writing {path} in {ns_id} failed")

    @store_errors
    async def read_small(self, ns_id: str, path: str) -> bytes | None:
        direct = self.direct(ns_id)
        if direct is not None:
            return await asyncio.to_thread(direct.read_small, path)
        s3 = self._s3(ns_id)
        if s3 is not None:
            return await s3.strict_read(path)
        vfs = self.vfs(ns_id)
        if not await vfs.is_file(path):
            return None
        data = await vfs.read_file(path)
        return data.encode() if isinstance(data, str) else data

    # -- leftovers of interrupted work (call at start, before any store work) ----

    def sweep_temps(self, ns_id: str) -> int:
        """Remove the temp files interrupted writes left in a local namespace;
        return how many (0 for other namespaces). Blocking."""
        direct = self.direct(ns_id)
        return 0 if direct is None else direct.sweep_temps()

    def sweep_store_tmp(self) -> int:
        """Empty the store's own temp directory (`copy` through a local file);
        return how many entries were removed. Blocking."""
        try:
            fd = os.open(self.data_root / "tmp", _ROOT_FLAGS)
        except FileNotFoundError:
            return 0
        try:
            with os.scandir(fd) as it:
                names = [entry.name for entry in it]
            for name in names:
                _remove_at(fd, name)
        finally:
            os.close(fd)
        return len(names)

    # -- what fsck asks --------------------------------------------------------

    def token_of(self, record: NamespaceRecord) -> str:
        """The namespace's folder (local) or key-prefix (s3) name in the store."""
        where = record.provider_config.get("root_path") or record.provider_config.get("prefix")
        return str(where).rstrip("/").rsplit("/", 1)[-1]

    def token_config(self, token: str) -> dict[str, Any]:
        """The provider config of the namespace stored under `token` in this store."""
        if self.s3 is not None:
            return {"bucket_name": self.s3.bucket, "prefix": self.s3.namespace_prefix(token)}
        return {"root_path": str(self.data_root / "ns" / token)}

    def _token_host(self, token: str) -> HostTree:
        return HostTree(self.data_root / "ns" / token)

    @store_errors
    async def store_tokens(self) -> list[str]:
        """The names of every namespace the store holds, known to the index or not."""
        if self.s3 is not None:
            assert self._s3_conn is not None
            base = self.s3.namespace_prefix("")
            tokens: list[str] = []
            paginator = self._s3_conn.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.s3.bucket, Prefix=base, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    tokens.append(str(common["Prefix"])[len(base) :].rstrip("/"))
            return sorted(tokens)
        folder = self.data_root / "ns"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())

    @store_errors
    async def list_files(self, token: str) -> list[tuple[str, int]]:
        """(store path, size) of every file of the namespace stored under `token`
        (sidecars and the libraries' own files included)."""
        if self.s3 is not None:
            assert self._s3_conn is not None
            base = self.s3.namespace_prefix(token) + "/"
            found: list[tuple[str, int]] = []
            paginator = self._s3_conn.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.s3.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    if not key.endswith("/"):  # directory markers
                        found.append(("/" + key[len(base) :], int(obj["Size"])))
            return found
        return await asyncio.to_thread(self._token_host(token).files)

    @store_errors
    async def namespace_exists(self, record: NamespaceRecord) -> bool:
        if self.s3 is not None:
            return bool(await self.list_files(self.token_of(record)))
        return (self.data_root / "ns" / self.token_of(record)).is_dir() or Path(
            str(record.provider_config.get("root_path", ""))
        ).is_dir()

    @store_errors
    async def read_record(self, token: str, path: str) -> bytes | None:
        """A small file of a namespace the index may not know (by its token)."""
        if self.s3 is not None:
            return await self._s3_object(f"{self.s3.namespace_prefix(token)}/{path.lstrip('/')}")
        return await asyncio.to_thread(self._token_host(token).read_small, path)

    async def _s3_object(self, key: str) -> bytes | None:
        assert self._s3_conn is not None and self.s3 is not None
        try:
            got = await self._s3_conn.client.get_object(Bucket=self.s3.bucket, Key=key)
            async with got["Body"] as body:
                data: bytes = await body.read()
                return data
        except Exception as e:
            if _missing(e):
                return None
            raise

    def _store_file_key(self, name: str) -> str:
        assert self.s3 is not None
        return f"{self.s3.prefix}/{name}" if self.s3.prefix else name

    @store_errors
    async def read_store_file(self, name: str) -> bytes | None:
        """A file of the store itself (its identity): beside `data/` on a local
        store, at the store's prefix in the bucket on s3."""
        if self.s3 is not None:
            return await self._s3_object(self._store_file_key(name))
        try:
            return (self.data_root.parent / name).read_bytes()
        except FileNotFoundError:
            return None

    @store_errors
    async def write_store_file(self, name: str, data: bytes) -> None:
        """Write a store file atomically and durably."""
        if self.s3 is not None:
            assert self._s3_conn is not None
            await self._s3_conn.client.put_object(
                Bucket=self.s3.bucket, Key=self._store_file_key(name), Body=data
            )
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
        provider = "vfs-filesystem" if self.s3 is None else ProviderType.S3.value
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

    def listed_as(self, ns_id: str, path: str) -> str:
        """How list_files names the file at `path` (s3 keys hold some names as digests)."""
        s3 = self._s3(ns_id)
        if s3 is None:
            return path
        base = s3.key("/x")[:-1]
        return "/" + s3.key(path)[len(base) :]

    @store_errors
    async def size_of(self, ns_id: str, path: str) -> int | None:
        """The size of the store's copy at `path`; None if there is none."""
        s3 = self._s3(ns_id)
        if s3 is not None:
            head = await s3.strict_head(path)
            return None if head is None else int(head["ContentLength"])
        direct = self.direct(ns_id)
        if direct is None:
            raise StoreUnavailable(f"namespace {ns_id} is neither on this disk nor in s3")
        return await asyncio.to_thread(direct.size, path)

    @store_errors
    async def sha256_of(self, ns_id: str, path: str) -> str | None:
        """The sha256 of the store's copy at `path` (an s3 object is read whole)."""
        direct = self.direct(ns_id)
        if direct is not None:
            return await asyncio.to_thread(direct.sha256, path)
        async with self._scratch_file() as tmp:
            if not await self.get(ns_id, path, tmp):
                return None
            with open(tmp, "rb") as f:
                return await asyncio.to_thread(file_sha256, f)

    @asynccontextmanager
    async def _scratch_file(self) -> AsyncIterator[Path]:
        """A temporary local file in the store's tmp folder (swept at start), removed after."""
        tmp_dir = self.data_root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, dir=tmp_dir)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)


class HostTree:
    """File work done directly in a filesystem-provider namespace's directory.

    Paths are store paths (already escaped by `store_name`). Every method is
    idempotent, blocking, and raises OSError on failure (the journal retries
    what `is_permanent` does not rule out).

    The tree is walked one directory at a time by file descriptor (openat,
    mkdirat, renameat, linkat, unlinkat...): no whole host path is ever given
    to the kernel, so a store path longer than PATH_MAX works like a short
    one, and a symlink planted in the tree is never followed. A file is only
    ever replaced through a temp file in its directory and a rename: after a
    crash at any point the name holds the old or the new content, never a
    part of it, and at worst a temp file is left that `sweep_temps` removes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, path: str) -> Path:
        """The host path of `path`, to look at (it may be longer than PATH_MAX)."""
        return self.root / path.lstrip("/")

    # -- walking by file descriptor ------------------------------------------

    def _open_root(self, create: bool) -> int | None:
        try:
            return os.open(self.root, _ROOT_FLAGS)
        except FileNotFoundError:
            if not create:
                return None
        os.makedirs(self.root, exist_ok=True)
        return os.open(self.root, _ROOT_FLAGS)

    def _open_dir(self, names: list[str], create: bool) -> int | None:
        """An fd of the directory root/names...; None if it is missing (not
        created) or something else is in the way (only when not creating)."""
        fd = self._open_root(create)
        if fd is None:
            return None
        done = False
        try:
            for name in names:
                sub = _open_subdir(fd, name, create)
                if sub is None:
                    return None
                os.close(fd)
                fd = sub
            done = True
            return fd
        finally:
            if not done:
                os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str] | None]:
        """(fd of the directory holding `path`, its name); None if that is missing."""
        names = _parts(path)
        if not names:
            raise IsADirectoryError(errno.EISDIR, "the namespace root is a directory", path)
        fd = self._open_dir(names[:-1], create)
        if fd is None:
            yield None
            return
        try:
            yield fd, names[-1]
        finally:
            os.close(fd)

    # -- operations ---------------------------------------------------------------

    def put(self, path: str, source: BinaryIO, durable: bool = False, link: bool = True) -> None:
        """Atomically replace `path` with the content of the open file `source`.

        With `link`, the file is hard-linked when it can be: only for files
        that never change once written (the cache's sealed generations).
        No hash is computed here (the index computes one on first need), so an
        fsync costs what the disk's own flush costs.
        """
        with self._parent(path, create=True) as at:
            assert at is not None
            dfd, name = at
            tmp = _temp_name(name)
            # By name: the open file pins the content; if the name is gone (a
            # newer generation superseded it) or on another disk, copy.
            linked = link and _link_source(source, dfd, tmp)
            fd = -1
            try:
                if linked:
                    content = source.fileno()
                else:
                    fd = content = os.open(tmp, _NEW_FLAGS, 0o666, dir_fd=dfd)
                    with open(fd, "wb", closefd=False) as out:
                        if source.seekable():  # else a stream (a pipe): from where it is
                            source.seek(0)
                        shutil.copyfileobj(source, out, CHUNK)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                if linked:  # rename(2) of two links of one file leaves both: drop ours
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                if fd >= 0:
                    os.close(fd)
                raise
            try:
                if durable:
                    # Rename first, then flush: on journaling filesystems the file's
                    # flush commits the rename too, and the directory's costs little.
                    os.fsync(content)
                    os.fsync(dfd)
            finally:
                if fd >= 0:
                    os.close(fd)

    def get(self, path: str, dest: Path) -> bool:
        """Put the content of `path` at the local file `dest`; False if missing.

        `dest` is a short local path (the cache's): linked when on the same
        disk, else copied.
        """
        with self._parent(path) as at:
            if at is None:
                return False
            dfd, name = at
            fd = _open_file(dfd, name)
            if fd is None:
                return False
            try:
                dest.unlink(missing_ok=True)
                try:
                    os.link(name, dest, src_dir_fd=dfd, follow_symlinks=False)
                    linked = True
                except OSError:
                    linked = False
                if not linked:
                    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
                    try:
                        _copy_fd(fd, out)
                    finally:
                        os.close(out)
            finally:
                os.close(fd)
            return True

    def exists(self, path: str) -> bool:
        """Whether anything (file, directory...) is at `path`."""
        if not _parts(path):
            return self.root.is_dir()
        with self._parent(path) as at:
            return at is not None and _lstat(*at) is not None

    def read_small(self, path: str) -> bytes | None:
        """The whole content of the file `path`; None if it is not a file."""
        with self._parent(path) as at:
            if at is None:
                return None
            fd = _open_file(*at)
            if fd is None:
                return None
            with open(fd, "rb") as f:
                return f.read()

    def write_small(self, path: str, data: bytes) -> None:
        """Atomically replace `path` with `data` (temp file, then rename)."""

        def fill(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        with self._parent(path, create=True) as at:
            assert at is not None
            _replace_via_temp(*at, fill)

    def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        """Copy the file `src` to `dst`, atomically replacing it; False if `src`
        is missing.

        With if_missing an existing file `dst` of `src`'s size is kept
        (content-addressed objects): a different size is a leftover and is
        replaced. When `src` is gone, an existing `dst` is kept (True).
        """
        with self._parent(src) as at:
            sfd = None if at is None else _open_file(*at)
        if sfd is None:
            return if_missing and self.exists(dst)
        try:
            size = os.fstat(sfd).st_size
            with self._parent(dst, create=True) as d_at:
                assert d_at is not None
                if if_missing:
                    st = _lstat(*d_at)
                    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size:
                        return True
                _replace_via_temp(*d_at, functools.partial(_copy_fd, sfd))
            return True
        finally:
            os.close(sfd)

    def mkdirs(self, path: str) -> None:
        fd = self._open_dir(_parts(path), create=True)
        assert fd is not None
        os.close(fd)

    def remove(self, path: str) -> None:
        """Remove a file or a whole tree (and the provider's `.meta` sidecar
        beside it); a missing path is fine. "/" removes the namespace root."""
        if not _parts(path):
            try:
                pfd = os.open(self.root.parent, _ROOT_FLAGS)
            except FileNotFoundError:
                return
            try:
                _remove_at(pfd, self.root.name)
            finally:
                os.close(pfd)
            return
        with self._parent(path) as at:
            if at is None:
                return
            dfd, name = at
            _remove_at(dfd, name)
            sidecar = _sidecar(name)
            if sidecar is not None:
                _remove_at(dfd, sidecar)

    def move(self, src: str, dst: str) -> None:
        """Rename, replacing `dst` (and carrying the `.meta` sidecar); a missing
        `src` was moved already."""
        if _parts(src) == _parts(dst):
            return
        with self._parent(src) as s_at:
            if s_at is None:
                return
            sfd, sname = s_at
            s_side = _sidecar(sname)
            has_side = s_side is not None and _lstat(sfd, s_side) is not None
            s_st = _lstat(sfd, sname)
            if s_st is None:
                # Moved before a crash: finish carrying the sidecar, if that is left.
                if has_side:
                    with self._parent(dst) as d_at:
                        if d_at is not None and _lstat(*d_at) is not None:
                            _move_sidecar(sfd, sname, *d_at)
                return
            with self._parent(dst, create=True) as d_at:
                assert d_at is not None
                dfd, dname = d_at
                d_side = _sidecar(dname)
                if not has_side and d_side is not None:
                    _remove_at(dfd, d_side)  # the old target's sidecar is not ours
                d_st = _lstat(dfd, dname)
                if d_st is not None and (
                    stat.S_ISDIR(d_st.st_mode)
                    or stat.S_ISDIR(s_st.st_mode)
                    or (d_st.st_dev, d_st.st_ino) == (s_st.st_dev, s_st.st_ino)
                ):
                    # rename() cannot replace a directory that is not empty, nor a
                    # file by a directory; and it keeps both names of one inode.
                    _remove_at(dfd, dname)
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                if has_side:
                    _move_sidecar(sfd, sname, dfd, dname)

    def size(self, path: str) -> int | None:
        """The size of the file at `path`; None if there is no file."""
        with self._parent(path) as at:
            st = None if at is None else _lstat(*at)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def sha256(self, path: str) -> str | None:
        with self._parent(path) as at:
            fd = None if at is None else _open_file(*at)
        if fd is None:
            return None
        with open(fd, "rb") as f:
            return file_sha256(f)

    def files(self) -> list[tuple[str, int]]:
        """(store path, size) of every file below the root (walked by descriptor)."""
        found: list[tuple[str, int]] = []
        root = self._open_root(create=False)
        if root is None:
            return found

        def walk(fd: int, prefix: str) -> None:
            for sub in _scan(fd, lambda dfd, e: found.append((prefix + e.name, _size(e)))):
                child = _open_subdir(fd, sub, create=False)
                if child is not None:
                    try:
                        walk(child, prefix + sub + "/")
                    finally:
                        os.close(child)

        try:
            walk(root, "/")
        finally:
            os.close(root)
        return found

    def sweep_temps(self) -> int:
        """Remove temp files (ours and the provider's stream_write's) that an
        interrupted write left anywhere in the tree; return how many.

        Only while nothing writes to the namespace (at start, before the journal
        runs): a temp file of a write in progress would be pulled away.
        """
        fd = self._open_root(create=False)
        if fd is None:
            return 0
        removed = 0

        def on_file(dfd: int, entry: os.DirEntry[str]) -> None:
            nonlocal removed
            if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=dfd)
                    removed += 1

        try:
            _walk_below(fd, on_file, None)
        finally:
            os.close(fd)
        return removed


# Directories are opened without following symlinks (the root itself may be one).
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
# O_NONBLOCK: opening a FIFO someone put in the tree must not hang.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX = 255  # bytes in one name


def _parts(path: str) -> list[str]:
    names = [n for n in path.split("/") if n]
    for n in names:
        if n in (".", "..") or "\0" in n:
            raise OSError(errno.EINVAL, f"not a store path: {path!r}")
    return names


def _temp_name(name: str) -> str:
    """`.tmp_<hex>_<name>` (the provider's pattern: 14 bytes beside the name,
    which MAX_PLAIN_NAME leaves), or `.tmp_<hex>` when that would not fit."""
    token = secrets.token_hex(4)
    tmp = f".tmp_{token}_{name}"
    return tmp if len(os.fsencode(tmp)) <= NAME_MAX else f".tmp_{token}"


def _sidecar(name: str) -> str | None:
    """The filesystem provider's metadata file beside `name` (None: cannot exist)."""
    side = name + ".meta"
    return side if len(os.fsencode(side)) <= NAME_MAX else None


def _open_subdir(fd: int, name: str, create: bool) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            return None
    except NotADirectoryError:  # a file or a symlink is in the way
        if not create:
            return None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=fd)
    return os.open(name, _DIR_FLAGS, dir_fd=fd)


def _open_file(dfd: int, name: str) -> int | None:
    """An fd of the regular file `name` in `dfd`; None if there is none."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _link_source(source: BinaryIO, dfd: int, tmp: str) -> bool:
    """Hard-link the open file `source` (by its name) as `tmp` in `dfd`.

    False when that cannot be done: no name, the name is gone or is another
    file now, another disk; or the file is empty (empty files are made anew,
    the cache's one empty file is shared).
    """
    try:
        st = os.fstat(source.fileno())
        name = source.name
        if st.st_size == 0 or not isinstance(name, str | bytes):
            return False
        os.link(name, tmp, dst_dir_fd=dfd)
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    linked = _lstat(dfd, tmp)
    if linked is None or (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        return False
    return True


def _copy_fd(src: int, dst: int) -> None:
    """Copy the whole file `src` into the empty file `dst` (in the kernel when it can)."""
    size = os.fstat(src).st_size
    offset = 0
    in_kernel = True
    while in_kernel and offset < size:
        try:
            n = os.copy_file_range(src, dst, size - offset, offset, offset)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = 0
        in_kernel = n > 0
        offset += n
    # Whatever copy_file_range did not do (another disk, a file that grew).
    while chunk := os.pread(src, CHUNK, offset):
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, offset)
            offset += written
            view = view[written:]


def _replace_via_temp(dfd: int, name: str, fill: Callable[[int], None]) -> None:
    """Write a temp file beside `name` with `fill(fd)`, then rename it over `name`."""
    tmp = _temp_name(name)
    fd = os.open(tmp, _NEW_FLAGS, 0o666, dir_fd=dfd)
    try:
        try:
            fill(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def _move_sidecar(sfd: int, sname: str, dfd: int, dname: str) -> None:
    s_side, d_side = _sidecar(sname), _sidecar(dname)
    assert s_side is not None
    if d_side is None:  # no sidecar can sit beside a name that long
        _remove_at(sfd, s_side)
    else:
        os.replace(s_side, d_side, src_dir_fd=sfd, dst_dir_fd=dfd)


def _remove_at(dfd: int, name: str) -> None:
    """Remove the file or the whole tree `name` in `dfd`; missing is fine."""
    st = _lstat(dfd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        return
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return _remove_at(dfd, name)  # replaced meanwhile: look again

    def unlink(sub: int, entry: os.DirEntry[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.name, dir_fd=sub)

    def rmdir(parent: int, sub_name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(sub_name, dir_fd=parent)

    try:
        _walk_below(fd, unlink, rmdir)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dfd)


def _walk_below(
    top: int,
    on_file: Callable[[int, os.DirEntry[str]], None],
    after_dir: Callable[[int, str], None] | None,
) -> None:
    """Depth-first walk of everything below the open directory `top`.

    `on_file(dir_fd, entry)` for each entry that is not a directory (symlinks
    are not followed); `after_dir(parent_fd, name)` once a subdirectory has
    been walked. At most three descriptors are open at a time whatever the
    depth: the walk climbs back by "..", checking that it reaches the
    directory it came from.
    """
    cur = os.dup(top)
    # Per directory above `cur`: its identity, subdirectories still to walk,
    # and the name of the one `cur` is.
    stack: list[tuple[tuple[int, int], list[str], str]] = []
    try:
        pending = _scan(cur, on_file)
        while True:
            if pending:
                name = pending.pop()
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=cur)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone or replaced meanwhile
                st = os.fstat(cur)
                stack.append(((st.st_dev, st.st_ino), pending, name))
                os.close(cur)
                cur = sub
                pending = _scan(cur, on_file)
                continue
            if not stack:
                return
            ident, pending, name = stack.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = up
            st = os.fstat(cur)
            if (st.st_dev, st.st_ino) != ident:
                raise OSError(errno.ESTALE, "a directory moved during a walk of the store")
            if after_dir is not None:
                after_dir(cur, name)
    finally:
        os.close(cur)


def _scan(fd: int, on_file: Callable[[int, os.DirEntry[str]], None]) -> list[str]:
    """Call on_file for the directory's non-directories; return its subdirectories."""
    with os.scandir(fd) as it:
        entries = list(it)
    subdirs: list[str] = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
        else:
            on_file(fd, entry)
    return subdirs


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return -1


def _destroy_root(root: Path) -> None:
    """Remove a destroyed namespace's directory, best effort (the index has
    forgotten it already)."""
    try:
        HostTree(root).remove("/")
    except OSError as e:
        log.warning("could not remove all of %s: %s", root, e)
        shutil.rmtree(root, ignore_errors=True)


def file_sha256(f: BinaryIO) -> str:
    """sha256 of an open file's whole content (blocking; hashlib releases the GIL)."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    f.seek(0)
    while n := f.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
    return digest.hexdigest()
