"""The printed tables, the JSON rows and the run's header facts (commit, disk, memory)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import ROOT, Measure, Outcome, Row, fmt_number, fmt_time, run

LEGEND = """\
native, passthrough, motionfs: the step's time (median of the runs). passthrough is the
    project's minimal pyfuse3-on-trio daemon forwarding every request to a native directory
    (scripts/benchlib/passthrough.py, motionfs's kernel options): the ceiling of the stack.
pt ratio, mfs ratio: how many times longer the passthrough mount and motionfs take for the
    same work as native (native rate / their rate; lower is better, 1.00x is native speed).
    mfs ratio / pt ratio is motionfs's own cost over the stack's. The targets judge
    motionfs against native only. runs: timed runs (native/passthrough/motionfs); steps
    under 2 s run 3 times and the median is shown. "not measured": the step needs root.
3:  runs for a fixed time; the columns show that time and the ops done per second.
10: motionfs only; the time is the whole write + fsync + read back, peak RSS in the target.
11-12: full run or --remotion; both sides install --offline from one npm cache warmed by an
    untimed install first (so the network is not measured); the render includes bundling."""

REQUESTS_LEGEND = """\
FUSE requests the kernel sent during one timed run (the mean over the runs), from the
kernel's tracepoints fuse:fuse_request_send/end, the same way for both daemons (motionfs
is not touched; forgets, which have no reply, are not traced). per unit: requests per file,
MiB, op, save or frame of the row's rate. wall/req: the step's time divided by its
requests, the time budget of one request (the application's own work included).
reply/req: mean time from the kernel sending a request to the daemon's reply (queueing
included, so concurrent requests can make it exceed wall/req). in daemon: time inside
passthrough.py's handlers per request (the rest of a reply is the kernel, libfuse, pyfuse3
and trio). The top types show the count per run and, in brackets, their mean reply time.
A "+" after a count: the trace buffer dropped events, the count is a lower bound."""

REQUESTS_LEGEND_DAEMON = """\
FUSE requests served by the passthrough daemon during one timed run (the mean over the
runs), from its own counters, as the kernel's tracepoints are not available here; motionfs
has no counters, but the kernel sends any daemon with the same options the same requests,
so the passthrough's counts stand in for motionfs's (requests pyfuse3 answers itself, such
as ioctl, are not counted). per unit: requests per file, MiB, op, save or frame of the
row's rate. wall/req: the step's time divided by the requests. in daemon: time inside the
handlers per request; the top types show, in brackets, their mean time in the handler.
No kernel counts because: {why}."""

CKPT_LEGEND = """\
Each step runs once, after the journal is drained. c1 and c2 are timed as mkdir
P/.snapshots/NAME, which returns once the checkpoint is in the store. The restore is timed
as one `motionfs checkpoint restore` command: its safety checkpoint and one CLI start-up
(see the reference row) included. "files rewritten" counts the store's files (under
STORE/data, checkpoint objects and manifests left out) that are new or have a new inode or
mtime after the restore."""


FUSE_TARGETS = ("passthrough", "motionfs")


def sorted_rows(rows: dict[str, Row]) -> list[Row]:
    return sorted(rows.values(), key=lambda r: int(r.key))


def has_passthrough(rows: dict[str, Row]) -> bool:
    return any("passthrough" in r.outcomes for r in rows.values())


def layout(table_rows: list[list[str]], left: set[int]) -> list[str]:
    """Columns padded to their widths (left-aligned in `left`, else right); a rule below
    the header; cells past the header's count are appended as they are."""
    header = table_rows[0]
    n = len(header)
    widths = [max(len(r[i]) for r in table_rows) for i in range(n)]
    lines = []
    for r in table_rows:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        lines.append("  ".join([*cells, *r[n:]]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return lines


def table(rows: dict[str, Row]) -> list[str]:
    names = (
        ["native", "passthrough", "motionfs"] if has_passthrough(rows) else ["native", "motionfs"]
    )
    pt = "passthrough" in names
    header = [
        "workload",
        *names,
        *(["pt ratio"] if pt else []),
        "mfs ratio",
        *(f"{name} rate" for name in names),
        "target",
        "result",
        "runs",
    ]
    body = []
    for row in sorted_rows(rows):
        outs = [row.outcomes.get(name) for name in names]
        nat, mfs = row.outcomes.get("native"), row.outcomes.get("motionfs")
        notes = [
            f"{name}: {o.error or o.note}"
            for name, o in zip(names, outs, strict=True)
            if o is not None and (o.error or o.note)
        ]
        _, achieved, verdict = row.goal.judge(row) if row.goal else (None, "", "")
        if any(o.failed for o in row.outcomes.values()):
            verdict = "FAILED"
        body.append(
            [
                f"{row.key:>2} {row.label}",
                *(time_cell(o) for o in outs),
                *([ratio(nat, row.outcomes.get("passthrough"))] if pt else []),
                ratio(nat, mfs),
                *(rate_cell(row, o) for o in outs),
                f"{row.goal.text}: {achieved or '-'}" if row.goal else "",
                verdict,
                "/".join(str(len(o.runs)) if o and o.runs else "-" for o in outs),
                "; ".join(notes),
            ]
        )
    n = len(header)
    return layout([header, *body], left={0, n - 3, n - 2})


def time_cell(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if o.seconds is None:
        return "FAILED" if o.failed else "n/a"
    return fmt_time(o.seconds) + (" !" if o.error else "")


def ratio(nat: Outcome | None, other: Outcome | None) -> str:
    """How many times longer `other` takes for the same work than native."""
    if not (nat and other) or nat.failed or other.failed:
        return "-"
    if nat.rate and other.rate:
        r = nat.rate / other.rate
    elif nat.seconds and other.seconds is not None:
        r = other.seconds / nat.seconds
    else:
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def rate_cell(row: Row, o: Outcome | None) -> str:
    if o is None or o.rate is None or not row.unit:
        return "-"
    return f"{fmt_number(o.rate)} {row.unit}"


def fmt_few(value: float) -> str:
    """A small ratio with two significant digits below 1 (0.045), one decimal above."""
    return f"{value:,.1f}" if value >= 1 else f"{value:.2g}"


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 10_000:
        return fmt_time(seconds)
    return f"{us:,.0f} us" if us >= 10 else f"{us:.1f} us"


def requests_table(rows: dict[str, Row]) -> list[str]:
    """Where the time goes: the FUSE requests of each row, per FUSE target."""
    header = ["where the time goes", "target", "requests", "per unit", "wall/req", "reply/req"]
    header += ["in daemon", "top request types: count per run (mean time)"]
    body = []
    for row in sorted_rows(rows):
        first = True
        for name in FUSE_TARGETS:
            o = row.outcomes.get(name)
            if o is None or not o.requests or o.seconds is None:
                continue
            total = sum(o.requests.values())
            unit = (row.unit or "").removesuffix("/s")
            per = f"{fmt_few(total / o.amount)}/{unit.rstrip('s')}" if o.amount and unit else "-"
            reply = sum(o.reply_seconds.values())
            handler = sum(o.handler_seconds.values())
            means = o.reply_seconds if o.reply_seconds else o.handler_seconds
            top = []
            for op, n in sorted(o.requests.items(), key=lambda kv: -kv[1])[:6]:
                mean = f" ({fmt_us(means[op] / n)})" if means.get(op) else ""
                top.append(f"{op} {fmt_number(n)}{mean}")
            body.append(
                [
                    f"{row.key:>2} {row.label}" if first else "",
                    name,
                    f"{total:,.0f}" + ("+" if o.requests_lost else ""),
                    per,
                    fmt_us(o.seconds / total),
                    fmt_us(reply / total) if reply else "-",
                    fmt_us(handler / total) if handler else "-",
                    ", ".join(top),
                ]
            )
            first = False
    if not body:
        return []
    return layout([header, *body], left={0, 1, 7})


def requests_source(rows: dict[str, Row]) -> str | None:
    """Where the requests table's counts come from: "kernel", "daemon" or None."""
    for row in rows.values():
        for o in row.outcomes.values():
            if o.requests_from:
                return o.requests_from
    return None


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
    nat = row.outcomes.get("native")
    out["ratio"] = ratio(nat, row.outcomes.get("motionfs"))
    out["passthrough_ratio"] = ratio(nat, row.outcomes.get("passthrough"))
    for name, o in row.outcomes.items():
        out["outcomes"][name]["requests_total"] = sum(o.requests.values())
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
