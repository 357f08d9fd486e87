"""The journal's runs of local store work (`HostTree.batch`) and the SQLite
index's flush (`Index.sync`), without the kernel.

A batch keeps the folders it walked open for the rest of its run; these
tests pin that a removal or a move makes it forget them, so that nothing is
ever written into a folder that left the tree, and that it closes them all.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from motionfs.meta.sqlite import Index
from motionfs.store.backend import MakeDirs, Move, Put, Remove
from motionfs.store.host import HostTree


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def put(path: str, data: bytes) -> Put:
    return Put(path, io.BytesIO(data), False, sealed=False)


def test_a_batch_writes_what_single_changes_write(tmp_path: Path) -> None:
    tree = HostTree(tmp_path / "ns")
    before = open_fds()
    with tree.batch() as run:
        run.apply(MakeDirs("/a/b"))
        for i in range(5):
            run.apply(put(f"/a/b/f{i}", b"x" * i))
        run.apply(put("/a/c/d/deep", b"deep"))
        run.apply(Move("/a/b/f0", "/a/c/f0"))
    assert open_fds() == before  # every folder it kept is closed
    assert sorted(os.listdir(tmp_path / "ns/a/b")) == ["f1", "f2", "f3", "f4"]
    assert (tmp_path / "ns/a/b/f3").read_bytes() == b"xxx"
    assert (tmp_path / "ns/a/c/d/deep").read_bytes() == b"deep"
    assert (tmp_path / "ns/a/c/f0").read_bytes() == b""


def test_a_removed_folder_is_not_written_into(tmp_path: Path) -> None:
    """put into /a/b, remove /a/b, put into /a/b again: the new file lands in
    the new folder, not in the removed one the batch had open."""
    tree = HostTree(tmp_path / "ns")
    with tree.batch() as run:
        run.apply(put("/a/b/old", b"1"))
        run.apply(Remove("/a"))
        run.apply(put("/a/b/new", b"2"))
    assert os.listdir(tmp_path / "ns/a/b") == ["new"]
    assert (tmp_path / "ns/a/b/new").read_bytes() == b"2"


def test_a_moved_folder_is_not_written_into(tmp_path: Path) -> None:
    """After /a/b moves to /c, a put to /a/b/x makes a new /a/b; one to the
    moved folder's new path finds it there."""
    tree = HostTree(tmp_path / "ns")
    with tree.batch() as run:
        run.apply(put("/a/b/one", b"1"))
        run.apply(Move("/a/b", "/c"))
        run.apply(put("/a/b/two", b"2"))
        run.apply(put("/c/three", b"3"))
        run.apply(put("/d/e/four", b"4"))
        run.apply(Move("/c", "/d/e"))  # replaces a folder the batch had open
        run.apply(put("/d/e/five", b"5"))
    assert os.listdir(tmp_path / "ns/a/b") == ["two"]
    assert sorted(os.listdir(tmp_path / "ns/d/e")) == ["five", "one", "three"]
    assert not (tmp_path / "ns/c").exists()


def test_removing_the_root_forgets_every_folder(tmp_path: Path) -> None:
    tree = HostTree(tmp_path / "ns")
    with tree.batch() as run:
        run.apply(put("/a/f", b"1"))
        run.apply(Remove("/"))
        run.apply(put("/a/g", b"2"))
    assert os.listdir(tmp_path / "ns/a") == ["g"]


def test_index_sync_flushes_the_wal_it_keeps_open(tmp_path: Path) -> None:
    """sync flushes the WAL through a descriptor of its own: commits before and
    after a checkpoint that empties the WAL are there when the index reopens."""
    index = Index(tmp_path / "index.sqlite")
    try:
        for i in range(100):
            with index.transaction():
                index.set_meta(f"k{i}", str(i))
            if i == 50:
                index.sync()
                index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index.sync()
        assert index.get_meta("k99") == "99"
    finally:
        index.close()
    reopened = Index(tmp_path / "index.sqlite")
    try:
        assert reopened.get_meta("k10") == "10"
        assert reopened.get_meta("k77") == "77"
        Index.open_readonly(tmp_path / "index.sqlite").sync()  # nothing to flush: no error
    finally:
        reopened.close()
