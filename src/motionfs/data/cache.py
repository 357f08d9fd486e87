"""The local data cache: one host file per (inode, generation).

A file's content generation is immutable once sealed: writes go to a new work
generation (a copy, or empty after O_TRUNC), and sealing makes the work file
the content. Uploads read sealed files while writers move on, and a crash
falls back to the last sealed generation. Clean generations (already in the
store) may be evicted to keep the cache within its budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class DataCache:
    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget = budget_bytes
        # The user's bytes: theirs alone, like S3QL's cache (older stores made it 0755).
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        self.empty = root / "empty"
        self.empty.touch(mode=0o600)

    def path(self, ino: int, gen: int) -> Path:
        return self.root / f"{ino}.{gen}"

    def object_path(self, sha: str) -> Path:
        """Checkpoint content, by hash: immutable, so always clean."""
        return self.root / f"obj-{sha}"

    def part_path(self, ino: int, gen: int) -> Path:
        return self.root / f"{ino}.{gen}.part"

    def has(self, ino: int, gen: int) -> bool:
        return gen == 0 or self.path(ino, gen).exists()

    def source(self, ino: int, gen: int) -> Path:
        """The host file holding generation `gen` (gen 0 is the empty file)."""
        return self.empty if gen == 0 else self.path(ino, gen)

    def start_work(self, ino: int, gen: int, base_gen: int, keep: int | None) -> int:
        """Create work generation `gen` from `base_gen`, keeping its first `keep` bytes.

        keep=None copies everything. Returns an O_RDWR fd on the work file.
        """
        # A fresh file, never a truncated old one: a sealed generation may share
        # its host file with the store (a hard link), which must not change.
        path = self.path(ino, gen)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # left by a crash
            path.unlink()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if base_gen and keep != 0:
            with open(self.path(ino, base_gen), "rb") as src:
                count = os.fstat(src.fileno()).st_size if keep is None else keep
                copied = 0
                while copied < count:
                    n = os.copy_file_range(src.fileno(), fd, count - copied, copied, copied)
                    if n == 0:
                        break
                    copied += n
        return fd

    def drop(self, ino: int, gen: int) -> None:
        if gen:
            with contextlib.suppress(FileNotFoundError):
                self.path(ino, gen).unlink()

    def drop_inode(self, ino: int, content_gen: int) -> None:
        """Drop what a deleted inode left: its content and an unfinished fetch."""
        self.drop(ino, content_gen)
        with contextlib.suppress(FileNotFoundError):
            self.part_path(ino, content_gen).unlink()

    def drop_all(self, ino: int, keep: int | None = None) -> None:
        """Drop every cached generation of `ino` (but `keep`); scans the cache."""
        for p in self.root.glob(f"{ino}.*"):
            if keep is not None and p.name == f"{ino}.{keep}":
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def recover(self, content_gens: dict[int, int]) -> None:
        """After a restart keep only each inode's sealed content generation."""
        for p in self.root.iterdir():
            if p == self.empty or (p.name.startswith("obj-") and "." not in p.name):
                continue
            parts = p.name.split(".")
            keep = (
                len(parts) == 2
                and parts[0].isdigit()
                and parts[1].isdigit()
                and content_gens.get(int(parts[0])) == int(parts[1])
            )
            if not keep:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def usage(self) -> int:
        total = 0
        for p in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_blocks * 512
        return total

    def eviction_candidates(self) -> list[tuple[int, int, Path]]:
        """(ino, gen, path) of cached generations, least recently used first."""
        found: list[tuple[float, int, int, Path]] = []
        for p in self.root.iterdir():
            parts = p.name.split(".")
            if p.name.startswith("obj-") and len(parts) == 1:
                parts = ["-1", "0"]  # checkpoint content: evictable whenever closed
            elif len(parts) != 2 or not (parts[0].isdigit() and parts[1].isdigit()):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                found.append((max(st.st_atime, st.st_mtime), int(parts[0]), int(parts[1]), p))
        found.sort()
        return [(ino, gen, p) for _, ino, gen, p in found]
