"""Checkpoints: durable, deduplicated, browsable, restorable project versions.

chuk-artifacts' own checkpoints live in process memory as base64 copies and
lose directories, modes and deletions, so motionfs keeps its own. A
checkpoint is a manifest in the index (every path with its type, mode,
owner, times, size, content hash, symlink target and xattrs) plus the
content, stored once per distinct sha256 inside the project's namespace at
`/.chuk-motion/objects/<sha[:2]>/<sha>`, with a JSON copy of the manifest at
`/.chuk-motion/checkpoints/<name>.json.gz`: the checkpoint moves with the
project. Copies into the object store and back are journal entries, so they
happen in order with every other change of the project and survive crashes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime

from pydantic import BaseModel

from motionfs.core.tree import Tree, now_ns
from motionfs.data.journal import Op
from motionfs.errors import FsError
from motionfs.layout import Role
from motionfs.meta.records import Checkpoint, CpEntry, Inode

log = logging.getLogger(__name__)

NAME_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LATEST = b"latest"
SNAPDIR = b".snapshots"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
STABLE_TRIES = 5


def object_path(sha: str) -> str:
    return f"/.chuk-motion/objects/{sha[:2]}/{sha}"


def manifest_path(name: str) -> str:
    return f"/.chuk-motion/checkpoints/{name}.json.gz"


def check_name(name: bytes) -> str:
    if not NAME_RE.fullmatch(name) or name == LATEST:
        raise FsError(errno.EINVAL, f"invalid checkpoint name {name!r}")
    return name.decode()


class CheckpointSummary(BaseModel):
    name: str
    created_at: datetime
    description: str | None
    file_count: int
    logical_size: int
    exclusive_bytes: int


class Change(BaseModel):
    kind: str  # A, D or M
    path: str


# A node of a tree being compared: (mode, uid, gid, size, sha or target, mtime, xattrs)
Signature = tuple[int, int, int, int, str | bytes | None, int, tuple[tuple[bytes, bytes], ...]]


class Checkpoints:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.content = tree.content
        self.index = tree.index
        self.cp_index = tree.index.checkpoint_catalog()
        # What the restore in progress changed, for the kernel's caches.
        self._changed: list[int] = []
        self._entries_changed: list[tuple[int, bytes]] = []
        self._removed: list[int] = []
        self._reopen: list[int] = []

    def _project(self, project_ino: int) -> tuple[Inode, str]:
        project = self.tree.node(project_ino)
        if project.role != Role.PROJECT.value or project.ns_id is None:
            raise FsError(errno.EINVAL, "not a project folder")
        return project, project.ns_id

    # -- walking the live tree ----------------------------------------------------------

    def _walk(self, ino: int, prefix: bytes = b"") -> Iterator[tuple[bytes, int, bytes, Inode]]:
        """(path, parent ino, name, inode) of everything below a directory, parents first."""
        for name, node in self.index.listing(ino):
            path = prefix + name
            yield path, ino, name, node
            if node.is_dir:
                yield from self._walk(node.ino, path + b"/")

    async def _stable(self, project: Inode, ns_id: str) -> None:
        """Seal open files and wait until every file's content is in the store."""
        for _ in range(STABLE_TRIES):
            await self.content.seal_namespace(ns_id)
            await self.content.wait_stored(ns_id)
            await self.content.hash_all(
                node
                for _p, _pi, _n, node in list(self._walk(project.ino))
                if node.content_gen == node.stored_gen
            )
            if all(
                node.content_gen == node.stored_gen and (node.sha256 or node.content_gen == 0)
                for _p, _pi, _n, node in self._walk(project.ino)
                if node.is_reg
            ):
                return
        raise FsError(errno.EIO, "project content kept changing or could not be stored")

    # -- create / delete --------------------------------------------------------------

    async def create(
        self, project_ino: int, raw_name: bytes, description: str | None
    ) -> Checkpoint:
        name = check_name(raw_name)
        project, ns_id = self._project(project_ino)
        if self.cp_index.get(ns_id, name, complete_only=False) is not None:
            raise FsError(errno.EEXIST, f"checkpoint {name} exists")
        await self._stable(project, ns_id)
        if self.cp_index.get(ns_id, name, complete_only=False) is not None:  # made while we waited
            raise FsError(errno.EEXIST, f"checkpoint {name} exists")
        # From here to the commit nothing awaits: the snapshot is consistent.
        t = now_ns()
        manifest: list[dict[str, object]] = []
        with self.tree.changing():
            cp_id = self.cp_index.add(ns_id, name, description, t)
            root = self.cp_index.add_entry(cp_id, None, b"", project)
            self.cp_index.copy_xattrs(project.ino, root)
            eids = {project.ino: root}
            files = size = 0
            for path, parent, entry_name, node in self._walk(project.ino):
                sha = (node.sha256 or EMPTY_SHA) if node.is_reg else None
                if node.is_reg:
                    node = node.model_copy(update={"sha256": sha})
                eid = self.cp_index.add_entry(cp_id, eids[parent], entry_name, node)
                self.cp_index.copy_xattrs(node.ino, eid)
                if node.is_dir:
                    eids[node.ino] = eid
                if node.is_reg and sha is not None:
                    files += 1
                    size += node.size
                    if node.size and not self.cp_index.has_object(ns_id, sha):
                        self.cp_index.add_object(ns_id, sha, node.size)
                        self.index.enqueue(
                            ns_id,
                            Op.KEEP.value,
                            path=self.tree.paths.entry_store_path(parent, entry_name),
                            path2=object_path(sha),
                        )
                manifest.append(_manifest_row(path, node))
            self.cp_index.set_totals(cp_id, files, size)
            self.index.enqueue(
                ns_id,
                Op.WRITE.value,
                path=manifest_path(name),
                path2=json.dumps(
                    {"name": name, "description": description, "created_ns": t, "entries": manifest}
                ),
            )
            # Visible only once every object before it is stored, crash or not.
            self.index.enqueue(ns_id, Op.READY.value, path=name)
        await self.content.wait_stored(ns_id)
        self.index.sync()
        cp = self.cp_index.by_id(cp_id)
        assert cp is not None
        if not cp.complete:
            raise FsError(errno.EIO, f"checkpoint {name} could not be stored (see motionfs fsck)")
        log.info("checkpoint %s of %s: %d files, %d bytes", name, ns_id, files, size)
        return cp

    def delete(self, project_ino: int, raw_name: bytes) -> None:
        _project, ns_id = self._project(project_ino)
        # An incomplete checkpoint (its objects failed for good) can be deleted too.
        cp = self.cp_index.get(ns_id, raw_name.decode("utf-8", "replace"), complete_only=False)
        if cp is None:
            raise FsError(errno.ENOENT, f"no checkpoint {raw_name!r}")
        with self.tree.changing():
            for sha in self.cp_index.delete(cp.cp_id):
                self.index.enqueue(ns_id, Op.REMOVE.value, path=object_path(sha))
            self.index.enqueue(ns_id, Op.REMOVE.value, path=manifest_path(cp.name))
        log.info("deleted checkpoint %s of %s", cp.name, ns_id)

    def summaries(self, project_ino: int) -> list[CheckpointSummary]:
        _project, ns_id = self._project(project_ino)
        return [
            CheckpointSummary(
                name=cp.name,
                created_at=datetime.fromtimestamp(cp.created_ns / 1e9, UTC),
                description=cp.description,
                file_count=cp.file_count,
                logical_size=cp.logical_size,
                exclusive_bytes=self.cp_index.exclusive_bytes(cp),
            )
            for cp in self.cp_index.all(ns_id)
        ]

    def get(self, project_ino: int, name: str) -> Checkpoint:
        _project, ns_id = self._project(project_ino)
        cp = self.cp_index.get(ns_id, name)
        if cp is None:
            raise FsError(errno.ENOENT, f"no checkpoint named {name}")
        return cp

    # -- comparing ----------------------------------------------------------------------

    def _cp_tree(self, cp: Checkpoint) -> dict[bytes, tuple[CpEntry, Signature]]:
        out: dict[bytes, tuple[CpEntry, Signature]] = {}

        def walk(eid: int, prefix: bytes) -> None:
            for e in self.cp_index.children(eid):
                path = prefix + e.name
                xattrs = tuple(sorted(self.cp_index.xattrs(e.eid).items()))
                out[path] = (
                    e,
                    (e.mode, e.uid, e.gid, e.size, e.sha256 or e.target, e.mtime_ns, xattrs),
                )
                if stat.S_ISDIR(e.mode):
                    walk(e.eid, path + b"/")

        walk(self.cp_index.root(cp.cp_id).eid, b"")
        return out

    def _live_tree(self, project: Inode) -> dict[bytes, Signature]:
        out: dict[bytes, Signature] = {}
        for path, _parent, _name, node in self._walk(project.ino):
            node = self.content.overlay(node)
            xattrs = tuple(
                sorted(
                    (n, self.index.get_xattr(node.ino, n) or b"")
                    for n in self.index.list_xattrs(node.ino)
                )
            )
            content = (node.sha256 or EMPTY_SHA) if node.is_reg else node.target
            out[path] = (node.mode, node.uid, node.gid, node.size, content, node.mtime_ns, xattrs)
        return out

    async def diff(self, project_ino: int, a: str, b: str | None) -> list[Change]:
        project, _ns = self._project(project_ino)
        old = {p: sig for p, (_e, sig) in self._cp_tree(self.get(project_ino, a)).items()}
        if b is None:
            # Compare content, not "not hashed yet".
            await self.content.hash_all([node for _p, _pi, _n, node in self._walk(project.ino)])
            new = self._live_tree(project)
        else:
            new = {p: sig for p, (_e, sig) in self._cp_tree(self.get(project_ino, b)).items()}
        changes = [Change(kind="A", path=_show(p)) for p in new.keys() - old.keys()]
        changes += [Change(kind="D", path=_show(p)) for p in old.keys() - new.keys()]
        changes += [
            Change(kind="M", path=_show(p))
            for p in old.keys() & new.keys()
            if old[p] != new[p] and not (stat.S_ISDIR(old[p][0]) and _dir_same(old[p], new[p]))
        ]
        return sorted(changes, key=lambda c: (c.path, c.kind))

    # -- restore --------------------------------------------------------------------------

    async def restore(self, project_ino: int, name: str) -> str:
        """Make the live project identical to checkpoint `name`; return the safety checkpoint."""
        project, ns_id = self._project(project_ino)
        cp = self.get(project_ino, name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        auto = f"auto-{stamp}"
        await self.create(project_ino, auto.encode(), f"before restoring {name}")
        target = self._cp_tree(cp)
        # Open files that lose their last link stay readable: cache them first.
        for path, _parent, _name, node in list(self._walk(project.ino)):
            if node.is_reg and self.content.is_open(node.ino):
                entry = target.get(path)
                if entry is None or entry[0].sha256 != node.sha256:
                    await self.content.ensure_cached(node)
        await self.content.seal_namespace(ns_id)
        self._changed, self._entries_changed, self._removed, self._reopen = [], [], [], []
        t = now_ns()
        with self.tree.changing():
            self._restore_dir(project, ns_id, self.cp_index.root(cp.cp_id), project.ino, t)
        self.tree.content_replaced(
            self._reopen, self._changed, self._entries_changed, self._removed
        )
        await self.content.wait_stored(ns_id)
        self.index.sync()
        log.info("restored %s to checkpoint %s (safety checkpoint %s)", ns_id, name, auto)
        return auto

    def _restore_dir(self, project: Inode, ns_id: str, entry: CpEntry, ino: int, t: int) -> None:
        """Make directory `ino` match checkpoint entry `entry`, recursively (one transaction)."""
        tree = self.tree
        self._apply_attrs(ino, entry)
        wanted = {e.name: e for e in self.cp_index.children(entry.eid)}
        for name, node in self.index.listing(ino):
            e = wanted.get(name)
            if e is None or stat.S_IFMT(e.mode) != stat.S_IFMT(node.mode):
                self._remove_tree(ino, name, node, t)
                self._entries_changed.append((ino, name))
        for name, e in wanted.items():
            existing_ino = self.index.lookup(ino, name)
            if existing_ino is None:
                node = tree.index.create_inode(
                    mode=e.mode,
                    uid=e.uid,
                    gid=e.gid,
                    nlink=2 if stat.S_ISDIR(e.mode) else 1,
                    rdev=e.rdev,
                    atime_ns=e.atime_ns,
                    mtime_ns=e.mtime_ns,
                    ctime_ns=t,
                    target=e.target,
                    size=e.size,
                    role=Role.NODE.value,
                    area=project.area,
                    scope=project.scope,
                    ns_id=ns_id,
                )
                self.index.link(ino, name, node.ino)
                self._entries_changed.append((ino, name))
                if node.is_dir:
                    parent = tree.node(ino)
                    self.index.update(ino, nlink=parent.nlink + 1)
                    self.index.enqueue(
                        ns_id, Op.MKDIR.value, path=tree.paths.entry_store_path(ino, name)
                    )
            else:
                node = tree.node(existing_ino)
            if stat.S_ISDIR(e.mode):
                self._restore_dir(project, ns_id, e, node.ino, t)
                continue
            self._apply_attrs(node.ino, e)
            if stat.S_ISREG(e.mode) and (existing_ino is None or node.sha256 != e.sha256):
                # The content is the object, copied to the file's path in the
                # store and fetched into the cache when first read.
                # Generation 0 is the empty file.
                gen = node.content_gen + 1 if e.size else 0
                self.index.update(
                    node.ino, content_gen=gen, stored_gen=gen, sha256=e.sha256, size=e.size
                )
                self._reopen.append(node.ino)
                path = tree.paths.entry_store_path(ino, name)
                if e.size:
                    self.index.enqueue(
                        ns_id, Op.COPY.value, path=object_path(e.sha256 or ""), path2=path
                    )
                else:
                    self.index.enqueue(ns_id, Op.PUT.value, ino=node.ino, path=path)
            elif stat.S_ISLNK(e.mode) and node.target != e.target:
                self.index.update(node.ino, target=e.target, size=e.size)

    def _apply_attrs(self, ino: int, e: CpEntry) -> None:
        self._changed.append(ino)  # the kernel's cached attributes are stale now
        self.index.update(
            ino,
            mode=e.mode,
            uid=e.uid,
            gid=e.gid,
            atime_ns=e.atime_ns,
            mtime_ns=e.mtime_ns,
            ctime_ns=now_ns(),
        )
        wanted = self.cp_index.xattrs(e.eid)
        for name in self.index.list_xattrs(ino):
            if name not in wanted:
                self.index.remove_xattr(ino, name)
        for name, value in wanted.items():
            self.index.set_xattr(ino, name, value)

    def _remove_tree(self, parent: int, name: bytes, node: Inode, t: int) -> None:
        self.tree.remove_subtree(parent, name, node, t, self._removed)


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _dir_same(a: Signature, b: Signature) -> bool:
    """Directories differ by mode, owner or xattrs; size and mtime follow their entries."""
    return (a[0], a[1], a[2], a[6]) == (b[0], b[1], b[2], b[6])


def _manifest_row(path: bytes, node: Inode) -> dict[str, object]:
    return {
        "path": path.decode("utf-8", "surrogateescape"),
        "mode": node.mode,
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
        "sha256": node.sha256,
        "target": node.target.decode("utf-8", "surrogateescape") if node.target else None,
    }
