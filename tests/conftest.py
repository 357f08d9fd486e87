"""Fixtures that mount real motionfs drives through the kernel.

`drive` mounts a fresh store in a temporary directory and always unmounts in
teardown, even when the test fails (a leftover mount breaks the next run).

Set MOTIONFS_TEST_TARGET=native to run the mount-level suites against a plain
local directory instead: that checks the tests themselves against the kernel's
own filesystem (remount/kill become no-ops there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Harness
from motionfs.daemon import is_mounted

NATIVE = os.environ.get("MOTIONFS_TEST_TARGET") == "native"
LAYOUT = ("projects", "renders", "assets", "shared", "scratch")


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)


class Drive:
    """A motionfs mount driven like a user would: the CLI, then the kernel."""

    def __init__(self, mountpoint: Path, store: Path, args: list[str] | None = None) -> None:
        self.path = mountpoint
        self.store = store
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.native = NATIVE

    @property
    def log(self) -> str:
        try:
            return (self.store / "motionfs.log").read_text(errors="replace")[-8000:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 60) -> None:
        if self.native:
            for name in LAYOUT:
                (self.path / name).mkdir(exist_ok=True)
            for scope in ("shared", "scratch"):
                for area in ("projects", "renders", "assets"):
                    (self.path / scope / area).mkdir(exist_ok=True)
            return
        cmd = [
            sys.executable,
            "-m",
            "motionfs",
            "mount",
            str(self.path),
            "--store",
            str(self.store),
            "--foreground",
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"motionfs exited with {self.proc.returncode}: {err}\n{self.log}"
                )
            if is_mounted(self.path) and (self.path / "projects").is_dir():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"motionfs did not mount within {timeout}s\n{self.log}")

    def unmount(self, timeout: float = 120) -> None:
        """Clean unmount through the CLI: flushes pending uploads, daemon exits."""
        if self.native:
            return
        if is_mounted(self.path):
            subprocess.run(
                [sys.executable, "-m", "motionfs", "umount", str(self.path)],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
            assert self.proc.returncode == 0, f"daemon exit {self.proc.returncode}\n{self.log}"
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), then clear the dead mount."""
        if self.native:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        force_unmount(self.path)

    def remount(self) -> None:
        self.unmount()
        self.start()

    def crash_and_remount(self) -> None:
        self.kill()
        self.start()

    def project(self, name: str = "p") -> Path:
        path = self.path / "projects" / name
        path.mkdir()
        return path

    def teardown(self) -> None:
        if self.native:
            return
        force_unmount(self.path)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def make_drive(tmp_path: Path) -> Iterator[object]:
    """Factory: make_drive(*cli_args) -> a started Drive; all are torn down."""
    drives: list[Drive] = []

    def make(*args: str, store: Path | None = None) -> Drive:
        n = len(drives)
        mountpoint = tmp_path / f"mnt{n}"
        mountpoint.mkdir()
        drive = Drive(mountpoint, store or tmp_path / f"store{n}", list(args))
        drives.append(drive)
        drive.start()
        return drive

    try:
        yield make
    finally:
        for drive in drives:
            drive.teardown()


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    """The daemon's components over one store directory, without the kernel."""
    return Harness(tmp_path)


@pytest.fixture
def drive(make_drive: object) -> Drive:
    return make_drive()  # type: ignore[operator,no-any-return]


@pytest.fixture
def project(drive: Drive) -> Path:
    """A fresh project folder on a fresh drive."""
    return drive.project("p")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Belt and braces: nothing a test mounted may outlive the run.
    base = Path(str(session.config._tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1]
            if point.startswith(str(base)):
                force_unmount(Path(point))


needs_tool = {
    name: pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} not installed")
    for name in ("rsync", "git", "npm", "getfattr", "setfattr")
}
