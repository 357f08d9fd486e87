"""11-12: a Remotion project's `npm install` and `npx remotion render` (full run, or
--remotion): the application the drive is for, against its issue target of 1.3x native.

Both sides install from one npm cache, warmed by an untimed install first, with --offline:
the install then compares the filesystems (unpacking about 250 packages, 15,000 files),
not the network. The render uses a Chromium from the system (Debian's `chromium`, or
MOTIONFS_BENCH_CHROMIUM), as Remotion's own download is not reachable here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .common import Goal, progress, run
from .runner import Bench
from .targets import Target

REMOTION = "4.0.529"  # remotion and @remotion/cli must be the same version
REACT = "19.2.0"
FRAMES, WIDTH, HEIGHT = 30, 320, 180
GOAL = Goal("slowdown", 1.3, "<= 1.3x native time")
INSTALL = "npm install of a Remotion project (warm cache)"
RENDER = f"npx remotion render, {FRAMES} frames {WIDTH}x{HEIGHT}"
NPM_FLAGS = ["--offline", "--no-audit", "--no-fund", "--loglevel=error"]

PACKAGE = {
    "name": "motionfs-bench-remotion",
    "version": "1.0.0",
    "private": True,
    "dependencies": {
        "@remotion/cli": REMOTION,
        "react": REACT,
        "react-dom": REACT,
        "remotion": REMOTION,
    },
}
INDEX_TS = """\
import {registerRoot} from 'remotion';
import {RemotionRoot} from './Root';

registerRoot(RemotionRoot);
"""
ROOT_TSX = f"""\
import React from 'react';
import {{AbsoluteFill, Composition, interpolate, useCurrentFrame}} from 'remotion';

const Title: React.FC = () => {{
  const frame = useCurrentFrame();
  const opacity = interpolate(frame, [0, 20], [0, 1], {{extrapolateRight: 'clamp'}});
  return (
    <AbsoluteFill style={{{{backgroundColor: '#123456', justifyContent: 'center'}}}}>
      <h1 style={{{{color: 'white', textAlign: 'center', opacity}}}}>motionfs frame {{frame}}</h1>
    </AbsoluteFill>
  );
}};

export const RemotionRoot: React.FC = () => (
  <Composition id="Bench" component={{Title}} durationInFrames={{{FRAMES}}} fps={{30}}
    width={{{WIDTH}}} height={{{HEIGHT}}} />
);
"""


def chromium() -> str | None:
    path = os.environ.get("MOTIONFS_BENCH_CHROMIUM")
    return path or shutil.which("chromium") or shutil.which("chromium-browser")


def npm_env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "npm_config_cache": str(cache),
        "npm_config_update_notifier": "false",
        "REMOTION_DISABLE_TELEMETRY": "1",
    }


def count_files(root: Path) -> int:
    """Files and symlinks under root (what the install created), untimed."""
    return sum(len(files) for _, _, files in os.walk(root))


def write_project(d: Path) -> None:
    (d / "src").mkdir(parents=True)
    (d / "package.json").write_text(json.dumps(PACKAGE, indent=2) + "\n")
    (d / "src" / "index.ts").write_text(INDEX_TS)
    (d / "src" / "Root.tsx").write_text(ROOT_TSX)


def prepare_remotion(b: Bench) -> None:
    """Once per run, untimed: the project with its lockfile, and a warm npm cache.

    Sets b.remotion_skip (and a note under the table) when it cannot run here.
    """
    missing = [tool for tool in ("npm", "npx", "node") if not shutil.which(tool)]
    why = None
    if missing:
        why = f"{', '.join(missing)} not installed"
    elif not chromium():
        why = "no chromium (apt-get install chromium, or set MOTIONFS_BENCH_CHROMIUM)"
    if why is None:
        template, warm = b.base / "remotion-template", b.base / "remotion-warm-up"
        write_project(template)
        shutil.copytree(template, warm)
        progress("  remotion: warming the npm cache (untimed npm install)")
        try:
            flags = ["--no-audit", "--no-fund", "--loglevel=error"]
            run(["npm", "install", *flags], cwd=warm, env=npm_env(b.npm_cache), timeout=900)
            # Again from the lockfile it wrote: an install from a lockfile asks for metadata
            # the first one did not (e.g. optional peers), which --offline needs cached.
            shutil.rmtree(warm / "node_modules")
            flags.append("--prefer-offline")
            run(["npm", "install", *flags], cwd=warm, env=npm_env(b.npm_cache), timeout=900)
            shutil.copy2(warm / "package-lock.json", template / "package-lock.json")
        except Exception as e:
            why = f"the warm-up npm install failed: {b.describe(e)}"
        shutil.rmtree(warm, ignore_errors=True)
    if why is not None:
        b.remotion_skip = f"not measured: {why}"
        b.notes.append(f"11-12 (Remotion) skipped: {why}")
        progress(f"  remotion: skipped: {why}")


def remotion(b: Bench, t: Target) -> None:
    """11: npm install --offline of the project; 12: npx remotion render of it."""
    if b.remotion_skip is not None:
        b.skip(t, "11", INSTALL, b.remotion_skip, GOAL)
        b.skip(t, "12", RENDER, b.remotion_skip, GOAL)
        return
    d = t.root / "remotion"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(b.base / "remotion-template", d)
    env = npm_env(b.npm_cache)

    def check_install(_: object) -> None:
        run(["npm", "ls", "--offline", "--all"], cwd=d, env=env)  # the tree is complete
        if not (d / "node_modules" / ".bin" / "remotion").exists():
            raise RuntimeError("node_modules/.bin/remotion is missing")

    installed = b.step(
        t,
        "11",
        INSTALL,
        lambda: run(["npm", "install", *NPM_FLAGS], cwd=d, env=env, timeout=1800),
        prepare=lambda: shutil.rmtree(d / "node_modules", ignore_errors=True),
        check=check_install,
        amount=lambda _: float(count_files(d / "node_modules")),
        unit="files/s",
        goal=GOAL,
    )
    if installed.error:
        b.skip(t, "12", RENDER, "not measured: the install (11) did not succeed", GOAL)
        shutil.rmtree(d, ignore_errors=True)
        return
    out = d / "out" / "bench.mp4"
    render = ["npx", "--no-install", "remotion", "render", "src/index.ts", "Bench", str(out)]
    render += [f"--browser-executable={chromium()}", "--log=error"]

    def prepare_render() -> None:
        shutil.rmtree(d / "out", ignore_errors=True)
        shutil.rmtree(d / "node_modules" / ".cache", ignore_errors=True)  # bundle cache

    def check_render(_: object) -> None:
        data = out.read_bytes() if out.exists() else b""
        if len(data) < 1000 or data[4:8] != b"ftyp":
            raise RuntimeError(f"{out.name}: not an MP4 ({len(data)} bytes)")

    b.step(
        t,
        "12",
        RENDER,
        lambda: run(render, cwd=d, env=env, timeout=1800),
        prepare=prepare_render,
        check=check_render,
        amount=FRAMES,
        unit="frames/s",
        goal=GOAL,
    )
    shutil.rmtree(d, ignore_errors=True)
