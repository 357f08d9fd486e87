"""The motionfs command line: mount, umount, status."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from . import daemon
from .errors import SetupError
from .index import Index

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def default_store() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "motionfs"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 512M or 10G")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()]


def fail(message: str) -> None:
    click.echo(f"motionfs: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mount the chuk-motion artifact store as a drive."""


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Store directory (default: ~/.local/share/motionfs).",
)
@click.option("--user", default=None, help="USER-scope owner (default: your login name).")
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground.")
@click.option(
    "--allow-other", is_flag=True, help="Let other local users in (the kernel enforces modes)."
)
@click.option("--cache-size", default="10G", show_default=True, help="Local data cache budget.")
@click.option(
    "--io-timeout",
    default=30.0,
    show_default=True,
    help="Seconds fsync and uncached reads wait for the store before EIO.",
)
def mount(
    mountpoint: Path,
    store: Path | None,
    user: str | None,
    foreground: bool,
    allow_other: bool,
    cache_size: str,
    io_timeout: float,
) -> None:
    """Mount the store at MOUNTPOINT; returns once the drive is usable."""
    opts = daemon.MountOptions(
        mountpoint=mountpoint.absolute(),
        store=(store or default_store()).absolute(),
        user=user or getpass.getuser(),
        allow_other=allow_other,
        cache_size=parse_size(cache_size),
        io_timeout=io_timeout,
    )
    try:
        daemon.check_environment(opts)
    except SetupError as e:
        fail(str(e))
    if foreground:
        ready = os.environ.pop("MOTIONFS_READY_FD", None)
        try:
            sys.exit(
                daemon.run(opts, foreground=ready is None, ready_fd=int(ready) if ready else None)
            )
        except SetupError as e:
            fail(str(e))
    _spawn_daemon(opts, mountpoint, store, user, allow_other, cache_size, io_timeout)


def _spawn_daemon(
    opts: daemon.MountOptions,
    mountpoint: Path,
    store: Path | None,
    user: str | None,
    allow_other: bool,
    cache_size: str,
    io_timeout: float,
) -> None:
    """Run the daemon detached and wait until it reports the mount usable."""
    read_fd, write_fd = os.pipe()
    args = [
        sys.executable,
        "-m",
        "motionfs",
        "mount",
        str(opts.mountpoint),
        "--store",
        str(opts.store),
        "--user",
        opts.user,
        "--foreground",
        "--cache-size",
        cache_size,
        "--io-timeout",
        str(io_timeout),
    ]
    if allow_other:
        args.append("--allow-other")
    env = dict(os.environ, MOTIONFS_READY_FD=str(write_fd))
    # This start's own stderr file: a refused start must not clobber the one
    # of a daemon that is running.
    with tempfile.NamedTemporaryFile(dir=opts.store, prefix="daemon.stderr.", delete=False) as err:
        errlog = Path(err.name)
        proc = subprocess.Popen(
            args,
            env=env,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        status = ready.read(3)
    if status == b"ok\n":
        errlog.replace(opts.store / "daemon.stderr")
        click.echo(f"mounted {opts.mountpoint} (store {opts.store})")
        return
    proc.wait(timeout=60)
    message = errlog.read_text(errors="replace").strip().splitlines()
    errlog.unlink()
    fail(
        message[-1].removeprefix("motionfs: ")
        if message
        else f"the daemon exited with status {proc.returncode}; see {opts.store / daemon.LOG_FILE}"
    )


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "--timeout",
    default=0.0,
    help="Give up waiting for uploads after this many seconds (0: wait until done).",
)
def umount(mountpoint: Path, timeout: float) -> None:
    """Flush everything pending to the store and unmount MOUNTPOINT."""
    target = str(mountpoint.resolve())
    record = next((r for r in daemon.read_records() if r.mountpoint == target), None)
    if target not in daemon.mounted_points():
        fail(f"{mountpoint} is not mounted")
    done = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        fail(f"cannot unmount {mountpoint}: {why} (close files and shells using it)")
    if record is None:
        return
    _wait_for_exit(record, timeout)


def _wait_for_exit(record: daemon.MountRecord, timeout: float) -> None:
    start = time.monotonic()
    index_path = Path(record.store) / daemon.INDEX_FILE
    shown = -1
    while daemon._alive(record.pid):
        pending = _pending(index_path)
        if pending != shown and pending > 0:
            click.echo(f"flushing: {pending} store operations pending", err=True)
            shown = pending
        if timeout and time.monotonic() - start > timeout:
            fail(
                f"gave up after {timeout:.0f}s with {pending} operations pending; "
                "the next mount resumes them"
            )
        time.sleep(0.2)


def _pending(index_path: Path) -> int:
    try:
        idx = Index.open_readonly(index_path)
    except Exception:
        return 0
    try:
        return idx.pending_count()
    finally:
        idx.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """List mounted drives with their store, pending uploads and cache use."""
    rows: list[dict[str, str | int]] = []
    for rec in daemon.read_records():
        store = Path(rec.store)
        cache = store / "cache"
        used = sum(p.stat().st_blocks * 512 for p in cache.glob("*") if p.is_file())
        rows.append(
            {
                "mountpoint": rec.mountpoint,
                "store": rec.store,
                "pid": rec.pid,
                "user": rec.user,
                "pending": _pending(store / daemon.INDEX_FILE),
                "cache_bytes": used,
            }
        )
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no motionfs drives mounted")
        return
    for r in rows:
        click.echo(
            f"{r['mountpoint']}\n  store:   {r['store']}\n  pid:     {r['pid']}\n"
            f"  user:    {r['user']}\n  pending: {r['pending']} store operations\n"
            f"  cache:   {int(r['cache_bytes']) / (1 << 20):.1f} MiB"
        )
