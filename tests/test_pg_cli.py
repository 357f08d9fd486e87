"""The PostgreSQL metadata engine as a user reaches it: `mount --meta`, `status`,
`fsck --meta`, `migrate --to` and `mount.motionfs -o meta=`.

The mount tests run the CLI in a subprocess with a private home (test_cli's
`Cli`, whose teardown unmounts every mountpoint even when a test fails) against
the session's throwaway PostgreSQL server (`pg_server`, tests/pgserver.py), a
database per test. The fast tests at the end copy indexes without the kernel.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import pattern, sha256_file, snapshot
from motionfs.cli import redacted_argv, with_connect_timeout
from motionfs.meta import open_engine, redact
from motionfs.meta.migrate import (
    SHARED_ONLY_COLUMNS,
    SHARED_ONLY_TABLES,
    MigrationRefused,
    advance_sequences,
    copy_index,
    tables,
)
from motionfs.meta.postgres import PgIndex
from motionfs.meta.sqlite import Index
from motionfs.mounthelper import translate
from test_cli import Cli, assert_refused, run_on_terminal
from test_meta_engines import make_tree, new_inode, ns_record

MOUNT = pytest.mark.mount


class PgCli(Cli):
    """test_cli's runner plus a database of the session's PostgreSQL server."""

    def __init__(self, tmp_path: Path, pg: Any) -> None:
        super().__init__(tmp_path)
        self.pg = pg
        self.password: str = pg.password
        self.db_url: str = pg.create_database()  # with the password in it

    def url(self, schema: str = "drive", password: bool = True) -> str:
        base = self.db_url if password else redact(self.db_url)
        return f"{base}?schema={schema}"

    def with_password(self) -> dict[str, str]:
        """The environment with the password where libpq looks for it."""
        return dict(self.env, PGPASSWORD=self.password)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def fsck(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("fsck", "--json", *args)


@pytest.fixture
def pgcli(tmp_path: Path, pg_server: Any) -> Iterator[PgCli]:
    runner = PgCli(tmp_path, pg_server)
    try:
        yield runner
    finally:
        runner.teardown()


def no_password_in(cli: PgCli, *texts: str) -> None:
    for text in texts:
        assert cli.password not in text, text


def store_texts(store: Path) -> list[str]:
    """What the daemon left on this host for a user to read: marker, log, stderr."""
    out = []
    for name in ("index.postgres", "motionfs.log", "daemon.stderr"):
        path = store / name
        if path.exists():
            out.append(path.read_text(errors="replace"))
    return out


# -- mount, status, umount --------------------------------------------------------------------


@MOUNT
def test_mount_on_postgresql_keeps_files_and_never_shows_the_password(pgcli: PgCli) -> None:
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    done = pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url())
    assert pgcli.url(password=False) in done.stdout
    project = mp / "projects" / "film"
    project.mkdir()
    (project / "a.txt").write_bytes(b"hello postgres\n")
    big = pattern(3 << 20, seed=1)
    (project / "big.bin").write_bytes(big)

    # The record has no password: status shows the URL, and the queue only where
    # libpq finds the password itself (PGPASSWORD here, or ~/.pgpass).
    row = pgcli.record(mp)
    assert row["meta"] == pgcli.url(password=False)
    assert row["pending"] is None and "password" in str(row["index_error"])
    text = pgcli.run("status")
    assert "meta:    " + pgcli.url(password=False) in text.stdout
    assert "pending: unknown" in text.stdout
    with_pw = pgcli.run("status", "--json", env=pgcli.with_password())
    assert with_pw.returncode == 0, pgcli.explain(with_pw)
    assert '"pending": 0' in with_pw.stdout or '"pending": 1' in with_pw.stdout
    pid = row["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert pgcli.url(password=False) in cmdline
    no_password_in(pgcli, text.stdout, with_pw.stdout, cmdline, *store_texts(store))

    done = pgcli.umount(mp)
    assert done.returncode == 0, pgcli.explain(done, store)
    assert not (store / "index.sqlite").exists()
    # Again, the password from the environment this time.
    env = pgcli.with_password()
    done = pgcli.run(
        "mount", str(mp), "--store", str(store), "--meta", pgcli.url(password=False), env=env
    )
    assert done.returncode == 0, pgcli.explain(done, store)
    assert (project / "a.txt").read_bytes() == b"hello postgres\n"
    assert (project / "big.bin").read_bytes() == big
    assert pgcli.umount(mp).returncode == 0
    no_password_in(pgcli, *store_texts(store))


@MOUNT
def test_mount_refusals_are_one_line(pgcli: PgCli) -> None:
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    from pgserver import _free_port

    gone = f"postgresql://motionfs:{pgcli.password}@127.0.0.1:{_free_port()}/x?schema=s"
    line = assert_refused(pgcli.run("mount", str(mp), "--store", str(store), "--meta", gone))
    assert "cannot reach PostgreSQL" in line
    no_password_in(pgcli, line)
    line = assert_refused(
        pgcli.run("mount", str(mp), "--store", str(store), "--meta", pgcli.url("Bad")), "schema"
    )
    no_password_in(pgcli, line)
    assert_refused(
        pgcli.run("mount", str(mp), "--store", str(store), "--meta", "mysql://h/db"),
        "postgresql://",
    )
    assert_refused(
        pgcli.run("mount", str(mp), "--store", "memory://", "--meta", pgcli.url()), "memory"
    )
    pgcli.sql("CREATE SCHEMA app; CREATE TABLE app.users (id int)")
    assert_refused(
        pgcli.run("mount", str(mp), "--store", str(store), "--meta", pgcli.url("app")),
        "not a motionfs index",
    )
    assert pgcli.sql("SELECT tablename FROM pg_tables WHERE schemaname='app'") == [("users",)]
    # A schema a newer motionfs made.
    pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url("newer"))
    assert pgcli.umount(mp).returncode == 0
    pgcli.sql("INSERT INTO newer.schema_version(version) VALUES (99)")
    assert_refused(
        pgcli.run("mount", str(mp), "--store", str(store), "--meta", pgcli.url("newer")),
        "newer motionfs",
    )
    # Without --meta, a store whose index is in PostgreSQL is not given a new SQLite one.
    line = assert_refused(pgcli.run("mount", str(mp), "--store", str(store)), "--meta")
    assert pgcli.url("newer", password=False) in line
    assert not (store / "index.sqlite").exists()
    assert not os.path.ismount(mp)


@MOUNT
def test_mount_helper_takes_meta(pgcli: PgCli) -> None:
    helper = Path(sys.executable).with_name("mount.motionfs")
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    pgcli.watch(mp, store)
    done = subprocess.run(
        [str(helper), str(store), str(mp), "-o", f"_netdev,meta={pgcli.url()}"],
        env=pgcli.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, pgcli.explain(done, store)
    (mp / "projects" / "p").mkdir()
    (mp / "projects" / "p" / "f").write_bytes(b"via fstab")
    assert pgcli.record(mp)["meta"] == pgcli.url(password=False)
    assert pgcli.umount(mp).returncode == 0
    rows = pgcli.sql("SELECT count(*) FROM drive.namespaces")
    assert rows == [(1,)]


@MOUNT
def test_s3_store_with_the_index_in_postgresql(s3_server: Any, pgcli: PgCli) -> None:
    """Bytes in S3, metadata in PostgreSQL: a second index folder (an empty cache,
    as on another machine) mounted after the first serves the same drive, reading
    the bytes back from the bucket."""
    from s3server import AWS_ENV

    pgcli.env.update(AWS_ENV)
    mp = pgcli.mountpoint("mnt")
    bucket = ("--store", s3_server.store_url("pgcli"), "--s3-endpoint", s3_server.endpoint)
    first, second = pgcli.tmp / "index-a", pgcli.tmp / "index-b"
    pgcli.mount(mp, *bucket, "--index", str(first), "--meta", pgcli.url())
    project = mp / "projects" / "film"
    project.mkdir()
    data = pattern(3 << 20, seed=9)
    (project / "clip.bin").write_bytes(data)
    os.setxattr(project / "clip.bin", "user.take", b"3")
    assert pgcli.record(mp)["meta"] == pgcli.url(password=False)
    assert pgcli.umount(mp).returncode == 0
    assert not (first / "index.sqlite").exists()

    pgcli.mount(mp, *bucket, "--index", str(second), "--meta", pgcli.url())
    assert not any((second / "cache").glob("*.*"))  # nothing cached here yet
    assert (project / "clip.bin").read_bytes() == data
    assert os.getxattr(project / "clip.bin", "user.take") == b"3"
    assert pgcli.umount(mp).returncode == 0
    done = pgcli.fsck(*bucket, "--index", str(second), "--meta", pgcli.url())
    assert done.returncode == 0, done.stdout


# -- fsck -----------------------------------------------------------------------------------


@MOUNT
def test_fsck_on_postgresql_finds_and_repairs_a_missing_store_file(pgcli: PgCli) -> None:
    import json

    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url())
    (mp / "projects" / "p").mkdir()
    (mp / "projects" / "p" / "keep.txt").write_bytes(b"keep")
    (mp / "projects" / "p" / "lost.txt").write_bytes(b"lost and found again")
    assert pgcli.umount(mp).returncode == 0

    without = pgcli.run("fsck", "--store", str(store))  # the marker names PostgreSQL
    assert without.returncode == 8 and "--meta" in without.stderr, without.stderr
    meta = ("--store", str(store), "--meta", pgcli.url())
    done = pgcli.fsck(*meta)
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    assert report["meta"] == pgcli.url(password=False)
    no_password_in(pgcli, done.stdout, done.stderr)

    [lost] = [p for p in (store / "data").rglob("lost.txt") if p.is_file()]
    lost.unlink()
    done = pgcli.fsck(*meta)
    report = json.loads(done.stdout)
    assert done.returncode == 4, report
    assert any("missing from the store" in f["problem"] for f in report["findings"]), report
    done = pgcli.fsck(*meta, "--repair")
    assert done.returncode == 1, done.stdout
    assert pgcli.fsck(*meta).returncode == 0

    # A sequence behind its table (it would hand an inode number out again):
    # found, and repaired in place.
    pgcli.sql("SELECT setval('drive.inode_numbers', 2)")
    done = pgcli.fsck(*meta)
    assert done.returncode == 4 and "inode_numbers" in done.stdout, done.stdout
    done = pgcli.fsck(*meta, "--repair")
    assert done.returncode == 1 and "moved from 2" in done.stdout, done.stdout
    assert pgcli.fsck(*meta).returncode == 0

    # An empty schema is rebuilt from the store, as an empty SQLite index is.
    fresh = ("--store", str(store), "--meta", pgcli.url("rebuilt"))
    line = assert_refused(pgcli.run("mount", str(mp), *fresh), "fsck --repair")
    done = pgcli.fsck(*fresh, "--repair")
    assert done.returncode == 1, done.stdout
    pgcli.mount(mp, *fresh)
    assert (mp / "projects" / "p" / "keep.txt").read_bytes() == b"keep"
    assert (mp / "projects" / "p" / "lost.txt").read_bytes() == b"lost and found again"
    no_password_in(pgcli, line)


@MOUNT
def test_fsck_refuses_a_mounted_postgresql_store(pgcli: PgCli) -> None:
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url())
    done = pgcli.run("fsck", "--store", str(store), "--meta", pgcli.url())
    assert done.returncode == 8 and "mounted" in done.stderr, done.stderr
    done = pgcli.fsck("--store", str(store), "--meta", pgcli.url(), "--dry-run")
    assert done.returncode == 0, done.stdout


# -- migrate --------------------------------------------------------------------------------


def fill_project(mp: Path) -> Path:
    """Files, a folder, xattrs, a symlink, a hard link, a render and an asset."""
    project = mp / "projects" / "film"
    project.mkdir()
    (project / "src").mkdir()
    (project / "src" / "Root.tsx").write_text("export const Root = 1;\n")
    (project / "clip.bin").write_bytes(pattern(2 << 20, seed=3))
    os.setxattr(project / "clip.bin", "user.note", b"take 2")
    os.chmod(project / "src" / "Root.tsx", 0o600)
    os.symlink("src/Root.tsx", project / "root-link")
    os.link(project / "clip.bin", project / "clip-hard.bin")
    (mp / "renders" / "film" / "out.mp4").write_bytes(b"not really an mp4")
    (mp / "assets" / "logo.png").write_bytes(b"not really a png")
    return project


def drive_state(mp: Path) -> dict[str, Any]:
    """The projects with metadata and xattrs; renders and assets without xattrs
    (the media probe fills theirs in after close, on its own time)."""
    return {
        "projects": snapshot(mp / "projects"),
        "renders": snapshot(mp / "renders", xattrs=False),
        "assets": snapshot(mp / "assets", xattrs=False),
    }


@MOUNT
def test_migrate_then_mount_on_postgresql_serves_the_same_drive(pgcli: PgCli) -> None:
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    pgcli.mount(mp, "--store", str(store))
    project = fill_project(mp)
    done = pgcli.run("checkpoint", "create", str(project), "v1")
    assert done.returncode == 0, pgcli.explain(done, store)
    (project / "src" / "Root.tsx").write_text("export const Root = 2;\n")
    before = drive_state(mp)
    snaps_before = snapshot(project / ".snapshots" / "v1")

    line = assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", pgcli.url()), "mounted"
    )
    no_password_in(pgcli, line)
    assert pgcli.umount(mp).returncode == 0

    done = pgcli.run("migrate", "--store", str(store), "--to", pgcli.url())
    assert done.returncode == 0, pgcli.explain(done, store)
    assert done.stderr == ""  # no progress bar off a terminal
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("mount it with: motionfs mount MOUNTPOINT --store")
    assert pgcli.url(password=False) in last
    no_password_in(pgcli, done.stdout)
    assert not (store / "index.sqlite").exists()
    assert list(store.glob("index.sqlite.set-aside-*"))

    # A second migrate into the same schema: it holds an index now.
    line = assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", pgcli.url("other")),
        "nothing to migrate",
    )

    pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url())
    assert drive_state(mp) == before  # every file read back through the kernel (sha256)
    assert snapshot(project / ".snapshots" / "v1") == snaps_before
    assert (project / ".snapshots" / "v1" / "src" / "Root.tsx").read_text() == (
        "export const Root = 1;\n"
    )
    assert os.getxattr(project / "clip.bin", "user.note") == b"take 2"
    assert os.readlink(project / "root-link") == "src/Root.tsx"
    assert os.stat(project / "clip.bin").st_ino == os.stat(project / "clip-hard.bin").st_ino
    # The migrated drive keeps working: a restore and new files.
    done = pgcli.run("checkpoint", "restore", str(project), "v1")
    assert done.returncode == 0, pgcli.explain(done, store)
    assert (project / "src" / "Root.tsx").read_text() == "export const Root = 1;\n"
    (project / "new.txt").write_bytes(b"after the move")
    assert pgcli.umount(mp).returncode == 0
    pgcli.mount(mp, "--store", str(store), "--meta", pgcli.url())
    assert (project / "new.txt").read_bytes() == b"after the move"
    assert sha256_file(project / "clip.bin") == sha256_file(project / "clip-hard.bin")


@MOUNT
def test_migrate_refusals(pgcli: PgCli) -> None:
    mp, store = pgcli.mountpoint("mnt"), pgcli.tmp / "store"
    assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", pgcli.url()), "nothing to migrate"
    )
    pgcli.mount(mp, "--store", str(store))
    (mp / "projects" / "p").mkdir()
    assert pgcli.umount(mp).returncode == 0
    for url, words in (
        (pgcli.url("Bad"), ("schema",)),
        ("sqlite:///x.db", ("postgresql://",)),
    ):
        assert_refused(pgcli.run("migrate", "--store", str(store), "--to", url), *words)
    from pgserver import _free_port

    gone = f"postgresql://motionfs:{pgcli.password}@127.0.0.1:{_free_port()}/x?schema=s"
    line = assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", gone), "cannot reach PostgreSQL"
    )
    no_password_in(pgcli, line)
    pgcli.sql("CREATE SCHEMA app; CREATE TABLE app.users (id int)")
    assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", pgcli.url("app")),
        "not a motionfs index",
    )
    pgcli.mount(mp, "--store", str(pgcli.tmp / "other"), "--meta", pgcli.url("taken"))
    (mp / "projects" / "q").mkdir()
    assert pgcli.umount(mp).returncode == 0
    assert_refused(
        pgcli.run("migrate", "--store", str(store), "--to", pgcli.url("taken")),
        "already holds a motionfs index",
    )
    assert (store / "index.sqlite").exists()  # nothing moved after a refusal
    assert pgcli.sql("SELECT count(*) FROM taken.namespaces") == [(1,)]


# -- fast: the copy itself, no kernel -----------------------------------------------------------


def sqlite_with_everything(path: Path) -> None:
    """A SQLite index with rows in every table, numbers past deleted rows, queued
    and parked journal entries, and a checkpoint."""

    idx = Index(path)
    try:
        ids = make_tree(idx)
        with idx.transaction():
            idx.add_namespace(ns_record("ns1"))
            idx.set_motion_meta("ns1", '{"fps": 30}')
            idx.set_meta("store_uuid", "u-1")
            idx.set_xattr(ids["a"], b"user.k", b"\x00\xffv")
            idx.delete_inode(new_inode(idx))
            idx.enqueue("ns1", "put", ino=ids["a"], path="/a", durable=True)
            idx.enqueue("ns1", "put", ino=ids["b"], path="/b")
            idx.enqueue("ns1", "mkdir", path="/gone")
        _, parked, done = [e.seq for e in idx.next_ops("ns1", 10)]
        with idx.transaction():
            idx.park_op(parked, "refused for good")
            idx.finish_op(done)
            cat = idx.checkpoint_catalog()
            cp = cat.add("ns1", "v1", "first", 5)
            root = cat.add_entry(cp, None, b"", idx.get(ids["p"]))  # type: ignore[arg-type]
            eid = cat.add_entry(cp, root, b"a", idx.get(ids["a"]))  # type: ignore[arg-type]
            cat.copy_xattrs(ids["a"], eid)
            cat.add_object("ns1", "aa", 10)
            cat.set_totals(cp, 1, 10)
            cat.mark_complete("ns1", "v1")
    finally:
        idx.close()


def test_copy_index_carries_every_table_and_numbers(tmp_path: Path, pg_server: Any) -> None:
    source = tmp_path / "index.sqlite"
    sqlite_with_everything(source)
    url = pg_server.create_database() + "?schema=moved"
    result = copy_index(source, url)
    assert result.pending == 1 and result.parked == 1
    assert pg_server.password not in result.url
    old = open_engine(source, readonly=True)
    new = PgIndex(url, tmp_path / "index.postgres")
    try:
        assert new.integrity_errors() == []
        for key in ("store_uuid",):
            assert new.get_meta(key) == old.get_meta(key)
        assert new.get_meta("schema_version") is None  # SQLite's own key stays behind
        assert new.namespaces() == old.namespaces()
        assert new.get_motion_meta("ns1") == old.get_motion_meta("ns1")
        for ino in range(1, 7):
            assert new.get(ino) == old.get(ino)
            assert new.parents(ino) == old.parents(ino)
            assert {n: new.get_xattr(ino, n) for n in new.list_xattrs(ino)} == {
                n: old.get_xattr(ino, n) for n in old.list_xattrs(ino)
            }
        assert new.next_ops("ns1", 10) == old.next_ops("ns1", 10)
        assert new.parked_ops() == old.parked_ops()
        assert new.pending_report() == old.pending_report()
        old_cat, new_cat = old.checkpoint_catalog(), new.checkpoint_catalog()
        assert new_cat.all(None, complete_only=False) == old_cat.all(None, complete_only=False)
        [cp] = new_cat.all("ns1")
        root = new_cat.root(cp.cp_id)
        assert new_cat.children(root.eid) == old_cat.children(root.eid)
        [child] = new_cat.children(root.eid)
        assert new_cat.xattrs(child.eid) == {b"user.k": b"\x00\xffv"}
        assert new_cat.objects() == old_cat.objects()
        # No number is handed out twice: not even the deleted inode's or the finished seq's.
        with sqlite3.connect(source) as db:
            top = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        with new.transaction():
            fresh = new_inode(new)
            new.enqueue("ns1", "mkdir", path="/next")
            cp2 = new_cat.add("ns1", "v2", None, 6)
        seq = new.last_seq("ns1") or 0
        assert fresh > top["inodes"] and seq > top["journal"] and cp2 > top["checkpoints"]
    finally:
        old.close()
        new.close()


def test_copy_index_is_one_transaction(tmp_path: Path, pg_server: Any) -> None:
    """A failure half-way (here: the progress callback raising after the inodes)
    leaves no schema behind; an empty one a refused mount made is taken."""
    source = tmp_path / "index.sqlite"
    sqlite_with_everything(source)
    url = pg_server.create_database()

    class Boom(Exception):
        pass

    def progress(label: str, total: int) -> Any:
        import contextlib

        @contextlib.contextmanager
        def bar() -> Iterator[Any]:
            if label == "copying entries":
                raise Boom(label)
            yield lambda n: None

        return bar()

    with pytest.raises(Boom):
        copy_index(source, f"{url}?schema=half", progress)
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname='half'").fetchall()
    assert found == []
    PgIndex(f"{url}?schema=half", tmp_path / "index.postgres").close()  # empty motionfs schema
    assert copy_index(source, f"{url}?schema=half").rows["inodes"] == 5
    with pytest.raises(MigrationRefused, match="already holds a motionfs index"):
        copy_index(source, f"{url}?schema=half")


def test_migrate_shows_progress_on_a_terminal_only(pgcli: PgCli) -> None:
    """A bar per table on a terminal; the result lines on stdout either way."""
    store = pgcli.tmp / "store"
    store.mkdir()
    sqlite_with_everything(store / "index.sqlite")
    status, out, terminal = run_on_terminal(
        pgcli, "migrate", "--store", str(store), "--to", pgcli.url()
    )
    assert status == 0, (out, terminal)
    assert "copying inodes" in terminal and "100%" in terminal
    assert "1 queued store operations carried over" in out
    assert out.strip().splitlines()[-1].startswith("mount it with: motionfs mount MOUNTPOINT")
    no_password_in(pgcli, out, terminal)
    assert pgcli.sql("SELECT value FROM drive.meta WHERE key='store_uuid'") == [("u-1",)]


def test_advance_sequences_repairs_only_what_is_behind(tmp_path: Path, pg_server: Any) -> None:
    url = pg_server.create_database()
    assert advance_sequences(url + "?schema=none") == []  # no index there: nothing to do
    idx = PgIndex(url + "?schema=seqs", tmp_path / "index.postgres")
    try:
        with idx.transaction():
            for _ in range(3):
                new_inode(idx)
        assert advance_sequences(url + "?schema=seqs") == []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT setval('seqs.inode_numbers', 1)")
        assert any("inode_numbers" in e for e in idx.integrity_errors())
        assert advance_sequences(url + "?schema=seqs") == [
            "sequence inode_numbers moved from 1 past 3"
        ]
        assert idx.integrity_errors() == []
        with idx.transaction():
            assert new_inode(idx) == 4
    finally:
        idx.close()


def test_queued_store_work_is_carried_over_and_applied(tmp_path: Path, pg_server: Any) -> None:
    """A daemon that died before uploading (its journal full): after migrate, the
    first daemon on PostgreSQL applies the queue from the same cache."""
    import trio

    from harness import GID, UID, Harness, project, read_file, write_file
    from motionfs.daemon import Engine

    store = tmp_path / "store"
    store.mkdir()
    lite = Harness(store)
    engine = Engine(lite.opts, owner=(UID, GID))
    made: dict[str, int] = {}
    try:
        engine.prepare()

        async def write() -> None:  # no services: the journal never runs
            p = await project(engine.drive, b"film")
            made["f"] = await write_file(engine.drive, p, b"a.txt", b"carried over")

        trio.run(write)
        pending = engine.index.pending_count()
        ns = engine.drive.stat(made["f"]).ns_id
    finally:
        engine.close()
    assert pending > 0 and ns is not None
    url = pg_server.create_database() + "?schema=carry"
    assert copy_index(store / "index.sqlite", url).pending == pending
    (store / "index.sqlite").rename(store / "index.sqlite.migrated")  # as migrate does

    pg = Harness(store, meta_url=url)

    async def check(e: Engine) -> None:
        assert await read_file(e.drive, made["f"]) == b"carried over"
        await e.journal.drain_all()
        assert e.index.pending_count() == 0
        assert pg.store_bytes(e, ns, "/a.txt") == b"carried over"

    pg.run(check)


def test_migrated_tables_are_both_engines_tables(tmp_path: Path, pg_server: Any) -> None:
    """Every column of every table of both schemas is copied (a column added to
    one engine must be added to migrate too)."""
    Index(tmp_path / "index.sqlite").close()
    url = pg_server.create_database()
    PgIndex(url + "?schema=cols", tmp_path / "index.postgres").close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        lite = {
            name: {r[1] for r in db.execute(f"PRAGMA table_info({name})")}
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if name != "sqlite_sequence"
        }
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema='cols' AND table_name <> 'schema_version'"
        ).fetchall()
    pg: dict[str, set[str]] = {}
    for table, column in rows:
        if table not in SHARED_ONLY_TABLES and (table, column) not in SHARED_ONLY_COLUMNS:
            pg.setdefault(table, set()).add(column)
    copied = {table: set(columns) for table, columns in tables()}
    assert copied == lite == pg


def test_daemon_command_line_has_no_password() -> None:
    argv = ["mount", "/m", "--meta", "postgresql://u:secret@h/db?schema=s", "--foreground"]
    assert redacted_argv(argv) == [
        "mount",
        "/m",
        "--meta",
        "postgresql://u@h/db?schema=s",
        "--foreground",
    ]
    assert redacted_argv(["--meta=postgresql://u:secret@h:5/d"]) == ["--meta=postgresql://u@h:5/d"]


def test_mount_helper_translates_meta() -> None:
    args = translate("/store", "/mnt", ["defaults,meta=postgresql://u@h/db?schema=s"])
    assert args == ["mount", "/mnt", "--store", "/store", "--meta", "postgresql://u@h/db?schema=s"]


def test_status_connects_with_a_timeout() -> None:
    """status must not hang on a server that does not answer; a URL's own wins."""
    assert with_connect_timeout("postgresql://u@h/db?schema=s") == (
        "postgresql://u@h/db?schema=s&connect_timeout=5"
    )
    assert (
        with_connect_timeout("postgresql://u@h/db?connect_timeout=1")
        == "postgresql://u@h/db?connect_timeout=1"
    )
