#!/usr/bin/env python3
"""Benchmark motionfs against a native directory and against the stack's ceiling, in one run.

Run it as `scripts/bench` (that sets up the .venv first); `--help` lists the options.

Each workload runs in a native directory, then on a passthrough mount, then in a project
folder of a fresh motionfs mount. The passthrough mount is the project's own minimal
daemon (benchlib/passthrough.py: pyfuse3 on trio like motionfs, the same kernel options,
every request forwarded to a native directory with os calls): what any daemon on this
stack costs, so that motionfs's own cost is the gap between those two columns
(`--no-passthrough` leaves it out). All three live in one temporary directory (TMPDIR
decides where), next to the mount's store, so they use the same disk; both mounts are
always unmounted at the end, even on error or Ctrl-C.

The workloads (sizes of the full run; --quick shrinks them for a smoke run):
 1  write 1 GiB in 1 MiB writes, then fsync             target: >= 75% of native MiB/s
 2  read it back after dropping the caches               target: >= 75% of native MiB/s
 3  4 KiB random preads on a 256 MiB file for 10 s,     ops/s, no target
    fixed seed, caches dropped first
 4  create 5,000 files of 4 KiB in 50 directories        target: >= 1,500 files/s
 5  listdir every dir + lstat every entry of that tree,  target: >= 15,000 ops/s
    caches dropped first
 6  500 editor saves (temp file, fsync, rename over)     target: >= 50% of native saves/s
 7  rsync -a of a 2,000-file tree in                     target: <= 8x native time
 8  git add -A && git commit of 1,000 files              target: <= 8x native time
 9  delete the 5,000-file tree of 4                      target: >= 2,000 files/s
10  the daemon's peak RSS while a 4 GiB file is written  target: < 300 MiB
    and read back (VmHWM, reset through clear_refs)      (motionfs only)
11  npm install of a Remotion project                    target: <= 1.3x native time
12  npx remotion render of it (30 frames, 320x180)       target: <= 1.3x native time
The targets compare motionfs with native (the passthrough column has its own ratio, no
target). 11-12 run in the full run or with --remotion (benchlib/remotion.py): one npm
cache, warmed by an untimed install, serves every side with --offline, so they compare
filesystems, not the network; the render needs npm and a Chromium (Debian's `chromium`
or MOTIONFS_BENCH_CHROMIUM) and is skipped with a note otherwise. `--only` picks
workloads by name.

Dropping the caches is `sync; echo 3 > /proc/sys/vm/drop_caches` (needs root; without it
those steps are "not measured"); on the mount it drops the FUSE page cache and the pages
of the daemon's cache files alike. Every byte written is verified, most of it untimed
after the step; reads compare what they read inside the step (a memcmp per block, the
same cost on all sides).

Wall time comes from time.perf_counter. A step that takes under FAST_SECONDS is repeated
until it has run REPEATS times and the median is reported. Before every step (native ones
too) the bench waits, untimed, until the daemon has no store operations pending, so the
background uploads of one step do not slow down the next.

Where the time goes: while a step is timed on a FUSE mount, the kernel's tracepoints
fuse:fuse_request_send/end are recorded in a tracefs instance of the bench's own
(benchlib/fusetrace.py; root, Linux >= 6.14), which counts the requests motionfs gets
without touching it, and their reply times. A second table shows per workload and mount
the requests per run, per file (or MiB, op, save), the wall time and reply time per
request, the passthrough's time in its handlers, and the top request types. Without the
tracepoints the passthrough's own counters stand in (the kernel sends any daemon with
the same options the same requests), and the legend says so.

A step that fails (an error, or a verification that does not hold) is reported in the
table as FAILED, with the motionfs.log excerpt below the table, the run goes on with the
others, and the exit code is 1. Missing a speed target only prints MISS: `--quick` is a CI
smoke test whatever the machine's speed.

The checkpoint workload (`--checkpoints` runs only it; the default run ends with it) has no
native equivalent and gets its own table: a project of 2,000 files of 512 KiB; checkpoint
c1, which must take under 2 s; replace one file with 1 MiB of new content; checkpoint c2,
which must take under 2 s too and add under 2 MiB to the store (apparent size of STORE/data,
journal drained, like du -sb); then `motionfs checkpoint restore P c1`, which must rewrite in
the store only the file that differs. Those four are reported PASS/FAIL, and a FAIL makes the
exit code 1.

The code is in scripts/benchlib/; this file parses the options and runs the workloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchlib.checkpoints import checkpoints
from benchlib.common import FULL, QUICK, VENV, is_mounted, progress
from benchlib.data import make_tree
from benchlib.fusetrace import FuseTrace
from benchlib.remotion import prepare_remotion, remotion
from benchlib.report import (
    CKPT_LEGEND,
    LEGEND,
    REQUESTS_LEGEND,
    REQUESTS_LEGEND_DAEMON,
    commit,
    disk_of,
    failures,
    measure_table,
    memory,
    requests_source,
    requests_table,
    row_json,
    sorted_rows,
    table,
)
from benchlib.runner import Bench
from benchlib.targets import METAS, STORES, NativeTarget, PassthroughTarget, Target
from benchlib.workloads import daemon_rss, git_commit, rsync_in, saves, sequential, small_tree

WORKLOADS = {
    f.__name__: f
    for f in (sequential, small_tree, saves, rsync_in, git_commit, daemon_rss, remotion)
}


def reexec_in_venv() -> None:
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve() and python.exists():
        os.execv(python, [str(python), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Time the issue 6 workloads (and Remotion's) on a native directory, a "
        "passthrough FUSE mount and a fresh motionfs mount (same disk, same run); print all "
        "three with the ratios to native, each target's PASS/MISS and the FUSE requests of "
        "each step. Exits 1 if a step fails or a checkpoint check fails; a missed target is "
        "not a failure.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument(
        "--store",
        choices=sorted(STORES),
        default="local",
        help="store backend (default: local); s3 starts a moto server on 127.0.0.1 and skips "
        "the checkpoint workload",
    )
    p.add_argument(
        "--meta",
        choices=sorted(METAS),
        default="sqlite",
        help="metadata engine (default: sqlite, in the store's folder); postgresql starts a "
        "throwaway PostgreSQL server on 127.0.0.1 for the index and stops it afterwards",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="run only the checkpoint workload (the default run includes it)",
    )
    p.add_argument(
        "--remotion",
        action="store_true",
        help="run the Remotion workload (11-12) also with --quick or --only",
    )
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="run only these workloads, comma-separated, of: "
        + ", ".join([*WORKLOADS, "checkpoints"]),
    )
    p.add_argument(
        "--no-passthrough",
        action="store_true",
        help="leave out the passthrough column (and its daemon)",
    )
    args = p.parse_args()
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {*WORKLOADS, "checkpoints"})
        if unknown:
            p.error(f"--only: unknown workload {', '.join(unknown)}")
        args.only = names
    return args


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    reexec_in_venv()
    args = parse_args()
    make_target = STORES[args.store]
    sizes = QUICK if args.quick else FULL
    if args.remotion:
        sizes = dataclasses.replace(sizes, remotion=True)
    if args.checkpoints:
        chosen = ["checkpoints"]
    elif args.only:
        chosen = args.only + (["remotion"] if args.remotion else [])
    else:
        chosen = [*WORKLOADS, "checkpoints"]
    if not sizes.remotion and "remotion" in chosen and not args.only:
        chosen.remove("remotion")
    command = shlex.join(["scripts/bench", *sys.argv[1:]])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:  # respect nohup and the like
            signal.signal(sig, interrupt)

    base = Path(tempfile.mkdtemp(prefix="motionfs-bench-")).resolve()
    mfs = make_target(base)
    use_meta = METAS[args.meta]
    meta = "sqlite (index.sqlite in the store's folder)"
    if use_meta is not None:
        from motionfs.meta import redact

        meta = f"{args.meta} ({redact(use_meta(mfs))}, a throwaway server on this machine)"
    targets: list[Target] = [NativeTarget(base)]
    passthrough = None if args.no_passthrough else PassthroughTarget(base)
    if passthrough is not None:
        targets.append(passthrough)
    bench = Bench(base, sizes, [*targets, mfs])
    trace = FuseTrace()
    why_no_trace = trace.open()
    bench.trace = None if why_no_trace else trace
    rev = commit()
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
        "commit": rev,
        "machine": f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"{memory()}, Python {platform.python_version()}",
        "disk": f"{base} on {disk_of(base)}",
        "store": f"{args.store} ({mfs.store})",
        "metadata": meta,
        "run": "quick" if args.quick else "full",
        "passthrough": "-" if passthrough is None else f"passthrough.py on {passthrough.source}",
        "requests": f"not counted by the kernel: {why_no_trace}"
        if why_no_trace
        else "kernel tracepoints fuse:fuse_request_send/end",
    }
    print(f"motionfs bench, {header['date']}")
    for key in (
        "command",
        "commit",
        "machine",
        "disk",
        "store",
        "metadata",
        "passthrough",
        "requests",
    ):
        print(f"{key}: {header[key]}")
    sys.stdout.flush()

    started = time.perf_counter()
    interrupted = False
    try:
        if passthrough is not None:
            passthrough.mount()
        mfs.mount()
        if "rsync_in" in chosen:
            bench.source_bytes = make_tree(bench.source, sizes.rsync_files, seed=7, text=False)
        if "remotion" in chosen:
            prepare_remotion(bench)
        for name, workload in WORKLOADS.items():
            if name in chosen:
                for target in bench.targets:
                    bench.run(workload, target)
        if args.store == "local" and "checkpoints" in chosen:  # it measures the store's growth
            bench.run(checkpoints, mfs)
    except KeyboardInterrupt:
        interrupted = True
        progress("bench: interrupted; unmounting")
    except Exception as e:
        bench.problems.append(f"bench stopped: {bench.describe(e)}")
        log = mfs.log_since(0)
        if log:
            bench.problems.append(f"motionfs.log:\n{log}")
    finally:
        on_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        trace.close()
        mfs.close()
        if passthrough is not None:
            passthrough.close()
        mounts = [mfs.mountpoint] + ([passthrough.mountpoint] if passthrough else [])
        left = [m for m in mounts if is_mounted(m)]
        for mountpoint in left:
            bench.problems.append(f"{mountpoint} is still mounted")
        if not left and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGINT, on_interrupt)
    total = time.perf_counter() - started

    if bench.rows:
        print()
        print("\n".join(table(bench.rows)))
        print()
        print(LEGEND)
        for line in bench.notes:
            print(line)
        for line in failures(bench.rows):
            print(line)
        where = requests_table(bench.rows)
        if where:
            print()
            print("\n".join(where))
            print()
            source = requests_source(bench.rows)
            print(
                REQUESTS_LEGEND_DAEMON.format(why=why_no_trace)
                if source == "daemon"
                else REQUESTS_LEGEND
            )
    if bench.measures:
        print()
        print("\n".join(measure_table(bench.measures)))
        print()
        print(CKPT_LEGEND)
        for line in bench.measure_notes:
            print(line)
    if bench.problems:
        print()
        for line in bench.problems:
            print(line)

    failed = [
        f"{r.key} [{name}]"
        for r in bench.rows.values()
        for name, o in r.outcomes.items()
        if o.failed
    ]
    ckpt_failed = [m.label for m in bench.measures if m.verdict == "FAIL"]
    verdicts = [r.goal.judge(r)[2] for r in bench.rows.values() if r.goal]
    print()
    print(
        f"targets: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS (not failures); "
        f"failed steps: {len(failed)}; failed checkpoint checks: {len(ckpt_failed)}"
    )
    print(f"total wall time: {total:.0f} s" + (" (interrupted)" if interrupted else ""))
    if args.keep:
        print(f"kept: {base}")

    status = 130 if interrupted else 1 if failed or ckpt_failed or bench.problems else 0
    if args.json:
        report = {
            **header,
            "sizes": asdict(sizes),
            "interrupted": interrupted,
            "total_seconds": total,
            "requests_from": requests_source(bench.rows),
            "requests_trace": why_no_trace or "fuse:fuse_request_send/end tracepoints",
            "rows": [row_json(r) for r in sorted_rows(bench.rows)],
            "checkpoints": [asdict(m) for m in bench.measures],
            "problems": bench.problems,
            "exit_status": status,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
