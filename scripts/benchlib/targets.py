"""Where the workloads run: a native directory, the passthrough mount and a motionfs mount.

Kept apart from the workloads so that a store backend is only a new factory in STORES.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .common import ROOT, drop_caches, is_mounted, process_alive, run

SETTLE_TIMEOUT = 600.0
PASSTHROUGH = Path(__file__).with_name("passthrough.py")


class NativeTarget:
    """A plain directory on the same disk as the motionfs store."""

    name = "native"

    def __init__(self, base: Path) -> None:
        self.root = base / "native"
        self.root.mkdir()

    def alive(self) -> bool:
        return True

    def ensure_alive(self) -> None:
        pass

    def recover(self) -> None:
        pass

    def settle(self) -> None:
        pass

    def cold(self) -> None:
        drop_caches()

    def log_mark(self) -> int:
        return 0

    def log_since(self, mark: int) -> str:
        return ""

    def fuse_mount(self) -> Path | None:
        return None


class PassthroughTarget:
    """The project's minimal passthrough daemon (passthrough.py) over a native directory.

    Same stack and kernel options as motionfs and no bookkeeping: the ceiling of the stack.
    """

    name = "passthrough"

    def __init__(self, base: Path) -> None:
        self.source = base / "passthrough-src"
        self.mountpoint = base / "passthrough-mnt"
        self.root = self.mountpoint / "bench"
        self.log = base / "passthrough.log"
        self.stats_file = base / "passthrough-stats.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.source.mkdir()
        self.mountpoint.mkdir()

    def mount(self) -> None:
        cmd = [sys.executable, str(PASSTHROUGH), str(self.source), str(self.mountpoint)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--stats", str(self.stats_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the bench, which unmounts it
            )
        deadline = time.monotonic() + 30
        while not is_mounted(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"passthrough.py did not mount: {self.log_since(0, 5)}")
            time.sleep(0.05)
        os.stat(self.mountpoint)  # returns once the daemon has answered INIT
        self.root.mkdir(exist_ok=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.root.is_dir()

    def ensure_alive(self) -> None:
        if not self.alive():
            raise RuntimeError("the passthrough mount is gone (did its daemon die?)")

    def recover(self) -> None:
        self.close()
        self.mount()

    def settle(self) -> None:
        self.ensure_alive()  # nothing runs in the background

    def cold(self) -> None:
        drop_caches()

    def log_mark(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark: int, lines: int = 25) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fuse_mount(self) -> Path | None:
        return self.mountpoint

    def stats(self) -> dict[str, dict[str, float]]:
        """The daemon's own counters so far: {"counts": {...}, "seconds": {...}}."""
        if self.proc is None:
            raise RuntimeError("the passthrough daemon is not running")
        try:
            seq = json.loads(self.stats_file.read_text())["seq"]
        except (OSError, ValueError):
            seq = 0
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(self.stats_file.read_text())
                if record["seq"] > seq:
                    return {"counts": record["counts"], "seconds": record["seconds"]}
            time.sleep(0.002)
        raise RuntimeError("the passthrough daemon did not write its counters")

    def close(self) -> None:
        """Unmount and wait for the daemon; lazily and by signal if it will not go."""
        if is_mounted(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
            )
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, check=False
            )
        self.proc = None


class MotionfsTarget:
    """A fresh motionfs mount, driven through its command line.

    The store backend is only in mount_args (the `motionfs mount` options that choose it)
    and state (the local directory that holds the daemon's index, cache and log): another
    backend is another pair of those.
    """

    name = "motionfs"

    def __init__(self, base: Path, state: Path, mount_args: list[str]) -> None:
        self.exe = str(Path(sys.executable).parent / "motionfs")
        self.mountpoint = base / "mnt"
        self.store = state
        self.mount_args = mount_args
        self.meta_url: str | None = None  # postgresql://...: the index lives there
        self.root = self.mountpoint / "projects" / "bench"
        self.log = self.store / "motionfs.log"
        self.pid: int | None = None  # the running daemon's
        self.pids: set[int] = set()  # every daemon started, for the clean-up
        self.mountpoint.mkdir()

    def mount(self) -> None:
        cmd = [self.exe, "mount", str(self.mountpoint), *self.mount_args]
        # Own session, and waited for even on Ctrl-C: a daemon half-way through starting
        # would otherwise mount after the clean-up has looked.
        client = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, err = client.communicate(timeout=120)
        except KeyboardInterrupt:
            client.wait(timeout=120)
            raise
        if client.returncode != 0:
            raise RuntimeError(f"motionfs mount exited {client.returncode}: {err.strip()}")
        self.pid = None
        for record in json.loads(run([self.exe, "status", "--json"])):
            if record["mountpoint"] == str(self.mountpoint):
                self.pid = int(record["pid"])
                self.pids.add(self.pid)
        if self.pid is None:
            raise RuntimeError("motionfs status --json does not list the new mount")
        self.root.mkdir(exist_ok=True)

    def alive(self) -> bool:
        return is_mounted(self.mountpoint) and (self.mountpoint / "projects").is_dir()

    def recover(self) -> None:
        self.close()
        self.mount()

    def pending(self) -> int:
        from motionfs.meta import open_engine  # the same read-only view `motionfs status` uses

        if self.meta_url is None:
            index = open_engine(self.store / "index.sqlite", readonly=True)
        else:
            index = open_engine(self.store / "index.postgres", readonly=True, url=self.meta_url)
        try:
            return int(index.pending_count())
        finally:
            index.close()

    def ensure_alive(self) -> None:
        if not self.alive():
            raise RuntimeError("the motionfs mount is gone (did the daemon die?)")

    def settle(self) -> None:
        self.ensure_alive()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while pending := self.pending():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending} store operations still pending after waiting")
            time.sleep(0.05)

    def cold(self) -> None:
        drop_caches()

    def log_mark(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark: int, lines: int = 25) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fuse_mount(self) -> Path | None:
        return self.mountpoint

    def close(self) -> None:
        """Unmount whatever state the mount is in and make sure the daemon is gone."""
        if is_mounted(self.mountpoint):
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(
                    [self.exe, "umount", str(self.mountpoint), "--timeout", "120"],
                    capture_output=True,
                    timeout=180,
                    start_new_session=True,  # a second Ctrl-C must not kill the clean-up
                    check=False,
                )
        if is_mounted(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, check=False
            )
        for pid in self.pids:
            stop_process(pid)
        self.pids.clear()
        self.pid = None


def local_store(base: Path) -> MotionfsTarget:
    """The local store: a directory next to the native one (same disk)."""
    store = base / "store"
    return MotionfsTarget(base, state=store, mount_args=["--store", str(store)])


def s3_store(base: Path) -> MotionfsTarget:
    """A bucket on a moto S3 server started for this run on 127.0.0.1 (the test suite's
    tests/s3server.py), with the index and cache in a local directory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3server import S3Server  # sets dummy AWS credentials for the daemon it starts

    server = S3Server()
    server.open()
    atexit.register(server.close)  # after the mount is gone (main's clean-up runs first)
    state = base / "s3-index"
    args = ["--store", server.store_url("bench"), "--s3-endpoint", server.endpoint]
    return MotionfsTarget(base, state=state, mount_args=[*args, "--index", str(state)])


def postgresql_meta(target: MotionfsTarget) -> str:
    """Put the target's index in a throwaway PostgreSQL server started for this run
    on 127.0.0.1 (the test suite's tests/pgserver.py), stopped at exit; its URL."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import PgServer, missing_reason

    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    server = PgServer()
    server.open()
    atexit.register(server.close)  # after the mount is gone (main's clean-up runs first)
    url = server.create_database("bench") + "?schema=bench"
    target.meta_url = url
    target.mount_args += ["--meta", url]
    return url


METAS: dict[str, Callable[[MotionfsTarget], str] | None] = {
    "sqlite": None,
    "postgresql": postgresql_meta,
}

STORES: dict[str, Callable[[Path], MotionfsTarget]] = {
    "local": local_store,
    "s3": s3_store,
}


def stop_process(pid: int) -> None:
    """Wait for a daemon we started to exit; terminate it if it will not."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (30 if sig is None else 10)
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_alive(pid):
            return


Target = NativeTarget | PassthroughTarget | MotionfsTarget
