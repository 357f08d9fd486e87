"""The generic backend: any chuk-virtual-fs provider that is neither a local
folder nor S3 (memory, sqlite...), through its AsyncVirtualFileSystem.

The library reports most failures as None/False: a failed write becomes
StoreUnavailable, never silent success, and parents are created before
writing into them (`write_file`/`stream_write` into a missing parent fail).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from chuk_virtual_fs import AsyncVirtualFileSystem

from motionfs.errors import StoreUnavailable
from motionfs.store.backend import CHUNK, Scratch, open_source, sha256_via


class VfsBackend:
    """One namespace's AsyncVirtualFileSystem behind the Backend protocol."""

    ranged = False

    def __init__(self, vfs: AsyncVirtualFileSystem, ns_id: str, scratch: Scratch) -> None:
        self.vfs = vfs
        self.ns_id = ns_id  # for messages
        self.scratch = scratch

    async def put(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        digest = hashlib.sha256()
        await self.mkdirs(path.rsplit("/", 1)[0])
        f = await open_source(source)

        def read_chunk() -> bytes:
            chunk = f.read(CHUNK)
            digest.update(chunk)
            return chunk

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(read_chunk):
                yield chunk

        try:
            ok = await self.vfs.stream_write(path, chunks(), chunk_size=CHUNK)
        finally:
            f.close()
        if not ok:
            raise StoreUnavailable(f"writing {path} in {self.ns_id} failed")
        # Not a local disk (that is HostTree's): nothing here to fsync.
        return digest.hexdigest()

    async def get(self, path: str, dest: Path) -> bool:
        if not await self.vfs.is_file(path):
            return False
        with open(dest, "wb") as out:
            async for chunk in self.vfs.stream_read(path, chunk_size=CHUNK):
                await asyncio.to_thread(out.write, chunk)
        return True

    async def exists(self, path: str) -> bool:
        return bool(await self.vfs.exists(path))

    async def read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        raise StoreUnavailable("ranged reads need an s3 namespace")

    async def remove(self, path: str) -> None:
        vfs = self.vfs
        if await vfs.is_dir(path):
            for child in await vfs.ls(path):
                await self.remove(path.rstrip("/") + "/" + child)
            await vfs.rmdir(path)
        elif await vfs.exists(path) and not await vfs.rm(path):
            raise StoreUnavailable(f"removing {path} in {self.ns_id} failed")

    async def move(self, src: str, dst: str) -> None:
        vfs = self.vfs
        if not await vfs.exists(src):
            return  # already moved, or never stored: nothing to carry over
        if await vfs.exists(dst):
            await self.remove(dst)
        await self.mkdirs(dst.rsplit("/", 1)[0])
        if await vfs.is_dir(src):
            # The library's mv of a folder copies it, then fails to delete the
            # (non-empty) source and reports failure: move entry by entry.
            await self.mkdirs(dst)
            for child in await vfs.ls(src):
                await self.move(f"{src.rstrip('/')}/{child}", f"{dst.rstrip('/')}/{child}")
            if not await vfs.rmdir(src):
                raise StoreUnavailable(f"removing {src} in {self.ns_id} failed")
        elif not await vfs.mv(src, dst):
            raise StoreUnavailable(f"moving {src} to {dst} in {self.ns_id} failed")

    async def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        """Through a local scratch file: the library has no copy that keeps
        bounded memory."""
        if if_missing and await self.exists(dst):
            return True
        async with self.scratch() as tmp:
            if not await self.get(src, tmp):
                return False
            await self.put(dst, tmp)
            return True

    async def mkdirs(self, path: str) -> None:
        vfs = self.vfs
        parts = [p for p in path.split("/") if p]
        cur = ""
        for part in parts:
            cur += "/" + part
            if await vfs.is_dir(cur):
                continue
            if not await vfs.mkdir(cur) and not await vfs.is_dir(cur):
                raise StoreUnavailable(f"mkdir {cur} failed in {self.ns_id}")

    async def write_small(self, path: str, data: bytes) -> None:
        await self.mkdirs(path.rsplit("/", 1)[0])
        if not await self.vfs.write_file(path, data):
            raise StoreUnavailable(f"writing {path} in {self.ns_id} failed")

    async def read_small(self, path: str) -> bytes | None:
        if not await self.vfs.is_file(path):
            return None
        data = await self.vfs.read_file(path)
        return data.encode() if isinstance(data, str) else data

    async def size(self, path: str) -> int | None:
        if not await self.vfs.is_file(path):
            return None
        info = await self.vfs.get_node_info(path)
        return None if info is None else int(info.size)

    async def sha256(self, path: str) -> str | None:
        return await sha256_via(self, self.scratch, path)

    def listed_as(self, path: str) -> str:
        return path

    def sweep_temps(self) -> int:
        return 0  # not a local disk: its provider leaves nothing we could sweep

    async def destroy(self, forget: Callable[[], Awaitable[None]]) -> None:
        """The library's destroy is all there is (its provider holds the bytes)."""
        await forget()
