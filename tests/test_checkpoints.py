"""Checkpoints through the kernel: `.snapshots`, mkdir/rmdir, and `motionfs checkpoint ...`.

Every test drives a real mount (os.*, cp, rsync, diff and the CLI in a subprocess), never
motionfs' Python classes. The reference for "what the project looked like" is always a copy
taken with `cp -a` into a native directory at checkpoint time: a checkpoint (browsed under
`.snapshots/<name>`) and a restored project must match it byte for byte and stat for stat
(`diff -r` plus a recursive lstat comparison of type, mode, uid, gid, size, mtime_ns, symlink
target, sha256 and user.* xattrs). Hard-link identity is not part of a checkpoint's manifest,
so only contents are compared for a hard-linked pair, not st_ino/st_nlink. The project
folder's own attributes (its mode, times and user.motion.* metadata) are not compared either:
they belong to the project, not to its checkpoints.

Checkpoints are motionfs' own layout, so the whole module is skipped against a native
directory (MOTIONFS_TEST_TARGET=native).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import NATIVE, Drive, needs_tool
from helpers import expect_errno, motionfs, sha256_file, write_file, xattrs_of

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(NATIVE, reason="checkpoints are motionfs' own layout"),
]

KiB = 1 << 10
MiB = 1 << 20
NOBODY = 65534
CLI_TIMEOUT = 300
SNAP = ".snapshots"
# Distinct nanosecond mtimes, none a multiple of a microsecond.
T0 = 1_650_000_000_123_456_789
STEP = 1_000_003_001


# --------------------------------------------------------------------------- helpers


def rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def describe(root: Path) -> dict[str, dict[str, Any]]:
    """lstat facts of everything below root (root itself excluded), keyed by relative path."""
    out: dict[str, dict[str, Any]] = {}

    def visit(path: Path, rel: str) -> None:
        st = os.lstat(path)
        info: dict[str, Any] = {
            "mode": oct(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
        }
        if stat.S_ISLNK(st.st_mode):
            info["size"] = st.st_size
            info["target"] = os.readlink(path)
        else:
            info["xattrs"] = xattrs_of(path, "user.")
        if stat.S_ISREG(st.st_mode):
            info["size"] = st.st_size
            info["sha256"] = sha256_file(path)
        out[rel] = info
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                visit(path / name, f"{rel}/{name}" if rel else name)

    for name in sorted(os.listdir(root)):
        visit(root / name, name)
    return out


def assert_same_tree(got: Path, want: Path, drive: Drive | None = None) -> None:
    """`diff -r` is clean and every lstat fact below the two roots matches."""
    done = subprocess.run(
        ["diff", "-r", "--no-dereference", str(got), str(want)], capture_output=True, text=True
    )
    log = f"\n--- motionfs.log ---\n{drive.log}" if drive is not None else ""
    assert done.returncode == 0, f"diff -r {got} {want}:\n{done.stdout}{done.stderr}{log}"
    a, b = describe(got), describe(want)
    problems = []
    for rel in sorted(set(a) | set(b)):
        if rel not in a:
            problems.append(f"missing {rel}")
        elif rel not in b:
            problems.append(f"unexpected {rel}")
        elif a[rel] != b[rel]:
            fields = sorted(set(a[rel]) | set(b[rel]))
            bad = {
                f: (a[rel].get(f), b[rel].get(f)) for f in fields if a[rel].get(f) != b[rel].get(f)
            }
            problems.append(f"{rel}: (got, want) {bad}")
    assert not problems, f"{got} differs from {want}:\n" + "\n".join(problems) + log


def native_copy(src: Path, dest: Path) -> Path:
    """`cp -a src/. dest`: the reference copy on the native disk."""
    done = subprocess.run(["cp", "-a", f"{src}/.", str(dest)], capture_output=True, text=True)
    assert done.returncode == 0, f"cp -a {src} {dest}: {done.stderr}"
    return dest


def checkpoint_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`motionfs checkpoint ARGS`, run from / (never from inside a mount)."""
    return motionfs("checkpoint", *args, timeout=CLI_TIMEOUT, cwd="/")


def cli_ok(drive: Drive, *args: str | Path) -> str:
    """Run `motionfs checkpoint ARGS`, assert exit 0, return stdout."""
    done = checkpoint_cli(*args)
    assert done.returncode == 0, (
        f"motionfs checkpoint {' '.join(map(str, args))}: exit {done.returncode}\n"
        f"stdout: {done.stdout}\nstderr: {done.stderr}\n--- motionfs.log ---\n{drive.log}"
    )
    return done.stdout


class PrimedCli:
    """`motionfs checkpoint ARGS` started with its imports done and held until run().

    The kernel caches names and attributes for about a second and starting the CLI takes
    about as long, so a command started the usual way would let those caches expire on
    their own and a missing invalidation would go unnoticed. Primed, the command runs
    within milliseconds of the test's last look at the files.
    """

    CODE = (
        "import sys, motionfs.cli as c; print('ready', file=sys.stderr, flush=True); "
        "sys.stdin.readline(); c.main(sys.argv[1:], 'motionfs')"
    )

    def __init__(self, drive: Drive, *args: str | Path) -> None:
        self.drive = drive
        self.args = ["checkpoint", *map(str, args)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        assert self.proc.stderr is not None
        ready = self.proc.stderr.readline()
        assert ready == "ready\n", f"primed CLI did not start: {ready}{self.proc.stderr.read()}"

    def __enter__(self) -> PrimedCli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # never run: the test failed before
            self.proc.kill()
            self.proc.communicate()

    def run(self) -> str:
        """Let the command go; assert exit 0 and return its stdout."""
        out, err = self.proc.communicate("go\n", timeout=CLI_TIMEOUT)
        assert self.proc.returncode == 0, (
            f"motionfs {' '.join(self.args)}: exit {self.proc.returncode}\nstdout: {out}\n"
            f"stderr: {err}\n--- motionfs.log ---\n{self.drive.log}"
        )
        return out


def cli_list(drive: Drive, project: Path) -> dict[str, dict[str, Any]]:
    """`checkpoint list --json`, keyed by checkpoint name."""
    out = cli_ok(drive, "list", project, "--json")
    rows = json.loads(out)
    assert isinstance(rows, list), f"list --json is not a JSON list: {out!r}"
    return {row["name"]: row for row in rows}


def snapshot_names(project: Path) -> list[str]:
    return sorted(os.listdir(project / SNAP))


def auto_names(project: Path) -> list[str]:
    return [n for n in snapshot_names(project) if n.startswith("auto-")]


def as_epoch(value: Any) -> float:
    """created_at as seconds since the epoch: accepts a number or an ISO 8601 string."""
    if isinstance(value, int | float):
        return float(value) / (1e9 if value > 1e14 else 1)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:  # naive: try both readings, UTC and local
        utc = parsed.replace(tzinfo=UTC).timestamp()
        local = parsed.timestamp()
        return min((utc, local), key=lambda t: abs(t - time.time()))
    return parsed.timestamp()


# --------------------------------------------------------------------------- the project tree


FILES: dict[str, bytes] = {
    "package.json": b'{"name": "demo", "version": "1.0.0"}\n',
    "empty.txt": b"",
    "one.bin": b"x",
    "change.txt": b"original content\n",
    "gone.txt": b"this file is deleted after the checkpoint\n",
    "run.sh": b"#!/bin/sh\necho render\n",
    "secret.key": b"k" * 100,
    "src/Root.tsx": b"export const Root = () => null;\n" * 150,
    "src/components/Title.tsx": b"export const Title = 'motion';\n" * 40,
    "bin/tool": b"\x7fELF" + rand_bytes(9_999, 1),
    "public/block.bin": rand_bytes(3 * 4096, 2),
    "public/big.bin": rand_bytes(3 * MiB + 12_345, 3),
}
FILE_MODES = {"run.sh": 0o755, "secret.key": 0o600, "bin/tool": 0o751}
DIR_MODES = {"bin": 0o751, "empty": 0o750, "public": 0o700}
SYMLINKS = {
    "root-link": "src/Root.tsx",
    "dangling": "no/such/target",
    "src/up": "../package.json",
    "pub": "public",
}


def build_tree(p: Path) -> None:
    """A project with nested and empty dirs, files from 0 bytes to ~3 MiB, odd modes, an
    owner change, symlinks (one dangling, one to a dir), a hard-linked pair, user xattrs on
    a file and a dir, and distinct nanosecond mtimes on every entry (set last, bottom-up)."""
    for d in ("src/components", "bin", "public", "empty"):
        (p / d).mkdir(parents=True, exist_ok=True)
    for rel, data in FILES.items():
        write_file(p / rel, data)
    os.link(p / "package.json", p / "package-link.json")
    for rel, target in SYMLINKS.items():
        os.symlink(target, p / rel)
    os.chown(p / "secret.key", NOBODY, NOBODY)
    os.chown(p / "bin", -1, 100)
    for rel, mode in {**FILE_MODES, **DIR_MODES}.items():
        os.chmod(p / rel, mode)
    os.setxattr(p / "src/Root.tsx", "user.note", b"hero scene")
    os.setxattr(p / "src", "user.colour", b"blue")
    os.setxattr(p / "empty.txt", "user.bin", b"\x00\x01\xff")
    set_mtimes(p, T0)


def set_mtimes(p: Path, base: int) -> None:
    """Give every entry below p a distinct nanosecond mtime, children before parents."""
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(p):
        entries += [Path(dirpath) / n for n in dirnames + filenames]
    entries.sort(key=lambda e: (-len(e.relative_to(p).parts), str(e)))
    for i, entry in enumerate(entries):
        t = base + i * STEP
        os.utime(entry, ns=(t, t), follow_symlinks=False)


def modify_tree(p: Path) -> None:
    """Change the project the ways a user would after a checkpoint."""
    write_file(p / "change.txt", b"changed after the checkpoint, and longer\n")
    with open(p / "public/big.bin", "r+b") as f:  # one byte in the middle of the big file
        f.seek(MiB + 7)
        f.write(b"\x00" if FILES["public/big.bin"][MiB + 7] else b"\x01")
    with open(p / "package-link.json", "r+b") as f:  # through the hard link: both names
        f.write(b"[")
    (p / "gone.txt").unlink()
    write_file(p / "new.txt", b"added after the checkpoint\n")
    write_file(p / "src/components/New.tsx", b"export const New = 2;\n")
    os.chmod(p / "run.sh", 0o700)
    os.chmod(p / "bin", 0o755)
    (p / "empty").rmdir()
    os.setxattr(p / "src/Root.tsx", "user.note", b"changed")
    os.setxattr(p / "src/Root.tsx", "user.added", b"new")
    os.removexattr(p / "src", "user.colour")
    os.truncate(p / "one.bin", 0)
    (p / "dangling").unlink()
    os.symlink("src", p / "dangling")
    os.rename(p / "src/components/Title.tsx", p / "src/Title.tsx")
    os.utime(p / "package.json", ns=(T0 - 5, T0 - 5))


def assert_modified(p: Path) -> None:
    """The live project shows every change modify_tree made."""
    assert (p / "change.txt").read_bytes() == b"changed after the checkpoint, and longer\n"
    assert (p / "public/big.bin").read_bytes() != FILES["public/big.bin"]
    assert (p / "package.json").read_bytes().startswith(b"[")
    assert not (p / "gone.txt").exists()
    assert (p / "new.txt").read_bytes() == b"added after the checkpoint\n"
    assert stat.S_IMODE(os.stat(p / "run.sh").st_mode) == 0o700
    assert not (p / "empty").exists()
    assert xattrs_of(p / "src/Root.tsx", "user.") == {
        "user.added": b"new".hex(),
        "user.note": b"changed".hex(),
    }
    assert xattrs_of(p / "src", "user.") == {}
    assert os.readlink(p / "dangling") == "src"
    assert not (p / "src/components/Title.tsx").exists()


def assert_original(p: Path) -> None:
    """Spot checks that p holds the tree exactly as build_tree left it."""
    assert (p / "change.txt").read_bytes() == FILES["change.txt"]
    assert (p / "gone.txt").read_bytes() == FILES["gone.txt"]
    assert (p / "package.json").read_bytes() == FILES["package.json"]
    assert (p / "package-link.json").read_bytes() == FILES["package.json"]
    assert sha256_file(p / "public/big.bin") == hashlib.sha256(FILES["public/big.bin"]).hexdigest()
    assert not (p / "new.txt").exists()
    assert not (p / "src/components/New.tsx").exists()
    assert (p / "empty").is_dir() and os.listdir(p / "empty") == []
    assert stat.S_IMODE(os.stat(p / "empty").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(p / "run.sh").st_mode) == 0o755
    st = os.stat(p / "secret.key")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, NOBODY, NOBODY)
    assert os.stat(p / "bin").st_gid == 100
    assert os.readlink(p / "dangling") == "no/such/target"
    assert os.readlink(p / "root-link") == "src/Root.tsx"
    assert os.getxattr(p / "src/Root.tsx", "user.note") == b"hero scene"
    assert os.getxattr(p / "src", "user.colour") == b"blue"
    assert os.path.getsize(p / "empty.txt") == 0
    assert all(os.lstat(p / rel).st_mtime_ns % 1000 for rel in ("change.txt", "src", "pub"))


# --------------------------------------------------------------------------- 1. browse


def test_checkpoint_is_an_exact_read_only_view(drive: Drive, project: Path, tmp_path: Path) -> None:
    """mkdir .snapshots/v1 captures the project; after the project changes in every way a
    user can change it, .snapshots/v1 still equals a `cp -a` copy taken at checkpoint time
    (diff -r, modes, owners, ns mtimes, symlinks, xattrs, empty dir), and the live tree shows
    the changes."""
    build_tree(project)
    reference = native_copy(project, tmp_path / "at-v1")
    os.mkdir(project / SNAP / "v1")
    v1 = project / SNAP / "v1"
    assert os.path.isdir(v1)
    assert_same_tree(v1, reference, drive)  # right after creation

    modify_tree(project)
    assert_modified(project)
    assert_same_tree(v1, reference, drive)  # unaffected by the changes
    assert_original(v1)
    assert not (v1 / "new.txt").exists()
    assert SNAP not in os.listdir(v1), "a checkpoint must not contain .snapshots"
    # the live tree really differs from the checkpoint
    diff = subprocess.run(
        ["diff", "-rq", "--no-dereference", str(v1), str(project)], capture_output=True, text=True
    )
    assert diff.returncode == 1, diff.stderr
    for rel in ("change.txt", "gone.txt", "new.txt", "empty"):
        assert rel in diff.stdout, f"diff -rq does not mention {rel}:\n{diff.stdout}"


# --------------------------------------------------------------------------- 2-3. restore


def test_restore_rolls_back_and_keeps_an_auto_checkpoint(
    drive: Drive, project: Path, tmp_path: Path
) -> None:
    """`checkpoint restore P v1` makes the live project identical to the cp -a copy taken at
    v1 (files added later removed, deleted ones back, empty dir, modes, owners, mtimes,
    symlinks, xattrs), after saving the pre-restore state as an `auto-*` checkpoint that
    equals a copy taken just before the restore."""
    build_tree(project)
    at_v1 = native_copy(project, tmp_path / "at-v1")
    os.mkdir(project / SNAP / "v1")
    modify_tree(project)
    before_restore = native_copy(project, tmp_path / "before-restore")
    assert auto_names(project) == []

    with PrimedCli(drive, "restore", project, "v1") as restore:
        describe(project)  # the kernel caches names and attributes of the modified tree
        restore.run()

    assert_same_tree(project, at_v1, drive)
    assert_original(project)
    assert SNAP not in os.listdir(project)
    autos = auto_names(project)
    assert len(autos) == 1, f"expected one auto-* checkpoint, have {snapshot_names(project)}"
    assert_same_tree(project / SNAP / autos[0], before_restore, drive)
    assert_same_tree(project / SNAP / "v1", at_v1, drive)  # v1 itself untouched
    listed = cli_list(drive, project)
    assert {"v1", autos[0]} <= set(listed), f"list --json: {sorted(listed)}"

    # restoring the auto checkpoint brings the modified state back: nothing was lost
    cli_ok(drive, "restore", project, autos[0])
    assert_same_tree(project, before_restore, drive)
    assert_modified(project)


def test_restore_reaches_open_files_and_kernel_caches(drive: Drive, project: Path) -> None:
    """Content, sizes and names the kernel has cached (page cache of an open, already read
    file; attributes; positive and negative dentries) are invalidated by a restore: a new
    open() reads the restored bytes, stat shows the restored size, and a mode-only or
    mtime-only change is rolled back visibly too. The restore command is primed so that it
    runs within the kernel's one-second cache lifetime."""
    v1_data = {
        "grow.txt": b"g" * 100_000,  # live is shorter: a stale size would cut reads short
        "shrink.txt": b"tiny\n",  # live is longer: a stale size would return old bytes
        "same.txt": b"A" * 8192,  # same size: only page-cache invalidation helps
    }
    live_data = {"grow.txt": b"short\n", "shrink.txt": b"s" * 200_000, "same.txt": b"B" * 8192}
    for name, data in v1_data.items():
        write_file(project / name, data)
    write_file(project / "back.txt", b"deleted, then restored\n")
    write_file(project / "mode.txt", b"only the mode changes\n")
    write_file(project / "time.txt", b"only the mtime changes\n")
    os.utime(project / "time.txt", ns=(T0, T0))
    os.mkdir(project / SNAP / "v1")
    for name, data in live_data.items():
        write_file(project / name, data)
    (project / "back.txt").unlink()
    write_file(project / "extra.txt", b"created after v1\n")
    os.chmod(project / "mode.txt", 0o600)
    os.utime(project / "time.txt", ns=(T0 + STEP, T0 + STEP))

    fds: dict[str, int] = {}
    with PrimedCli(drive, "restore", project, "v1") as restore:
        try:
            # Fill the kernel caches: open files read whole, attributes, dentries.
            fds = {name: os.open(project / name, os.O_RDONLY) for name in live_data}
            for name, fd in fds.items():
                assert os.pread(fd, 1 << 20, 0) == live_data[name]
                assert os.fstat(fd).st_size == len(live_data[name])
                assert (project / name).read_bytes() == live_data[name]
            assert not (project / "back.txt").exists()  # negative dentry
            assert (project / "extra.txt").exists()  # positive dentry
            assert stat.S_IMODE(os.stat(project / "mode.txt").st_mode) == 0o600  # attributes
            assert os.stat(project / "time.txt").st_mtime_ns == T0 + STEP

            restore.run()

            for name, data in v1_data.items():
                assert os.stat(project / name).st_size == len(data), name
                assert (project / name).read_bytes() == data, f"{name}: stale after restore"
            assert (project / "back.txt").read_bytes() == b"deleted, then restored\n"
            expect_errno(errno.ENOENT, os.stat, project / "extra.txt")
            assert stat.S_IMODE(os.stat(project / "mode.txt").st_mode) == 0o644, "stale mode"
            assert os.stat(project / "time.txt").st_mtime_ns == T0, "stale mtime"
            assert sorted(os.listdir(project)) == sorted(
                [*v1_data, "back.txt", "mode.txt", "time.txt"]
            )
            # An fd opened before the restore may see the old or the restored file, never a
            # mix and never an error.
            for name, fd in fds.items():
                seen = os.pread(fd, 1 << 20, 0)
                assert seen in (live_data[name], v1_data[name]), f"{name}: mixed via old fd"
        finally:
            for fd in fds.values():
                os.close(fd)


# --------------------------------------------------------------------------- 4. semantics


def test_snapshot_refuses_every_write_with_erofs(drive: Drive, project: Path) -> None:
    """Every kind of write inside .snapshots/v1 fails with EROFS and changes nothing, in the
    checkpoint or in the live project."""
    (project / "d/empty").mkdir(parents=True)
    write_file(project / "f.txt", b"frozen\n")
    write_file(project / "d/g.txt", b"frozen too\n")
    os.symlink("f.txt", project / "lnk")
    os.setxattr(project / "f.txt", "user.k", b"v")
    write_file(project / "live.txt", b"live\n")
    os.mkdir(project / SNAP / "v1")
    v1 = project / SNAP / "v1"
    before = describe(v1)
    live_before = describe(project)

    def open_with(flags: int) -> Callable[[Path], None]:
        def opener(path: Path) -> None:
            os.close(os.open(path, flags, 0o644))

        opener.__name__ = f"open(flags={flags:#o})"
        return opener

    erofs = errno.EROFS
    # open for writing
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_WRONLY | os.O_TRUNC):
        expect_errno(erofs, open_with(flags), v1 / "f.txt")
        expect_errno(erofs, open_with(flags), v1 / "d/g.txt")
    # create
    for path in (v1 / "new.txt", v1 / "d/new.txt"):
        expect_errno(erofs, open_with(os.O_WRONLY | os.O_CREAT), path)
        expect_errno(erofs, open_with(os.O_WRONLY | os.O_CREAT | os.O_EXCL), path)
    expect_errno(erofs, os.mkfifo, v1 / "fifo")
    expect_errno(erofs, os.mkdir, v1 / "newdir")
    expect_errno(erofs, os.mkdir, v1 / "d/newdir")
    expect_errno(erofs, os.symlink, "f.txt", v1 / "newlink")
    # remove
    expect_errno(erofs, os.unlink, v1 / "f.txt")
    expect_errno(erofs, os.unlink, v1 / "lnk")
    expect_errno(erofs, os.rmdir, v1 / "d/empty")
    # rename within, out of, into
    expect_errno(erofs, os.rename, v1 / "f.txt", v1 / "moved.txt")
    expect_errno(erofs, os.rename, v1 / "d/g.txt", v1 / "f.txt")
    expect_errno(erofs, os.rename, v1 / "d", v1 / "d2")
    expect_errno(erofs, os.rename, v1 / "f.txt", project / "out.txt")
    expect_errno(erofs, os.rename, project / "live.txt", v1 / "in.txt")
    expect_errno(erofs, os.rename, project / "live.txt", v1 / "f.txt")
    # hard links into the checkpoint; out of it (it would change the frozen inode's nlink)
    # EXDEV is as honest as EROFS, as between two file systems.
    expect_errno(erofs, os.link, project / "live.txt", v1 / "in.txt")
    expect_errno(erofs, os.link, v1 / "f.txt", v1 / "f2.txt")
    expect_errno((erofs, errno.EXDEV), os.link, v1 / "f.txt", project / "out.txt")
    # attributes
    for path in (v1 / "f.txt", v1 / "d", v1):
        expect_errno(erofs, os.chmod, path, 0o777)
        expect_errno(erofs, os.chown, path, NOBODY, NOBODY)
        expect_errno(erofs, os.utime, path, None)
        expect_errno(erofs, os.utime, path, (1, 1))
        expect_errno(erofs, os.setxattr, path, "user.new", b"x")
    expect_errno(erofs, os.removexattr, v1 / "f.txt", "user.k")
    expect_errno(erofs, os.setxattr, v1 / "f.txt", "user.k", b"changed")
    expect_errno(erofs, lambda p: os.chown(p, 1, 1, follow_symlinks=False), v1 / "lnk")
    expect_errno(erofs, os.truncate, v1 / "f.txt", 0)
    expect_errno(erofs, os.truncate, v1 / "f.txt", 100)

    assert describe(v1) == before, "a refused write changed the checkpoint"
    assert describe(project) == live_before, "a refused write changed the live project"
    assert (project / "live.txt").read_bytes() == b"live\n"


def test_checkpoint_name_errors(drive: Drive, project: Path) -> None:
    """mkdir of an existing checkpoint is EEXIST, of an invalid name EINVAL (nothing
    created), rmdir or browsing of a missing one ENOENT; the longest valid name works."""
    write_file(project / "a.txt", b"a\n")
    snaps = project / SNAP
    expect_errno(errno.EINVAL, os.mkdir, snaps / "latest")  # reserved (absent so far)
    os.mkdir(snaps / "v1")
    expect_errno(errno.EEXIST, os.mkdir, snaps / "v1")
    invalid = [
        ".hidden",
        "-dash",
        "_under",
        "a b",
        "a:b",
        "tab\tname",
        "é",
        "x" * 129,
        "a*",
        "semi;colon",
        "quote'",
        "new\nline",
    ]
    for name in invalid:
        expect_errno(errno.EINVAL, os.mkdir, snaps / name)
    # with checkpoints present, `latest` exists as a symlink: the kernel may answer EEXIST
    expect_errno((errno.EINVAL, errno.EEXIST), os.mkdir, snaps / "latest")
    valid = ["x" * 128, "V1.2_rc-3", "9", "a..b"]
    for name in valid:
        os.mkdir(snaps / name)
        assert (snaps / name / "a.txt").read_bytes() == b"a\n"
    assert snapshot_names(project) == sorted(["latest", "v1", *valid])

    expect_errno(errno.ENOENT, os.rmdir, snaps / "nope")
    expect_errno(errno.ENOENT, os.stat, snaps / "nope")
    expect_errno(errno.ENOENT, os.listdir, snaps / "nope")
    os.rmdir(snaps / "v1")
    expect_errno(errno.ENOENT, os.rmdir, snaps / "v1")
    expect_errno(errno.ENOENT, os.stat, snaps / "v1")
    assert "v1" not in cli_list(drive, project)


def test_latest_points_at_the_newest_checkpoint(drive: Drive, project: Path) -> None:
    """`.snapshots/latest` is absent with no checkpoints, then a relative symlink to the most
    recently created checkpoint (by creation, not by name), following deletes."""
    write_file(project / "a.txt", b"first\n")
    snaps = project / SNAP
    assert os.listdir(snaps) == []
    expect_errno(errno.ENOENT, os.lstat, snaps / "latest")
    os.mkdir(snaps / "v1")
    assert stat.S_ISLNK(os.lstat(snaps / "latest").st_mode)
    assert os.readlink(snaps / "latest") == "v1"
    assert snapshot_names(project) == ["latest", "v1"]
    write_file(project / "a.txt", b"second\n")
    os.mkdir(snaps / "aaa")  # sorts before v1, but is newer
    assert os.readlink(snaps / "latest") == "aaa"
    assert (snaps / "latest" / "a.txt").read_bytes() == b"second\n"
    assert (snaps / "v1" / "a.txt").read_bytes() == b"first\n"
    os.rmdir(snaps / "aaa")
    assert os.readlink(snaps / "latest") == "v1"
    assert (snaps / "latest" / "a.txt").read_bytes() == b"first\n"
    os.rmdir(snaps / "v1")
    expect_errno(errno.ENOENT, os.lstat, snaps / "latest")
    assert os.listdir(snaps) == []


def test_snapdir_hidden_by_default(drive: Drive, project: Path) -> None:
    """.snapshots is reachable by name but listed nowhere: not in the project, not at the
    project level of `ls -a`, and only project folders have one."""
    (project / "sub").mkdir()
    write_file(project / "sub/a.txt", b"a\n")
    assert stat.S_ISDIR(os.stat(project / SNAP).st_mode)
    os.mkdir(project / SNAP / "v1")
    assert os.listdir(project) == ["sub"]
    ls = subprocess.run(["ls", "-a", str(project)], capture_output=True, text=True, check=True)
    assert SNAP not in ls.stdout.split()
    assert SNAP not in os.listdir(project / "sub")
    expect_errno(errno.ENOENT, os.stat, project / "sub" / SNAP)
    assert os.listdir(project / SNAP / "v1") == ["sub"]


def test_snapdir_visible_option(make_drive: Callable[..., Drive]) -> None:
    """With `--snapdir=visible` the project folder lists .snapshots."""
    drive = make_drive("--snapdir=visible")
    project = drive.project("p")
    write_file(project / "a.txt", b"a\n")
    assert sorted(os.listdir(project)) == [SNAP, "a.txt"]
    os.mkdir(project / SNAP / "v1")
    assert snapshot_names(project) == ["latest", "v1"]
    assert os.listdir(project / SNAP / "v1") == ["a.txt"]


@needs_tool["rsync"]
def test_copy_tools_skip_snapshots(drive: Drive, project: Path, tmp_path: Path) -> None:
    """`cp -r P dest`, `rsync -a P/ dest/` and `find P` never walk into .snapshots."""
    (project / "src").mkdir()
    write_file(project / "src/a.txt", b"a\n")
    write_file(project / "b.bin", rand_bytes(70_000, 5))
    os.mkdir(project / SNAP / "v1")
    os.mkdir(project / SNAP / "v2")

    subprocess.run(["cp", "-r", str(project), str(tmp_path / "cp")], check=True)
    subprocess.run(["rsync", "-a", f"{project}/", f"{tmp_path / 'rsync'}/"], check=True)
    for dest in (tmp_path / "cp", tmp_path / "rsync"):
        assert sorted(os.listdir(dest)) == ["b.bin", "src"], dest
        assert (dest / "src/a.txt").read_bytes() == b"a\n"
    found = subprocess.run(["find", str(project)], capture_output=True, text=True, check=True)
    assert SNAP not in found.stdout, found.stdout


# --------------------------------------------------------------------------- 5. durability


def test_checkpoints_survive_remount_and_kill(drive: Drive, project: Path, tmp_path: Path) -> None:
    """Checkpoints made before a clean remount and one made right before kill -9 are all
    listed and browsable with identical content afterwards."""
    build_tree(project)
    refs = {"v1": native_copy(project, tmp_path / "v1")}
    os.mkdir(project / SNAP / "v1")
    modify_tree(project)
    refs["v2"] = native_copy(project, tmp_path / "v2")
    cli_ok(drive, "create", project, "v2", "--description", "after edits")

    drive.remount()
    assert snapshot_names(project) == ["latest", "v1", "v2"]
    assert os.readlink(project / SNAP / "latest") == "v2"
    for name, ref in refs.items():
        assert_same_tree(project / SNAP / name, ref, drive)

    write_file(project / "after-remount.txt", b"x" * 5000)
    refs["v3"] = native_copy(project, tmp_path / "v3")
    os.mkdir(project / SNAP / "v3")  # returns once stored: must survive an immediate crash
    drive.kill()
    drive.start()

    assert snapshot_names(project) == ["latest", "v1", "v2", "v3"]
    assert os.readlink(project / SNAP / "latest") == "v3"
    for name, ref in refs.items():
        assert_same_tree(project / SNAP / name, ref, drive)
    listed = cli_list(drive, project)
    assert set(listed) == {"v1", "v2", "v3"}
    assert listed["v2"]["description"] == "after edits"
    # and a restore from a checkpoint made before both restarts still works
    cli_ok(drive, "restore", project, "v1")
    assert_same_tree(project, refs["v1"], drive)


# --------------------------------------------------------------------------- 6. CLI


def test_cli_create_and_list(drive: Drive, project: Path) -> None:
    """`checkpoint create` makes a browsable checkpoint; `list --json` reports name,
    created_at, description, file_count (regular files) and logical_size (sum of their
    sizes); the table shows names and descriptions."""
    sizes = {"a.txt": 1000, "sub/b.bin": 2 * MiB + 7, "sub/deeper/c.txt": 0}
    (project / "sub/deeper").mkdir(parents=True)
    (project / "sub/empty").mkdir()
    for i, (rel, size) in enumerate(sizes.items()):
        write_file(project / rel, rand_bytes(size, 10 + i))
    t0 = time.time()
    cli_ok(drive, "create", project, "v1", "--description", "first cut")
    t1 = time.time()
    assert snapshot_names(project) == ["latest", "v1"]
    assert (project / SNAP / "v1/sub/b.bin").read_bytes() == rand_bytes(2 * MiB + 7, 11)
    write_file(project / "d.txt", b"12345")
    os.mkdir(project / SNAP / "v2")
    refused = cli_run_fails(drive, "create", project, "v1")  # an existing name is refused
    assert "v1" in refused
    with PrimedCli(drive, "create", project, "v3") as create:
        expect_errno(errno.ENOENT, os.stat, project / SNAP / "v3")  # a negative lookup
        create.run()
    assert (project / SNAP / "v3/d.txt").read_bytes() == b"12345"
    assert os.readlink(project / SNAP / "latest") == "v3"
    os.rmdir(project / SNAP / "v3")

    listed = cli_list(drive, project)
    assert set(listed) == {"v1", "v2"}
    keys = {"name", "created_at", "description", "file_count", "logical_size", "exclusive_bytes"}
    for name, row in listed.items():
        assert keys <= set(row), f"{name}: missing keys {keys - set(row)}"
        assert isinstance(row["exclusive_bytes"], int) and row["exclusive_bytes"] >= 0
    v1, v2 = listed["v1"], listed["v2"]
    assert v1["description"] == "first cut"
    assert v2["description"] in ("", None)
    assert (v1["file_count"], v1["logical_size"]) == (3, sum(sizes.values()))
    assert (v2["file_count"], v2["logical_size"]) == (4, sum(sizes.values()) + 5)
    created = as_epoch(v1["created_at"])
    assert t0 - 2 <= created <= t1 + 2, f"created_at {v1['created_at']!r} not in [{t0}, {t1}]"
    assert as_epoch(v2["created_at"]) >= created

    table = cli_ok(drive, "list", project)
    lines = table.strip().splitlines()
    assert "name" in lines[0].lower(), f"no header line:\n{table}"
    row1 = next((line for line in lines if line.split()[:1] == ["v1"]), None)
    assert row1 is not None and "first cut" in row1, f"no row for v1:\n{table}"
    assert any(line.split()[:1] == ["v2"] for line in lines), table


def cli_run_fails(drive: Drive, *args: str | Path) -> str:
    """Run the CLI expecting failure: non-zero exit, one `motionfs: ...` line on stderr, no
    traceback. Returns that line."""
    done = checkpoint_cli(*args)
    what = f"motionfs checkpoint {' '.join(map(str, args))}"
    assert done.returncode != 0, f"{what} succeeded: {done.stdout}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("motionfs:"), (
        f"{what}: expected one 'motionfs: ...' stderr line, got:\n{done.stderr}\n{drive.log}"
    )
    return lines[0]


def test_cli_delete(drive: Drive, project: Path) -> None:
    """`checkpoint delete` removes the checkpoint from the listing and from .snapshots, even
    after the kernel has looked it up; rmdir does the same; deleting a missing one fails."""
    write_file(project / "a.txt", b"a\n")
    os.mkdir(project / SNAP / "v1")
    os.mkdir(project / SNAP / "v2")
    os.mkdir(project / SNAP / "v3")
    with PrimedCli(drive, "delete", project, "v1") as delete:
        # The kernel now holds the names and attributes of v1 and v1/a.txt.
        assert (project / SNAP / "v1/a.txt").read_bytes() == b"a\n"
        delete.run()
    expect_errno(errno.ENOENT, os.stat, project / SNAP / "v1")
    expect_errno(errno.ENOENT, os.stat, project / SNAP / "v1/a.txt")
    expect_errno(errno.ENOENT, os.listdir, project / SNAP / "v1")
    assert snapshot_names(project) == ["latest", "v2", "v3"]
    assert set(cli_list(drive, project)) == {"v2", "v3"}

    with PrimedCli(drive, "delete", project, "v3") as delete:  # the newest: latest moves back
        assert os.readlink(project / SNAP / "latest") == "v3"
        assert (project / SNAP / "v3/a.txt").read_bytes() == b"a\n"
        delete.run()
    assert os.readlink(project / SNAP / "latest") == "v2"
    expect_errno(errno.ENOENT, os.stat, project / SNAP / "v3/a.txt")

    os.rmdir(project / SNAP / "v2")
    assert cli_list(drive, project) == {}
    assert os.listdir(project / SNAP) == []

    line = cli_run_fails(drive, "delete", project, "v1")
    assert "v1" in line
    assert (project / "a.txt").read_bytes() == b"a\n"


def parse_diff(out: str) -> list[tuple[str, str]]:
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        kind, _, path = line.partition(" ")
        assert kind in ("A", "D", "M"), f"unexpected diff line {line!r}"
        rows.append((kind, path.strip().removeprefix("./").lstrip("/")))
    return rows


def test_cli_diff(drive: Drive, project: Path) -> None:
    """`checkpoint diff P v1` lists A/D/M lines for added, removed and changed paths (content
    and mode changes; a same-size content change too) against the live tree, sorted by path;
    `diff P v1 v2` gives the same between checkpoints, `diff P v2 v1` the reverse, and an
    unchanged tree gives no lines. Exit status is 0 in every case."""
    (project / "sub").mkdir()
    for rel in (
        "keep.txt",
        "mod.txt",
        "del.txt",
        "chmod.txt",
        "sub/mod2.txt",
        "sub/del2.txt",
        "sub/keep2.txt",
    ):
        write_file(project / rel, f"{rel} as in v1\n".encode())
    os.mkdir(project / SNAP / "v1")
    write_file(project / "mod.txt", b"new content, new size\n")
    write_file(project / "sub/mod2.txt", b"sub/mod2.txt as in v2\n")  # same size, other bytes
    (project / "del.txt").unlink()
    (project / "sub/del2.txt").unlink()
    write_file(project / "add.txt", b"added\n")
    write_file(project / "sub/add2.txt", b"added too\n")
    os.chmod(project / "chmod.txt", 0o600)

    def diff(*names: str) -> list[tuple[str, str]]:
        rows = parse_diff(cli_ok(drive, "diff", project, *names))
        # A directory whose entries changed has a new mtime; whether that is listed as
        # `M dir` is not specified, so such lines for directories present on both sides
        # are ignored.
        rows = [(k, p) for k, p in rows if not (k == "M" and p == "sub")]
        paths = [p for _, p in rows]
        assert paths == sorted(paths), f"diff {names} not sorted by path: {rows}"
        return rows

    forward = [
        ("A", "add.txt"),
        ("M", "chmod.txt"),
        ("D", "del.txt"),
        ("M", "mod.txt"),
        ("A", "sub/add2.txt"),
        ("D", "sub/del2.txt"),
        ("M", "sub/mod2.txt"),
    ]
    assert diff("v1") == forward
    os.mkdir(project / SNAP / "v2")
    assert diff("v1", "v2") == forward
    swap = {"A": "D", "D": "A", "M": "M"}
    assert diff("v2", "v1") == [(swap[k], p) for k, p in forward]
    assert diff("v2") == []
    assert diff("v1", "v1") == []


def test_cli_restore_missing_checkpoint(drive: Drive, project: Path) -> None:
    """Restoring a checkpoint that does not exist fails with one clear `motionfs:` line
    naming it, and changes nothing: no auto checkpoint, the live tree as it was."""
    write_file(project / "a.txt", b"a\n")
    os.mkdir(project / SNAP / "v1")
    write_file(project / "a.txt", b"changed\n")
    live = describe(project)
    line = cli_run_fails(drive, "restore", project, "no-such-checkpoint")
    assert "no-such-checkpoint" in line
    assert describe(project) == live
    assert snapshot_names(project) == ["latest", "v1"]
    assert set(cli_list(drive, project)) == {"v1"}


# --------------------------------------------------------------------------- 7. dedup


def test_second_checkpoint_stores_only_what_changed(drive: Drive, project: Path) -> None:
    """20 files of 256 KiB; checkpoint c1; rewrite one file; checkpoint c2. c2's own bytes
    are about one file, and the store's data directory grows by less than 1 MiB."""
    size = 256 * KiB
    for i in range(20):
        write_file(project / f"f{i:02}.bin", rand_bytes(size, 100 + i), fsync=True)
    os.mkdir(project / SNAP / "c1")
    write_file(project / "f07.bin", rand_bytes(size, 999), fsync=True)
    subprocess.run(["sync"], check=True)
    before = drive.stored_bytes()
    os.mkdir(project / SNAP / "c2")
    subprocess.run(["sync"], check=True)
    grown = drive.stored_bytes() - before
    assert grown < MiB, f"store data grew by {grown} bytes for one changed 256 KiB file"

    listed = cli_list(drive, project)
    c2 = listed["c2"]
    assert c2["exclusive_bytes"] <= size + 64 * KiB, f"c2 exclusive_bytes: {c2}"
    assert (c2["file_count"], c2["logical_size"]) == (20, 20 * size)
    assert (project / SNAP / "c1/f07.bin").read_bytes() == rand_bytes(size, 107)
    assert (project / SNAP / "c2/f07.bin").read_bytes() == rand_bytes(size, 999)
