"""chuk-motion metadata: ProjectMetadata, RenderMetadata and AssetMetadata.

Each project, render and asset has its seed model, kept in the index (so
getfattr never waits on the store) and written to its namespace at
`/.chuk-motion/metadata.json` (so the Python API sees it). Renders and
assets get theirs from the media itself: after a file is stored, a worker
probes its content off the FUSE hot path; a probe that fails or times out
leaves fields empty and logs a warning, and never affects the user's bytes.

The models show up as extended attributes: `user.motion.<field>` for each
field and `user.motion.json` for the whole model. A few fields are editable
with setfattr, validated by the models (EINVAL and no change on a bad
value, or one that would make `user.motion.json` exceed MAX_JSON); the rest
are derived (EACCES on write).
"""

from __future__ import annotations

import errno
import logging
import math
from datetime import datetime
from typing import Any

import trio
from pydantic import BaseModel, ValidationError

from motionfs.core.paths import is_blob_file
from motionfs.core.tree import Tree
from motionfs.errors import FsError
from motionfs.layout import Area, Role
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import Inode
from motionfs.motion.media import MediaInfo, probe_with_timeout
from motionfs.motion.models import (
    AssetMetadata,
    ProjectMetadata,
    RenderMetadata,
    StorageScope,
    utcnow,
)

log = logging.getLogger(__name__)

PREFIX = b"user.motion."
JSON_NAME = b"user.motion.json"
NAMESPACE_ID_NAME = b"user.motion.namespace_id"  # for get_render/get_asset/get_project
PROBE_SECONDS = 30.0
# The largest `user.motion.json` an edit may produce: getfattr -d must read the whole
# model as one value, and the kernel's limit for a value is 64 KiB.
MAX_JSON = 16 << 10

EDITABLE: dict[type[BaseModel], set[str]] = {
    ProjectMetadata: {"theme", "fps", "width", "height"},
    AssetMetadata: {"tags", "project_namespace_ids"},
    RenderMetadata: set(),
}
LIST_FIELDS = {"tags", "project_namespace_ids"}


def _show(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, list):
        return ",".join(str(v) for v in value).encode()
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


def _parse(field: str, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise FsError(errno.EINVAL, "metadata values are UTF-8 text") from e
    if field in LIST_FIELDS:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


class MotionMetadata:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.index: MetaEngine = tree.index
        self._send, self._receive = trio.open_memory_channel[int](math.inf)

    # -- which model an inode has -------------------------------------------------------

    def model_type(self, inode: Inode) -> type[BaseModel] | None:
        if inode.role == Role.PROJECT.value:
            return ProjectMetadata
        if is_blob_file(inode):
            return RenderMetadata if inode.area == Area.RENDERS.value else AssetMetadata
        return None

    def load(self, inode: Inode) -> BaseModel | None:
        kind = self.model_type(inode)
        if kind is None or inode.ns_id is None:
            return None
        raw = self.index.get_motion_meta(inode.ns_id)
        if raw is not None:
            return kind.model_validate_json(raw)
        return self._default(kind, inode)

    def _default(self, kind: type[BaseModel], inode: Inode) -> BaseModel:
        if kind is ProjectMetadata:
            names = self.index.parents(inode.ino)
            name = names[0][1].decode("utf-8", "replace") if names else ""
            return ProjectMetadata(project_name=name)
        if kind is RenderMetadata:
            return RenderMetadata(project_namespace_id=self._render_project(inode) or "")
        return AssetMetadata()

    def save(self, inode: Inode, model: BaseModel) -> None:
        """Index row and the namespace's metadata.json, in one transaction."""
        assert inode.ns_id is not None
        with self.tree.changing():
            self.tree.save_motion_meta(inode.ns_id, model.model_dump_json())

    # -- xattrs -------------------------------------------------------------------------

    def names(self, inode: Inode) -> list[bytes]:
        model = self.load(inode)
        if model is None:
            return []
        fields = (PREFIX + f.encode() for f in type(model).model_fields)
        return [JSON_NAME, NAMESPACE_ID_NAME, *fields]

    def get(self, inode: Inode, name: bytes) -> bytes | None:
        """The attribute's value, or None if `name` is not a motion attribute here."""
        model = self.load(inode)
        if model is None or not name.startswith(PREFIX):
            return None
        if name == JSON_NAME:
            return model.model_dump_json().encode()
        if name == NAMESPACE_ID_NAME:
            return (inode.ns_id or "").encode()
        field = name[len(PREFIX) :].decode("utf-8", "replace")
        if field not in type(model).model_fields:
            return None
        return _show(getattr(model, field))

    def set(self, inode: Inode, name: bytes, value: bytes) -> bool:
        """Validate and store an edit; False if `name` is not a motion attribute here."""
        model = self.load(inode)
        if model is None or not name.startswith(PREFIX):
            return False
        kind = type(model)
        field = name[len(PREFIX) :].decode("utf-8", "replace")
        if name in (JSON_NAME, NAMESPACE_ID_NAME) or (
            field in kind.model_fields and field not in EDITABLE[kind]
        ):
            raise FsError(errno.EACCES, f"{field} is derived from the content; it is read-only")
        if field not in kind.model_fields:
            raise FsError(errno.EINVAL, f"{kind.__name__} has no field {field}")
        data = model.model_dump()
        data[field] = _parse(field, value)
        if kind is ProjectMetadata:
            data["updated_at"] = utcnow()
        try:
            updated = kind.model_validate(data)
        except ValidationError as e:
            raise FsError(errno.EINVAL, f"invalid {field}: {e.errors()[0]['msg']}") from e
        if len(updated.model_dump_json().encode()) > MAX_JSON:
            raise FsError(errno.EINVAL, f"{field}: the metadata would exceed {MAX_JSON} bytes")
        self.save(inode, updated)
        return True

    # -- probing renders and assets -----------------------------------------------------

    def stored(self, ino: int) -> None:
        """Called when a file's content reached the store: describe it soon."""
        self._send.send_nowait(ino)

    async def run(self) -> None:
        async for ino in self._receive:
            try:
                await self._describe(ino)
            except Exception:
                log.exception("describing inode %d failed", ino)

    async def _describe(self, ino: int) -> None:
        inode = self.index.get(ino)
        if inode is None or not is_blob_file(inode) or inode.nlink == 0:
            return
        source = self.tree.cache.source(ino, inode.content_gen)
        if inode.content_gen and source.exists():
            info = await trio.to_thread.run_sync(probe_with_timeout, source, PROBE_SECONDS)
        else:
            info = MediaInfo(kind="other", warnings=["content not in the local cache"])
        for warning in info.warnings:
            log.warning("metadata of inode %d: %s", ino, warning)
        current = self.index.get(ino)
        if current is None or current.content_gen != inode.content_gen:
            return  # changed meanwhile: a newer description follows
        current = await self.tree.content.ensure_sha256(current)
        if current.content_gen != inode.content_gen:
            return
        old = self.load(current)
        self.save(current, self._model(current, info, old))

    def _model(self, inode: Inode, info: MediaInfo, old: BaseModel | None) -> BaseModel:
        """What the probe read; fields it could not read keep what was known
        (e.g. given through the Python API)."""
        if inode.area == Area.RENDERS.value:
            was = (
                old if isinstance(old, RenderMetadata) else RenderMetadata(project_namespace_id="")
            )
            resolution = f"{info.width}x{info.height}" if info.width and info.height else None
            return RenderMetadata(
                project_namespace_id=self._render_project(inode) or was.project_namespace_id,
                format=info.container or was.format,
                resolution=resolution or was.resolution,
                fps=info.fps or was.fps,
                duration_seconds=info.duration_seconds or was.duration_seconds,
                file_size_bytes=inode.size,
                render_date=was.render_date,
                checksum=inode.sha256,
                codec=info.video_codec or was.codec,
                bitrate_kbps=info.bitrate_kbps or was.bitrate_kbps,
            )
        kept = old if isinstance(old, AssetMetadata) else AssetMetadata()
        return AssetMetadata(
            asset_type=(info.kind if info.kind != "other" else None) or kept.asset_type,
            mime_type=info.mime_type or kept.mime_type,
            file_size_bytes=inode.size,
            tags=kept.tags,
            project_namespace_ids=kept.project_namespace_ids,
            width=info.width or kept.width,
            height=info.height or kept.height,
            duration_seconds=info.duration_seconds or kept.duration_seconds,
            uploaded_at=kept.uploaded_at,
            checksum=inode.sha256,
        )

    def _render_project(self, inode: Inode) -> str | None:
        """The namespace of the project whose renders/<name>/ holds this render."""
        cur, name = inode.ino, b""
        while True:
            links = self.index.parents(cur)
            if not links:
                return None
            parent, cur_name = links[0]
            node = self.index.get(parent)
            if node is None:
                return None
            if node.role == Role.AREA.value:
                name = cur_name if cur != inode.ino else b""
                break
            cur = parent
        if not name or node.scope is None:
            return None
        projects = self.tree.area_dir(StorageScope(node.scope), Area.PROJECTS)
        ino = self.index.lookup(projects.ino, name)
        project = self.index.get(ino) if ino is not None else None
        return project.ns_id if project is not None else None
