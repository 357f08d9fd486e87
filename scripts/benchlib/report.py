"""The printed tables, the JSON rows and the run's header facts (commit, disk, memory)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import ROOT, Measure, Outcome, Row, fmt_number, fmt_time, run

LEGEND = """\
ratio: how many times longer motionfs takes for the same work (native rate / motionfs rate;
    lower is better, 1.00x is native speed). runs: timed runs (native/motionfs); steps under
    2 s run 3 times and the median is shown. "not measured": the step needs root (caches).
3:  runs for a fixed time; the columns show that time and the ops done per second.
10: motionfs only; the time is the whole write + fsync + read back, peak RSS in the target."""

CKPT_LEGEND = """\
Each step runs once, after the journal is drained. c1 and c2 are timed as mkdir
P/.snapshots/NAME, which returns once the checkpoint is in the store. The restore is timed
as one `motionfs checkpoint restore` command: its safety checkpoint and one CLI start-up
(see the reference row) included. "files rewritten" counts the store's files (under
STORE/data, checkpoint objects and manifests left out) that are new or have a new inode or
mtime after the restore."""


def sorted_rows(rows: dict[str, Row]) -> list[Row]:
    return sorted(rows.values(), key=lambda r: int(r.key))


def table(rows: dict[str, Row]) -> list[str]:
    header = [
        "workload",
        "native",
        "motionfs",
        "ratio",
        "native rate",
        "motionfs rate",
        "target",
        "result",
        "runs",
    ]
    body = []
    for row in sorted_rows(rows):
        nat, mfs = row.outcomes.get("native"), row.outcomes.get("motionfs")
        notes = [
            f"{name}: {o.error or o.note}"
            for name, o in (("native", nat), ("motionfs", mfs))
            if o is not None and (o.error or o.note)
        ]
        _, achieved, verdict = row.goal.judge(row) if row.goal else (None, "", "")
        if any(o.failed for o in row.outcomes.values()):
            verdict = "FAILED"
        body.append(
            [
                f"{row.key:>2} {row.label}",
                time_cell(nat),
                time_cell(mfs),
                ratio(nat, mfs),
                rate_cell(row, nat),
                rate_cell(row, mfs),
                f"{row.goal.text}: {achieved or '-'}" if row.goal else "",
                verdict,
                "/".join(str(len(o.runs)) if o and o.runs else "-" for o in (nat, mfs)),
                "; ".join(notes),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:6], widths[1:6], strict=True)),
            r[6].ljust(widths[6]),
            r[7].ljust(widths[7]),
            r[8].rjust(widths[8]),
            *r[len(header) :],
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return lines


def time_cell(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if o.seconds is None:
        return "FAILED" if o.failed else "n/a"
    return fmt_time(o.seconds) + (" !" if o.error else "")


def ratio(nat: Outcome | None, mfs: Outcome | None) -> str:
    """How many times longer motionfs takes for the same work."""
    if not (nat and mfs) or nat.failed or mfs.failed:
        return "-"
    if nat.rate and mfs.rate:
        r = nat.rate / mfs.rate
    elif nat.seconds and mfs.seconds is not None:
        r = mfs.seconds / nat.seconds
    else:
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def rate_cell(row: Row, o: Outcome | None) -> str:
    if o is None or o.rate is None or not row.unit:
        return "-"
    return f"{fmt_number(o.rate)} {row.unit}"


def failures(rows: dict[str, Row]) -> list[str]:
    out = []
    for row in sorted_rows(rows):
        for name, o in row.outcomes.items():
            if o.failed:
                out.append(f"{row.key} {row.label} [{name}] {o.error}")
                if o.log:
                    out.append("  motionfs.log since the step started:")
                    out.extend(f"    {line}" for line in o.log.splitlines())
    return out


def measure_table(measures: list[Measure]) -> list[str]:
    header = ["checkpoints (motionfs only, no native equivalent)", "value", "threshold", "result"]
    body = [[m.label, m.value, m.limit, m.verdict] for m in measures]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


def row_json(row: Row) -> dict[str, Any]:
    achieved, shown, verdict = row.goal.judge(row) if row.goal else (None, "", "")
    out = asdict(row)
    for name, o in row.outcomes.items():
        out["outcomes"][name]["rate"] = o.rate
    out["ratio"] = ratio(row.outcomes.get("native"), row.outcomes.get("motionfs"))
    out["achieved"] = achieved
    out["achieved_text"] = shown
    out["verdict"] = verdict
    return out


def commit() -> str:
    try:
        sha = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    except (OSError, RuntimeError):
        return "unknown (not a git checkout)"
    return sha + (" (with uncommitted changes)" if dirty.strip() else "")


def disk_of(path: Path) -> str:
    """The device, filesystem and mount point holding path (findmnt -T, else /proc/mounts)."""
    with contextlib.suppress(OSError, RuntimeError):
        found = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,TARGET", "-T", str(path)]).split()
        if len(found) == 3:
            return f"{found[0]} ({found[1]}, mounted at {found[2]})"
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, point, fstype = line.split()[:3]
            if str(path).startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
                best = (point, dev, fstype)
    return f"{best[1]} ({best[2]}, mounted at {best[0]})"


def memory() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    return "RAM unknown"
