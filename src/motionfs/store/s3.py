"""The S3 backend: namespaces as key prefixes in one bucket.

chuk-virtual-fs's s3 provider opens a new client (and connection pool) per
call, caches listings and node info for 60 s, shares keys between namespaces
unless each has its own `prefix`, turns every error (an unreachable endpoint
too) into None/False/[], streams even an empty file as a multipart upload
(which S3 refuses), and reads whole objects into memory in `read_file`.
`SharedClientS3Provider` (a thin subclass) keeps one client for the daemon's
lifetime with bounded timeouts and no info cache, and `S3Backend` moves bytes
through it with calls that raise on failure (single PUT or multipart upload,
ranged GETs, server-side copies), at the keys the provider itself uses, so
the library's VFS sees the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from chuk_virtual_fs.providers.s3 import S3StorageProvider

from motionfs.errors import StoreUnavailable
from motionfs.store.backend import CHUNK, Scratch, open_source, sha256_via
from motionfs.store.failures import ContentChanged
from motionfs.store.names import hashed_name

ASSEMBLY_TIMEOUT = 900.0  # seconds an S3 server may take to complete a multipart upload

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

    async def list_prefixes(self, prefix: str) -> list[str]:
        """The "folder" names right below `prefix` in the bucket."""
        names: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        bucket = self.settings.bucket
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.append(str(common["Prefix"])[len(prefix) :].rstrip("/"))
        return names

    async def list_files(self, prefix: str) -> list[tuple[str, int]]:
        """(key below `prefix`, size) of every object but directory markers."""
        found: list[tuple[str, int]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                if not key.endswith("/"):  # directory markers
                    found.append((key[len(prefix) :], int(obj["Size"])))
        return found

    async def read_object(self, key: str) -> bytes | None:
        try:
            got = await self.client.get_object(Bucket=self.settings.bucket, Key=key)
            async with got["Body"] as body:
                data: bytes = await body.read()
                return data
        except Exception as e:
            if _missing(e):
                return None
            raise

    async def write_object(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=self.settings.bucket, Key=key, Body=data)

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

        async def upload(upload_id: str) -> list[dict[str, Any]]:
            parts: list[dict[str, Any]] = []
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
            return parts

        await self._multipart(key, upload)

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

        async def copy_parts(upload_id: str) -> list[dict[str, Any]]:
            parts: list[dict[str, Any]] = []
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
            return parts

        await self._multipart(dst_key, copy_parts)

    async def _multipart(
        self, key: str, add_parts: Callable[[str], Awaitable[list[dict[str, Any]]]]
    ) -> None:
        """A multipart upload at `key`: `add_parts(upload_id)` uploads or copies
        the parts, then the server assembles them; any failure aborts it."""
        upload = await self._c.create_multipart_upload(
            Bucket=self.bucket_name, Key=key, Metadata={"type": "file"}
        )
        upload_id = upload["UploadId"]
        try:
            parts = await add_parts(upload_id)
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


class S3Backend:
    """One namespace's keys behind the Backend protocol (on the event loop)."""

    ranged = True

    def __init__(self, provider: SharedClientS3Provider, scratch: Scratch) -> None:
        self.provider = provider
        self.scratch = scratch

    async def put(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        # Durable when the PUT (or the multipart upload's completion) returns.
        digest = hashlib.sha256()
        f = await open_source(source)
        try:
            await self.provider.strict_put(path, f, digest)
        finally:
            f.close()
        return digest.hexdigest()

    async def get(self, path: str, dest: Path) -> bool:
        return await self.provider.strict_get(path, dest)

    async def exists(self, path: str) -> bool:
        return await self.provider.strict_exists(path)

    async def read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        return await self.provider.strict_read_range(path, start, length, fd, etag)

    async def remove(self, path: str) -> None:
        await self.provider.strict_remove(path)

    async def move(self, src: str, dst: str) -> None:
        await self.provider.strict_move(src, dst)

    async def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        s3 = self.provider
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

    async def mkdirs(self, path: str) -> None:
        await self.provider.strict_mkdirs(path)

    async def write_small(self, path: str, data: bytes) -> None:
        await self.provider.strict_write(path, data)

    async def read_small(self, path: str) -> bytes | None:
        return await self.provider.strict_read(path)

    async def size(self, path: str) -> int | None:
        head = await self.provider.strict_head(path)
        return None if head is None else int(head["ContentLength"])

    async def sha256(self, path: str) -> str | None:
        """An s3 object is read whole to hash it."""
        return await sha256_via(self, self.scratch, path)

    def listed_as(self, path: str) -> str:
        """Listings show keys, which hold some names as digests."""
        base = self.provider.key("/x")[:-1]
        return "/" + self.provider.key(path)[len(base) :]

    def sweep_temps(self) -> int:
        return 0  # uploads are atomic: nothing is left half-written at a key

    async def destroy(self, forget: Callable[[], Awaitable[None]]) -> None:
        """Every key goes first (the library would only forget them)."""
        await self.provider.strict_remove("/")
        await forget()
