"""The motionfs command line: mount, umount, status."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from motionfs import __version__, control, daemon, fsck
from motionfs.address import MEMORY, StoreAddress
from motionfs.errors import SetupError
from motionfs.meta import open_engine
from motionfs.meta.engine import MetaEngine

T = TypeVar("T")
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 512M or 10G")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()]


def fail(message: str) -> NoReturn:
    click.echo(f"motionfs: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="motionfs")
def main() -> None:
    """Mount the chuk-motion artifact store as a drive."""


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "--store",
    default=None,
    help="Store directory (default: ~/.local/share/motionfs), or s3://BUCKET/PREFIX.",
)
@click.option(
    "--s3-endpoint",
    default=None,
    help="S3-compatible endpoint URL for an s3:// store (default: AWS's).",
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="For an s3:// store: the local directory of its index, cache and log "
    "(default: ~/.local/share/motionfs/s3/BUCKET%PREFIX).",
)
@click.option("--user", default=None, help="USER-scope owner (default: your login name).")
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground.")
@click.option(
    "--allow-other", is_flag=True, help="Let other local users in (the kernel enforces modes)."
)
@click.option("--cache-size", default="10G", show_default=True, help="Local data cache budget.")
@click.option(
    "--snapdir",
    type=click.Choice(["hidden", "visible"]),
    default="hidden",
    show_default=True,
    help="Whether project listings show the .snapshots folder (it is reachable either way).",
)
@click.option(
    "--scratch-ttl",
    default=24.0,
    show_default=True,
    help="Hours after which scratch/ (SESSION scope) projects, renders and assets expire.",
)
@click.option(
    "--io-timeout",
    default=30.0,
    show_default=True,
    help="Seconds fsync and uncached reads wait for the store before EIO.",
)
def mount(
    mountpoint: Path,
    store: str | None,
    s3_endpoint: str | None,
    index_dir: Path | None,
    user: str | None,
    foreground: bool,
    allow_other: bool,
    cache_size: str,
    snapdir: str,
    scratch_ttl: float,
    io_timeout: float,
) -> None:
    """Mount the store at MOUNTPOINT; returns once the drive is usable."""
    try:
        address = StoreAddress.parse(store, index_dir, s3_endpoint, mountpoint.absolute())
    except SetupError as e:
        fail(str(e))
    opts = daemon.MountOptions(
        mountpoint=mountpoint.absolute(),
        **address.mount_fields(),
        user=user or getpass.getuser(),
        allow_other=allow_other,
        cache_size=parse_size(cache_size),
        io_timeout=io_timeout,
        snapdir_visible=snapdir == "visible",
        scratch_ttl_hours=scratch_ttl,
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
    try:
        _spawn_daemon(opts)
    except OSError as e:  # e.g. no room in the store for the daemon's stderr file
        fail(f"cannot start the daemon: {e.strerror or e}")


def _spawn_daemon(opts: daemon.MountOptions) -> None:
    """Run the daemon detached and wait until it reports the mount usable."""
    read_fd, write_fd = os.pipe()
    # The same command line, in the foreground, in a new session.
    args = [sys.executable, "-m", "motionfs", *sys.argv[1:], "--foreground"]
    env = dict(os.environ, MOTIONFS_READY_FD=str(write_fd))
    # This start's own stderr file: a refused start must not clobber the one
    # of a daemon that is running.
    with tempfile.NamedTemporaryFile(
        dir=opts.store, prefix=f"{daemon.STDERR_FILE}.", delete=False
    ) as err:
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
        errlog.replace(opts.store / daemon.STDERR_FILE)
        where = f"{opts.s3_url}, index {opts.store}" if opts.s3_url else str(opts.store)
        if opts.sqlite_db is not None:
            where = f"sqlite://{opts.sqlite_db}, index {opts.store}"
        if opts.memory:
            where = f"{MEMORY}: a RAM drive, everything in it is gone at unmount"
        click.echo(f"mounted {opts.mountpoint} (store {where})")
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
@click.option(
    "--lazy",
    is_flag=True,
    help="Do not wait for uploads: leave them queued for the next mount of this store.",
)
def umount(mountpoint: Path, timeout: float, lazy: bool) -> None:
    """Flush everything pending to the store and unmount MOUNTPOINT."""
    target = str(mountpoint.resolve())
    record = next((r for r in daemon.read_records() if r.mountpoint == target), None)
    if target not in daemon.mounted_points():
        fail(f"{mountpoint} is not mounted")
    flag = Path(record.store) / daemon.LAZY_FLAG if lazy and record is not None else None
    if flag is not None:
        flag.touch()
    done = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True)
    if done.returncode != 0:
        if flag is not None:
            flag.unlink(missing_ok=True)
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        fail(f"cannot unmount {mountpoint}: {why} (close files and shells using it)")
    if record is None:
        return
    _wait_for_exit(record, timeout)
    if lazy:
        pending = _pending(Path(record.store) / daemon.INDEX_FILE)
        if pending:
            click.echo(
                f"unmounted; {pending} store operations left for the next mount of this store",
                err=True,
            )


def _wait_for_exit(record: daemon.MountRecord, timeout: float) -> None:
    start = time.monotonic()
    index_path = Path(record.store) / daemon.INDEX_FILE
    shown = -1
    while daemon.process_alive(record.pid):
        pending, size, _error = _pending_report(index_path)
        if pending != shown and pending > 0:
            click.echo(
                f"flushing: {pending} store operations pending ({_human(size)} to upload)",
                err=True,
            )
            shown = pending
        if timeout and time.monotonic() - start > timeout:
            fail(
                f"gave up after {timeout:.0f}s with {pending} operations pending; "
                "the next mount resumes them"
            )
        time.sleep(0.2)


def _pending(index_path: Path) -> int:
    return _pending_report(index_path)[0]


def _pending_report(index_path: Path) -> tuple[int, int, str | None]:
    nothing: tuple[int, int, str | None] = (0, 0, None)
    return _read_index(index_path, lambda idx: idx.pending_report(), nothing)


def _read_index(index_path: Path, query: Callable[[MetaEngine], T], default: T) -> T:
    """A query on a mounted drive's index, read-only; `default` if it cannot be read."""
    try:
        idx = open_engine(index_path, readonly=True)
    except Exception:
        return default
    try:
        return query(idx)
    except Exception:
        return default
    finally:
        idx.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """List mounted drives with their store, pending uploads and cache use."""
    rows: list[dict[str, str | int | None]] = []
    for rec in daemon.read_records():
        store = Path(rec.store)
        cache = store / "cache"
        used = sum(p.stat().st_blocks * 512 for p in cache.glob("*") if p.is_file())
        pending, pending_bytes, error = _pending_report(store / daemon.INDEX_FILE)
        none_failed: tuple[int, str | None] = (0, None)
        failed, failure = _read_index(
            store / daemon.INDEX_FILE, lambda idx: idx.parked_report(), none_failed
        )
        rows.append(
            {
                "mountpoint": rec.mountpoint,
                "store": rec.remote or rec.store,
                "index": rec.store,
                "pid": rec.pid,
                "user": rec.user,
                "pending": pending,
                "pending_bytes": pending_bytes,
                "last_error": error,
                "failed": failed,  # operations that failed for good (see motionfs fsck)
                "failed_error": failure,
                "cache_bytes": used,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no motionfs drives mounted")
        return
    for r in rows:
        lines = [
            str(r["mountpoint"]),
            f"  store:   {r['store']}",
            *([f"  index:   {r['index']}"] if r["index"] != r["store"] else []),
            f"  pid:     {r['pid']}",
            f"  user:    {r['user']}",
            f"  pending: {r['pending']} store operations "
            f"({_human(int(r['pending_bytes'] or 0))} to upload)",
            *([f"  failing: {r['last_error']}"] if r["last_error"] else []),
            *(
                [f"  FAILED:  {r['failed']} store operations for good, e.g. {r['failed_error']}"]
                if r["failed"]
                else []
            ),
            f"  cache:   {int(r['cache_bytes'] or 0) / (1 << 20):.1f} MiB",
        ]
        click.echo("\n".join(lines))


def _locate(project_path: Path) -> tuple[Path, str]:
    """(store, path inside the mount) of a project folder on a mounted drive."""
    target = os.path.abspath(project_path)
    best: daemon.MountRecord | None = None
    for rec in daemon.read_records():
        mp = rec.mountpoint.rstrip("/")
        if (target == mp or target.startswith(mp + "/")) and (
            best is None or len(mp) > len(best.mountpoint)
        ):
            best = rec
    if best is None:
        fail(f"{project_path} is not inside a mounted motionfs drive")
    return Path(best.store), os.path.relpath(target, best.mountpoint)


def _ask(project_path: Path, op: str, label: str | None = None, **fields: object) -> Any:
    """One request to the daemon serving the project; with `label`, a progress
    bar of the project's store work on stderr (on a terminal only)."""
    store, rel = _locate(project_path)
    payload = {"op": op, "path": rel, **fields}
    try:
        if label is None or not sys.stderr.isatty():
            return control.request(store, payload)
        with _store_work_bar(label) as progress:
            return control.request(store, payload, progress=progress)
    except control.ControlError as e:
        fail(str(e))


@contextlib.contextmanager
def _store_work_bar(label: str) -> Iterator[control.Progress]:
    """click's progress bar, resized as the daemon learns how much work there is."""
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        size = [1]

        def show(done: int, total: int) -> None:
            size[0] = bar.length = max(total, 1)
            bar.update(done - bar.pos)

        yield show
        bar.update(size[0] - bar.pos)  # done: the daemon answered


@main.group()
def checkpoint() -> None:
    """Create, list, restore, delete and compare a project's checkpoints."""


project_arg = click.argument("project_path", type=click.Path(path_type=Path))


@checkpoint.command("create")
@project_arg
@click.argument("name")
@click.option("--description", "-d", default=None, help="What this checkpoint is.")
def checkpoint_create(project_path: Path, name: str, description: str | None) -> None:
    """Checkpoint the project's current state as NAME."""
    result = _ask(
        project_path,
        "checkpoint.create",
        label=f"checkpoint {name}: storing",
        name=name,
        description=description,
    )
    click.echo(
        f"checkpoint {result['name']}: {result['file_count']} files, "
        f"{_human(result['logical_size'])}"
    )


@checkpoint.command("list")
@project_arg
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def checkpoint_list(project_path: Path, as_json: bool) -> None:
    """List checkpoints: name, created, description, files, size, bytes only it holds."""
    rows = _ask(project_path, "checkpoint.list")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no checkpoints")
        return
    click.echo(f"{'NAME':24} {'CREATED':20} {'FILES':>7} {'SIZE':>10} {'OWN':>10}  DESCRIPTION")
    for r in rows:
        created = r["created_at"][:19].replace("T", " ")
        click.echo(
            f"{r['name']:24} {created:20} {r['file_count']:>7} "
            f"{_human(r['logical_size']):>10} {_human(r['exclusive_bytes']):>10}  "
            f"{r['description'] or ''}"
        )


@checkpoint.command("restore")
@project_arg
@click.argument("name")
def checkpoint_restore(project_path: Path, name: str) -> None:
    """Make the live project identical to checkpoint NAME (after a safety checkpoint)."""
    result = _ask(project_path, "checkpoint.restore", label=f"restore {name}", name=name)
    click.echo(f"restored {name}; the previous state is checkpoint {result['safety_checkpoint']}")


@checkpoint.command("delete")
@project_arg
@click.argument("name")
def checkpoint_delete(project_path: Path, name: str) -> None:
    """Delete checkpoint NAME and the content only it kept."""
    _ask(project_path, "checkpoint.delete", name=name)
    click.echo(f"deleted checkpoint {name}")


@checkpoint.command("diff")
@project_arg
@click.argument("name")
@click.argument("other", required=False)
def checkpoint_diff(project_path: Path, name: str, other: str | None) -> None:
    """List paths added (A), removed (D) or changed (M) from NAME to OTHER (default: live)."""
    for change in _ask(project_path, "checkpoint.diff", name=name, other=other):
        click.echo(f"{change['kind']} {change['path']}")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@main.command("fsck")
@click.option(
    "--store",
    default=None,
    help="Store directory (default: ~/.local/share/motionfs), or s3://BUCKET/PREFIX.",
)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL (s3:// store).")
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="For an s3:// store: the local directory of its index.",
)
@click.option("--full", is_flag=True, help="Also hash every file whose sha256 is known.")
@click.option("--repair", is_flag=True, help="Fix what can be fixed without losing data.")
@click.option("--dry-run", is_flag=True, help="Only read (allowed on a mounted store).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def fsck_command(
    store: str | None,
    s3_endpoint: str | None,
    index_dir: Path | None,
    full: bool,
    repair: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Check that the index and the store agree; exit 0 clean, 1 all repaired,
    4 problems left, 8 fsck could not run."""
    bars = None if as_json or not sys.stderr.isatty() else _progress_bar
    try:
        address = StoreAddress.parse(store, index_dir, s3_endpoint)
        if address.memory:
            raise SetupError("a memory:// store lives only while it is mounted: nothing to check")
        opts = daemon.MountOptions(
            mountpoint=Path("/"),  # not mounted: fsck opens the store's components only
            **address.mount_fields(),
            user=getpass.getuser(),
        )
        report = fsck.check(opts, full=full, repair=repair, dry_run=dry_run, progress=bars)
    except SetupError as e:
        click.echo(f"motionfs: {e}", err=True)
        sys.exit(fsck.EXIT_FAILED)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        click.echo(f"checked {report.store}: {checked}")
        for f in report.findings:
            mark = "repaired" if f.repaired else "PROBLEM "
            click.echo(f"  {mark} {f.kind}: {f.what}: {f.problem}")
        click.echo(fsck.summary(report.findings))
    sys.exit(report.exit_code)


@contextlib.contextmanager
def _progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """click's progress bar on stderr, for fsck's long passes."""
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update
