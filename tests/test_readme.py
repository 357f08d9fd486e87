"""The README's examples, run verbatim against a drive mounted the README's way.

Every `sh` and `python` block of the README is either run here, word for word,
or listed in NOT_RUN with the reason; a new block fails `test_every_block_is_covered`
until it is one or the other. The user's home is a temporary folder, so `~`,
`~/Motion` and the default store `~/.local/share/motionfs` are all fresh.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import pytest
from PIL import Image

from motionfs.daemon import is_mounted
from s3server import S3Server

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Blocks that are not run, by their first line, and why.
NOT_RUN = {
    'sudo ln -s "$(command -v mount.motionfs)" /sbin/mount.motionfs': (
        "changes the machine's /sbin; tests/test_cli.py runs the helper as mount(8) does"
    ),
}
SETUP_FIRST_LINE = "scripts/motionfs mount ~/Motion"


def blocks(lang: str) -> list[str]:
    text = README.read_text()
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, re.M | re.S)]


def block(lang: str, first_line: str) -> str:
    found = [b for b in blocks(lang) if b.startswith(first_line)]
    assert len(found) == 1, f"README has {len(found)} {lang} blocks starting {first_line!r}"
    return found[0]


RUN = {
    ("sh", SETUP_FIRST_LINE),
    ("sh", "cp clip.mp4 ~/Motion/renders/film/"),
    ("python", "import asyncio"),
    ("sh", "cd ~/Motion"),
    ("sh", "export AWS_ACCESS_KEY_ID=..."),
    ("sh", "motionfs mount ~/Scratch --store memory://"),
    ("sh", "motionfs mount ~/Portable --store sqlite://$HOME/motion.db"),
    ("sh", "motionfs mount ~/Motion --store s3://studio/motion --meta"),
}


def test_every_block_is_covered() -> None:
    """Each README example is run below or listed in NOT_RUN: none is forgotten."""
    for lang in ("sh", "python"):
        for b in blocks(lang):
            first = b.splitlines()[0]
            covered = any(first.startswith(key) for (k_lang, key) in RUN if k_lang == lang)
            assert covered or first in NOT_RUN, f"README {lang} block {first!r} is not tested"


@dataclass
class Home:
    path: Path
    env: dict[str, str]

    @property
    def motion(self) -> Path:
        return self.path / "Motion"

    def sh(self, script: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd or self.path / "work",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done.stdout


@contextmanager
def mounted(tmp_path: Path, script: str, cwd: Path, **env_extra: str) -> Iterator[Home]:
    """A user's home in `tmp_path` with the drive mounted at ~/Motion by `script`."""
    env = dict(os.environ)
    env["HOME"] = str(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(env_extra)
    h = Home(tmp_path, env)
    (tmp_path / "work").mkdir(exist_ok=True)
    try:
        h.sh(script, cwd=cwd)
        assert is_mounted(h.motion)
        yield h
    finally:
        if is_mounted(h.motion):
            subprocess.run(
                [sys.executable, "-m", "motionfs", "umount", str(h.motion)],
                env=env,
                capture_output=True,
                timeout=120,
            )
        if is_mounted(h.motion):
            subprocess.run(["fusermount3", "-u", "-z", str(h.motion)], capture_output=True)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """The drive mounted by the README's set-up command (its other line,
    `scripts/test`, is this suite itself)."""
    mount_line = block("sh", SETUP_FIRST_LINE).splitlines()[0]
    with mounted(tmp_path, mount_line, cwd=ROOT) as h:
        yield h


def write_clip(path: Path) -> None:
    """A half-second real MP4 (MPEG-4 part 2 video, always in PyAV's wheels)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = cast(av.VideoStream, out.add_stream("mpeg4", rate=30))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(15):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (i * 16, 100, 50)))
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def getxattr(path: Path, name: str) -> str:
    return os.getxattr(path, name).decode()


def test_readme_examples(home: Home) -> None:
    work = home.path / "work"
    write_clip(work / "clip.mp4")
    (home.motion / "projects" / "film").mkdir()
    Image.new("RGB", (32, 16), "red").save(home.motion / "assets" / "logo.png")

    # Metadata: a render copied in, its description read, fields edited.
    out = home.sh(block("sh", "cp clip.mp4 ~/Motion/renders/film/"))
    assert "user.motion.namespace_id" in out
    assert getxattr(home.motion / "projects" / "film", "user.motion.fps") == "60"
    assert getxattr(home.motion / "assets" / "logo.png", "user.motion.tags") == "background,tech"

    # The Python API on the default store while the drive is mounted.
    shutil.copy(work / "clip.mp4", work / "out.mp4")
    done = subprocess.run(
        [sys.executable, "-c", block("python", "import asyncio")],
        cwd=work,
        env=home.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(ast.literal_eval(done.stdout.strip().splitlines()[-1])) == ["demo", "film"]
    assert (home.motion / "projects" / "demo").is_dir()
    renders = list((home.motion / "renders" / "demo").iterdir())
    assert len(renders) == 1 and renders[0].read_bytes() == (work / "out.mp4").read_bytes()
    assert (home.motion / "projects" / "demo" / ".snapshots" / "v1").is_dir()

    # Checkpoints, through .snapshots and the command line.
    src = home.motion / "projects" / "film" / "src"
    src.mkdir()
    (src / "Root.tsx").write_text("export const Root = () => null;\n")
    out = home.sh(block("sh", "cd ~/Motion"))
    assert "Root.tsx" in out  # the ls of the checkpoint's src/
    names = [e.name for e in (home.motion / "projects" / "film" / ".snapshots").iterdir()]
    assert "v1" in names and "v2" not in names
    assert (src / "Root.tsx").read_text() == "export const Root = () => null;\n"


def test_readme_s3_example(tmp_path: Path, s3_server: S3Server) -> None:
    """The s3 block as written, on the test S3 server (the endpoint comes from
    AWS_ENDPOINT_URL, as boto's own configuration allows; the keys are the
    block's placeholders, which the test server accepts)."""
    s3_server.client().create_bucket(Bucket="my-bucket")
    script = block("sh", "export AWS_ACCESS_KEY_ID=...")
    with mounted(tmp_path, script, cwd=tmp_path, AWS_ENDPOINT_URL=s3_server.endpoint) as h:
        (h.motion / "projects" / "film").mkdir()
        (h.motion / "projects" / "film" / "notes.txt").write_text("on s3\n")
        h.sh(f"motionfs umount {h.motion}")
    listed = s3_server.client().list_objects_v2(Bucket="my-bucket", Prefix="motion/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("/notes.txt") for k in keys), keys
    assert "motion/store.json" in keys


def test_readme_several_hosts_example(tmp_path: Path, s3_server: S3Server, pg_server: Any) -> None:
    """The several-hosts block as written, by two users' homes (two hosts: each
    has its own default index folder) on the test S3 and PostgreSQL servers."""
    s3_server.client().create_bucket(Bucket="studio")
    script = block("sh", "motionfs mount ~/Motion --store s3://studio/motion --meta")
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "URL": pg_server.create_database()}
    env["PGPASSWORD"] = pg_server.password  # `status` keeps no password
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        mounted(tmp_path / "a", script, cwd=tmp_path, **env) as a,
        mounted(tmp_path / "b", script, cwd=tmp_path, **env) as b,
    ):
        (a.motion / "projects" / "film").mkdir()
        (a.motion / "projects" / "film" / "notes.txt").write_text("from host a\n")
        deadline = time.monotonic() + 3
        while not (b.motion / "projects" / "film" / "notes.txt").exists():
            assert time.monotonic() < deadline, "host b does not see host a's file"
            time.sleep(0.1)
        assert (b.motion / "projects" / "film" / "notes.txt").read_text() == "from host a\n"
        assert "this one and 1 more" in b.sh("motionfs status")


def test_readme_memory_example(tmp_path: Path) -> None:
    """The memory store's block as written: a RAM drive, and nothing left after unmount."""
    script = block("sh", "motionfs mount ~/Scratch --store memory://")
    env = dict(os.environ, HOME=str(tmp_path))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    scratch = tmp_path / "Scratch"
    scratch.mkdir()
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "RAM drive" in done.stdout
        (scratch / "projects" / "tmp").mkdir()
        (scratch / "projects" / "tmp" / "a.txt").write_text("gone soon\n")
        listed = subprocess.run(
            [sys.executable, "-m", "motionfs", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        private = next(
            Path(r["index"]) for r in json.loads(listed.stdout) if r["mountpoint"] == str(scratch)
        )
        assert private.is_dir()
    finally:
        subprocess.run(
            [sys.executable, "-m", "motionfs", "umount", str(scratch)],
            env=env,
            capture_output=True,
            timeout=120,
        )
        if is_mounted(scratch):
            subprocess.run(["fusermount3", "-u", "-z", str(scratch)], capture_output=True)
    assert not private.exists()
    assert os.listdir(scratch) == []


def test_readme_sqlite_example(tmp_path: Path) -> None:
    """The sqlite store's block as written: every byte in ~/motion.db, the index beside it."""
    script = block("sh", "motionfs mount ~/Portable --store sqlite://$HOME/motion.db")
    env = dict(os.environ, HOME=str(tmp_path))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    portable = tmp_path / "Portable"
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"sqlite://{tmp_path}/motion.db" in done.stdout
        (portable / "projects" / "film").mkdir()
        (portable / "projects" / "film" / "a.txt").write_text("kept in one file\n")
    finally:
        subprocess.run(
            [sys.executable, "-m", "motionfs", "umount", str(portable)],
            env=env,
            capture_output=True,
            timeout=120,
        )
        if is_mounted(portable):
            subprocess.run(["fusermount3", "-u", "-z", str(portable)], capture_output=True)
    assert (tmp_path / "motion.db.motionfs" / "index.sqlite").is_file()
    with sqlite3.connect(tmp_path / "motion.db") as db:
        rows = db.execute("SELECT content FROM file_content WHERE path LIKE '%/a.txt'").fetchall()
    assert [bytes(r[0]) for r in rows] == [b"kept in one file\n"]
