"""Where the time goes: the FUSE requests a step makes, counted by the kernel.

The kernel's tracepoints fuse:fuse_request_send and fuse:fuse_request_end (Linux >= 6.14)
name each request's connection, opcode and id; the bench records them in a tracefs
instance of its own while a step is timed and reads the buffer afterwards, untimed. That
counts what the kernel asks of any FUSE daemon, motionfs included, without touching it,
and gives each request's reply time (send to reply, in the kernel, queueing included).
Recording an event costs well under a microsecond, next to tens of microseconds per
request. Where tracefs or the tracepoints are missing (not root, older kernel), the
passthrough daemon's own counts stand in (see passthrough.py), and motionfs has none. If
tracefs is not mounted, the bench mounts it for the run and unmounts it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
BUFFER_KB = 65536  # per CPU: about 800,000 requests (two events each) per step
EVENTS = ("fuse_request_send", "fuse_request_end")
LINE = re.compile(
    rb" (\d+)\.(\d+): fuse_request_(send|end): connection (\d+) req (\d+) "
    rb"(?:opcode \d+ \(FUSE_(\w+)\) )?"
)
HEADER = re.compile(rb"entries-in-buffer/entries-written: (\d+)/(\d+)")


@dataclass
class Requests:
    """The requests of one connection in one timed run."""

    counts: Counter[str] = field(default_factory=Counter)  # by request type
    reply_seconds: dict[str, float] = field(default_factory=dict)  # summed reply times
    lost: int = 0  # events the buffer dropped (counts are then a lower bound)


def connection(mountpoint: Path) -> int:
    """The mount's FUSE connection id as the tracepoints print it (the kernel's dev_t)."""
    dev = os.stat(mountpoint).st_dev
    return (os.major(dev) << 20) | os.minor(dev)


class FuseTrace:
    """A tracefs instance recording the FUSE tracepoints; open() says why not if it cannot."""

    def __init__(self) -> None:
        self.dir = TRACEFS / "instances" / f"motionfs-bench-{os.getpid()}"
        self.active = False
        self.mounted = False  # tracefs was not mounted: the bench mounted it, and unmounts it

    def open(self) -> str | None:
        """Start recording; None if it works, else why not."""
        if os.geteuid() != 0:
            return "tracefs needs root"
        if not (TRACEFS / "instances").is_dir():
            done = subprocess.run(
                ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, check=False
            )
            self.mounted = done.returncode == 0
        if not (TRACEFS / "events" / "fuse" / EVENTS[0]).is_dir():
            return "no fuse tracepoints in tracefs (they came in Linux 6.14)"
        for stale in (TRACEFS / "instances").glob("motionfs-bench-*"):
            pid = stale.name.rsplit("-", 1)[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):  # a bench killed before its clean-up
                    stale.rmdir()
        try:
            self.dir.mkdir()
            self.active = True
            (self.dir / "buffer_size_kb").write_text(f"{BUFFER_KB}\n")
            for event in EVENTS:
                (self.dir / "events" / "fuse" / event / "enable").write_text("1\n")
            (self.dir / "tracing_on").write_text("1\n")
        except OSError as e:
            self.close()
            return f"tracefs: {e}"
        return None

    def clear(self) -> None:
        with open(self.dir / "trace", "wb"):
            pass  # opening it for writing with O_TRUNC empties the buffer

    def collect(self, conns: set[int]) -> dict[int, Requests]:
        """The requests recorded since clear(), per connection of conns."""
        out = {c: Requests() for c in conns}
        sent: dict[tuple[int, int], tuple[str, int]] = {}
        lost = 0
        with open(self.dir / "trace", "rb") as f:
            for line in f:
                if line.startswith(b"#"):
                    m = HEADER.search(line)
                    if m:
                        lost = int(m.group(2)) - int(m.group(1))
                    continue
                m = LINE.search(line)
                if not m:
                    continue
                conn = int(m.group(4))
                if conn not in out:
                    continue
                usecs = int(m.group(1)) * 1_000_000 + int(m.group(2))
                unique = int(m.group(5))
                if m.group(3) == b"send":
                    op = m.group(6).decode().lower()
                    out[conn].counts[op] += 1
                    sent[conn, unique] = (op, usecs)
                elif (conn, unique) in sent:
                    op, then = sent.pop((conn, unique))
                    replies = out[conn].reply_seconds
                    replies[op] = replies.get(op, 0.0) + (usecs - then) / 1e6
        for r in out.values():
            r.lost = lost
        return out

    def close(self) -> None:
        if not self.active:
            if self.mounted:
                subprocess.run(["umount", str(TRACEFS)], capture_output=True, check=False)
                self.mounted = False
            return
        with contextlib.suppress(OSError):
            (self.dir / "tracing_on").write_text("0\n")
            for event in EVENTS:
                (self.dir / "events" / "fuse" / event / "enable").write_text("0\n")
        with contextlib.suppress(OSError):
            self.dir.rmdir()
        self.active = False
        if self.mounted:  # busy if another run uses it: then it stays
            subprocess.run(["umount", str(TRACEFS)], capture_output=True, check=False)
            self.mounted = False
