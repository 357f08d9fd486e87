"""The daemon's engine without the kernel, for the fast test layer.

The engine is built by the daemon's own wiring (`motionfs.daemon.Engine`),
so what these tests drive is what a mount serves, minus pyfuse3. Files are
made and read through the `Drive`, the surface the FUSE operations call.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from motionfs.daemon import Engine, MountOptions
from motionfs.errors import FsError
from motionfs.fuse.drive import Drive
from motionfs.layout import ROOT_INO

UID = GID = 1000  # the engine's owner: not the test runner's (often root)


@dataclass
class Ctx:
    uid: int = UID
    gid: int = GID
    umask: int = 0o022


CTX = Ctx()


class Harness:
    """One store directory; each `run` is a daemon lifetime over it."""

    def __init__(self, root: Path, io_timeout: float = 5.0, **options: object) -> None:
        self.root = root
        self.opts = MountOptions.model_validate(
            {
                "mountpoint": root / "mnt",  # never mounted
                "store": root,
                "user": "alice",
                "cache_size": 1 << 30,
                "io_timeout": io_timeout,
                **options,
            }
        )

    def run(self, body: Callable[[Engine], Awaitable[None]], drain: bool = True) -> None:
        """Start the engine with its services, run `body`, then drain the journal
        (drain=False: stop as a crash would, leaving the journal queued)."""
        engine = Engine(self.opts, owner=(UID, GID))
        try:
            engine.prepare()

            async def main() -> None:
                async with trio.open_nursery() as nursery:
                    await engine.start_services(nursery)
                    await body(engine)
                    if drain:
                        await engine.journal.drain_all()
                    nursery.cancel_scope.cancel()

            trio.run(main)
        finally:
            engine.close()

    def store_bytes(self, engine: Engine, ns_id: str, path: str) -> bytes | None:
        """What the store itself holds at `path` in namespace `ns_id`."""
        return engine.bridge.run(engine.storage.read_small, ns_id, path)


async def project(drive: Drive, name: bytes = b"p") -> int:
    projects = drive.lookup(ROOT_INO, b"projects")
    return (await drive.mkdir(projects.ino, name, 0o755, CTX)).ino


async def write_file(drive: Drive, parent: int, name: bytes, data: bytes) -> int:
    fh, inode = await drive.create(parent, name, 0o644, os.O_WRONLY, CTX)
    await drive.write(fh, 0, data)
    await drive.flush(fh)
    await drive.release(fh)
    return inode.ino


async def rewrite(drive: Drive, ino: int, off: int, data: bytes, flags: int = os.O_WRONLY) -> None:
    """Open an existing file, write `data` at `off`, close it (sealing it)."""
    fh = await drive.open(ino, flags)
    await drive.write(fh, off, data)
    await drive.flush(fh)
    await drive.release(fh)


async def read_file(drive: Drive, ino: int) -> bytes:
    fh = await drive.open(ino, os.O_RDONLY)
    try:
        return await drive.read(fh, 0, 1 << 30)
    finally:
        await drive.release(fh)


def ns_of(drive: Drive, ino: int) -> str:
    ns = drive.stat(ino).ns_id
    assert ns is not None
    return ns


@contextlib.contextmanager
def fs_error(code: int) -> Iterator[None]:
    """The block must be refused with FsError(code), as FUSE would answer it."""
    with pytest.raises(FsError) as info:
        yield
    got = errno.errorcode.get(info.value.errno, str(info.value.errno))
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {got}"
