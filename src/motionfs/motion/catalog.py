"""The seed API's operations, by namespace id, on the same tree the mount shows.

`ArtifactStorageManager` (api.py) runs in another process; the daemon that
owns the store carries out its requests here, through the tree, so a project
created through the API is a folder in the mount at once (and the reverse),
with the same index, journal and kernel-cache invalidation.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from motionfs.core.tree import now_ns
from motionfs.errors import FsError
from motionfs.fuse.drive import Drive
from motionfs.layout import Area, Role
from motionfs.meta.records import Checkpoint, Inode, NamespaceRecord
from motionfs.motion.models import (
    AssetInfo,
    AssetMetadata,
    CheckpointInfo,
    NamespaceInfo,
    NamespaceType,
    ProjectInfo,
    ProjectMetadata,
    RenderInfo,
    RenderMetadata,
    StorageScope,
    utcnow,
)


@dataclass
class _Ctx:
    uid: int
    gid: int
    umask: int = 0o022


class Catalog:
    def __init__(self, drive: Drive) -> None:
        self.drive = drive
        self.tree = drive.tree
        self.index = drive.tree.index
        self.ctx = _Ctx(drive.tree.config.uid, drive.tree.config.gid)

    # -- lookups ------------------------------------------------------------------------

    def _record(self, ns_id: str) -> NamespaceRecord:
        record = self.index.namespace(ns_id)
        if record is None or self.index.namespace_state(ns_id) != "live":
            raise FsError(errno.ENOENT, f"namespace not found: {ns_id}")
        return record

    def _node(self, ns_id: str) -> tuple[int, bytes, Inode]:
        links = self.index.links_of_namespace(ns_id)
        if not links:
            raise FsError(errno.ENOENT, f"namespace not found: {ns_id}")
        return links[0]

    def namespace_info(self, record: NamespaceRecord) -> NamespaceInfo:
        return NamespaceInfo(
            namespace_id=record.ns_id,
            namespace_type=record.kind,
            scope=record.scope,
            name=record.name,
            user_id=record.user_id,
            session_id=record.session_id,
            provider_type=record.provider_type,
            grid_path=record.grid_path,
            created_at=datetime.fromisoformat(record.created_at),
            ttl_hours=None if record.scope is not StorageScope.SESSION else 24,
        )

    def _checkpoint_info(self, ns_id: str, cp: Checkpoint) -> CheckpointInfo:
        return CheckpointInfo(
            checkpoint_id=cp.name,
            namespace_id=ns_id,
            name=cp.name,
            description=cp.description,
            created_at=datetime.fromtimestamp(cp.created_ns / 1e9, UTC),
            metadata={"file_count": cp.file_count, "logical_size": cp.logical_size},
        )

    # -- projects -----------------------------------------------------------------------

    async def create_project(
        self, project_name: str, scope: StorageScope, fields: dict[str, Any]
    ) -> ProjectInfo:
        try:
            ProjectMetadata(project_name=project_name, **fields)
        except ValidationError as e:
            raise FsError(errno.EINVAL, f"invalid project metadata: {e.errors()[0]['msg']}") from e
        area = self.tree.area_dir(scope, Area.PROJECTS)
        node = await self.drive.mkdir(area.ino, project_name.encode(), 0o755, self.ctx)
        assert node.ns_id is not None
        current = self.drive.motion.load(node)
        assert isinstance(current, ProjectMetadata)
        self.drive.motion.save(node, current.model_copy(update=fields))
        self.tree.notify_entry(area.ino, project_name.encode())
        return self.get_project(node.ns_id)

    def get_project(self, ns_id: str) -> ProjectInfo:
        record = self._record(ns_id)
        if record.kind is not NamespaceType.WORKSPACE:
            raise FsError(errno.EINVAL, f"{ns_id} is not a project")
        _parent, _name, node = self._node(ns_id)
        metadata = self.drive.motion.load(node)
        assert isinstance(metadata, ProjectMetadata)
        checkpoints = [
            self._checkpoint_info(ns_id, c) for c in self.drive.checkpoints.cp_index.all(ns_id)
        ]
        return ProjectInfo(
            namespace_info=self.namespace_info(record), metadata=metadata, checkpoints=checkpoints
        )

    def update_project(self, ns_id: str, metadata: dict[str, Any]) -> ProjectInfo:
        _parent, _name, node = self._node(ns_id)
        try:
            model = ProjectMetadata.model_validate({**metadata, "updated_at": utcnow()})
        except ValidationError as e:
            raise FsError(errno.EINVAL, f"invalid project metadata: {e.errors()[0]['msg']}") from e
        self.drive.motion.save(node, model)
        self.tree.notify_inode(node.ino)
        return self.get_project(ns_id)

    def list_projects(self, scope: StorageScope | None, user_id: str | None) -> list[ProjectInfo]:
        out = []
        for record, state in self.index.namespaces():
            if state != "live" or record.kind is not NamespaceType.WORKSPACE:
                continue
            if scope is not None and record.scope is not scope:
                continue
            if user_id is not None and record.user_id != user_id:
                continue
            if self.index.links_of_namespace(record.ns_id):
                out.append(self.get_project(record.ns_id))
        return out

    def delete(self, ns_id: str) -> None:
        """`rm -r` of a project folder, or `rm` of a render or asset."""
        self._record(ns_id)
        removed: list[int] = []
        gone = []
        with self.tree.changing():
            for parent, name, node in self.index.links_of_namespace(ns_id):
                self.tree.remove_subtree(parent, name, node, now_ns(), removed)
                gone.append((parent, name))
        self.tree.content_replaced([], [], gone, removed)

    # -- renders and assets --------------------------------------------------------------

    async def _store_blob(self, folder: Inode, name: str, source: Path) -> Inode:
        fh, node = await self.drive.create(folder.ino, name.encode(), 0o644, os.O_WRONLY, self.ctx)
        try:
            with open(source, "rb") as f:
                off = 0
                while chunk := f.read(1 << 20):
                    await self.drive.write(fh, off, chunk)
                    off += len(chunk)
            await self.drive.fsync(fh)
        finally:
            await self.drive.release(fh)
        self.tree.notify_entry(folder.ino, name.encode())
        return await self.tree.content.ensure_sha256(self.tree.stat(node.ino))

    def _render_folder(self, project_ns: str, scope: StorageScope) -> Inode:
        _parent, name, _node = self._node(project_ns)
        renders = self.tree.area_dir(scope, Area.RENDERS)
        ino = self.index.lookup(renders.ino, name)
        if ino is None:
            raise FsError(errno.ENOENT, f"renders/{name.decode()} is missing")
        return self.tree.stat(ino)

    async def store_render(
        self, project_ns: str, source: Path, scope: StorageScope, fields: dict[str, Any]
    ) -> RenderInfo:
        folder = self._render_folder(project_ns, scope)
        name = f"render-{_stamp()}.{fields.get('format') or 'bin'}"
        node = await self._store_blob(folder, name, source)
        model = self._merge(node, RenderMetadata, {"project_namespace_id": project_ns, **fields})
        assert node.ns_id is not None
        return RenderInfo(
            namespace_info=self.namespace_info(self._record(node.ns_id)), metadata=model
        )

    async def store_asset(
        self, source: Path, scope: StorageScope, fields: dict[str, Any]
    ) -> AssetInfo:
        assets = self.tree.area_dir(scope, Area.ASSETS)
        ext = mimetypes.guess_extension(fields.get("mime_type") or "") or ""
        node = await self._store_blob(assets, f"asset-{_stamp()}{ext}", source)
        model = self._merge(node, AssetMetadata, fields)
        assert node.ns_id is not None
        return AssetInfo(
            namespace_info=self.namespace_info(self._record(node.ns_id)), metadata=model
        )

    def _merge(self, node: Inode, kind: type[BaseModel], fields: dict[str, Any]) -> Any:
        """The caller's fields over what motionfs knows (size, checksum, probe)."""
        known = self.drive.motion.load(node)
        base = known.model_dump() if known is not None else {}
        given = {k: v for k, v in fields.items() if v is not None}
        try:
            model = kind.model_validate(
                {**base, **given, "file_size_bytes": node.size, "checksum": node.sha256}
            )
        except ValidationError as e:
            raise FsError(errno.EINVAL, f"invalid metadata: {e.errors()[0]['msg']}") from e
        self.drive.motion.save(node, model)
        return model

    def get_blob(self, ns_id: str) -> RenderInfo | AssetInfo:
        record = self._record(ns_id)
        _parent, _name, node = self._node(ns_id)
        model = self.drive.motion.load(node)
        info = self.namespace_info(record)
        where = self.tree.drive_path(node.ino)
        if isinstance(model, RenderMetadata):
            return RenderInfo(namespace_info=info, metadata=model, drive_path=where)
        if isinstance(model, AssetMetadata):
            return AssetInfo(namespace_info=info, metadata=model, drive_path=where)
        raise FsError(errno.EINVAL, f"{ns_id} is not a render or an asset")

    def list_blobs(
        self, kind: str, scope: StorageScope | None, filters: dict[str, Any]
    ) -> list[RenderInfo | AssetInfo]:
        """Every render (kind "render") or asset ("asset") the drive holds, made
        through the mount or the API, narrowed by the seed's filters."""
        wanted = RenderInfo if kind == "render" else AssetInfo
        out: list[RenderInfo | AssetInfo] = []
        for record, state in self.index.namespaces():
            if state != "live" or record.kind is not NamespaceType.BLOB:
                continue
            if scope is not None and record.scope is not scope:
                continue
            if not self.index.links_of_namespace(record.ns_id):
                continue
            try:
                info = self.get_blob(record.ns_id)
            except FsError:
                continue  # a blob without a model yet (being written)
            if isinstance(info, wanted) and _matches(info, filters):
                out.append(info)
        return sorted(out, key=lambda i: i.drive_path or "")

    async def read_blob(self, ns_id: str, dest: Path) -> None:
        self._record(ns_id)
        _parent, _name, node = self._node(ns_id)
        if not node.is_reg:
            raise FsError(errno.EINVAL, f"{ns_id} is not a render or an asset")
        await self.tree.content.ensure_cached(node)
        shutil.copyfile(self.tree.cache.source(node.ino, node.content_gen), dest)

    # -- checkpoints ----------------------------------------------------------------------

    def _project_ino(self, ns_id: str) -> int:
        _parent, _name, node = self._node(ns_id)
        if node.role != Role.PROJECT.value:
            raise FsError(errno.EINVAL, f"{ns_id} is not a project")
        return node.ino

    async def create_checkpoint(
        self, ns_id: str, name: str, description: str | None
    ) -> CheckpointInfo:
        cp = await self.drive.create_checkpoint(
            self._project_ino(ns_id), name.encode(), description
        )
        return self._checkpoint_info(ns_id, cp)

    def list_checkpoints(self, ns_id: str) -> list[CheckpointInfo]:
        self._project_ino(ns_id)
        return [self._checkpoint_info(ns_id, c) for c in self.drive.checkpoints.cp_index.all(ns_id)]

    async def restore_checkpoint(self, ns_id: str, checkpoint_id: str) -> None:
        await self.drive.checkpoints.restore(self._project_ino(ns_id), checkpoint_id)

    def delete_checkpoint(self, ns_id: str, checkpoint_id: str) -> None:
        self.drive.delete_checkpoint(self._project_ino(ns_id), checkpoint_id.encode())


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"


def _matches(info: RenderInfo | AssetInfo, filters: dict[str, Any]) -> bool:
    """The seed's list filters: a render's project; an asset's type and tags (all of them)."""
    meta = info.metadata
    if isinstance(meta, RenderMetadata):
        project = filters.get("project_namespace_id")
        return project is None or meta.project_namespace_id == project
    asset_type, tags = filters.get("asset_type"), filters.get("tags") or []
    if asset_type is not None and meta.asset_type != asset_type:
        return False
    return set(tags) <= set(meta.tags)
