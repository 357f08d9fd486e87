"""Partly cached content: the blocks of a remote file fetched so far.

For a store that serves byte ranges (s3), reading an uncached file does not
download it first: the content generation gets a sparse cache file of its
full size and a record of which fixed-size, aligned blocks are in it. A read
fetches the missing blocks it needs (plus a readahead window that grows while
reads are sequential) and is then served by pread, like cached content. When
every block is present the file is renamed to the generation's ordinary cache
name and is cached content from then on. Every fetch names the object version
(ETag) of the first, so a file replaced in the store meanwhile is an error,
never a mix of two versions.

The record lives in memory: after a restart the sparse file is dropped with
the cache's other partial files, and blocks are fetched again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import trio

BLOCK = 1 << 20  # fetch granularity (aligned)
READAHEAD_MAX = 32 << 20  # sequential reads fetch up to this much ahead
MAX_REQUEST = 32 << 20  # one ranged GET at most (each has the io-timeout budget)


class PartialContent:
    """One content generation's sparse cache file and its present blocks."""

    def __init__(self, path: Path, ino: int, gen: int, size: int) -> None:
        self.path = path
        self.ino = ino
        self.gen = gen
        self.size = size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, size)
        self.blocks = -(-size // BLOCK)
        self.present = bytearray(self.blocks)
        self.missing = self.blocks
        self.etag: str | None = None  # the store object's version, from the first fetch
        self.lock = trio.Lock()
        self.fetched_bytes = 0
        self._next_offset = 0
        self._window = 0

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def window(self, off: int, size: int) -> tuple[int, int]:
        """Blocks [first, last] to have for a read at `off`, with readahead."""
        end = min(off + size, self.size)
        # Sequential, give or take the kernel's reordering of its own readahead.
        if off > 0 and abs(off - self._next_offset) <= BLOCK:
            self._window = min(READAHEAD_MAX, max(BLOCK, self._window * 2))
        else:
            self._window = 0
        self._next_offset = end
        first = off // BLOCK
        last = min(self.blocks - 1, (max(end, off + 1) - 1 + self._window) // BLOCK)
        return first, last

    def note(self, off: int, size: int) -> None:
        """A read served from blocks already here: only follow its position."""
        self._next_offset = min(off + size, self.size)

    def has(self, first: int, last: int) -> bool:
        return all(self.present[first : last + 1])

    def missing_ranges(self, first: int, last: int) -> list[tuple[int, int]]:
        """Byte ranges (start, length) of missing blocks in [first, last]."""
        out: list[tuple[int, int]] = []
        b = first
        while b <= last:
            if self.present[b]:
                b += 1
                continue
            start = b
            while b <= last and not self.present[b] and (b - start + 1) * BLOCK <= MAX_REQUEST:
                b += 1
            begin = start * BLOCK
            out.append((begin, min(b * BLOCK, self.size) - begin))
        return out

    def mark(self, start: int, length: int) -> None:
        for b in range(start // BLOCK, -(-(start + length) // BLOCK)):
            if not self.present[b]:
                self.present[b] = 1
                self.missing -= 1
        self.fetched_bytes += length

    def close(self, unlink: bool = True) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if unlink:
            self.path.unlink(missing_ok=True)
