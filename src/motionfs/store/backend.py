"""The one protocol every store backend implements, and the changes the
journal asks of it.

A namespace's bytes live in one of three places: a folder on this machine
(`host.HostBackend`), an S3 bucket (`s3.S3Backend`) or any other
chuk-virtual-fs provider (`vfs.VfsBackend`). `Storage` looks the backend up
once per call and never asks which kind it has. Paths are store paths
(already escaped by `names.store_name`). Backends raise whatever their
transport raises; `Storage` wraps failures (`failures.store_errors`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from motionfs.store.failures import SourceMissing

CHUNK = 1 << 20

# A local file to stage bytes in (removed afterwards), for backends that have
# no server-side copy or hash.
Scratch = Callable[[], AbstractAsyncContextManager[Path]]


@dataclass(frozen=True)
class Put:
    """Atomically replace `path` with the content of `source`.

    `sealed`: the source never changes once written (a cache generation) and
    nobody needs its hash now, so a local backend may hard-link it and skip
    hashing.
    """

    path: str
    source: BinaryIO
    durable: bool = False
    sealed: bool = False


@dataclass(frozen=True)
class MakeDirs:
    path: str


@dataclass(frozen=True)
class Remove:
    path: str


@dataclass(frozen=True)
class Move:
    src: str
    dst: str


@dataclass(frozen=True)
class Copy:
    """Copy `src` to `dst`; SourceMissing when `src` is gone (see Backend.copy)."""

    src: str
    dst: str
    if_missing: bool = False


@dataclass(frozen=True)
class Write:
    path: str
    data: bytes


Change = Put | MakeDirs | Remove | Move | Copy | Write


class Backend(Protocol):
    """One namespace's bytes. Every operation is idempotent, so replaying a
    journal after a crash converges the store on the index."""

    @property
    def ranged(self) -> bool:
        """Whether `read_range` works (reads fetch ranges on demand)."""
        ...

    async def put(
        self, path: str, source: Path | BinaryIO, durable: bool = False, sealed: bool = False
    ) -> str | None:
        """Atomically replace `path` with a local file's content; its sha256,
        None only when a sealed source was linked without hashing it."""
        ...

    async def get(self, path: str, dest: Path) -> bool:
        """Stream `path` into the local file `dest`; False if it does not exist."""
        ...

    async def exists(self, path: str) -> bool: ...

    async def read_range(
        self, path: str, start: int, length: int, fd: int, etag: str | None
    ) -> tuple[str, int] | None:
        """Bytes [start, start+length) of `path` into `fd` at `start`:
        (version tag, size), None if missing; ContentChanged if not `etag`."""
        ...

    async def remove(self, path: str) -> None:
        """Remove a file or a whole tree; a missing path is fine."""
        ...

    async def move(self, src: str, dst: str) -> None:
        """Rename, replacing `dst`; a missing `src` was moved already."""
        ...

    async def copy(self, src: str, dst: str, if_missing: bool = False) -> bool:
        """Copy a file, atomically replacing `dst`. With if_missing an existing
        `dst` of `src`'s size is kept (content-addressed objects). False when
        `src` does not exist (with if_missing: and `dst` does not either)."""
        ...

    async def mkdirs(self, path: str) -> None: ...

    async def write_small(self, path: str, data: bytes) -> None: ...

    async def read_small(self, path: str) -> bytes | None: ...

    async def size(self, path: str) -> int | None:
        """The size of the file at `path`; None if there is none."""
        ...

    async def sha256(self, path: str) -> str | None: ...

    def listed_as(self, path: str) -> str:
        """How a listing of the store names the file at `path`."""
        ...

    def sweep_temps(self) -> int:
        """Remove the temp files interrupted writes left; how many. Blocking,
        and only while nothing writes to the namespace."""
        ...

    async def destroy(self, forget: Callable[[], Awaitable[None]]) -> None:
        """Remove every byte of the namespace; `forget` (the library's own
        destroy) is called at the point this backend needs it."""
        ...


async def apply(backend: Backend, change: Change) -> str | None:
    """Apply one change; the sha256 of a Put's content when it was computed."""
    match change:
        case Put(path, source, durable, sealed):
            return await backend.put(path, source, durable, sealed)
        case MakeDirs(path):
            await backend.mkdirs(path)
        case Remove(path):
            await backend.remove(path)
        case Move(src, dst):
            await backend.move(src, dst)
        case Copy(src, dst, if_missing):
            if not await backend.copy(src, dst, if_missing):
                raise SourceMissing(f"copy {src} -> {dst}: the source is missing")
        case Write(path, data):
            await backend.write_small(path, data)
    return None


def file_sha256(f: BinaryIO) -> str:
    """sha256 of an open file's whole content (blocking; hashlib releases the GIL)."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    f.seek(0)
    while n := f.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
    return digest.hexdigest()


async def open_source(source: Path | BinaryIO) -> BinaryIO:
    """The caller's open file, or the file at `source` opened off the loop."""
    if isinstance(source, Path):
        f: BinaryIO = await asyncio.to_thread(open, source, "rb")
        return f
    return source


def scratch_in(folder: Path) -> Scratch:
    """Scratch files in `folder` (swept at start)."""

    @asynccontextmanager
    async def scratch() -> AsyncIterator[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    return scratch


async def sha256_via(backend: Backend, scratch: Scratch, path: str) -> str | None:
    """The sha256 of `path`, read whole into a scratch file."""
    async with scratch() as tmp:
        if not await backend.get(path, tmp):
            return None
        with open(tmp, "rb") as f:
            return await asyncio.to_thread(file_sha256, f)
