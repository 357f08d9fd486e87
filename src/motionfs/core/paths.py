"""Where a node is: its paths in the store and in the drive.

A file inside a project is stored at its path in the project's namespace,
once per hard link; a render or an asset is its own namespace's blob.
Directory store paths are remembered until some directory moves or goes away.
On S3 a name whose object key would pass S3's limit is refused before it
exists, so every path the mount takes can be stored.
"""

from __future__ import annotations

import errno

from motionfs.errors import FsError
from motionfs.layout import ROOT_INO, Area, Role
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import Inode
from motionfs.store.names import BLOB_DATA_PATH, store_name, store_path
from motionfs.store.storage import Storage

S3_KEY_MAX = 1024  # bytes in an S3 object key


def in_project(inode: Inode) -> bool:
    """A node below a project folder (stored at its path in the project)."""
    return inode.role == Role.NODE.value and inode.area == Area.PROJECTS.value


def is_blob_file(inode: Inode) -> bool:
    """A render or asset file: a namespace of its own."""
    return (
        inode.role == Role.NODE.value
        and inode.area != Area.PROJECTS.value
        and (inode.ns_id is not None)
    )


class Paths:
    """Store and drive paths of nodes, worked out from the index's links."""

    def __init__(self, index: MetaEngine, storage: Storage) -> None:
        self.index = index
        self.storage = storage
        self._dir_paths: dict[int, str] = {}
        self._dir_paths_at = 0

    def entry_store_path(self, parent: int, name: bytes) -> str:
        prefix = self._dir_store_path(parent)
        return prefix + "/" + store_name(name, at_root=not prefix)

    def new_store_path(self, parent: int, name: bytes, subtree: Inode | None = None) -> str:
        """The store path of a name about to exist; ENAMETOOLONG where an S3 key
        for it (or for anything in the `subtree` moving there) would pass S3's
        1,024-byte limit, so every path the mount takes can be stored."""
        path = self.entry_store_path(parent, name)
        if self.storage.s3 is not None:
            room = S3_KEY_MAX - len(self.storage.s3.namespace_prefix("0" * 16).encode())
            deepest = len(path.encode()) + (self._deepest(subtree.ino) if subtree else 0)
            if deepest > room:
                raise FsError(errno.ENAMETOOLONG, f"S3 keys are limited to {S3_KEY_MAX} bytes")
        return path

    def _deepest(self, ino: int) -> int:
        """Bytes the longest store path below directory `ino` adds to its own."""
        longest = 0
        for name, node in self.index.listing(ino):
            extra = 1 + len(store_name(name).encode())
            longest = max(longest, extra + (self._deepest(node.ino) if node.is_dir else 0))
        return longest

    def _dir_store_path(self, ino: int) -> str:
        """A directory's store path ("" for the project itself), remembered until
        some directory moves or goes away."""
        if self._dir_paths_at != self.index.dir_moves:
            self._dir_paths.clear()
            self._dir_paths_at = self.index.dir_moves
        path = self._dir_paths.get(ino)
        if path is None:
            names = self._names_from_project(ino)
            path = self._dir_paths[ino] = store_path(names) if names else ""
        return path

    def _names_from_project(self, ino: int) -> list[bytes]:
        """The names leading from a node's project root down to the node."""
        names: list[bytes] = []
        cur = ino
        while True:
            inode = self.index.get(cur)
            if inode is None:
                raise FsError(errno.ENOENT, f"inode {cur} does not exist")
            if inode.role == Role.PROJECT.value:
                names.reverse()
                return names
            links = self.index.parents(cur)
            if not links:
                raise FsError(errno.ENOENT, f"inode {ino} is not linked")
            parent, name = links[0]
            names.append(name)
            cur = parent

    def store_paths(self, inode: Inode) -> list[str]:
        """Where the store keeps a file's bytes: each hard link's path, or the blob."""
        if not in_project(inode):
            return [BLOB_DATA_PATH]
        return [self.entry_store_path(p, n) for p, n in self.index.parents(inode.ino)]

    def drive_path_of_namespace(self, ns_id: str) -> str:
        """Where the drive shows a namespace (its project folder or file)."""
        links = self.index.links_of_namespace(ns_id)
        return self.drive_path(links[0][2].ino) if links else f"(namespace {ns_id})"

    def drive_path(self, ino: int) -> str:
        """Where a node is in the drive, for messages and reports."""
        names = self.names_from_root(ino)
        if names is None:
            return f"(unlinked inode {ino})"
        return "/" + b"/".join(names).decode("utf-8", "backslashreplace")

    def names_from_root(self, ino: int) -> list[bytes] | None:
        """The names leading from the drive's root to a node (its first link);
        None if it is not linked."""
        names: list[bytes] = []
        cur = ino
        while cur != ROOT_INO:
            links = self.index.parents(cur)
            if not links:
                return None
            cur, name = links[0]
            names.append(name)
        names.reverse()
        return names
