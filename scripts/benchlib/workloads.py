"""The issue 6 workloads (1-10): each one runs the same steps on either target."""

from __future__ import annotations

import hashlib
import os
import shutil

from .common import (
    Goal,
    MiB,
    NotMeasured,
    drop_caches,
    expect_no_output,
    fmt_mib,
    git,
    run,
)
from .data import (
    SmallTree,
    daemon_peak,
    editor_saves,
    make_tree,
    random_preads,
    read_blocks,
    read_verify,
    reset_peak,
    save_contents,
    write_big,
)
from .runner import Bench
from .targets import MotionfsTarget, PassthroughTarget, Target

SHARE_90 = Goal("share", 0.9, ">= 90% of native")


def sequential(b: Bench, t: Target) -> None:
    """1: write a big file and fsync it; 2: read it back cold; 3: random preads, cold."""
    mib, pmib = b.sizes.seq_mib, b.sizes.pread_mib
    d = t.root / "seq"
    d.mkdir(exist_ok=True)
    big, preads = d / "big.bin", d / "preads.bin"
    b.step(
        t,
        "1",
        f"seq write {fmt_mib(mib)} (1 MiB writes) + fsync",
        lambda: write_big(big, mib),
        check=lambda _: read_verify(big, mib),  # also when step 2 cannot drop the caches
        amount=mib,
        unit="MiB/s",
        goal=SHARE_90,
    )
    b.step(
        t,
        "2",
        f"seq read {fmt_mib(mib)}, caches dropped",
        lambda: read_verify(big, mib),
        prepare=t.cold,
        amount=mib,
        unit="MiB/s",
        goal=SHARE_90,
    )
    big.unlink(missing_ok=True)
    seconds = b.sizes.pread_seconds

    def prepare_preads() -> None:
        write_big(preads, pmib)
        b.settle(t)
        t.cold()

    b.step(
        t,
        "3",
        f"4 KiB random preads, {fmt_mib(pmib)} file, {seconds:g} s, cold",
        lambda: random_preads(preads, pmib, seconds),
        prepare=prepare_preads,
        check=lambda _: read_verify(preads, pmib),  # the pages the preads did not reach
        amount=lambda ops: float(ops),
        unit="ops/s",
        repeat=False,
        goal=Goal("passthrough", 1.0, ">= the passthrough's rate"),
    )
    shutil.rmtree(d, ignore_errors=True)


def small_tree(b: Bench, t: Target) -> None:
    """4: create a tree of small files; 5: walk it cold; 9: delete it."""
    n, dirs = b.sizes.tree_files, b.sizes.tree_dirs
    tree = SmallTree(t.root / "tree", n, dirs)

    def cold_tree() -> None:
        tree.ensure()
        t.cold()

    b.step(
        t,
        "4",
        f"create {n:,} files of 4 KiB in {dirs} dirs",
        tree.create,
        prepare=lambda: shutil.rmtree(tree.root, ignore_errors=True),
        check=lambda _: tree.verify(),
        amount=n,
        unit="files/s",
        goal=Goal("rate", 2000, ">= 2,000 files/s"),
    )
    b.step(
        t,
        "5",
        f"listdir + lstat the {n:,}-file tree, cold",
        tree.walk,
        prepare=cold_tree,
        amount=lambda ops: float(ops),
        unit="ops/s",
        goal=Goal("rate", 50000, ">= 50,000 ops/s"),
    )
    b.step(
        t,
        "9",
        f"delete the {n:,}-file tree",
        tree.delete,
        prepare=tree.ensure,
        check=lambda _: tree.gone(),
        amount=n,
        unit="files/s",
        goal=Goal("rate", 4000, ">= 4,000 files/s"),
    )
    shutil.rmtree(tree.root, ignore_errors=True)


def saves(b: Bench, t: Target) -> None:
    """6: editor saves (vim / VS Code style) of one file."""
    n = b.sizes.saves
    d = t.root / "edit"
    contents = save_contents(n)

    def prepare() -> None:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        (d / "notes.md").write_bytes(b"first draft\n")

    def check(_: object) -> None:
        if (d / "notes.md").read_bytes() != contents[-1]:
            raise RuntimeError("notes.md does not have the last save's content")
        if os.listdir(d) != ["notes.md"]:
            raise RuntimeError(f"the folder has {sorted(os.listdir(d))[:3]}..., not only notes.md")

    b.step(
        t,
        "6",
        f"{n} editor saves (temp file, fsync, rename over)",
        lambda: editor_saves(d, contents),
        prepare=prepare,
        check=check,
        amount=n,
        unit="saves/s",
        goal=Goal("share", 0.5, ">= 50% of native"),
    )
    shutil.rmtree(d, ignore_errors=True)


def rsync_in(b: Bench, t: Target) -> None:
    """7: rsync -a a tree of mixed small files in; an rsync --checksum dry run checks it."""
    n = b.sizes.rsync_files
    label = f"rsync -a {n:,} files ({b.source_bytes / MiB:.0f} MiB) in"
    goal = Goal("slowdown", 8, "<= 8x native time")
    if not shutil.which("rsync"):
        b.skip(t, "7", label, "FAILED: rsync is not installed", goal)
        return
    dst = t.root / "rsync"
    verify = ["rsync", "-a", "--checksum", "--dry-run", "--itemize-changes"]
    b.step(
        t,
        "7",
        label,
        lambda: run(["rsync", "-a", f"{b.source}/", f"{dst}/"]),
        prepare=lambda: shutil.rmtree(dst, ignore_errors=True),
        check=lambda _: expect_no_output("rsync --checksum --dry-run")(
            run([*verify, f"{b.source}/", f"{dst}/"])
        ),
        amount=n,
        unit="files/s",
        goal=goal,
    )
    shutil.rmtree(dst, ignore_errors=True)


def git_commit(b: Bench, t: Target) -> None:
    """8: git add -A && git commit of a tree of source-like files (git init untimed)."""
    n = b.sizes.git_files
    label = f"git add -A && git commit, {n:,} files"
    goal = Goal("slowdown", 4, "<= 4x native time")
    if not shutil.which("git"):
        b.skip(t, "8", label, "FAILED: git is not installed", goal)
        return
    repo = t.root / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    make_tree(repo, n, seed=8, text=True)

    def prepare() -> None:
        shutil.rmtree(repo / ".git", ignore_errors=True)
        git(repo, "init", "-q")

    def check(_: object) -> None:
        listed = len(git(repo, "ls-files").splitlines())
        if listed != n:
            raise RuntimeError(f"the commit has {listed} files, not {n}")
        expect_no_output("git status --porcelain")(git(repo, "status", "--porcelain"))
        git(repo, "fsck", "--full", "--no-dangling")  # every object's bytes hash right

    b.step(
        t,
        "8",
        label,
        lambda: (git(repo, "add", "-A"), git(repo, "commit", "-q", "-m", "bench")),
        prepare=prepare,
        check=check,
        amount=n,
        unit="files/s",
        goal=goal,
    )
    shutil.rmtree(repo, ignore_errors=True)


def daemon_rss(b: Bench, t: Target) -> None:
    """10: the daemon's peak RSS while a big file is written and read back."""
    mib = b.sizes.rss_mib
    label = f"daemon peak RSS, {fmt_mib(mib)} written + read back"
    goal = Goal("below", 300 * MiB, "< 300 MiB")
    if isinstance(t, PassthroughTarget):
        return  # no bookkeeping to measure: "-"
    if not isinstance(t, MotionfsTarget):
        b.skip(t, "10", label, "", goal)
        return
    path = t.root / "rss.bin"
    notes = []

    def write_read() -> int:
        assert t.pid is not None
        reset_peak(t.pid)
        written, read = hashlib.sha256(), hashlib.sha256()
        write_big(path, mib, written.update)
        b.settle(t)
        try:
            drop_caches()  # so that the read goes through the daemon
        except NotMeasured as e:
            notes.append(f"read back warm, {e}")
        for block in read_blocks(path, mib):
            read.update(block)
        if read.digest() != written.digest():
            raise RuntimeError(f"{path.name}: the bytes read back differ from those written")
        return daemon_peak(t.pid)

    out = b.step(
        t,
        "10",
        label,
        write_read,
        figure=lambda peak: float(peak),
        goal=goal,
        repeat=False,
    )
    out.note = "; ".join(notes) or None
    path.unlink(missing_ok=True)
