"""The motionfs command line: mount, umount, status, checkpoint, fsck, migrate."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from motionfs import __version__, control, daemon, fsck
from motionfs.address import MEMORY, StoreAddress, check_meta
from motionfs.errors import SetupError
from motionfs.meta import open_engine, redact
from motionfs.meta.engine import MetaEngine
from motionfs.meta.records import HostSession

T = TypeVar("T")
# The detached daemon's --meta URL with its password: passed in the environment,
# so that the long-lived process's command line (ps, /proc) shows it redacted.
META_ENV = "MOTIONFS_META_URL"
STATUS_CONNECT_TIMEOUT = 5  # seconds status and umount wait for the index's server
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 512M or 10G")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()]


def fail(message: str) -> NoReturn:
    click.echo(f"motionfs: {message}", err=True)
    sys.exit(1)


def meta_option(command: Callable[..., None]) -> Callable[..., None]:
    """--meta URL: the index in a PostgreSQL schema instead of the SQLite file."""
    return click.option(
        "--meta",
        default=None,
        metavar="URL",
        help="Keep the index in PostgreSQL: postgresql://USER@HOST/DB?schema=NAME "
        "(password from PGPASSWORD or ~/.pgpass, or in the URL). Default: SQLite, in the "
        "store's folder or --index.",
    )(command)


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
@meta_option
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
    meta: str | None,
    user: str | None,
    foreground: bool,
    allow_other: bool,
    cache_size: str,
    snapdir: str,
    scratch_ttl: float,
    io_timeout: float,
) -> None:
    """Mount the store at MOUNTPOINT; returns once the drive is usable."""
    secret = os.environ.pop(META_ENV, None)
    if foreground and secret is not None and meta is not None and redact(secret) == meta:
        meta = secret  # the detached daemon: its command line has the URL redacted
    try:
        address = StoreAddress.parse(store, index_dir, s3_endpoint, mountpoint.absolute())
        meta = check_meta(meta, address)
    except SetupError as e:
        fail(str(e))
    opts = daemon.MountOptions(
        mountpoint=mountpoint.absolute(),
        **address.mount_fields(),
        meta_url=meta,
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
    args = [sys.executable, "-m", "motionfs", *redacted_argv(sys.argv[1:]), "--foreground"]
    env = dict(os.environ, MOTIONFS_READY_FD=str(write_fd))
    if opts.meta_url is not None:
        env[META_ENV] = opts.meta_url
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
        if opts.meta_url is not None:
            where = f"{where}, metadata {redact(opts.meta_url)}"
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


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line with every --meta URL's password left out."""
    out: list[str] = []
    follows = False
    for arg in argv:
        if follows:
            out.append(redact(arg))
        elif arg.startswith("--meta="):
            out.append("--meta=" + redact(arg.removeprefix("--meta=")))
        else:
            out.append(arg)
        follows = arg == "--meta"
    return out


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
        pending = _pending(record)
        if pending:
            click.echo(
                f"unmounted; {pending} store operations left for the next mount of this store",
                err=True,
            )


def _wait_for_exit(record: daemon.MountRecord, timeout: float) -> None:
    start = time.monotonic()
    shown = -1
    while daemon.process_alive(record.pid):
        pending, size, _error = _pending_report(record)
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


def _pending(record: daemon.MountRecord) -> int:
    return _pending_report(record)[0]


def _pending_report(record: daemon.MountRecord) -> tuple[int, int, str | None]:
    nothing: tuple[int, int, str | None] = (0, 0, None)
    return _read_index(record, lambda idx: idx.pending_report(), nothing)


def _read_index(record: daemon.MountRecord, query: Callable[[MetaEngine], T], default: T) -> T:
    """A query on a mounted drive's index, read-only; `default` if it cannot be read."""
    try:
        return _query_index(record, query)
    except Exception:
        return default


def with_connect_timeout(url: str) -> str:
    """The URL with a connect timeout (unless it names one): status must not
    hang on a server that does not answer (libpq waits for ever by default)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "connect_timeout" for key, _value in query):
        query.append(("connect_timeout", str(STATUS_CONNECT_TIMEOUT)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _query_index(record: daemon.MountRecord, query: Callable[[MetaEngine], T]) -> T:
    """A query on a mounted drive's index, opened read-only: its SQLite file, or
    its PostgreSQL schema through the record's URL, which has no password (libpq
    takes one from PGPASSWORD or ~/.pgpass, as for any client)."""
    store = Path(record.store)
    if record.meta is not None:
        url = with_connect_timeout(record.meta)
        idx = open_engine(store / daemon.PG_INDEX_FILE, readonly=True, url=url)
    else:
        idx = open_engine(store / daemon.INDEX_FILE, readonly=True)
    try:
        return query(idx)
    finally:
        idx.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """List mounted drives with their store, pending uploads and cache use."""
    rows: list[dict[str, Any]] = []
    for rec in daemon.read_records():
        store = Path(rec.store)
        cache = store / "cache"
        used = sum(p.stat().st_blocks * 512 for p in cache.glob("*") if p.is_file())
        unreadable = None
        hosts: list[HostSession] | None = None
        try:
            (pending, pending_bytes, error), (failed, failure), hosts = _query_index(
                rec, lambda idx: (idx.pending_report(), idx.parked_report(), _sessions(idx))
            )
        except Exception as e:  # e.g. no password for the PostgreSQL index
            unreadable = str(e).splitlines()[0] if str(e) else type(e).__name__
            pending = pending_bytes = failed = 0
            error = failure = None
        rows.append(
            {
                "mountpoint": rec.mountpoint,
                "store": rec.remote or rec.store,
                "index": rec.store,
                "meta": rec.meta or "sqlite",
                "pid": rec.pid,
                "user": rec.user,
                "pending": None if unreadable else pending,
                "pending_bytes": None if unreadable else pending_bytes,
                "last_error": error,
                "failed": None if unreadable else failed,  # failed for good (see fsck)
                "failed_error": failure,
                "index_error": unreadable,  # why the index could not be read
                "cache_bytes": used,
                # Several hosts on one index: every daemon serving it, this one too.
                "hosts": None if hosts is None else [h.model_dump() for h in hosts],
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
            *([f"  meta:    {r['meta']}"] if r["meta"] != "sqlite" else []),
            f"  pid:     {r['pid']}",
            f"  user:    {r['user']}",
            f"  pending: {r['pending']} store operations "
            f"({_human(int(r['pending_bytes'] or 0))} to upload)"
            if r["index_error"] is None
            else f"  pending: unknown (cannot read the index: {r['index_error']})",
            *([f"  failing: {r['last_error']}"] if r["last_error"] else []),
            *(
                [f"  FAILED:  {r['failed']} store operations for good, e.g. {r['failed_error']}"]
                if r["failed"]
                else []
            ),
            f"  cache:   {int(r['cache_bytes'] or 0) / (1 << 20):.1f} MiB",
            *_host_lines(r["hosts"], str(r["mountpoint"]), int(r["pid"])),
        ]
        click.echo("\n".join(lines))


def _sessions(index: MetaEngine) -> list[HostSession] | None:
    hosts = index.hosts()
    return None if hosts is None else hosts.all()


def _host_lines(hosts: list[dict[str, Any]] | None, mountpoint: str, pid: int) -> list[str]:
    """The other hosts serving a shared index, one line each."""
    if hosts is None:
        return []
    others = [h for h in hosts if not (h["mountpoint"] == mountpoint and h["pid"] == pid)]
    if not others:
        return ["  hosts:   this one only"]
    lines = [f"  hosts:   this one and {len(others)} more"]
    for h in others:
        seen = time.time() - float(h["beat_at"])
        state = "up" if h["alive"] else "DOWN (its queued uploads wait for it)"
        lines.append(
            f"           {h['host']} pid {h['pid']} {h['mountpoint']}: {state}, "
            f"seen {seen:.0f}s ago"
        )
    return lines


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
@meta_option
@click.option("--full", is_flag=True, help="Also hash every file whose sha256 is known.")
@click.option("--repair", is_flag=True, help="Fix what can be fixed without losing data.")
@click.option("--dry-run", is_flag=True, help="Only read (allowed on a mounted store).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def fsck_command(
    store: str | None,
    s3_endpoint: str | None,
    index_dir: Path | None,
    meta: str | None,
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
            meta_url=check_meta(meta, address),
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
        where = report.store if report.meta is None else f"{report.store} (index {report.meta})"
        click.echo(f"checked {where}: {checked}")
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


@main.command("migrate")
@click.option(
    "--store",
    default=None,
    help="Store directory (default: ~/.local/share/motionfs), s3://BUCKET/PREFIX or "
    "sqlite:///FILE.",
)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL (s3:// store).")
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="For an s3:// or sqlite:// store: the local directory of its index.",
)
@click.option(
    "--to",
    "to_url",
    required=True,
    metavar="URL",
    help="The new index: postgresql://USER@HOST/DB?schema=NAME (a new or empty schema).",
)
def migrate_command(
    store: str | None, s3_endpoint: str | None, index_dir: Path | None, to_url: str
) -> None:
    """Copy an unmounted store's SQLite index into a new PostgreSQL schema, then
    mount the store with --meta URL. The SQLite file is kept, set aside."""
    from motionfs.meta.migrate import MigrationRefused, copy_index

    try:
        address = StoreAddress.parse(store, index_dir, s3_endpoint)
        url = check_meta(to_url, address)
    except SetupError as e:
        fail(str(e))
    assert url is not None
    source = address.local / daemon.INDEX_FILE
    if not source.is_file():
        fail(f"no SQLite index at {source}: nothing to migrate")
    try:
        lock_fd = daemon.lock_store(address.local)
    except SetupError as e:
        fail(f"{e} (migrate refuses a mounted store)")
    try:
        bars = _progress_bar if sys.stderr.isatty() else None
        result = copy_index(source, url, bars)
        # Opened as a mount opens it: checks the copy, writes this host's marker file.
        index = daemon.open_index(source, url)
        try:
            problems = index.integrity_errors()
        finally:
            index.close()
        if problems:
            fail(f"the copy in {result.url} is inconsistent: {'; '.join(problems)}")
        kept = _set_sqlite_aside(source)
    except (MigrationRefused, SetupError) as e:
        fail(str(e))
    except OSError as e:  # setting the SQLite file aside, after the copy committed
        fail(f"copied into {redact(url)}, but {e.filename}: {e.strerror}; move it aside yourself")
    finally:
        daemon.release_store(lock_fd)
    rows = sum(result.rows.values())
    click.echo(
        f"copied {rows} rows ({result.rows['inodes']} inodes, {result.rows['namespaces']} "
        f"namespaces, {result.rows['checkpoints']} checkpoints) into schema "
        f"{result.schema_name} of {result.url}; the SQLite index is kept as {kept}"
    )
    if result.pending or result.parked:
        click.echo(
            f"{result.pending} queued store operations carried over (the next mount applies "
            f"them), {result.parked} that failed for good (motionfs fsck --repair retries them)"
        )
    words = ["motionfs", "mount", "MOUNTPOINT"]
    if store is not None:
        words += ["--store", store]
    if s3_endpoint is not None:
        words += ["--s3-endpoint", s3_endpoint]
    if index_dir is not None:
        words += ["--index", str(index_dir)]
    words += ["--meta", result.url]
    click.echo(f"mount it with: {' '.join(shlex.quote(w) for w in words)}")


def _set_sqlite_aside(source: Path) -> Path:
    """Move the migrated SQLite index (and its WAL files) out of the way, kept:
    a mount without --meta must not serve the old copy while PostgreSQL has the
    current one (it refuses instead, naming the marker file)."""
    kept = fsck.set_aside(source)
    assert kept is not None
    for side in ("-wal", "-shm"):
        extra = Path(f"{source}{side}")
        if extra.exists():
            os.replace(extra, f"{kept}{side}")
    return kept
