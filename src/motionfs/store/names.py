"""Store names: how a POSIX name becomes a name every provider can hold.

Kept apart from the backends because the metadata layer computes store paths
too (the index records where each file lives) without touching a store.
"""

from __future__ import annotations

import base64
import hashlib
import re

ESCAPE_SUFFIX = "~mfs"
HASHED_PREFIX = "~mfs-"
# filesystem provider: stream_write's temp name is ".tmp_" + 8 random + "_" + name.
MAX_PLAIN_NAME = 255 - 14
# Names the libraries keep at a namespace's root.
RESERVED_ROOT_NAMES = {".workspace", ".chuk-motion", "_meta.json", "_data"}
BLOB_DATA_PATH = "/_data"
MOTION_METADATA_PATH = "/.chuk-motion/metadata.json"
# Temp files: ours (".tmp_" + 8 hex digits [+ "_" + name]) and those of the
# provider's stream_write (tempfile.mkstemp: ".tmp_" + 8 of [a-z0-9_] + "_" + name).
TEMP_NAME = re.compile(r"\.tmp_[a-z0-9_]{8}(?:_|\Z)", re.DOTALL)


def store_name(name: bytes, at_root: bool = False) -> str:
    """Map a POSIX name to a name every provider can hold.

    Readable names stay as they are. Names the filesystem provider would hide
    or clobber (`*.meta`), names that collide with library files at the root
    and names ending in the escape suffix get the suffix appended (strip one
    to decode). Names that are not UTF-8 or too long for the provider become a
    digest; the metadata index keeps the real name, so the API can translate.
    """
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return hashed_name(name)
    if (
        text.endswith(".meta")
        or text.endswith(ESCAPE_SUFFIX)
        or (at_root and text in RESERVED_ROOT_NAMES)
    ):
        text += ESCAPE_SUFFIX
    if (
        text.startswith(HASHED_PREFIX)
        or len(text.encode()) > MAX_PLAIN_NAME
        or TEMP_NAME.match(text)  # would look like an interrupted write's leftover
    ):
        return hashed_name(name)
    return text


def hashed_name(name: bytes) -> str:
    """The digest a name is stored under when it cannot be stored as it is."""
    digest = base64.b32encode(hashlib.sha256(name).digest()).decode().rstrip("=").lower()
    return HASHED_PREFIX + digest[:40]


def store_path(names: list[bytes]) -> str:
    return "/" + "/".join(store_name(n, at_root=(i == 0)) for i, n in enumerate(names))
