"""motionfs.media: media metadata read from content, on media made here with PyAV and Pillow.

No fixture files are committed: every sample is encoded into a temporary
directory, so the tests also show which encoders the installed PyAV wheel has.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import pytest
from PIL import Image, ImageFont, features

from motionfs.motion import media
from motionfs.motion.media import MediaInfo, probe, probe_with_timeout, sniff_mime

SRC = Path(__file__).resolve().parents[1] / "src"

# ---------------------------------------------------------------------------
# Sample makers


def _encoder_works(name: str) -> bool:
    """True when PyAV has an encoder of this name that opens (hardware ones do not here)."""
    try:
        codec = av.codec.Codec(name, "w")
    except Exception:
        return False
    return not codec.experimental


def _canonical(encoder: str) -> str:
    """The codec name a demuxer reports for what this encoder writes (libx264 -> h264)."""
    return av.codec.Codec(encoder, "w").canonical_name


def write_video(
    path: Path,
    fmt: str,
    encoder: str,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    audio_encoder: str | None = None,
) -> None:
    """Encode a moving colour ramp (and optionally a tone) into `path`."""
    width, height = size
    with av.open(str(path), "w", format=fmt) as out:
        stream = cast(av.VideoStream, out.add_stream(encoder, rate=fps))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        audio = (
            cast(av.AudioStream, out.add_stream(audio_encoder, rate=48000))
            if audio_encoder
            else None
        )
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(
                Image.new("RGB", size, (i * 4 % 256, 100, 255 - i * 4 % 256))
            )
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is not None:
            _encode_tone(out, audio, seconds, 48000)


def _tone_frames(seconds: float, rate: int) -> Iterator[av.AudioFrame]:
    """Stereo s16 frames of a 440 Hz tone; PyAV resamples them to what the encoder takes."""
    total = round(seconds * rate)
    chunk = 1024
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        samples = []
        for i in range(start, start + n):
            v = round(math.sin(2 * math.pi * 440 * i / rate) * 8000)
            samples += [v, v]
        frame = av.AudioFrame(format="s16", layout="stereo", samples=n)
        frame.planes[0].update(struct.pack(f"<{2 * n}h", *samples))
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield frame


def _encode_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, rate: int
) -> None:
    for frame in _tone_frames(seconds, rate):
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_audio(path: Path, fmt: str, encoder: str, *, seconds: float, rate: int) -> None:
    with av.open(str(path), "w", format=fmt) as out:
        stream = cast(av.AudioStream, out.add_stream(encoder, rate=rate))
        _encode_tone(out, stream, seconds, rate)


def _first_encoder(*names: str) -> str:
    """The first of `names` this PyAV build can encode with, else skip saying which were missing."""
    for name in names:
        if _encoder_works(name):
            return name
    pytest.skip(f"PyAV {av.__version__} has none of the encoders {', '.join(names)}")


# ---------------------------------------------------------------------------
# Audio/video samples: every field checked


@dataclass(frozen=True)
class VideoCase:
    fmt: str  # FFmpeg muxer
    suffix: str
    encoders: tuple[str, ...]  # preferred first; the test asserts the one actually used
    container: str
    mime: str


VIDEO_CASES = {
    "mp4-h264": VideoCase("mp4", ".mp4", ("libx264", "h264", "mpeg4"), "mp4", "video/mp4"),
    "webm-vp9": VideoCase("webm", ".webm", ("libvpx-vp9", "libvpx"), "webm", "video/webm"),
    "mov-h264": VideoCase("mov", ".mov", ("libx264", "h264", "mpeg4"), "mov", "video/quicktime"),
    "mkv-h264": VideoCase(
        "matroska", ".mkv", ("libx264", "h264", "mpeg4"), "mkv", "video/x-matroska"
    ),
}


@pytest.mark.parametrize("case_id", list(VIDEO_CASES))
def test_video_fields(tmp_path: Path, case_id: str) -> None:
    """A 2 s 320x240 30 fps video: every field comes from the file, none missing."""
    case = VIDEO_CASES[case_id]
    encoder = _first_encoder(*case.encoders)
    path = tmp_path / f"clip{case.suffix}"
    write_video(path, case.fmt, encoder)

    info = probe(path)

    assert info.kind == "video"
    assert info.mime_type == case.mime
    assert info.container == case.container
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(30.0, abs=0.01)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert info.video_codec == _canonical(encoder)
    assert info.audio_codec is None
    assert info.bitrate_kbps is not None and info.bitrate_kbps > 0
    assert info.warnings == []
    assert sniff_mime(path) == case.mime


def test_webm_with_vp8_is_webm(tmp_path: Path) -> None:
    """VP8 in WebM (what libvpx writes) is still container webm, codec vp8."""
    encoder = _first_encoder("libvpx")
    path = tmp_path / "clip.webm"
    write_video(path, "webm", encoder, seconds=1.0)
    info = probe(path)
    assert (info.kind, info.container, info.mime_type) == ("video", "webm", "video/webm")
    assert info.video_codec == "vp8"
    assert info.fps == pytest.approx(30.0, abs=0.01)
    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)


def test_mp4_with_audio_track_reports_both_codecs(tmp_path: Path) -> None:
    """A render with sound: video fields from the video stream, audio_codec from the audio one."""
    video = _first_encoder("libx264", "h264", "mpeg4")
    audio = _first_encoder("aac", "libopus", "mp3")
    path = tmp_path / "render.mp4"
    write_video(path, "mp4", video, size=(640, 360), fps=25, audio_encoder=audio)

    info = probe(path)

    assert (info.kind, info.container, info.mime_type) == ("video", "mp4", "video/mp4")
    assert (info.width, info.height) == (640, 360)
    assert info.fps == pytest.approx(25.0, abs=0.01)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert info.video_codec == _canonical(video)
    assert info.audio_codec == _canonical(audio)
    assert info.bitrate_kbps is not None and info.bitrate_kbps > 0


@dataclass(frozen=True)
class AudioCase:
    fmt: str
    suffix: str
    encoders: tuple[str, ...]
    rate: int
    container: str
    mime: str


AUDIO_CASES = {
    "wav-pcm": AudioCase("wav", ".wav", ("pcm_s16le",), 44100, "wav", "audio/wav"),
    "mp3": AudioCase("mp3", ".mp3", ("libmp3lame", "mp3"), 44100, "mp3", "audio/mpeg"),
    "ogg-opus": AudioCase("ogg", ".ogg", ("libopus", "libvorbis"), 48000, "ogg", "audio/ogg"),
    # The "ipod" muxer writes an MP4 with major brand "M4A ".
    "m4a-aac": AudioCase("ipod", ".m4a", ("aac", "libfdk_aac"), 44100, "m4a", "audio/mp4"),
}


@pytest.mark.parametrize("case_id", list(AUDIO_CASES))
def test_audio_fields(tmp_path: Path, case_id: str) -> None:
    """1.5 s of tone: kind audio, no picture fields, duration/codec/bitrate from the file."""
    case = AUDIO_CASES[case_id]
    encoder = _first_encoder(*case.encoders)
    path = tmp_path / f"tone{case.suffix}"
    write_audio(path, case.fmt, encoder, seconds=1.5, rate=case.rate)

    info = probe(path)

    assert info.kind == "audio"
    assert info.mime_type == case.mime
    assert info.container == case.container
    assert (info.width, info.height, info.fps, info.video_codec) == (None, None, None, None)
    assert info.duration_seconds == pytest.approx(1.5, abs=0.1)
    assert info.audio_codec == _canonical(encoder)
    assert info.bitrate_kbps is not None and info.bitrate_kbps > 0
    assert info.warnings == []
    assert sniff_mime(path) == case.mime


def test_headerless_mp3_is_confirmed_by_ffmpeg(tmp_path: Path) -> None:
    """An MP3 with no ID3 tag and no Xing header starts with a bare frame sync (a weak
    signature): FFmpeg confirms it, and estimates the duration from size and bitrate."""
    encoder = _first_encoder("libmp3lame", "mp3")
    path = tmp_path / "bare.mp3"
    with av.open(
        str(path), "w", format="mp3", container_options={"write_xing": "0", "id3v2_version": "0"}
    ) as out:
        _encode_tone(out, cast(av.AudioStream, out.add_stream(encoder, rate=44100)), 3.0, 44100)
    assert path.read_bytes()[:2] == b"\xff\xfb"

    info = probe(path)

    assert (info.kind, info.container, info.mime_type, info.audio_codec) == (
        "audio",
        "mp3",
        "audio/mpeg",
        "mp3",
    )
    assert info.duration_seconds == pytest.approx(3.0, abs=0.15)
    assert info.bitrate_kbps is not None and info.bitrate_kbps > 0


def test_wav_bitrate_is_pcm_rate(tmp_path: Path) -> None:
    """PCM has an exact bitrate (44.1 kHz x 16 bit x 2 ch = 1411.2 kb/s), so check the value."""
    path = tmp_path / "tone.wav"
    write_audio(path, "wav", "pcm_s16le", seconds=1.5, rate=44100)
    assert probe(path).bitrate_kbps == pytest.approx(1411, abs=2)


# ---------------------------------------------------------------------------
# Images, SVG and fonts


def _pillow_has(module: str) -> bool:
    """Whether Pillow was built with this codec module; False for ones it predates (AVIF < 11.3)."""
    try:
        return bool(features.check_module(module))
    except ValueError:
        return False


IMAGE_CASES = {
    "png": ("PNG", "png", "image/png"),
    "jpeg": ("JPEG", "jpeg", "image/jpeg"),
    "gif": ("GIF", "gif", "image/gif"),
    "webp": ("WEBP", "webp", "image/webp"),
    "bmp": ("BMP", "bmp", "image/bmp"),
    "tiff": ("TIFF", "tiff", "image/tiff"),
    "avif": ("AVIF", "avif", "image/avif"),
}


@pytest.mark.parametrize("case_id", list(IMAGE_CASES))
def test_image_fields(tmp_path: Path, case_id: str) -> None:
    """A 64x48 image: kind, mime, container and size from its header; no A/V fields."""
    pil_format, container, mime = IMAGE_CASES[case_id]
    if pil_format in {"WEBP", "AVIF"} and not _pillow_has(pil_format.lower()):
        pytest.skip(f"this Pillow build has no {pil_format} encoder")
    path = tmp_path / f"logo.{case_id}"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format=pil_format)

    info = probe(path)

    assert info == MediaInfo(kind="image", mime_type=mime, container=container, width=64, height=48)
    assert sniff_mime(path) == mime


def test_heif_family_falls_back_to_ffmpeg_for_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ISO-BMFF still Pillow cannot read (HEIC; AVIF stands in) gets its size from FFmpeg.

    The AVIF is made by FFmpeg's own avif muxer, so this runs whatever Pillow supports.
    """
    if "avif" not in av.formats_available:
        pytest.skip(f"PyAV {av.__version__} has no avif muxer to make the sample")
    encoder = _first_encoder("libsvtav1", "libaom-av1", "librav1e")
    path = tmp_path / "still.avif"
    write_video(path, "avif", encoder, seconds=1, fps=1, size=(64, 48))
    assert path.read_bytes()[4:12] == b"ftypavif"
    monkeypatch.delitem(media.PILLOW_FORMATS, "avif")

    assert probe(path) == MediaInfo(
        kind="image", mime_type="image/avif", container="avif", width=64, height=48
    )


def test_svg_size_from_root_element(tmp_path: Path) -> None:
    """SVG is an image: size from width/height (plain or px), else from the viewBox."""
    sized = tmp_path / "a.svg"
    sized.write_text(
        '<?xml version="1.0"?>\n<!-- logo -->\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80px"><rect/></svg>\n'
    )
    boxed = tmp_path / "b.svg"
    boxed.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 150"></svg>')

    a, b = probe(sized), probe(boxed)

    assert (a.kind, a.mime_type, a.container, a.width, a.height) == (
        "image",
        "image/svg+xml",
        "svg",
        120,
        80,
    )
    assert (b.width, b.height) == (300, 150)


def test_real_truetype_font(tmp_path: Path) -> None:
    """The TrueType font Pillow embeds (load_default) is kind font, font/ttf, whatever its name."""
    if not _pillow_has("freetype2"):
        pytest.skip("Pillow built without FreeType has no embedded TrueType font to write")
    font = ImageFont.load_default(size=12)
    assert isinstance(font, ImageFont.FreeTypeFont)
    path = tmp_path / "Aileron.bin"
    path.write_bytes(font.font_bytes)

    info = probe(path)

    assert info == MediaInfo(kind="font", mime_type="font/ttf", container="ttf")


@pytest.mark.parametrize(
    ("head", "mime", "container"),
    [
        (b"OTTO\x00\x0a\x00\x80\x00\x03\x00\x20", "font/otf", "otf"),
        (b"wOFF\x00\x01\x00\x00\x00\x00\x10\x00", "font/woff", "woff"),
        (b"wOF2\x00\x01\x00\x00\x00\x00\x10\x00", "font/woff2", "woff2"),
        (b"ttcf\x00\x01\x00\x00\x00\x00\x00\x02", "font/collection", "ttc"),
    ],
)
def test_font_magic(tmp_path: Path, head: bytes, mime: str, container: str) -> None:
    """OTF/WOFF/WOFF2/TTC headers (synthetic: no encoder for them here) are fonts by magic bytes."""
    path = tmp_path / "font.dat"
    path.write_bytes(head + bytes(500))
    assert probe(path) == MediaInfo(kind="font", mime_type=mime, container=container)
    assert sniff_mime(path) == mime


# ---------------------------------------------------------------------------
# Content beats the extension


def test_png_named_mp4_is_an_image(tmp_path: Path) -> None:
    """A PNG saved as x.mp4 is image/png 64x48: the name is not believed."""
    path = tmp_path / "x.mp4"
    Image.new("RGB", (64, 48)).save(path, format="PNG")
    assert probe(path) == MediaInfo(
        kind="image", mime_type="image/png", container="png", width=64, height=48
    )


def test_mp4_named_png_is_a_video(tmp_path: Path) -> None:
    """An MP4 saved as x.png is video/mp4 with all its fields: the name is not believed."""
    encoder = _first_encoder("libx264", "h264", "mpeg4")
    path = tmp_path / "x.png"
    write_video(path, "mp4", encoder)

    info = probe(path)

    assert (info.kind, info.mime_type, info.container) == ("video", "video/mp4", "mp4")
    assert (info.width, info.height, info.video_codec) == (320, 240, _canonical(encoder))
    assert info.fps == pytest.approx(30.0, abs=0.01)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert info.warnings == []


def test_file_name_patterns_mean_nothing(tmp_path: Path) -> None:
    """FFmpeg never sees the name: "%03d" (its image-sequence pattern) opens no other file."""
    encoder = _first_encoder("libx264", "h264", "mpeg4")
    path = tmp_path / "frame%03d.png"
    write_video(path, "mp4", encoder, seconds=1.0)
    Image.new("RGB", (8, 8)).save(tmp_path / "frame001.png")
    info = probe(path)
    assert (info.kind, info.container, info.width) == ("video", "mp4", 320)


# ---------------------------------------------------------------------------
# Bad input: never an exception, a kind, and warnings


@pytest.fixture
def mp4_bytes(tmp_path: Path) -> bytes:
    """A valid 2 s MP4, as bytes to cut up."""
    path = tmp_path / "whole.mp4"
    write_video(path, "mp4", _first_encoder("libx264", "h264", "mpeg4"))
    return path.read_bytes()


def test_truncated_mp4_is_still_mp4_with_warnings(tmp_path: Path, mp4_bytes: bytes) -> None:
    """The first 1000 bytes of an MP4: its magic still says video/mp4, the rest is unknown."""
    path = tmp_path / "cut.mp4"
    path.write_bytes(mp4_bytes[:1000])

    info = probe(path)

    assert (info.kind, info.mime_type, info.container) == ("video", "video/mp4", "mp4")
    unread = (info.width, info.height, info.fps, info.duration_seconds)
    assert unread == (None, None, None, None)
    assert (info.video_codec, info.bitrate_kbps) == (None, None)
    assert any("FFmpeg cannot demux" in w for w in info.warnings)


def test_random_garbage_is_other(tmp_path: Path) -> None:
    """Random bytes are kind other with no guessed type."""
    path = tmp_path / "noise.mp4"
    path.write_bytes(random.Random(1234).randbytes(256 * 1024))

    info = probe(path)

    assert (info.kind, info.mime_type, info.container) == ("other", None, None)
    assert "unrecognized content: no known media signature" in info.warnings
    assert sniff_mime(path) is None


def test_empty_file_is_other(tmp_path: Path) -> None:
    """A zero-length file (a render not written yet) is other, warning 'empty file'."""
    path = tmp_path / "empty.mp4"
    path.touch()
    assert probe(path) == MediaInfo(kind="other", warnings=["empty file"])
    assert sniff_mime(path) is None


def test_text_file_is_other(tmp_path: Path) -> None:
    """A text file, even named .mp4, is other and the warning says it looks like text."""
    path = tmp_path / "notes.mp4"
    path.write_text("export const Root = () => <Composition id='x' />;\n" * 20)

    info = probe(path)

    assert (info.kind, info.mime_type, info.container) == ("other", None, None)
    assert "content looks like text, not media" in info.warnings


def test_mpeg_sync_lookalike_is_not_believed(tmp_path: Path) -> None:
    """Bytes that start like an MPEG audio frame but are not one: other, with both warnings."""
    path = tmp_path / "fake.mp3"
    path.write_bytes(b"\xff\xfb" + random.Random(7).randbytes(10_000))

    info = probe(path)

    assert (info.kind, info.mime_type) == ("other", None)
    assert "first bytes resemble mp3, but FFmpeg disagrees" in info.warnings


def test_missing_directory_and_fifo_are_other(tmp_path: Path) -> None:
    """No file, a directory and a FIFO (which would block a reader) give warnings at once."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    missing, directory, pipe = (
        probe(tmp_path / "nope.mp4"),
        probe(tmp_path),
        probe_with_timeout(fifo, 10),
    )

    assert missing.kind == "other" and missing.warnings[0].startswith("cannot read the file")
    assert directory == MediaInfo(kind="other", warnings=["not a regular file"])
    assert pipe == MediaInfo(kind="other", warnings=["not a regular file"])
    assert sniff_mime(fifo) is None


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from motionfs.motion.media import probe
out = {}
for name in sys.argv[1:]:
    t = time.monotonic()
    info = probe(Path(name))
    out[name] = {"seconds": time.monotonic() - t, "info": info.model_dump()}
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def test_huge_files_are_probed_in_bounded_time_and_memory(tmp_path: Path, mp4_bytes: bytes) -> None:
    """3 GiB sparse files: a real MP4 with a huge tail, and two FFmpeg pathologies.

    Unbounded, FFmpeg's MP3 parser grew one packet to 2 GiB over an MP3 frame
    followed by zeros (30 s), and its WAV reader walked 8-byte chunks of zeros
    for 400 s. Probed in a child process so its peak memory is its own.
    """
    huge = 3 * 1024**3

    def sparse(name: str, prefix: bytes) -> str:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.write(prefix)
            f.truncate(huge)
        return str(path)

    wav_header = (
        b"RIFF" + struct.pack("<I", huge - 8) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 176400, 4, 16)
    )  # fmt: skip
    mp4 = sparse("render.mp4", mp4_bytes)
    mp3 = sparse("zeros.mp3", b"\xff\xfb\x90\x00" + bytes(1000))
    wav = sparse("zeros.wav", wav_header)
    zeros = sparse("zeros.bin", b"")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mp4, mp3, wav, zeros],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    out = json.loads(done.stdout)

    assert out["maxrss_kib"] < 400 * 1024, out["maxrss_kib"]
    for name in (mp4, mp3, wav, zeros):
        assert out[name]["seconds"] < 5, (name, out[name])
    video = MediaInfo.model_validate(out[mp4]["info"])
    assert (video.kind, video.container, video.width, video.height) == ("video", "mp4", 320, 240)
    assert video.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert MediaInfo.model_validate(out[zeros]["info"]).kind == "other"
    assert MediaInfo.model_validate(out[mp3]["info"]).kind == "other"
    wav_info = MediaInfo.model_validate(out[wav]["info"])
    assert wav_info.kind == "audio" and wav_info.warnings


# ---------------------------------------------------------------------------
# probe_with_timeout


def test_probe_with_timeout_returns_the_probe(tmp_path: Path) -> None:
    """Within its time, probe_with_timeout gives exactly what probe gives."""
    path = tmp_path / "tone.wav"
    write_audio(path, "wav", "pcm_s16le", seconds=1.5, rate=44100)
    assert probe_with_timeout(path, 30) == probe(path)


def test_probe_with_timeout_on_a_hung_demuxer(
    tmp_path: Path, mp4_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demuxer that never returns: the caller gets the sniffed type and a warning on time."""
    path = tmp_path / "stuck.mp4"
    path.write_bytes(mp4_bytes)
    release = threading.Event()

    def hang(*_args: object) -> bool:
        release.wait(60)
        return False

    monkeypatch.setattr(media, "probe_av", hang)
    try:
        start = time.monotonic()
        info = probe_with_timeout(path, 0.5)
        elapsed = time.monotonic() - start
    finally:
        release.set()  # let the lingering probe thread finish

    assert elapsed < 5
    assert info == MediaInfo(
        kind="video",
        mime_type="video/mp4",
        container="mp4",
        warnings=["probe timed out after 0.5 s"],
    )


def test_probe_never_raises_on_internal_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside the probe becomes a warning, not an exception in the caller's close."""
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)

    def boom(*_args: object) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(media, "probe_image", boom)
    assert probe(path) == MediaInfo(kind="other", warnings=["probe failed: RuntimeError: bug"])
    assert probe_with_timeout(path, 10).warnings == ["probe failed: RuntimeError: bug"]
