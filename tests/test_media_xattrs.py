"""Renders and assets on the mounted drive: metadata read from the media, as xattrs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import NATIVE, Drive
from test_media import write_audio, write_video

pytestmark = pytest.mark.skipif(NATIVE, reason="motionfs metadata")


def motion(path: Path, field: str) -> str:
    return os.getxattr(path, f"user.motion.{field}").decode()


def wait_described(path: Path, field: str, timeout: float = 20) -> None:
    """Probing runs after close, off the hot path: wait until it has filled `field`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if motion(path, field):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} was not described within {timeout}s")


@pytest.fixture
def film(drive: Drive) -> Drive:
    drive.project("film")
    return drive


def test_render_metadata_from_an_h264_mp4(film: Drive, tmp_path: Path) -> None:
    """cp clip.mp4 renders/film/: format, resolution, fps, duration, codec, size, sha256."""
    src = tmp_path / "clip.mp4"
    write_video(src, "mp4", "libx264")
    dst = film.path / "renders" / "film" / "clip.mp4"
    subprocess.run(["cp", str(src), str(dst)], check=True)
    wait_described(dst, "format")
    assert motion(dst, "format") == "mp4"
    assert motion(dst, "resolution") == "320x240"
    assert float(motion(dst, "fps")) == pytest.approx(30)
    assert float(motion(dst, "duration_seconds")) == pytest.approx(2.0, abs=0.1)
    assert motion(dst, "codec") == "h264"
    assert int(motion(dst, "bitrate_kbps")) > 0
    assert int(motion(dst, "file_size_bytes")) == src.stat().st_size
    assert motion(dst, "checksum") == hashlib.sha256(src.read_bytes()).hexdigest()
    project_ns = json.loads(os.getxattr(film.path / "projects" / "film", "user.motion.json"))
    model = json.loads(os.getxattr(dst, "user.motion.json"))
    assert model["project_namespace_id"].startswith("ns-")
    assert project_ns["project_name"] == "film"
    out = subprocess.run(["getfattr", "-d", str(dst)], capture_output=True, text=True, check=True)
    assert 'user.motion.codec="h264"' in out.stdout


def test_webm_render_and_asset_types_from_content(film: Drive, tmp_path: Path) -> None:
    """A VP9 WebM render; a PNG, a WAV, and a PNG named .mp4 as assets."""
    webm = tmp_path / "clip.webm"
    write_video(webm, "webm", "libvpx-vp9")
    png = tmp_path / "logo.png"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(png)
    wav = tmp_path / "tone.wav"
    write_audio(wav, "wav", "pcm_s16le", seconds=1.5, rate=44100)
    targets = {
        film.path / "renders" / "film" / "clip.webm": webm,
        film.path / "assets" / "logo.png": png,
        film.path / "assets" / "tone.wav": wav,
        film.path / "assets" / "fake.mp4": png,
    }
    for dst, src in targets.items():
        subprocess.run(["cp", str(src), str(dst)], check=True)
    clip = film.path / "renders" / "film" / "clip.webm"
    wait_described(clip, "format")
    assert (motion(clip, "format"), motion(clip, "codec")) == ("webm", "vp9")
    logo = film.path / "assets" / "logo.png"
    wait_described(logo, "mime_type")
    assert (motion(logo, "asset_type"), motion(logo, "mime_type")) == ("image", "image/png")
    assert (motion(logo, "width"), motion(logo, "height")) == ("64", "48")
    tone = film.path / "assets" / "tone.wav"
    wait_described(tone, "mime_type")
    assert motion(tone, "asset_type") == "audio"
    assert float(motion(tone, "duration_seconds")) == pytest.approx(1.5, abs=0.1)
    fake = film.path / "assets" / "fake.mp4"
    wait_described(fake, "mime_type")
    assert motion(fake, "mime_type") == "image/png"


def test_garbage_and_truncated_files_are_stored_with_empty_fields(
    film: Drive, tmp_path: Path
) -> None:
    """Bytes that are no media are never refused: stored intact, unknown fields empty."""
    src = tmp_path / "clip.mp4"
    write_video(src, "mp4", "libx264")
    truncated = src.read_bytes()[:1000]
    garbage = os.urandom(50_000)
    (film.path / "renders" / "film" / "cut.mp4").write_bytes(truncated)
    (film.path / "assets" / "noise.bin").write_bytes(garbage)
    cut = film.path / "renders" / "film" / "cut.mp4"
    noise = film.path / "assets" / "noise.bin"
    wait_described(cut, "checksum")
    wait_described(noise, "checksum")
    assert cut.read_bytes() == truncated
    assert noise.read_bytes() == garbage
    assert motion(cut, "resolution") == "" and motion(cut, "duration_seconds") == ""
    assert motion(noise, "asset_type") == "" and motion(noise, "width") == ""
    assert int(motion(noise, "file_size_bytes")) == 50_000
    assert "metadata of inode" in film.log


def test_editing_metadata_validates_and_persists(film: Drive) -> None:
    """setfattr edits editable fields; bad values are EINVAL, derived ones EACCES."""
    project = film.path / "projects" / "film"
    os.setxattr(project, "user.motion.fps", b"60")
    os.setxattr(project, "user.motion.theme", b"finance")
    asset = film.path / "assets" / "a.png"
    Image.new("RGB", (8, 8)).save(asset)
    wait_described(asset, "mime_type")
    os.setxattr(asset, "user.motion.tags", b"background, tech")
    for path, field, value, err in [
        (project, "fps", b"fast", errno.EINVAL),
        (project, "width", b"-5", errno.EINVAL),
        (project, "nosuchfield", b"1", errno.EINVAL),
        (project, "project_name", b"x", errno.EACCES),
        (asset, "checksum", b"0", errno.EACCES),
        (asset, "json", b"{}", errno.EACCES),
    ]:
        with pytest.raises(OSError) as e:
            os.setxattr(path, f"user.motion.{field}", value)
        assert e.value.errno == err, (field, value)
    assert motion(project, "fps") == "60"
    assert motion(project, "width") == "1920"
    film.remount()
    assert motion(project, "fps") == "60"
    assert motion(project, "theme") == "finance"
    assert motion(asset, "tags") == "background,tech"
    assert json.loads(os.getxattr(asset, "user.motion.json"))["tags"] == ["background", "tech"]


def test_renders_follow_a_renamed_project_and_outlive_a_deleted_one(film: Drive) -> None:
    """mv projects/film projects/movie moves renders/film too; rm -r keeps the renders."""
    clip = film.path / "renders" / "film" / "clip.bin"
    clip.write_bytes(b"frames")
    wait_described(clip, "checksum")
    ns = motion(clip, "project_namespace_id")
    os.rename(film.path / "projects" / "film", film.path / "projects" / "movie")
    moved = film.path / "renders" / "movie" / "clip.bin"
    assert moved.read_bytes() == b"frames"
    assert not (film.path / "renders" / "film").exists()
    assert motion(moved, "project_namespace_id") == ns
    assert motion(film.path / "projects" / "movie", "project_name") == "movie"
    subprocess.run(["rm", "-r", str(film.path / "projects" / "movie")], check=True)
    assert moved.read_bytes() == b"frames"
    film.remount()
    assert moved.read_bytes() == b"frames"
