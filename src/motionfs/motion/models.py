"""The seed design's pydantic models and enums (chuk-motion's artifact_models).

These are the public data shapes of motionfs: the Python API returns them and
the mount shows them. Enums keep scope/type/provider names out of string soup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class NamespaceType(StrEnum):
    BLOB = "blob"
    WORKSPACE = "workspace"


class StorageScope(StrEnum):
    SESSION = "session"  # ephemeral, expires after its TTL
    USER = "user"  # persistent, one user's own
    SANDBOX = "sandbox"  # persistent, shared by every user


class ProviderType(StrEnum):
    MEMORY = "vfs-memory"
    FILESYSTEM = "vfs-filesystem"
    SQLITE = "vfs-sqlite"
    S3 = "vfs-s3"


class ProjectMetadata(BaseModel):
    project_name: str
    theme: str = "tech"
    fps: int = Field(default=30, gt=0, le=1000)
    width: int = Field(default=1920, gt=0, le=16384)
    height: int = Field(default=1080, gt=0, le=16384)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    total_duration_seconds: float = 0.0
    component_count: int = 0


class RenderMetadata(BaseModel):
    project_namespace_id: str
    format: str | None = None
    resolution: str | None = None
    fps: float | None = None
    duration_seconds: float | None = None
    file_size_bytes: int = 0
    render_date: datetime = Field(default_factory=utcnow)
    checksum: str | None = None
    codec: str | None = None
    bitrate_kbps: int | None = None


class AssetMetadata(BaseModel):
    asset_type: str | None = None
    mime_type: str | None = None
    file_size_bytes: int = 0
    tags: list[str] = Field(default_factory=list)
    project_namespace_ids: list[str] = Field(default_factory=list)
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    uploaded_at: datetime = Field(default_factory=utcnow)
    checksum: str | None = None


class NamespaceInfo(BaseModel):
    namespace_id: str
    namespace_type: NamespaceType
    scope: StorageScope
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    provider_type: ProviderType
    grid_path: str
    created_at: datetime = Field(default_factory=utcnow)
    ttl_hours: int | None = None


class CheckpointInfo(BaseModel):
    checkpoint_id: str
    namespace_id: str
    name: str
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ProjectInfo(BaseModel):
    namespace_info: NamespaceInfo
    metadata: ProjectMetadata
    checkpoints: list[CheckpointInfo] = Field(default_factory=list)


class RenderInfo(BaseModel):
    namespace_info: NamespaceInfo
    metadata: RenderMetadata
    drive_path: str | None = None  # where the drive shows it, from the mountpoint


class AssetInfo(BaseModel):
    namespace_info: NamespaceInfo
    metadata: AssetMetadata
    drive_path: str | None = None  # where the drive shows it, from the mountpoint
