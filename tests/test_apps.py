"""Real applications inside a motionfs project folder.

Editors saving files, cp -a, rsync, tar, git, npm and SQLite each use a mix of
temp files, renames, fsync, mmap, symlinks, hard links, xattrs and timestamps
that a user will throw at the drive. Every test runs on the `project` fixture
and passes against a plain directory (MOTIONFS_TEST_TARGET=native).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import needs_tool
from helpers import read_file, snapshot, write_file

TIMEOUT = 300
MiB = 1 << 20
needs_vim = pytest.mark.skipif(shutil.which("vim") is None, reason="vim not installed")


# --------------------------------------------------------------------------- helpers


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure show its output in the assertion message."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def tool_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment with HOME (and tool caches) in the test's tmp dir."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Motion Tester",
        "GIT_AUTHOR_EMAIL": "tester@example.com",
        "GIT_COMMITTER_NAME": "Motion Tester",
        "GIT_COMMITTER_EMAIL": "tester@example.com",
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_update_notifier": "false",
        "npm_config_loglevel": "warn",
    }


def build_source_tree(root: Path) -> None:
    """A small Remotion-like project with nested dirs, modes, symlinks, an empty dir,
    a hard link, a foreign owner, an xattr and set nanosecond mtimes."""
    os.makedirs(root / "src" / "components" / "deep")
    os.makedirs(root / "public" / "fonts")
    os.mkdir(root / "empty-dir")
    write_file(root / "package.json", b'{"name": "demo", "version": "1.0.0"}\n')
    write_file(root / "src" / "Root.tsx", b"export const Root = () => null;\n")
    write_file(root / "src" / "components" / "Title.tsx", b"export const Title = 1;\n" * 50)
    write_file(root / "src" / "components" / "deep" / "data.bin", os.urandom(MiB + 3))
    write_file(root / "public" / "logo 🎬.png", os.urandom(5000))
    write_file(root / "public" / "fonts" / "x.meta", b"not a sidecar")
    write_file(root / "render.sh", b"#!/bin/sh\necho render\n", mode=0o755)
    write_file(root / "secret.env", b"TOKEN=1\n", mode=0o600)
    write_file(root / "empty-file", b"")
    os.chown(root / "secret.env", 1234, 5678)
    os.chmod(root / "public", 0o750)
    os.symlink("src/Root.tsx", root / "root-link")
    os.symlink("../../public", root / "src" / "components" / "public-link")
    os.symlink("missing/target", root / "dangling")
    os.link(root / "package.json", root / "src" / "package-hardlink.json")
    os.setxattr(root / "src" / "Root.tsx", "user.note", b"entry point")
    stamp = 1_690_000_000_000_000_000
    paths = sorted(root.rglob("*"), key=lambda p: (-len(p.parts), str(p)))
    for i, p in enumerate(paths):
        t = stamp + i * 3_000_000_011 + 987_654_321
        os.utime(p, ns=(t, t), follow_symlinks=False)
    os.utime(root, ns=(stamp, stamp))


# --------------------------------------------------------------------------- editors


def test_editor_atomic_save(project: Path) -> None:
    """Save via temp file + fsync + rename over the original (+ fsync of the directory):
    the new content replaces the old atomically, mode is kept, no temp file remains."""
    doc = project / "notes.md"
    write_file(doc, b"# draft 1\n", mode=0o640)
    # Hold the original open: its inode stays allocated (and its number unused) while a
    # reader that opened it before the save keeps seeing the old bytes.
    reader = os.open(doc, os.O_RDONLY)
    old_ino = os.fstat(reader).st_ino
    for version in range(2, 6):
        tmp = project / f".notes.md.tmp{version}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, f"# draft {version}\n".encode() * version)
            os.fchmod(fd, stat.S_IMODE(os.stat(doc).st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, doc)
        dfd = os.open(project, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        assert read_file(doc) == f"# draft {version}\n".encode() * version
    assert os.listdir(project) == ["notes.md"]
    assert stat.S_IMODE(os.stat(doc).st_mode) == 0o640
    try:
        assert os.stat(doc).st_ino != old_ino
        assert os.pread(reader, 100, 0) == b"# draft 1\n"
    finally:
        os.close(reader)


def test_editor_backup_save(project: Path) -> None:
    """vim-style save with backup: rename the original to `file~`, write a new file,
    fsync, copy the mode; the backup keeps the old inode and bytes."""
    doc = project / "scene.tsx"
    write_file(doc, b"const fps = 30;\n", mode=0o644)
    os.setxattr(doc, "user.editor", b"kept on backup")
    old_ino = os.stat(doc).st_ino
    backup = project / "scene.tsx~"
    os.rename(doc, backup)
    fd = os.open(doc, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        os.write(fd, b"const fps = 60;\n")
        os.fchmod(fd, stat.S_IMODE(os.stat(backup).st_mode))
        os.fsync(fd)
    finally:
        os.close(fd)
    assert read_file(doc) == b"const fps = 60;\n"
    assert read_file(backup) == b"const fps = 30;\n"
    assert os.stat(backup).st_ino == old_ino
    assert os.stat(doc).st_ino != old_ino
    assert os.getxattr(backup, "user.editor") == b"kept on backup"
    assert stat.S_IMODE(os.stat(doc).st_mode) == 0o644
    assert sorted(os.listdir(project)) == ["scene.tsx", "scene.tsx~"]
    os.unlink(backup)
    assert os.listdir(project) == ["scene.tsx"]


@needs_vim
@pytest.mark.parametrize("backupcopy", ["no", "yes"])
def test_vim_write(project: Path, tmp_path: Path, backupcopy: str) -> None:
    """`vim -Es` edits and writes (:wq) with a backup file, in rename mode
    (backupcopy=no: new inode) and copy mode (backupcopy=yes: same inode); the swap
    file is gone afterwards and the mode is kept."""
    doc = project / "doc.txt"
    write_file(doc, b"hello world\nsecond line\n", mode=0o640)
    ino = os.stat(doc).st_ino
    run(
        [
            "vim",
            "-Es",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-N",
            "-c",
            f"set backup backupcopy={backupcopy} backupskip= backupdir=. writebackup",
            "-c",
            "%s/world/drive/",
            "-c",
            "wq",
            str(doc),
        ],
        cwd=project,
        env=tool_env(tmp_path),
    )
    assert read_file(doc) == b"hello drive\nsecond line\n"
    assert read_file(project / "doc.txt~") == b"hello world\nsecond line\n"
    assert sorted(os.listdir(project)) == ["doc.txt", "doc.txt~"]
    assert stat.S_IMODE(os.stat(doc).st_mode) == 0o640
    if backupcopy == "no":
        assert os.stat(doc).st_ino != ino
        assert os.stat(project / "doc.txt~").st_ino == ino
    else:
        assert os.stat(doc).st_ino == ino


# --------------------------------------------------------------------------- copying tools


def test_cp_a_roundtrip(project: Path, tmp_path: Path) -> None:
    """`cp -a` into the project and back out: diff -r is clean and every lstat mode,
    owner, nanosecond mtime, symlink, hard link and xattr matches the source."""
    src = tmp_path / "src"
    src.mkdir()
    build_source_tree(src)
    expected = snapshot(src)
    assert expected["hardlinks"], "source tree should contain a hard link"
    run(["cp", "-a", str(src), str(project / "tree")])
    run(["diff", "-r", "--no-dereference", str(src), str(project / "tree")])
    assert snapshot(project / "tree") == expected
    back = tmp_path / "back"
    run(["cp", "-a", str(project / "tree"), str(back)])
    run(["diff", "-r", "--no-dereference", str(src), str(back)])
    assert snapshot(back) == expected
    assert (project / "tree" / "empty-dir").is_dir()
    assert os.listdir(project / "tree" / "empty-dir") == []


def _rsync_pending(flags: list[str], src: Path, dst: Path) -> list[str]:
    """What a checksum dry run would still transfer from src to dst (empty = in sync)."""
    out = run(
        ["rsync", *flags, "--checksum", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/"]
    )
    return [line for line in out.stdout.splitlines() if line.strip()]


@needs_tool["rsync"]
def test_rsync_a_roundtrip(project: Path, tmp_path: Path) -> None:
    """`rsync -a` into the project leaves nothing for a --checksum dry run to do; rsync
    back out reproduces the source (modes, owners, mtimes, symlinks, contents)."""
    src = tmp_path / "src"
    src.mkdir()
    build_source_tree(src)
    dst = project / "tree"
    run(["rsync", "-a", f"{src}/", f"{dst}/"])
    assert _rsync_pending(["-a"], src, dst) == []
    expected = snapshot(src, xattrs=False, hardlinks=False)
    assert snapshot(dst, xattrs=False, hardlinks=False) == expected
    back = tmp_path / "back"
    run(["rsync", "-a", f"{dst}/", f"{back}/"])
    assert _rsync_pending(["-a"], src, back) == []
    assert snapshot(back, xattrs=False, hardlinks=False) == expected
    # A second sync after a change transfers exactly the changed file.
    write_file(src / "src" / "Root.tsx", b"export const Root = () => 'v2';\n")
    assert [line.split()[-1] for line in _rsync_pending(["-a"], src, dst)] == ["src/Root.tsx"]
    run(["rsync", "-a", f"{src}/", f"{dst}/"])
    assert _rsync_pending(["-a"], src, dst) == []
    assert read_file(dst / "src" / "Root.tsx") == b"export const Root = () => 'v2';\n"


@needs_tool["rsync"]
def test_rsync_hard_links_and_xattrs(project: Path, tmp_path: Path) -> None:
    """`rsync -aHX` carries hard links and user xattrs into the project and back."""
    src = tmp_path / "src"
    src.mkdir()
    build_source_tree(src)
    dst = project / "tree"
    run(["rsync", "-aHX", f"{src}/", f"{dst}/"])
    assert _rsync_pending(["-aHX"], src, dst) == []
    expected = snapshot(src)
    assert snapshot(dst) == expected
    back = tmp_path / "back"
    run(["rsync", "-aHX", f"{dst}/", f"{back}/"])
    assert snapshot(back) == expected


def test_tar_roundtrip(project: Path, tmp_path: Path) -> None:
    """Unpacking a tar archive into the project and packing it again loses nothing."""
    src = tmp_path / "src"
    src.mkdir()
    build_source_tree(src)
    archive = tmp_path / "src.tar"
    run(["tar", "-C", str(src), "--xattrs", "-cf", str(archive), "."])
    dst = project / "tree"
    dst.mkdir()
    run(["tar", "-C", str(dst), "--xattrs", "--xattrs-include=user.*", "-xpf", str(archive)])
    expected = snapshot(src)
    assert snapshot(dst) == expected
    again = tmp_path / "again.tar"
    run(["tar", "-C", str(dst), "--xattrs", "-cf", str(again), "."])
    back = tmp_path / "back"
    back.mkdir()
    run(["tar", "-C", str(back), "--xattrs", "--xattrs-include=user.*", "-xpf", str(again)])
    assert snapshot(back) == expected


# --------------------------------------------------------------------------- git


@needs_tool["git"]
def test_git_workflow(project: Path, tmp_path: Path) -> None:
    """git init/add/commit, fsck --full, gc, status and log work in a project, and a
    clone from it checks out the same files."""
    env = tool_env(tmp_path)
    repo = project / "repo"
    git = ["git", "-c", "core.fsync=all", "-c", "init.defaultBranch=main"]
    run([*git, "init", "-q", str(repo)], env=env)
    os.makedirs(repo / "src" / "components")
    write_file(repo / "README.md", b"# demo\n")
    write_file(repo / "src" / "Root.tsx", b"export const Root = () => null;\n")
    write_file(repo / "src" / "components" / "Title.tsx", b"export const Title = 1;\n")
    write_file(repo / "render.sh", b"#!/bin/sh\necho render\n", mode=0o755)
    write_file(repo / "big.bin", os.urandom(2 * MiB))
    os.symlink("src/Root.tsx", repo / "root-link")
    run([*git, "add", "-A"], cwd=repo, env=env)
    run([*git, "commit", "-q", "-m", "first commit"], cwd=repo, env=env)
    write_file(repo / "src" / "Root.tsx", b"export const Root = () => 'v2';\n")
    os.unlink(repo / "README.md")
    run([*git, "add", "-A"], cwd=repo, env=env)
    run([*git, "commit", "-q", "-m", "second commit"], cwd=repo, env=env)
    run([*git, "fsck", "--full", "--strict"], cwd=repo, env=env)
    run([*git, "gc", "--quiet", "--prune=now"], cwd=repo, env=env)
    run([*git, "fsck", "--full", "--strict"], cwd=repo, env=env)
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    status = run([*git, "status", "--porcelain"], cwd=repo, env=env)
    assert status.stdout == ""
    log = run([*git, "log", "--format=%s"], cwd=repo, env=env)
    assert log.stdout.splitlines() == ["second commit", "first commit"]
    run([*git, "checkout", "-q", "HEAD~1", "--", "README.md"], cwd=repo, env=env)
    assert read_file(repo / "README.md") == b"# demo\n"
    clone = tmp_path / "clone"
    run([*git, "clone", "-q", str(repo), str(clone)], env=env)
    assert read_file(clone / "src" / "Root.tsx") == read_file(repo / "src" / "Root.tsx")
    assert read_file(clone / "big.bin") == read_file(repo / "big.bin")
    assert os.readlink(clone / "root-link") == "src/Root.tsx"
    assert os.stat(clone / "render.sh").st_mode & stat.S_IXUSR


# --------------------------------------------------------------------------- npm


def _local_packages(project: Path) -> Path:
    """An app depending on a local `file:` package that has a `bin` entry."""
    lib = project / "hello-cli"
    os.makedirs(lib / "lib")
    write_file(
        lib / "package.json",
        json.dumps(
            {
                "name": "hello-cli",
                "version": "1.0.0",
                "bin": {"hello-cli": "cli.js"},
            }
        ).encode(),
    )
    write_file(
        lib / "cli.js",
        b"#!/usr/bin/env node\nconsole.log('hello from ' + require('./lib/msg.js'));\n",
    )
    write_file(lib / "lib" / "msg.js", b"module.exports = 'motionfs';\n")
    app = project / "app"
    app.mkdir()
    write_file(
        app / "package.json",
        json.dumps(
            {
                "name": "app",
                "version": "1.0.0",
                "private": True,
                "dependencies": {"hello-cli": "file:../hello-cli"},
            }
        ).encode(),
    )
    return app


@needs_tool["npm"]
@pytest.mark.parametrize("install_links", [False, True], ids=["linked", "packed"])
def test_npm_install_local_bin(project: Path, tmp_path: Path, install_links: bool) -> None:
    """`npm install --offline` of a local file: dependency creates node_modules, a
    lockfile and a node_modules/.bin symlink that runs. `packed` copies the package
    (--install-links) instead of linking its directory."""
    app = _local_packages(project)
    cmd = ["npm", "install", "--offline", "--no-audit", "--no-fund"]
    if install_links:
        cmd.append("--install-links")
    run(cmd, cwd=app, env=tool_env(tmp_path))
    binary = app / "node_modules" / ".bin" / "hello-cli"
    assert binary.is_symlink()
    assert os.stat(binary).st_mode & stat.S_IXUSR
    out = run([str(binary)], cwd=app, env=tool_env(tmp_path))
    assert out.stdout == "hello from motionfs\n"
    installed = app / "node_modules" / "hello-cli"
    assert installed.is_symlink() is (not install_links)
    assert read_file(installed / "lib" / "msg.js") == b"module.exports = 'motionfs';\n"
    lock = json.loads(read_file(app / "package-lock.json"))
    assert "node_modules/hello-cli" in lock["packages"]
    run(["npm", "ls", "--offline", *cmd[5:]], cwd=app, env=tool_env(tmp_path))


# --------------------------------------------------------------------------- sqlite


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_database(project: Path, journal: str) -> None:
    """SQLite (byte-range locks, fsync, and in WAL mode a shared-memory mmap) keeps a
    consistent database in the project, with a concurrent reader."""
    path = project / "renders.db"
    db = sqlite3.connect(path)
    try:
        assert db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
        db.execute("CREATE TABLE frames (n INTEGER PRIMARY KEY, data BLOB)")
        for start in range(0, 2000, 250):
            with db:
                db.executemany(
                    "INSERT INTO frames VALUES (?, ?)",
                    [(n, os.urandom(200)) for n in range(start, start + 250)],
                )
        reader = sqlite3.connect(path)
        try:
            assert reader.execute("SELECT count(*) FROM frames").fetchone()[0] == 2000
            with db:
                db.execute("DELETE FROM frames WHERE n % 2 = 0")
            assert reader.execute("SELECT count(*) FROM frames").fetchone()[0] == 1000
        finally:
            reader.close()
    finally:
        db.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM frames").fetchone()[0] == 1000
        db.execute("VACUUM")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
