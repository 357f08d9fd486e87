"""The checkpoint workload: motionfs only, with its own PASS/FAIL table (no native side)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import KiB, Measure, MiB, fmt_time, progress, run
from .runner import Bench
from .targets import MotionfsTarget, Target

CKPT_PROJECT = "ckpt"  # the checkpoint workload's own project folder
CKPT_FILE = 512 * KiB  # size of each of its files
CKPT_DIRS = 40
CKPT_CHANGE = MiB  # the changed file's new content
CKPT_SECONDS = 2.0  # either checkpoint must take under this (the first one shares, not copies)
CKPT_GROWTH = 2 * MiB  # and add under this to the store
# Checkpoint bookkeeping in a project's store namespace; a restore's own writes there (the
# safety checkpoint's manifest and objects) are not rewrites of the project.
CKPT_STORE_DIRS = (".chuk-motion/objects", ".chuk-motion/checkpoints")


def du_bytes(root: Path) -> int:
    """Apparent size of everything under root, hard links once (like du -sb)."""
    seen: set[tuple[int, int]] = set()
    total = os.lstat(root).st_size
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def store_files(data: Path) -> tuple[dict[str, tuple[int, int, int]], dict[str, int]]:
    """Files under the store's data dir: ({path: (inode, mtime, size)}, {object path: size}).

    The first excludes each namespace's CKPT_STORE_DIRS (and their .meta sidecars); the
    second is the checkpoint objects only.
    """
    files: dict[str, tuple[int, int, int]] = {}
    objects: dict[str, int] = {}
    skipped = CKPT_STORE_DIRS
    for dirpath, _dirs, filenames in os.walk(data):
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, data)
            parts = rel.split(os.sep)
            inner = "/".join(parts[2:]) if parts[0] == "ns" else ""  # path in the namespace
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if inner.startswith(CKPT_STORE_DIRS[0] + "/"):
                objects[rel] = st.st_size
            elif not any(inner == d + ".meta" or inner.startswith(d + "/") for d in skipped):
                files[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return files, objects


def checkpoints(b: Bench, t: Target) -> None:
    """Checkpoint a project, change one file, checkpoint again, restore the first one."""
    if not isinstance(t, MotionfsTarget):
        return
    n = b.sizes.ckpt_files
    project = t.mountpoint / "projects" / CKPT_PROJECT
    snapshots = project / ".snapshots"
    data = t.store / "data"
    cli = [t.exe, "checkpoint"]
    rows = b.measures
    mark = t.log_mark()

    def add(
        label: str, value: str = "", limit: str = "", verdict: str = "", number: float | None = None
    ) -> Measure:
        m = Measure(label, value, limit, verdict, number)
        rows.append(m)
        progress(f"  {t.name:<11} ckpt {label:<60} {value:>12}  {verdict}")
        return m

    def timed(fn: Callable[[], object]) -> float:
        b.settle(t)
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def summary(name: str) -> dict[str, Any]:
        listed = json.loads(run([*cli, "list", str(project), "--json"]))
        for record in listed:
            if record["name"] == name:
                return dict(record)
        raise RuntimeError(f"checkpoint list does not show {name}: {[r['name'] for r in listed]}")

    # Placeholders for the verdict rows, filled in as they are measured: a step that fails
    # leaves them FAIL (not measured).
    missing = "FAIL"
    try:
        project.mkdir()
        dirs = [project / f"d{i:02d}" for i in range(CKPT_DIRS)]
        files = [dirs[i % CKPT_DIRS] / f"f{i:05d}.bin" for i in range(n)]
        changed = files[n // 2]
        before_change = b""

        def create() -> None:
            nonlocal before_change
            for d in dirs:
                d.mkdir()
            for path in files:
                content = os.urandom(CKPT_FILE)
                if path == changed:
                    before_change = content
                with open(path, "wb") as f:
                    f.write(content)

        mib = n * CKPT_FILE / MiB
        seconds = timed(create)
        add(
            f"write {n:,} files of {CKPT_FILE // KiB} KiB ({mib:,.0f} MiB) in {CKPT_DIRS} dirs",
            f"{fmt_time(seconds)} ({mib / seconds:,.0f} MiB/s)",
            number=seconds,
        )
        start = time.perf_counter()
        b.settle(t)
        seconds = time.perf_counter() - start
        add(
            "  then until the store has it all (journal drained)", fmt_time(seconds), number=seconds
        )

        seconds = timed(lambda: (snapshots / "c1").mkdir())
        add(
            "checkpoint c1 (mkdir P/.snapshots/c1)",
            fmt_time(seconds),
            f"< {CKPT_SECONDS:g} s",
            "PASS" if seconds < CKPT_SECONDS else missing,
            seconds,
        )

        changed_rel = changed.relative_to(project)
        new_content = os.urandom(CKPT_CHANGE)
        changed.write_bytes(new_content)
        b.settle(t)
        store_before = du_bytes(data)
        seconds = timed(lambda: (snapshots / "c2").mkdir())
        ok = seconds < CKPT_SECONDS
        add(
            f"checkpoint c2 after rewriting {changed_rel} with 1 MiB",
            fmt_time(seconds),
            f"< {CKPT_SECONDS:g} s",
            "PASS" if ok else missing,
            seconds,
        )
        b.settle(t)
        growth = du_bytes(data) - store_before
        add(
            "  store growth for c2 (du -sb STORE/data, drained)",
            f"{growth:,} B",
            f"< {CKPT_GROWTH // MiB} MiB",
            "PASS" if growth < CKPT_GROWTH else missing,
            growth,
        )
        start = time.perf_counter()
        c2 = summary("c2")
        cli_seconds = time.perf_counter() - start
        add(
            "  c2 exclusive_bytes (checkpoint list --json)",
            f"{c2['exclusive_bytes']:,} B",
            number=c2["exclusive_bytes"],
        )

        b.settle(t)
        files_before, objects_before = store_files(data)
        seconds = timed(lambda: run([*cli, "restore", str(project), "c1"]))
        add("restore c1 (motionfs checkpoint restore P c1)", fmt_time(seconds), number=seconds)
        b.settle(t)
        files_after, objects_after = store_files(data)
        rewritten = sorted(
            rel
            for rel, (ino, mtime, _size) in files_after.items()
            if rel not in files_before or files_before[rel][:2] != (ino, mtime)
        )
        removed = sorted(files_before.keys() - files_after.keys())
        rewritten_bytes = sum(files_after[rel][2] for rel in rewritten)
        only_changed = len(rewritten) == 1 and rewritten[0].endswith("/" + changed_rel.as_posix())
        add(
            "  files rewritten in the store",
            f"{len(rewritten):,} ({rewritten_bytes:,} B)",
            f"only {changed_rel}",
            "PASS" if only_changed else missing,
            rewritten_bytes,
        )
        if not only_changed:
            b.measure_notes.append(f"files the restore rewrote ({len(rewritten)}):")
            b.measure_notes.extend(f"  {rel}" for rel in rewritten[:20])
        if removed:
            b.measure_notes.append(f"files the restore removed from the store ({len(removed)}):")
            b.measure_notes.extend(f"  {rel}" for rel in removed[:20])
        new_objects = objects_after.keys() - objects_before.keys()
        added = sum(objects_after[rel] for rel in new_objects)
        add(
            "  safety checkpoint's new objects (not counted above)",
            f"{len(new_objects)} ({added:,} B)",
        )

        # Not timed: the restored project must be c1 again.
        problems = []
        if changed.read_bytes() != before_change:
            problems.append(f"{changed_rel} does not have its c1 content")
        diff = run([*cli, "diff", str(project), "c1"]).splitlines()
        if diff:
            problems.append(f"checkpoint diff P c1 lists {len(diff)} changes, e.g. {diff[0]!r}")
        add(
            "  restored project equals c1 (content, checkpoint diff)",
            "; ".join(problems) or "yes",
            verdict="FAIL" if problems else "",
        )
        add(
            "reference: one CLI call (checkpoint list --json)",
            fmt_time(cli_seconds),
            number=cli_seconds,
        )
    except Exception as e:
        add(f"FAILED: {b.describe(e)}", verdict="FAIL")
        log = t.log_since(mark)
        if log:
            b.measure_notes.append("motionfs.log since the checkpoint workload started:")
            b.measure_notes.extend(f"  {line}" for line in log.splitlines())
        labels = " ".join(m.label for m in rows)
        for label in ("checkpoint c2", "store growth", "files rewritten"):
            if label not in labels:
                add(f"{label}: not measured", verdict="FAIL")
