"""Room for the index on a full disk.

When the disk under the cache and index fills up, a writer must get ENOSPC
and keep what it wrote, which needs one more index commit (sealing the file).
A small reserve file holds that room: it is given up the moment the disk is
found full, writes are refused (ENOSPC) until space comes back, and then the
reserve is taken again. SQLite's own "disk full" fails one operation, never
the daemon.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from motionfs.errors import FsError

log = logging.getLogger(__name__)

RESERVE = 8 << 20  # bytes kept for index commits (WAL pages) on a full disk


class SpaceGuard:
    def __init__(self, folder: Path, reserve: int = RESERVE) -> None:
        self.path = folder / "space-reserve"
        self.reserve = reserve
        self.low = False  # the reserve was given up: refuse writes until space is back
        self.take()

    def free(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def take(self) -> bool:
        """(Re)create the reserve if the disk has room for it and for writes after it."""
        try:
            if self.path.exists() and self.path.stat().st_blocks * 512 >= self.reserve:
                self.low = False
                return True
            if self.free() < 2 * self.reserve:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve)
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("cannot keep a disk space reserve in %s: %s", self.path.parent, e)
            self.path.unlink(missing_ok=True)
            return False
        if self.low:
            log.info("disk space is back: writes are accepted again")
        self.low = False
        return True

    def release(self) -> None:
        """The disk is full: free the reserve so that the index can still commit."""
        if not self.low:
            log.error("disk full in %s: writes get ENOSPC until space is freed", self.path.parent)
        self.low = True
        self.path.unlink(missing_ok=True)

    def check_write(self) -> None:
        """Refuse a write while the disk is still full (ENOSPC)."""
        if self.low and not self.take():
            raise FsError(errno.ENOSPC, "the disk under the cache is full")
