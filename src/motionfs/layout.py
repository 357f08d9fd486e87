"""The drive's fixed layout: what every layer names without importing the tree.

The root holds projects/, renders/ and assets/ (USER scope) and the scope
folders shared/ (SANDBOX) and scratch/ (SESSION), each with the same three
areas. Every inode has a role; nodes also record their area and scope.
"""

from __future__ import annotations

from enum import StrEnum

from motionfs.motion.models import StorageScope

ROOT_INO = 1
# Where each namespace records itself and its place in the drive (fsck rebuilds from it).
NAMESPACE_RECORD_PATH = "/.chuk-motion/namespace.json"


class Role(StrEnum):
    ROOT = "root"  # the mountpoint
    SCOPE = "scope"  # shared/ and scratch/
    AREA = "area"  # projects/, renders/, assets/ (per scope)
    PROJECT = "project"  # a WORKSPACE namespace's root
    NODE = "node"  # anything inside a project, renders/ or assets/


class Area(StrEnum):
    PROJECTS = "projects"
    RENDERS = "renders"
    ASSETS = "assets"


SCOPE_FOLDERS = {StorageScope.SANDBOX: b"shared", StorageScope.SESSION: b"scratch"}
