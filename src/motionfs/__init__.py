"""motionfs: the chuk-motion artifact store as a POSIX drive.

The seed design's Python API works on the same store as the mount:

    from motionfs import ArtifactStorageManager, StorageScope
"""

from motionfs.motion.api import ArtifactStorageManager
from motionfs.motion.models import (
    AssetInfo,
    AssetMetadata,
    CheckpointInfo,
    NamespaceInfo,
    NamespaceType,
    ProjectInfo,
    ProjectMetadata,
    ProviderType,
    RenderInfo,
    RenderMetadata,
    StorageScope,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactStorageManager",
    "AssetInfo",
    "AssetMetadata",
    "CheckpointInfo",
    "NamespaceInfo",
    "NamespaceType",
    "ProjectInfo",
    "ProjectMetadata",
    "ProviderType",
    "RenderInfo",
    "RenderMetadata",
    "StorageScope",
]
