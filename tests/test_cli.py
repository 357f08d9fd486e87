"""The command line as a user drives it: `motionfs mount|umount|status` in a subprocess.

Every test runs the CLI with HOME, XDG_STATE_HOME and XDG_DATA_HOME inside its
tmp_path, so nothing reads or writes the real home. Every mountpoint a test
uses is registered with the `cli` fixture, whose teardown unmounts it (the CLI
first, `fusermount3 -u -z` as a last resort) and stops any daemon the test left
behind, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import force_unmount
from motionfs import __version__ as motionfs_version
from motionfs.daemon import is_mounted, process_alive

pytestmark = pytest.mark.mount

CLI_TIMEOUT = 120


def wait_gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Names, kinds, sizes and (small) contents of everything under root."""
    out: dict[str, tuple[str, int, bytes]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = ("dir", 0, b"")
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            data = path.read_bytes() if st.st_size <= 1 << 16 else b""
            out[os.path.relpath(path, root)] = ("file", st.st_size, data)
    return out


class Cli:
    """Runs `python -m motionfs ...` with a private home; remembers what to unmount."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.state = tmp_path / "state"
        self.data = tmp_path / "data"
        for d in (self.home, self.state, self.data):
            d.mkdir()
        self.env = dict(
            os.environ,
            HOME=str(self.home),
            XDG_STATE_HOME=str(self.state),
            XDG_DATA_HOME=str(self.data),
        )
        self.mountpoints: list[Path] = []
        self.daemon_pids: set[int] = set()
        self.stores: list[Path] = []

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "motionfs", *args],
            env=env or self.env,
            cwd=cwd or self.tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        self._remember_daemons()
        return done

    def mountpoint(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        self.watch(path)
        return path

    def watch(self, path: Path, store: Path | None = None) -> None:
        self.mountpoints.append(path)
        if store is not None:
            self.stores.append(store)

    def mount(self, mp: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """Mount through the CLI and insist that it worked."""
        store = None
        if "--store" in args:
            store = Path(args[args.index("--store") + 1])
        self.watch(mp, store)
        done = self.run("mount", str(mp), *args)
        assert done.returncode == 0, self.explain(done, store)
        return done

    def umount(self, mp: Path) -> subprocess.CompletedProcess[str]:
        return self.run("umount", str(mp))

    def status(self) -> list[dict[str, object]]:
        done = self.run("status", "--json")
        assert done.returncode == 0, self.explain(done)
        rows = json.loads(done.stdout)
        assert isinstance(rows, list)
        return rows

    def record(self, mp: Path) -> dict[str, object]:
        rows = [r for r in self.status() if r["mountpoint"] == str(mp.resolve())]
        assert len(rows) == 1, f"status does not list {mp} exactly once: {self.status()}"
        return rows[0]

    def explain(self, done: subprocess.CompletedProcess[str], store: Path | None = None) -> str:
        text = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        for s in [store, *self.stores]:
            if s is not None:
                for name in ("daemon.stderr", "motionfs.log"):
                    try:
                        tail = (s / name).read_text(errors="replace")[-4000:]
                    except OSError:
                        continue
                    text += f"\n--- {s / name}:\n{tail}"
        return text

    def _remember_daemons(self) -> None:
        directory = self.state / "motionfs" / "mounts"
        if not directory.is_dir():
            return
        for f in directory.glob("*.json"):
            try:
                self.daemon_pids.add(int(json.loads(f.read_text())["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue

    def teardown(self) -> None:
        self._remember_daemons()
        for mp in self.mountpoints:
            if is_mounted(mp):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.run("umount", "--timeout", "30", str(mp))
            force_unmount(mp)
        for pid in self.daemon_pids:
            if not wait_gone(pid, timeout=30):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, timeout=10)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    try:
        yield runner
    finally:
        runner.teardown()


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero exit and exactly one stderr line `motionfs: ...` containing each word."""
    assert done.returncode != 0, f"accepted: stdout={done.stdout!r} stderr={done.stderr!r}"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    line = lines[0]
    assert line.startswith("motionfs: "), line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    return line


def assert_usable(mp: Path, name: str = "probe") -> None:
    """The mount answers: a project can be made and a file written and read back."""
    assert is_mounted(mp)
    project = mp / "projects" / name
    project.mkdir()
    (project / "hello.txt").write_bytes(b"still here\n")
    assert (project / "hello.txt").read_bytes() == b"still here\n"


# --- mount, status, umount -------------------------------------------------------------


def test_mount_returns_once_usable_and_prints_mountpoint(cli: Cli) -> None:
    """`mount` without --foreground returns 0 with the drive already usable and says where."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    done = cli.mount(mp, "--store", str(store))
    # No polling: the drive must be there the moment the command returns.
    assert is_mounted(mp)
    assert (mp / "projects").is_dir()
    assert sorted(p.name for p in mp.iterdir()) == [
        "assets",
        "projects",
        "renders",
        "scratch",
        "shared",
    ]
    assert any(str(mp) in line for line in done.stdout.splitlines()), done.stdout


def test_status_lists_mount_store_and_pending(cli: Cli) -> None:
    """`status` names the mountpoint, the store and the pending count, in text and JSON."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    cli.mount(mp, "--store", str(store))

    done = cli.run("status")
    assert done.returncode == 0, cli.explain(done)
    assert str(mp) in done.stdout
    assert str(store) in done.stdout
    assert "pending" in done.stdout

    row = cli.record(mp)
    assert {"mountpoint", "store", "pending", "cache_bytes"} <= set(row)
    assert row["mountpoint"] == str(mp)
    assert row["store"] == str(store)
    assert isinstance(row["pending"], int) and row["pending"] >= 0
    assert isinstance(row["cache_bytes"], int) and row["cache_bytes"] >= 0


def test_umount_unmounts_stops_daemon_and_keeps_data(cli: Cli) -> None:
    """`umount` returns 0, the mount and its daemon are gone, and a remount shows the data."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    cli.mount(mp, "--store", str(store))
    pid = cli.record(mp)["pid"]
    assert isinstance(pid, int) and process_alive(pid)

    payload = os.urandom(3 << 20)
    (mp / "projects" / "film").mkdir()
    (mp / "projects" / "film" / "src").mkdir()
    (mp / "projects" / "film" / "src" / "Root.tsx").write_text("export const Root = 1;\n")
    (mp / "projects" / "film" / "big.bin").write_bytes(payload)

    done = cli.umount(mp)
    assert done.returncode == 0, cli.explain(done, store)
    assert not is_mounted(mp)
    assert wait_gone(pid, timeout=5), f"daemon {pid} still running after umount returned"
    assert [r for r in cli.status() if r["mountpoint"] == str(mp)] == []
    assert list(mp.iterdir()) == []

    cli.mount(mp, "--store", str(store))
    root = mp / "projects" / "film" / "src" / "Root.tsx"
    assert root.read_text() == "export const Root = 1;\n"
    assert (mp / "projects" / "film" / "big.bin").read_bytes() == payload


def test_status_with_nothing_mounted(cli: Cli) -> None:
    """`status` with no drives says so, and `status --json` is an empty list."""
    done = cli.run("status")
    assert done.returncode == 0, cli.explain(done)
    assert "no motionfs drives mounted" in done.stdout
    assert cli.status() == []


def test_default_store_is_under_xdg_data_home(cli: Cli) -> None:
    """Without --store the store is $XDG_DATA_HOME/motionfs, created on first mount."""
    mp = cli.mountpoint("mnt")
    expected = cli.data / "motionfs"
    assert not expected.exists()
    cli.watch(mp, expected)
    # A relative mountpoint, as a user would type it from the parent directory.
    done = cli.run("mount", "mnt", cwd=cli.tmp)
    assert done.returncode == 0, cli.explain(done, expected)
    assert is_mounted(mp) and (mp / "projects").is_dir()
    assert expected.is_dir()
    assert (expected / "index.sqlite").is_file()
    assert cli.record(mp)["store"] == str(expected)
    assert_usable(mp)
    assert not (cli.home / ".local").exists(), "the real-home default was used"

    done = cli.run("umount", "mnt", cwd=cli.tmp)
    assert done.returncode == 0, cli.explain(done, expected)
    assert not is_mounted(mp)


def test_user_option_shows_in_status(cli: Cli) -> None:
    """`mount --user alice` is reported as user alice by `status` and `status --json`."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    cli.mount(mp, "--store", str(store), "--user", "alice")
    assert cli.record(mp)["user"] == "alice"
    done = cli.run("status")
    assert done.returncode == 0, cli.explain(done)
    assert any(line.split() == ["user:", "alice"] for line in done.stdout.splitlines()), done.stdout


# --- refusals --------------------------------------------------------------------------


def test_refuses_missing_mountpoint(cli: Cli) -> None:
    """A mountpoint whose parent does not exist is refused and nothing is created."""
    mp, store = cli.tmp / "nowhere" / "mnt", cli.tmp / "store"
    cli.watch(mp)
    before = snapshot(cli.tmp)
    line = assert_refused(cli.run("mount", str(mp), "--store", str(store)), str(mp))
    assert "not exist" in line or "no such" in line.lower(), line
    assert not mp.exists()
    assert snapshot(cli.tmp) == before


def test_creates_a_missing_mountpoint_in_an_existing_folder(cli: Cli) -> None:
    """`motionfs mount ~/Motion` works on a fresh machine: the folder is made."""
    mp, store = cli.tmp / "Motion", cli.tmp / "store"
    cli.watch(mp)
    done = cli.run("mount", str(mp), "--store", str(store))
    assert done.returncode == 0, cli.explain(done)
    assert (mp / "projects").is_dir()
    assert cli.umount(mp).returncode == 0


def test_refuses_non_empty_mountpoint(cli: Cli) -> None:
    """A mountpoint holding a file is refused; the file is untouched and nothing mounts."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    (mp / "notes.txt").write_text("mine\n")
    before = snapshot(cli.tmp)
    assert_refused(cli.run("mount", str(mp), "--store", str(store)), str(mp), "not empty")
    assert not is_mounted(mp)
    assert (mp / "notes.txt").read_text() == "mine\n"
    assert snapshot(cli.tmp) == before


def test_refuses_mountpoint_that_is_already_mounted(cli: Cli) -> None:
    """Mounting over a live motionfs mount is refused; the first mount keeps working."""
    mp, first, second = cli.mountpoint("mnt"), cli.tmp / "store1", cli.tmp / "store2"
    cli.mount(mp, "--store", str(first))
    records = cli.status()
    done = cli.run("mount", str(mp), "--store", str(second))
    assert_refused(done, str(mp), "already")
    assert not second.exists(), "the refused mount created its store"
    assert cli.status() == records
    with open("/proc/mounts") as f:
        assert [line.split()[1] for line in f].count(str(mp)) == 1, "mounted twice"
    assert_usable(mp)


def test_refuses_second_daemon_on_same_store(cli: Cli) -> None:
    """A store already served by a daemon is refused; MP2 stays unmounted, MP1 works."""
    mp1, mp2, store = cli.mountpoint("mnt1"), cli.mountpoint("mnt2"), cli.tmp / "store"
    cli.mount(mp1, "--store", str(store))
    records = cli.status()
    names = sorted(p.name for p in store.iterdir())
    done = cli.run("mount", str(mp2), "--store", str(store))
    assert_refused(done, str(store), "in use")
    assert not is_mounted(mp2)
    assert list(mp2.iterdir()) == []
    assert cli.status() == records
    assert sorted(p.name for p in store.iterdir()) == names
    assert_usable(mp1)


def test_refused_second_daemon_leaves_live_store_files_alone(cli: Cli) -> None:
    """A refused second mount does not rewrite the running daemon's files in the store."""
    mp1, mp2, store = cli.mountpoint("mnt1"), cli.mountpoint("mnt2"), cli.tmp / "store"
    cli.mount(mp1, "--store", str(store))
    stderr_log = store / "daemon.stderr"
    before = stderr_log.read_bytes() if stderr_log.exists() else None
    assert_refused(cli.run("mount", str(mp2), "--store", str(store)), "in use")
    after = stderr_log.read_bytes() if stderr_log.exists() else None
    assert after == before, (
        f"{stderr_log} (the live daemon's stderr) was rewritten by the refused mount: "
        f"{before!r} -> {after!r}"
    )


def test_refuses_store_under_a_regular_file(cli: Cli) -> None:
    """A store path that cannot be created (under a regular file) is refused, even for root."""
    mp = cli.mountpoint("mnt")
    blocker = cli.tmp / "plainfile"
    blocker.write_text("not a directory\n")
    store = blocker / "sub"
    before = snapshot(cli.tmp)
    line = assert_refused(cli.run("mount", str(mp), "--store", str(store)), str(store))
    assert "writable" in line or "not a directory" in line.lower(), line
    assert not is_mounted(mp)
    assert snapshot(cli.tmp) == before


def test_refuses_without_fusermount3(cli: Cli) -> None:
    """With no fusermount3 on PATH the refusal names fusermount3 or fuse3."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    bindir = cli.tmp / "onlypython"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = dict(cli.env, PATH=str(bindir))
    before = snapshot(cli.tmp)
    line = assert_refused(cli.run("mount", str(mp), "--store", str(store), env=env))
    assert "fusermount3" in line or "fuse3" in line, line
    assert not is_mounted(mp)
    assert snapshot(cli.tmp) == before


def test_umount_of_unmounted_path_is_refused(cli: Cli) -> None:
    """`umount` of a directory that is not mounted exits non-zero with one clear line."""
    mp = cli.mountpoint("mnt")
    (mp / "keep.txt").write_text("x\n")
    before = snapshot(cli.tmp)
    assert_refused(cli.umount(mp), str(mp), "not mounted")
    assert snapshot(cli.tmp) == before
    missing = cli.tmp / "missing"
    assert_refused(cli.umount(missing), str(missing), "not mounted")


# --- busy unmount ----------------------------------------------------------------------


def test_umount_busy_then_succeeds_when_released(cli: Cli) -> None:
    """`umount` with a process's cwd inside the mount fails as busy; after it exits, it works."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    cli.mount(mp, "--store", str(store))
    pid = cli.record(mp)["pid"]
    assert isinstance(pid, int)
    sleeper = subprocess.Popen(["sleep", "30"], cwd=mp / "projects")
    try:
        done = cli.umount(mp)
        assert_refused(done, "busy")
        assert is_mounted(mp)
        assert process_alive(pid)
        assert_usable(mp)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    done = cli.umount(mp)
    assert done.returncode == 0, cli.explain(done, store)
    assert not is_mounted(mp)
    assert wait_gone(pid, timeout=5)


# --- help ------------------------------------------------------------------------------


def test_top_level_help_lists_commands(cli: Cli) -> None:
    """`motionfs --help` exits 0 and lists mount, umount and status."""
    done = cli.run("--help")
    assert done.returncode == 0, cli.explain(done)
    words = done.stdout.split()
    for command in ("mount", "umount", "status"):
        assert command in words, done.stdout


@pytest.mark.parametrize("command", ["mount", "umount", "status"])
def test_command_help(cli: Cli, command: str) -> None:
    """`motionfs <command> --help` exits 0 and shows that command's usage."""
    done = cli.run(command, "--help")
    assert done.returncode == 0, cli.explain(done)
    assert f"motionfs {command}" in done.stdout, done.stdout
    if command == "mount":
        assert "MOUNTPOINT" in done.stdout and "--store" in done.stdout


def test_version(cli: Cli) -> None:
    done = cli.run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"motionfs, version {motionfs_version}"


@pytest.mark.parametrize("address", ["memory://x", "sqlite3:///tmp/one.db", "ftp://host/x"])
def test_store_addresses_that_are_not_folders_are_refused(cli: Cli, address: str) -> None:
    """A URL is never taken for a relative folder name (`ftp:` in the cwd)."""
    before = set(cli.tmp.iterdir())
    for command, status in ((["mount", str(cli.tmp / "mnt")], 1), (["fsck"], 8)):
        done = cli.run(*command, "--store", address)
        assert done.returncode == status
        assert done.stderr.strip().count("\n") == 0 and "unsupported store" in done.stderr
    assert set(cli.tmp.iterdir()) == before


def test_memory_store_is_a_ram_drive(cli: Cli) -> None:
    """`--store memory://` says at mount that its content goes at unmount, `status` names
    it, unmounting leaves no private folder behind, mounting again starts empty, and fsck
    refuses it in one line."""
    mp, private = cli.mountpoint("mnt"), cli.tmp / "private"
    done = cli.mount(mp, "--store", "memory://", "--index", str(private))
    assert "memory://: a RAM drive, everything in it is gone at unmount" in done.stdout
    (mp / "projects" / "film").mkdir()
    (mp / "projects" / "film" / "cut.txt").write_bytes(b"x" * 5000)
    assert (mp / "projects" / "film" / "cut.txt").read_bytes() == b"x" * 5000
    row = cli.record(mp)
    assert row["store"] == "memory://" and row["index"] == str(private)
    assert cli.umount(mp).returncode == 0
    assert not private.exists()
    cli.mount(mp, "--store", "memory://", "--index", str(private))
    assert os.listdir(mp / "projects") == []
    assert cli.umount(mp).returncode == 0
    done = cli.run("fsck", "--store", "memory://")
    assert done.returncode == 8 and "nothing to check" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_api_expands_the_home_folder(tmp_path: Path) -> None:
    """`store="~/..."` is the home folder's store, not a folder named `~`."""
    from motionfs.motion.api import ArtifactStorageManager

    home = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path)
    try:
        manager = ArtifactStorageManager(store="~/motion-store")
    finally:
        if home is not None:
            os.environ["HOME"] = home
    assert manager.store == tmp_path / "motion-store"


def test_mount_helper_as_mount_runs_it(cli: Cli, tmp_path: Path) -> None:
    """/etc/fstab's way: `mount -t motionfs STORE DIR -o ...` runs /sbin/mount.motionfs
    (linked for the test), fstab-only words are ignored, motionfs options apply."""
    helper = Path(sys.executable).with_name("mount.motionfs")
    link = Path("/sbin/mount.motionfs")
    if link.exists() or link.is_symlink():
        pytest.fail(f"{link} exists already; the test would replace it")
    store, mp = tmp_path / "fstab-store", cli.mountpoint("fstab-mnt")
    cli.watch(mp, store)
    link.symlink_to(helper)
    try:
        done = subprocess.run(
            [
                "mount",
                "-t",
                "motionfs",
                str(store),
                str(mp),
                "-o",
                "defaults,_netdev,noauto,cache_size=1G,io_timeout=20,snapdir=visible",
            ],
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        assert is_mounted(mp)
        (mp / "projects" / "p").mkdir()
        assert ".snapshots" in os.listdir(mp / "projects" / "p")  # snapdir=visible applied
        bad = subprocess.run(
            [str(helper), str(store), str(tmp_path / "other"), "-o", "colour=blue"],
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert bad.returncode == 1 and "colour=blue" in bad.stderr
        assert not (tmp_path / "other").exists()
    finally:
        link.unlink()
    done = cli.run("umount", str(mp))
    assert done.returncode == 0, done.stderr


def run_on_terminal(cli: Cli, *args: str) -> tuple[int, str, str]:
    """Run a command with stderr on a pseudo-terminal: (status, stdout, terminal output)."""
    import pty

    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "motionfs", *args],
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        os.close(slave)
        slave = -1
        seen = b""
        with contextlib.suppress(OSError):  # EIO once everything written is read
            while chunk := os.read(master, 65536):
                seen += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return done.returncode, done.stdout, seen.decode(errors="replace")


def test_checkpoint_progress_on_a_terminal_only(cli: Cli) -> None:
    """`checkpoint create` and `restore` show a progress bar of the project's store work
    on a terminal, and print nothing but their result line anywhere else."""
    mp, store = cli.mountpoint("mnt"), cli.tmp / "store"
    cli.mount(mp, "--store", str(store))
    project = mp / "projects" / "film"
    project.mkdir()
    for i in range(40):
        (project / f"clip{i}.bin").write_bytes(os.urandom(256 << 10))

    status, out, terminal = run_on_terminal(cli, "checkpoint", "create", str(project), "v1")
    assert status == 0 and out.startswith("checkpoint v1: 40 files"), (out, terminal)
    assert "checkpoint v1: storing" in terminal and "100%" in terminal

    (project / "clip0.bin").write_bytes(b"changed")
    status, out, terminal = run_on_terminal(cli, "checkpoint", "restore", str(project), "v1")
    assert status == 0 and out.startswith("restored v1"), (out, terminal)
    assert "restore v1" in terminal and "100%" in terminal
    assert (project / "clip0.bin").stat().st_size == 256 << 10

    done = cli.run("checkpoint", "create", str(project), "v2")
    assert done.returncode == 0 and done.stderr == "", cli.explain(done)
    done = cli.run("checkpoint", "restore", str(project), "v2")
    assert done.returncode == 0 and done.stderr == "", cli.explain(done)
