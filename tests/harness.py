"""A daemon's components without the kernel, for the fast test layer."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from motionfs.bridge import AsyncioBridge
from motionfs.core.tree import Tree, TreeConfig
from motionfs.data.cache import DataCache
from motionfs.data.journal import Journal
from motionfs.layout import ROOT_INO
from motionfs.meta.sqlite import Index
from motionfs.store.storage import Storage


@dataclass
class Ctx:
    uid: int = 1000
    gid: int = 1000
    umask: int = 0o022


CTX = Ctx()


class Harness:
    """One store directory; each `run` is a daemon lifetime over it."""

    def __init__(self, root: Path, io_timeout: float = 5.0) -> None:
        self.root = root
        self.io_timeout = io_timeout

    def run(self, body: Callable[[Tree], Awaitable[None]], drain: bool = True) -> None:
        bridge = AsyncioBridge()
        index = Index(self.root / "index.sqlite")
        storage = Storage(self.root / "data", "sbx")
        bridge.run(storage.start)
        cache = DataCache(self.root / "cache", 1 << 30)
        journal = Journal(index, storage, bridge, cache)
        tree = Tree(
            index, storage, bridge, journal, cache, TreeConfig("alice", 1000, 1000, self.io_timeout)
        )
        tree.ensure_layout()
        tree.recover()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.run, nursery)
                await body(tree)
                if drain:
                    await journal.drain_all()
                nursery.cancel_scope.cancel()

        try:
            trio.run(main)
        finally:
            bridge.run(storage.stop)
            bridge.close()
            index.close()

    def store_bytes(self, tree: Tree, ns_id: str, path: str) -> bytes | None:
        return tree.bridge.run(tree.storage.read_small, ns_id, path)


async def project(tree: Tree, name: bytes = b"p") -> int:
    projects = tree.lookup(ROOT_INO, b"projects")
    return (await tree.mkdir(projects.ino, name, 0o755, CTX)).ino


async def write_file(tree: Tree, parent: int, name: bytes, data: bytes) -> int:
    fh, inode = await tree.create(parent, name, 0o644, os.O_WRONLY, CTX)
    await tree.write(fh, 0, data)
    await tree.flush(fh)
    await tree.release(fh)
    return inode.ino


async def read_file(tree: Tree, ino: int) -> bytes:
    fh = await tree.open(ino, os.O_RDONLY)
    try:
        return await tree.read(fh, 0, 1 << 30)
    finally:
        await tree.release(fh)


def ns_of(tree: Tree, ino: int) -> str:
    ns = tree.stat(ino).ns_id
    assert ns is not None
    return ns
