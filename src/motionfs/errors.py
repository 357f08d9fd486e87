"""One exception type for refused filesystem operations, carrying the errno.

The tree raises FsError(errno.X, why); the FUSE layer turns it into
pyfuse3.FUSEError and logs `why`, so every refusal has a clear log line.
"""

from __future__ import annotations

import errno as _errno


class FsError(Exception):
    def __init__(self, err: int, why: str = "") -> None:
        super().__init__(why or _errno.errorcode.get(err, str(err)))
        self.errno = err
        self.why = why


class StoreUnavailable(Exception):
    """The backend could not be reached or refused an operation (maps to EIO)."""


class SetupError(Exception):
    """A user-facing start-up problem: printed as one line, exit status 1."""
