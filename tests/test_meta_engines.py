"""The metadata-engine contract (motionfs.meta.engine), checked on every engine.

Each test runs on the SQLite engine and on the PostgreSQL engine (a real
server from tests/pgserver.py, a database per test), through the MetaEngine
and CheckpointCatalog interfaces only, so both keep the same promises. The
few engine-specific checks (a newer schema, disk full, schemas side by side)
are at the end.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from harness import CTX, Harness, fs_error, ns_of, project, read_file, rewrite, write_file
from motionfs.daemon import Engine
from motionfs.errors import FsError, SetupError
from motionfs.meta import open_engine
from motionfs.meta.engine import IndexUnusable, MetaEngine
from motionfs.meta.postgres import PgIndex
from motionfs.meta.records import NamespaceRecord
from motionfs.meta.sqlite import Index
from motionfs.motion.models import NamespaceType, ProviderType, StorageScope

DIR = stat.S_IFDIR | 0o755
REG = stat.S_IFREG | 0o644


class Engines:
    """Opens the engine of one kind over the same storage again and again."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.opened: list[MetaEngine] = []
        if kind == "postgres":
            self.pg = request.getfixturevalue("pg_server")
            self.url = self.pg.create_database()

    def open(self, schema: str = "motionfs") -> MetaEngine:
        engine: MetaEngine
        if self.kind == "sqlite":
            engine = Index(self.tmp_path / "index.sqlite")
        else:
            engine = PgIndex(f"{self.url}?schema={schema}", self.tmp_path / "index.postgres")
        self.opened.append(engine)
        return engine

    def close_all(self) -> None:
        for engine in self.opened:  # closing twice is harmless on both engines
            engine.close()


@pytest.fixture(params=["sqlite", "postgres"])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engines]:
    e = Engines(str(request.param), tmp_path, request)
    try:
        yield e
    finally:
        e.close_all()


@pytest.fixture
def idx(engines: Engines) -> MetaEngine:
    return engines.open()


def ns_record(ns_id: str, name: str = "p") -> NamespaceRecord:
    return NamespaceRecord(
        ns_id=ns_id,
        kind=NamespaceType.WORKSPACE,
        name=name,
        scope=StorageScope.USER,
        user_id="alice",
        session_id=None,
        provider_type=ProviderType.FILESYSTEM,
        provider_config={"root": "/x"},
        grid_path=f"grid/{ns_id}",
        created_at="2026-01-01T00:00:00Z",
        expires_at=None,
        info_json="{}",
    )


def new_inode(idx: MetaEngine, mode: int = REG, **fields: Any) -> int:
    base: dict[str, Any] = {
        "mode": mode,
        "uid": 1000,
        "gid": 1000,
        "nlink": 2 if stat.S_ISDIR(mode) else 1,
        "atime_ns": 1,
        "mtime_ns": 2,
        "ctime_ns": 3,
        "role": "node",
    }
    base.update(fields)
    return idx.create_inode(**base).ino


def make_tree(idx: MetaEngine) -> dict[str, int]:
    """root(1) / d / {a, b}, plus a file in namespace ns1 and a project folder."""
    with idx.transaction():
        root = new_inode(idx, DIR, ino=1, role="root")
        d = new_inode(idx, DIR)
        a = new_inode(idx, ns_id="ns1", sha256="aa", size=10, area="renders")
        b = new_inode(idx, ns_id="ns1", sha256="bb", size=20, content_gen=3, area="renders")
        p = new_inode(idx, DIR, role="project", ns_id="ns1", area="projects")
        idx.link(root, b"d", d)
        idx.link(d, b"b", b)
        idx.link(d, b"a", a)
        idx.link(root, b"p", p)
    return {"root": root, "d": d, "a": a, "b": b, "p": p}


# -- meta, namespaces, motion metadata ---------------------------------------------------


def test_meta_values(idx: MetaEngine) -> None:
    assert idx.get_meta("k") is None
    with idx.transaction():
        idx.set_meta("k", "1")
        idx.set_meta("k", "2")
    assert idx.get_meta("k") == "2"
    assert idx.integrity_errors() == []


def test_namespaces(idx: MetaEngine) -> None:
    with idx.transaction():
        idx.add_namespace(ns_record("nsB"))
        idx.add_namespace(ns_record("nsA"))
        idx.set_motion_meta("nsA", '{"x": 1}')
        idx.set_motion_meta("nsA", '{"x": 2}')
    assert idx.namespace_count() == 2
    assert [(r.ns_id, s) for r, s in idx.namespaces()] == [("nsA", "live"), ("nsB", "live")]
    rec = idx.namespace("nsA")
    assert rec == ns_record("nsA")
    assert idx.namespace("nope") is None
    assert idx.namespace_state("nope") is None
    with idx.transaction():
        idx.set_namespace_state("nsB", "destroying")
        idx.update_namespace(ns_record("nsA", name="renamed"))
    assert idx.namespace_state("nsB") == "destroying"
    assert idx.namespace("nsA").name == "renamed"  # type: ignore[union-attr]
    assert idx.get_motion_meta("nsA") == '{"x": 2}'
    with idx.transaction():
        idx.remove_namespace("nsA")
    assert idx.namespace("nsA") is None
    assert idx.get_motion_meta("nsA") is None
    assert idx.namespace_count() == 1


# -- inodes ---------------------------------------------------------------------------------


def test_inodes_create_get_update_delete(idx: MetaEngine) -> None:
    with idx.transaction():
        ino = new_inode(idx, target=None, size=5)
    node = idx.get(ino)
    assert node is not None and node.is_reg and node.size == 5 and node.uid == 1000
    with idx.transaction():
        idx.update(ino, size=7, mtime_ns=99, sha256="ff", content_gen=2)
    node = idx.get(ino)
    assert node is not None and (node.size, node.mtime_ns, node.sha256) == (7, 99, "ff")
    with idx.transaction():
        link = new_inode(idx, stat.S_IFLNK | 0o777, target=b"\xffto/there")
    assert idx.get(link).target == b"\xffto/there"  # type: ignore[union-attr]
    assert idx.get(link).is_symlink  # type: ignore[union-attr]
    with idx.transaction():
        idx.set_xattr(ino, b"user.a", b"1")
        idx.delete_inode(ino)
    assert idx.get(ino) is None
    assert idx.get_xattr(ino, b"user.a") is None
    assert idx.get(12345) is None


def test_inode_numbers_never_reused(engines: Engines, idx: MetaEngine) -> None:
    with idx.transaction():
        root = new_inode(idx, DIR, ino=1, role="root")
        fixed = new_inode(idx, DIR, ino=50, role="area")
    assert (root, fixed) == (1, 50)
    with idx.transaction():
        first = new_inode(idx)
    assert first > 50  # numbers handed out pass the fixed ones
    with idx.transaction():
        idx.delete_inode(first)
        second = new_inode(idx)
    assert second > first
    with pytest.raises(RuntimeError), idx.transaction():
        lost = new_inode(idx)
        raise RuntimeError("roll back")
    assert idx.get(lost) is None
    with idx.transaction():
        third = new_inode(idx)
    assert third > second
    idx.close()
    again = engines.open()
    with again.transaction():
        again.delete_inode(third)
    again.close()
    again = engines.open()
    with again.transaction():
        fourth = new_inode(again)
    assert fourth > third


def test_inode_queries(idx: MetaEngine) -> None:
    t = make_tree(idx)
    with idx.transaction():
        orphan = new_inode(idx, nlink=0, ns_id="ns1")
    assert [n.ino for n in idx.orphans()] == [orphan]
    assert sorted(n.ino for n in idx.file_inodes()) == [t["a"], t["b"]]
    assert sorted(n.ino for n in idx.nodes_of_namespace("ns1")) == sorted(
        [t["a"], t["b"], t["p"], orphan]
    )
    assert [n.ino for n in idx.inodes_with_sha("ns1", "bb")] == [t["b"]]
    assert idx.inodes_with_sha("ns2", "bb") == []
    assert idx.project_of("ns1").ino == t["p"]  # type: ignore[union-attr]
    assert idx.project_of("ns2") is None
    assert sorted(idx.inodes_with_content()) == [(t["b"], 3)]


# -- directory entries ---------------------------------------------------------------------


def test_links_lookup_listing_parents(idx: MetaEngine) -> None:
    t = make_tree(idx)
    assert idx.lookup(t["d"], b"a") == t["a"]
    assert idx.lookup(t["d"], b"zz") is None
    with idx.transaction():
        idx.link(t["d"], b"\xffhigh", t["a"])  # a hard link; names are bytes
        idx.link(t["d"], b"B", t["b"])
    assert [n for n, _ in idx.listing(t["d"])] == [b"B", b"a", b"b", b"\xffhigh"]
    assert [node.ino for _, node in idx.listing(t["d"])] == [t["b"], t["a"], t["b"], t["a"]]
    assert idx.parents(t["a"]) == [(t["d"], b"a"), (t["d"], b"\xffhigh")]
    assert idx.has_children(t["d"]) and not idx.has_children(t["a"])
    assert sorted((p, n) for p, n, _ in idx.links_of_namespace("ns1")) == [
        (t["root"], b"p"),
        (t["d"], b"B"),
        (t["d"], b"a"),
        (t["d"], b"b"),
        (t["d"], b"\xffhigh"),
    ]
    moves = idx.dir_moves
    with idx.transaction():
        idx.unlink(t["d"], b"\xffhigh")
    assert idx.parents(t["a"]) == [(t["d"], b"a")]
    assert idx.lookup(t["d"], b"\xffhigh") is None
    idx.get(t["d"])  # held: its unlink below is known to be a directory's
    with idx.transaction():
        idx.unlink(t["root"], b"d")
    assert idx.dir_moves > moves
    assert not idx.has_children(t["root"]) or idx.lookup(t["root"], b"d") is None


def test_xattrs(idx: MetaEngine) -> None:
    t = make_tree(idx)
    a = t["a"]
    assert idx.list_xattrs(a) == []
    with idx.transaction():
        idx.set_xattr(a, b"user.z", b"\x00\x01")
        idx.set_xattr(a, b"user.a", b"1")
        idx.set_xattr(a, b"user.a", b"2")
    assert idx.get_xattr(a, b"user.a") == b"2"
    assert idx.get_xattr(a, b"user.z") == b"\x00\x01"
    assert idx.list_xattrs(a) == [b"user.a", b"user.z"]
    with idx.transaction():
        assert idx.remove_xattr(a, b"user.a")
        assert not idx.remove_xattr(a, b"user.a")
    assert idx.list_xattrs(a) == [b"user.z"]


# -- the journal ------------------------------------------------------------------------------


def test_journal_order_and_lifecycle(idx: MetaEngine) -> None:
    t = make_tree(idx)
    idx.take_touched()
    with idx.transaction():
        idx.enqueue("ns1", "put", ino=t["a"], path="/x/a")
        idx.enqueue("ns2", "mkdir", path="/d")
        idx.enqueue("ns1", "move", path="/x/a", path2="/x/c")
        idx.enqueue("ns1", "put", ino=t["b"], path="/x/b", durable=True)
    s1, s3, s4 = [e.seq for e in idx.next_ops("ns1", 10)]
    [s2] = [e.seq for e in idx.next_ops("ns2", 10)]
    assert s1 < s2 < s3 < s4
    assert idx.take_touched() == {"ns1", "ns2"}
    assert idx.take_touched() == set()
    ops = idx.next_ops("ns1", 10)
    assert [e.seq for e in ops] == [s1, s3, s4]
    assert (ops[1].op, ops[1].path, ops[1].path2) == ("move", "/x/a", "/x/c")
    assert bool(ops[2].durable) and not bool(ops[0].durable)
    assert [e.seq for e in idx.next_ops("ns1", 2)] == [s1, s3]
    assert idx.pending_namespaces() == ["ns1", "ns2"]
    assert idx.pending_count() == 4 and idx.pending_count("ns1") == 3
    assert idx.backlog() >= 4
    assert idx.last_seq("ns1") == s4 and idx.last_seq("nsX") is None
    assert idx.ino_has_pending(t["a"]) and not idx.ino_has_pending(t["p"])
    count, size, failure = idx.pending_report()
    assert (count, size, failure) == (4, 30, None)  # puts of a (10) and b (20)
    assert idx.pending_puts(t["b"]) == [(s4, "/x/b")]

    with idx.transaction():
        idx.fail_op(s1, "timeout")
        idx.fail_op(s1, "timeout again")
    failing = idx.failing_ops()
    assert [(e.seq, e.attempts, e.last_error) for e in failing] == [(s1, 2, "timeout again")]
    assert idx.pending_report()[2] == "timeout again"

    with idx.transaction():
        idx.finish_op(s2)
        idx.park_op(s1, "refused")
    assert idx.pending_namespaces() == ["ns1"]
    assert [e.seq for e in idx.next_ops("ns1", 10)] == [s3, s4]
    parked = idx.parked_ops()
    assert [(e.seq, e.attempts, e.last_error) for e in parked] == [(s1, 3, "refused")]
    assert idx.parked_put(t["a"]) == "refused" and idx.parked_put(t["b"]) is None
    assert idx.parked_report() == (1, "refused")

    with idx.transaction():
        assert idx.unpark_ops() == 1
    assert idx.parked_report() == (0, None)
    again = idx.next_ops("ns1", 10)
    assert [e.seq for e in again][:2] == [s3, s4] and again[2].seq > s4  # a new seq
    assert (again[2].op, again[2].ino, again[2].attempts) == ("put", t["a"], 0)

    with idx.transaction():
        assert idx.drop_puts(t["b"]) is True  # it was durable
        assert idx.drop_puts(t["b"]) is False
    assert idx.pending_puts(t["b"]) == []
    with idx.transaction():
        idx.park_op(s3, "gone")
        idx.drop_ops("ns1")
    assert idx.pending_count() == 0 and idx.parked_ops() == [] and idx.backlog() == 0
    with idx.transaction():
        idx.enqueue("ns1", "mkdir", path="/e")
    s5 = idx.last_seq("ns1")
    # seqs are never reused, even after the queue empties
    assert s5 is not None and s5 > again[2].seq


def test_unpark_keeps_order(idx: MetaEngine) -> None:
    with idx.transaction():
        for i in range(5):
            idx.enqueue("ns", "mkdir", path=f"/{i}")
    seqs = [e.seq for e in idx.next_ops("ns", 10)]
    with idx.transaction():
        for s in reversed(seqs):
            idx.park_op(s, "no")
        assert idx.unpark_ops() == 5
    assert [e.path for e in idx.next_ops("ns", 10)] == [f"/{i}" for i in range(5)]


def test_pending_for_paths(idx: MetaEngine) -> None:
    with idx.transaction():
        idx.enqueue("ns", "mkdir", path="/a/b")
        idx.enqueue("ns", "move", path="/m/src", path2="/m/dst")
        idx.enqueue("ns", "put", ino=77, path="/u")
    assert idx.pending_for_paths("ns", 77, [])  # an upload of the inode itself
    assert idx.pending_for_paths("ns", 1, ["/a/b"])
    assert idx.pending_for_paths("ns", 1, ["/a/b/c/d"])  # under a pending path
    assert not idx.pending_for_paths("ns", 1, ["/a/bc"])  # a sibling, not a child
    assert idx.pending_for_paths("ns", 1, ["/zz", "/m/dst/x"])  # a move's destination
    assert not idx.pending_for_paths("ns", 1, ["/a"])
    assert not idx.pending_for_paths("other", 1, ["/a/b"])
    with idx.transaction():
        idx.enqueue("other", "destroy")
    assert idx.pending_for_paths("other", 1, ["/anything"])


# -- transactions ---------------------------------------------------------------------------


def test_transaction_nests_and_rolls_back_as_one(engines: Engines, idx: MetaEngine) -> None:
    t = make_tree(idx)
    reader = engines.open()  # another connection: sees committed state only
    moves = idx.dir_moves
    before = idx.get(t["a"])
    assert before is not None
    with pytest.raises(KeyError), idx.transaction():
        idx.update(t["a"], size=999)
        idx.set_meta("k", "v")
        with idx.transaction():  # joins the outer group
            idx.link(t["root"], b"new", t["a"])
            idx.enqueue("ns1", "mkdir", path="/n")
        assert idx.get(t["a"]).size == 999  # type: ignore[union-attr]
        with idx.transaction():
            raise KeyError("inner")
    assert idx.dir_moves > moves
    assert idx.get(t["a"]).size == before.size  # type: ignore[union-attr]
    assert idx.lookup(t["root"], b"new") is None
    assert idx.get_meta("k") is None
    assert idx.pending_count() == 0

    with idx.transaction():
        with idx.transaction():
            idx.set_meta("nested", "1")
        assert reader.get_meta("nested") is None  # the inner block did not commit
    assert reader.get_meta("nested") == "1"
    assert idx.get_meta("nested") == "1"


# -- the checkpoint catalog -----------------------------------------------------------------


def test_checkpoint_catalog(idx: MetaEngine) -> None:
    t = make_tree(idx)
    cat = idx.checkpoint_catalog()
    with idx.transaction():
        idx.set_xattr(t["a"], b"user.k", b"v")
        c1 = cat.add("ns1", "one", "first", 100)
        root = cat.add_entry(c1, None, b"", idx.get(t["p"]))  # type: ignore[arg-type]
        eb = cat.add_entry(c1, root, b"b", idx.get(t["b"]))  # type: ignore[arg-type]
        ea = cat.add_entry(c1, root, b"a", idx.get(t["a"]))  # type: ignore[arg-type]
        cat.copy_xattrs(t["a"], ea)
        cat.set_totals(c1, 2, 30)
        cat.add_object("ns1", "aa", 10)
        cat.add_object("ns1", "bb", 20)
        cat.add_object("ns1", "bb", 20)  # known already: kept once
    assert cat.get("ns1", "one") is None  # not complete yet
    got = cat.get("ns1", "one", complete_only=False)
    assert got is not None and got.cp_id == c1 and not got.complete
    assert (got.description, got.created_ns, got.file_count, got.logical_size) == (
        "first",
        100,
        2,
        30,
    )
    assert cat.all("ns1") == []
    with idx.transaction():
        cat.mark_complete("ns1", "one")
    assert cat.get("ns1", "one").complete  # type: ignore[union-attr]
    assert cat.by_id(c1) == cat.get("ns1", "one")
    assert cat.root(c1).eid == root
    assert [e.name for e in cat.children(root)] == [b"a", b"b"]
    assert cat.child(root, b"b").eid == eb  # type: ignore[union-attr]
    assert cat.child(root, b"zz") is None
    entry = cat.entry(ea)
    assert entry is not None and (entry.size, entry.sha256, entry.parent_eid) == (10, "aa", root)
    assert cat.xattrs(ea) == {b"user.k": b"v"} and cat.xattrs(eb) == {}
    assert cat.has_object("ns1", "aa") and not cat.has_object("ns1", "cc")
    assert sorted(cat.objects("ns1")) == [("ns1", "aa", 10), ("ns1", "bb", 20)]
    assert cat.exclusive_bytes(cat.get("ns1", "one")) == 30  # type: ignore[arg-type]

    with idx.transaction():  # a second checkpoint sharing "bb"
        c2 = cat.add("ns1", "two", None, 200)
        r2 = cat.add_entry(c2, None, b"", idx.get(t["p"]))  # type: ignore[arg-type]
        cat.add_entry(c2, r2, b"b", idx.get(t["b"]))  # type: ignore[arg-type]
        cat.mark_complete("ns1", "two")
        c3 = cat.add("ns2", "other", None, 150)
    assert c1 < c2 < c3
    assert [c.name for c in cat.all("ns1")] == ["one", "two"]
    assert [c.name for c in cat.all(None, complete_only=False)] == ["one", "other", "two"]
    assert cat.exclusive_bytes(cat.get("ns1", "one")) == 10  # type: ignore[arg-type]
    with idx.transaction():
        unused = cat.delete(c1)
    assert unused == ["aa"]  # "bb" is still referenced by "two"
    assert cat.by_id(c1) is None and cat.entry(ea) is None and cat.xattrs(ea) == {}
    assert cat.objects("ns1") == [("ns1", "bb", 20)]
    with idx.transaction():
        cat.delete_namespace("ns1")
    assert cat.all("ns1", complete_only=False) == [] and cat.objects("ns1") == []
    assert [c.name for c in cat.all(None, complete_only=False)] == ["other"]


# -- lifetime ---------------------------------------------------------------------------------


def test_reopen_keeps_everything(engines: Engines, idx: MetaEngine) -> None:
    t = make_tree(idx)
    cat = idx.checkpoint_catalog()
    with idx.transaction():
        idx.add_namespace(ns_record("ns1"))
        idx.set_xattr(t["a"], b"user.x", b"y")
        idx.enqueue("ns1", "put", ino=t["a"], path="/a")
        cp = cat.add("ns1", "c", None, 5)
        cat.add_entry(cp, None, b"", idx.get(t["p"]))  # type: ignore[arg-type]
        cat.mark_complete("ns1", "c")
        idx.set_meta("store_uuid", "u-1")
    seq = idx.last_seq("ns1")
    idx.sync()
    idx.close()
    again = engines.open()
    assert again.get_meta("store_uuid") == "u-1"
    assert again.namespace("ns1") == ns_record("ns1")
    assert [n for n, _ in again.listing(t["d"])] == [b"a", b"b"]
    assert again.get(t["b"]).content_gen == 3  # type: ignore[union-attr]
    assert again.get_xattr(t["a"], b"user.x") == b"y"
    assert [e.seq for e in again.next_ops("ns1", 5)] == [seq]
    assert again.checkpoint_catalog().get("ns1", "c").cp_id == cp  # type: ignore[union-attr]
    with again.transaction():
        again.enqueue("ns1", "mkdir", path="/z")
        assert again.checkpoint_catalog().add("ns1", "d", None, 6) > cp
    assert (again.last_seq("ns1") or 0) > (seq or 0) > 0
    assert again.integrity_errors() == []


def test_read_only_view_for_status(engines: Engines, idx: MetaEngine) -> None:
    """open_engine(readonly=True), as `motionfs status` uses it: reads what is
    committed, changes nothing."""
    make_tree(idx)
    with idx.transaction():
        idx.enqueue("ns1", "mkdir", path="/x")
    if engines.kind == "sqlite":
        view = open_engine(engines.tmp_path / "index.sqlite", readonly=True)
    else:
        view = open_engine(engines.tmp_path / "index.postgres", readonly=True, url=engines.url)
    engines.opened.append(view)
    assert view.pending_report() == (1, 0, None)
    assert [n for n, _ in view.listing(1)] == [b"d", b"p"]
    with pytest.raises(Exception, match=r"(?i)read.only|readonly"), view.transaction():
        view.set_meta("k", "v")
    assert idx.get_meta("k") is None


def _record_newer_schema(engines: Engines, idx: MetaEngine) -> None:
    """Write a schema version from the future, as a newer motionfs would."""
    if engines.kind == "sqlite":
        with idx.transaction():
            idx.set_meta("schema_version", "99")
    else:
        assert isinstance(idx, PgIndex)
        with idx.transaction():
            idx.db.execute("INSERT INTO schema_version(version) VALUES (99)")


def test_newer_schema_is_refused(engines: Engines, idx: MetaEngine) -> None:
    _record_newer_schema(engines, idx)
    idx.close()
    with pytest.raises(IndexUnusable, match="newer motionfs"):
        engines.open()


# -- PostgreSQL only ------------------------------------------------------------------------


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engines]:
    e = Engines("postgres", tmp_path, request)
    try:
        yield e
    finally:
        e.close_all()


def test_pg_disk_full_is_enospc(pg: Engines) -> None:
    idx = pg.open()
    calls: list[int] = []
    idx.on_full = lambda: calls.append(1)
    assert isinstance(idx, PgIndex)
    with pytest.raises(FsError) as info, idx.transaction():
        idx.set_meta("k", "lost")
        # The server reports SQLSTATE 53100 as it would on a full disk.
        idx.db.execute("DO $$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = '53100'; END $$")
    assert info.value.errno == errno.ENOSPC and calls == [1]
    assert idx.get_meta("k") is None
    with idx.transaction():  # the connection serves on
        idx.set_meta("k", "kept")
    assert idx.get_meta("k") == "kept"


def test_pg_stores_share_a_database_in_their_own_schemas(pg: Engines) -> None:
    a = pg.open("store_a")
    b = pg.open("store_b")
    with a.transaction():
        a.set_meta("store_uuid", "A")
        ino_a = new_inode(a)
    with b.transaction():
        b.set_meta("store_uuid", "B")
        ino_b = new_inode(b)
    assert (a.get_meta("store_uuid"), b.get_meta("store_uuid")) == ("A", "B")
    assert ino_a == ino_b == 1  # each schema has its own sequences
    with psycopg.connect(pg.url) as conn:
        public = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'")
        assert public.fetchone() == (0,)  # nothing lands outside the stores' schemas


def test_pg_foreign_schema_and_bad_names_are_refused(pg: Engines) -> None:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app; CREATE TABLE app.users (id int)")
    with pytest.raises(IndexUnusable, match="not a motionfs index"):
        pg.open("app")
    with pytest.raises(ValueError, match="schema"):
        pg.open("Bad-Name")


def test_pg_unreachable_server_is_index_unusable(tmp_path: Path) -> None:
    from pgserver import _free_port

    url = f"postgresql://nobody@127.0.0.1:{_free_port()}/none?connect_timeout=2"
    with pytest.raises(IndexUnusable, match="cannot reach PostgreSQL"):
        PgIndex(url, tmp_path / "index.postgres")


def test_pg_marker_file_names_no_password(pg: Engines) -> None:
    idx = pg.open()
    assert isinstance(idx, PgIndex)
    text = idx.path.read_text()
    assert pg.pg.password not in text and '"schema": "motionfs"' in text


# -- the daemon's engine on PostgreSQL (tests/harness.py, no kernel) ------------------------


@pytest.fixture
def pg_harness(pg: Engines, tmp_path: Path) -> Harness:
    """The daemon's wiring over a local store directory, its index in PostgreSQL."""
    return Harness(tmp_path / "store", meta_url=pg.url)


def test_pg_drive_files_rename_and_restart(pg_harness: Harness) -> None:
    """Files made, renamed and read back through the Drive; a second daemon
    lifetime over the same database sees them, and the store holds the bytes."""
    found: dict[str, Any] = {}

    async def first(e: Engine) -> None:
        drive = e.drive
        assert isinstance(e.index, PgIndex)
        p = await project(drive)
        f = await write_file(drive, p, b"f", b"hello postgres")
        d = await drive.mkdir(p, b"d", 0o755, CTX)
        await write_file(drive, d.ino, b"g", b"nested")
        await drive.rename(p, b"f", d.ino, b"moved", 0)
        drive.setxattr(f, b"user.k", b"v")
        found.update(p=p, f=f, d=d.ino, ns=ns_of(drive, f))

    async def second(e: Engine) -> None:
        drive = e.drive
        assert drive.lookup(found["d"], b"moved").ino == found["f"]
        with fs_error(errno.ENOENT):
            drive.lookup(found["p"], b"f")
        assert await read_file(drive, found["f"]) == b"hello postgres"
        assert drive.getxattr(found["f"], b"user.k") == b"v"
        assert pg_harness.store_bytes(e, found["ns"], "/d/moved") == b"hello postgres"
        assert e.index.pending_count() == 0 and e.index.integrity_errors() == []
        assert not (pg_harness.root / "index.sqlite").exists()  # the index is elsewhere

    pg_harness.run(first)
    pg_harness.run(second)


def test_pg_drive_checkpoint_and_restore(pg_harness: Harness) -> None:
    """A checkpoint made, the file changed, the checkpoint restored after a restart."""
    found: dict[str, int] = {}

    async def first(e: Engine) -> None:
        drive = e.drive
        p = await project(drive)
        f = await write_file(drive, p, b"f", b"old")
        await drive.create_checkpoint(p, b"v1", "first")
        await rewrite(drive, f, 0, b"NEW", os.O_WRONLY | os.O_TRUNC)
        found.update(p=p, f=f)

    async def second(e: Engine) -> None:
        tree, drive = e.tree, e.drive
        assert [s.name for s in e.checkpoints.summaries(found["p"])] == ["v1"]
        assert await read_file(drive, found["f"]) == b"NEW"
        await e.checkpoints.restore(found["p"], "v1")
        assert await read_file(drive, tree.lookup(found["p"], b"f").ino) == b"old"

    pg_harness.run(first)
    pg_harness.run(second)


def test_pg_harness_refuses_an_unreachable_database(tmp_path: Path) -> None:
    from pgserver import _free_port

    h = Harness(tmp_path, meta_url=f"postgresql://x@127.0.0.1:{_free_port()}/none")
    with pytest.raises(SetupError, match="cannot reach PostgreSQL"):
        h.run(lambda e: trio.sleep(0))
