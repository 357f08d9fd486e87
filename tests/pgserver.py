"""A throwaway PostgreSQL server on 127.0.0.1 for tests, as s3server.py is for S3.

Debian's server binaries (/usr/lib/postgresql/*/bin, the `postgresql`
package that scripts/_setup.sh installs) make a cluster in a fresh temporary
folder: initdb, then pg_ctl start on a free port of 127.0.0.1 with its unix
socket inside that folder, so it never meets Debian's own `main` cluster
(port 5432, /var/run/postgresql) whether that one runs or not. PostgreSQL
refuses to run as root, so as root every server command runs as the
`postgres` user (runuser) and the folder is given to it; otherwise the
current user runs them. Settings are the defaults (fsync and
synchronous_commit on) but for where it listens; only initdb skips its own
fsyncs (`--no-sync`: the cluster is thrown away, its commits still sync).
A superuser with a random password (scram) is the only login.

    with PgServer() as pg:               # initdb + start (about 1-2 s)
        url = pg.create_database()       # postgresql://motionfs:PW@127.0.0.1:PORT/db_...
    # stopped (pg_ctl stop -m immediate) and its folder removed

`close()` is registered with atexit too, so an interrupted run stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

USER = "motionfs"  # the cluster's superuser (not an OS user)
RUN_AS = "postgres"  # the OS user the server runs as when we are root


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL bin folder with initdb, pg_ctl and postgres."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(d, t), os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
            with contextlib.suppress(ValueError):
                found.append((float(Path(d).parent.name), Path(d)))
    return max(found)[1] if found else None


def missing_reason() -> str | None:
    """Why no server can be started here (None: one can)."""
    if find_bindir() is None:
        return (
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin/initdb): "
            "scripts/_setup.sh installs Debian's `postgresql` package"
        )
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no `{RUN_AS}` user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kill_postmaster(pidfile: Path, data: Path) -> None:
    """SIGKILL the postmaster of `data` if pg_ctl could not stop it (only that
    process: a stale pid file may name some other process by now)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if str(data).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


class PgServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL binaries")
        self.bindir = found
        self.root: Path | None = None
        self.port = 0
        self.password = secrets.token_hex(16)
        self.started_in = 0.0  # seconds initdb + start took
        self._databases = 0

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> PgServer:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A server command, as `postgres` when we are root; raises with its output."""
        prefix = ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*prefix, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",  # the server user may not be able to enter ours
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def open(self) -> None:
        """initdb a fresh cluster and start it on a free port of 127.0.0.1."""
        t0 = time.monotonic()
        atexit.register(self.close)
        # Not below pytest's basetemp: that is private to us, the server user must enter.
        self.root = Path(tempfile.mkdtemp(prefix="motionfs-pg-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, user=RUN_AS, group=None)
            pwfile = self.root / "pw"
            pwfile.write_text(self.password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, user=RUN_AS)
            pwfile.chmod(0o600)
            self._run(
                str(self.bindir / "initdb"),
                *("-D", str(self.data), "-U", USER, f"--pwfile={pwfile}"),
                *("--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
            )
            pwfile.unlink()
            self._start()
        except BaseException:
            self.close()
            raise
        self.started_in = time.monotonic() - t0

    def stop(self, mode: str = "fast") -> None:
        """An outage: the server shuts down ("immediate": as if it crashed, its
        unflushed WAL is lost; "fast": a clean shutdown)."""
        assert self.root is not None
        self._run(
            str(self.bindir / "pg_ctl"),
            *("-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"),
        )

    def start(self) -> None:
        """The server is back on the same port."""
        self._start(same_port=True)

    def _start(self, same_port: bool = False) -> None:
        assert self.root is not None
        last: Exception | None = None
        for _ in range(5):  # another process may take the free port first
            if not same_port:
                self.port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.root}"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    *("-D", str(self.data), "-l", str(self.root / "server.log")),
                    *("-w", "-t", "60", "-o", opts, "start"),
                )
                return
            except RuntimeError as e:
                last = e
        raise RuntimeError(f"PostgreSQL did not start: {last}\n{self.log()}")

    def log(self) -> str:
        """The end of the server's log (for failure messages)."""
        if self.root is None:
            return "(no server log)"
        try:
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no server log)"

    def close(self) -> None:
        """Stop the server (immediate, then fast, then SIGKILL) and remove its folder."""
        atexit.unregister(self.close)
        root, self.root = self.root, None
        if root is None:
            return
        data = root / "data"
        pidfile = data / "postmaster.pid"
        if pidfile.exists():
            # Immediate first: the cluster is thrown away, so its shutdown
            # checkpoint (seconds of writes and fsyncs) would buy nothing.
            for mode in ("immediate", "fast"):
                try:
                    self._run(
                        str(self.bindir / "pg_ctl"),
                        *("-D", str(data), "-m", mode, "-w", "-t", "30", "stop"),
                        timeout=60,
                    )
                    break
                except (RuntimeError, subprocess.TimeoutExpired):
                    continue
            else:
                _kill_postmaster(pidfile, data)
        shutil.rmtree(root, ignore_errors=True)

    # -- databases ------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg
        from psycopg import sql

        self._databases += 1
        name = name or f"db_{os.getpid()}_{self._databases}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
