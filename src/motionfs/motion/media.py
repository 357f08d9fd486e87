"""Media metadata read from file content: what a render or asset really is.

RenderMetadata and AssetMetadata (format, resolution, fps, duration, codec,
bitrate, mime type) must describe the bytes a user stored, not what the file
name claims, so the type is sniffed from magic bytes first and then confirmed
by FFmpeg's demuxers (PyAV) for audio/video or Pillow for images. Both only
read headers and a bounded probe window, never the whole file (bounded memory).

`probe` never raises: a file that is empty, truncated, garbage, text, a FIFO or
huge still gives a MediaInfo, with None where nothing could be read and one
warning string per failure, because a metadata read must never fail the close
or upload of the file it describes.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import av
from av.container import InputContainer
from av.stream import Disposition
from PIL import Image
from pydantic import BaseModel, Field

Kind = Literal["video", "image", "audio", "font", "other"]

# How many leading bytes the magic-byte sniffer looks at. Small on purpose:
# every signature we know sits in the first few bytes (SVG's root tag aside).
SNIFF_BYTES = 4096

# FFmpeg probe bounds: how many bytes, and how many microseconds of media, the
# demuxer may read to find stream parameters. Headers of MP4/MOV/MKV/WebM/WAV
# carry everything we need, so 2 MiB / 3 s is ample (FFmpeg's defaults are 5 MB / 5 s).
PROBE_BYTES = 2 * 1024 * 1024
ANALYZE_MICROSECONDS = 3_000_000

# Hard cap on the bytes FFmpeg may read from one file, seeks not counted. The
# probe limits above are checked between packets only: on a 3 GiB file of an
# MP3 frame followed by zeros, FFmpeg's MP3 parser grows one "packet" to the
# whole file (2 GiB of memory, 30 s); a WAV header followed by zeros makes it
# walk 8-byte chunks for minutes. Past the cap reads return EOF. A long
# render's MP4 index (moov) is a few MiB, so 32 MiB leaves room.
READ_BUDGET_BYTES = 32 * 1024 * 1024
# Cap on seeks, for the same reason: the WAV walk above seeks twice per 8-byte
# chunk (PyAV does not answer FFmpeg's size query, so FFmpeg measures the file
# by seeking to its end and back), a few µs each through Python. Real headers
# need a handful of seeks.
SEEK_BUDGET = 65_536

# Demuxers FFmpeg may pick when probing. Anything else (image2 with its
# "%d" file-name patterns, concat, hls, tty, subtitle formats...) is refused:
# some of them open other files, and none of them is a render or an asset.
_FORMAT_WHITELIST = ",".join(
    [
        "mov",
        "matroska",
        "wav",
        "w64",
        "avi",
        "ogg",
        "flac",
        "mp3",
        "aac",
        "flv",
        "mpegts",
        "mpeg",
        "asf",
        "aiff",
        "caf",
        "ivf",
    ]
)

_WEBM_VIDEO_CODECS = frozenset({"vp8", "vp9", "av1"})
_WEBM_AUDIO_CODECS = frozenset({"vorbis", "opus"})

# (container, kind) -> MIME type, for what the demuxer confirmed.
_MIME: dict[tuple[str, str], str] = {
    ("mp4", "video"): "video/mp4",
    ("mp4", "audio"): "audio/mp4",
    ("m4a", "audio"): "audio/mp4",
    ("m4a", "video"): "video/mp4",
    ("mov", "video"): "video/quicktime",
    ("mov", "audio"): "audio/mp4",
    ("3gp", "video"): "video/3gpp",
    ("3gp", "audio"): "audio/3gpp",
    ("webm", "video"): "video/webm",
    ("webm", "audio"): "audio/webm",
    ("mkv", "video"): "video/x-matroska",
    ("mkv", "audio"): "audio/x-matroska",
    ("ogg", "video"): "video/ogg",
    ("ogg", "audio"): "audio/ogg",
    ("avi", "video"): "video/x-msvideo",
    ("avi", "audio"): "video/x-msvideo",
    ("flv", "video"): "video/x-flv",
    ("flv", "audio"): "video/x-flv",
    ("ts", "video"): "video/mp2t",
    ("ts", "audio"): "video/mp2t",
    ("mpg", "video"): "video/mpeg",
    ("mpg", "audio"): "video/mpeg",
    ("asf", "video"): "video/x-ms-asf",
    ("asf", "audio"): "audio/x-ms-wma",
    ("wav", "audio"): "audio/wav",
    ("w64", "audio"): "audio/wav",
    ("mp3", "audio"): "audio/mpeg",
    ("aac", "audio"): "audio/aac",
    ("flac", "audio"): "audio/flac",
    ("aiff", "audio"): "audio/aiff",
    ("caf", "audio"): "audio/x-caf",
    ("ivf", "video"): "video/x-ivf",
}

# Container name -> Pillow format name, for images Pillow reads headers of.
PILLOW_FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
    "avif": "AVIF",
}


class MediaInfo(BaseModel):
    """What a file's content says it is; None where it could not be read."""

    kind: Kind
    mime_type: str | None = None
    container: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_seconds: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    bitrate_kbps: int | None = None
    warnings: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Sniffed:
    """A magic-byte verdict: a guess that the demuxer or Pillow then confirms."""

    kind: Kind
    mime: str
    container: str
    # FFmpeg demuxer to force (strong magic only), so probing cannot drift to
    # another format because of the file name; None lets FFmpeg probe.
    demuxer: str | None = None
    # A signature that random bytes match often (MPEG sync words): believed
    # only once FFmpeg has read the file.
    weak: bool = False


# ---------------------------------------------------------------------------
# Magic bytes


def _ftyp_sniff(brand: bytes) -> Sniffed:
    """ISO-BMFF major brand -> what the file is (MP4, MOV, M4A, 3GP, HEIF...)."""
    b = brand.decode("latin-1").strip().lower()
    if b == "qt":
        return Sniffed("video", "video/quicktime", "mov", "mov")
    if b in {"m4a", "m4b", "m4p"}:
        return Sniffed("audio", "audio/mp4", "m4a", "mov")
    if b in {"avif", "avis"}:
        return Sniffed("image", "image/avif", "avif", "mov")
    if b in {"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"}:
        return Sniffed("image", "image/heic", "heic", "mov")
    if b.startswith(("3gp", "3gg", "3gs")):
        return Sniffed("video", "video/3gpp", "3gp", "mov")
    if b.startswith("3g2"):
        return Sniffed("video", "video/3gpp2", "3gp", "mov")
    return Sniffed("video", "video/mp4", "mp4", "mov")


def _ebml_doctype(head: bytes) -> str | None:
    """The EBML DocType ("webm" or "matroska") from a Matroska header, if present."""
    i = head.find(b"\x42\x82", 4, 64)
    if i < 0 or i + 3 > len(head):
        return None
    size_byte = head[i + 2]
    if not size_byte & 0x80:  # only the 1-byte size form, as every muxer writes it
        return None
    size = size_byte & 0x7F
    return head[i + 3 : i + 3 + size].decode("ascii", "replace").rstrip("\0").lower()


def _looks_like_sfnt(head: bytes) -> bool:
    """A TrueType table directory: 0x00010000 is too weak a magic on its own."""
    if len(head) < 12:
        return False
    num_tables = int.from_bytes(head[4:6], "big")
    return 1 <= num_tables <= 64


_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def _looks_like_bmp(head: bytes) -> bool:
    """'BM' plus a known DIB header size, since 'BM' alone is common in text."""
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES


_SVG_START = re.compile(
    rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*|<!doctype[^>]*>\s*)*<svg[\s>]", re.S | re.I
)


def _sniff(head: bytes) -> Sniffed | None:
    """Classify the first bytes of a file; None when no known signature matches."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png", "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg", "jpeg")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed("image", "image/gif", "gif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp", "webp")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Sniffed("image", "image/tiff", "tiff")
    if head.startswith(b"BM") and _looks_like_bmp(head):
        return Sniffed("image", "image/bmp", "bmp")
    if head.startswith(b"wOFF"):
        return Sniffed("font", "font/woff", "woff")
    if head.startswith(b"wOF2"):
        return Sniffed("font", "font/woff2", "woff2")
    if head.startswith(b"OTTO") and _looks_like_sfnt(head):
        return Sniffed("font", "font/otf", "otf")
    if head.startswith((b"\x00\x01\x00\x00", b"true")) and _looks_like_sfnt(head):
        return Sniffed("font", "font/ttf", "ttf")
    if head.startswith(b"ttcf"):
        return Sniffed("font", "font/collection", "ttc")
    if head[4:8] == b"ftyp":
        return _ftyp_sniff(head[8:12])
    if head[4:8] in {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}:
        return Sniffed("video", "video/quicktime", "mov", "mov")  # QuickTime without ftyp
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        if _ebml_doctype(head) == "webm":
            return Sniffed("video", "video/webm", "webm", "matroska")
        return Sniffed("video", "video/x-matroska", "mkv", "matroska")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return Sniffed("audio", "audio/wav", "wav", "wav")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Sniffed("video", "video/x-msvideo", "avi", "avi")
    if head.startswith(b"FORM") and head[8:12] in {b"AIFF", b"AIFC"}:
        return Sniffed("audio", "audio/aiff", "aiff", "aiff")
    if head.startswith(b"OggS"):
        return Sniffed("audio", "audio/ogg", "ogg", "ogg")
    if head.startswith(b"fLaC"):
        return Sniffed("audio", "audio/flac", "flac", "flac")
    if head.startswith(b"FLV\x01"):
        return Sniffed("video", "video/x-flv", "flv", "flv")
    if head.startswith(b"DKIF"):
        return Sniffed("video", "video/x-ivf", "ivf", "ivf")
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return Sniffed("video", "video/mp2t", "ts", "mpegts")
    # Weak signatures below: FFmpeg probes (no forced demuxer) to confirm them.
    if head.startswith(b"\x00\x00\x01\xba"):
        return Sniffed("video", "video/mpeg", "mpg", weak=True)
    if head.startswith(b"ID3") and head[3:4] in {b"\x02", b"\x03", b"\x04"}:
        return Sniffed("audio", "audio/mpeg", "mp3")  # ID3 may also precede AAC or FLAC
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return Sniffed("audio", "audio/aac", "aac", weak=True)  # ADTS: sync + layer 00
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return Sniffed("audio", "audio/mpeg", "mp3", weak=True)  # MPEG audio frame sync
    if _SVG_START.match(head.removeprefix(b"\xef\xbb\xbf")):
        return Sniffed("image", "image/svg+xml", "svg")
    return None


def _read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first `size` bytes; raises OSError."""
    with open(path, "rb") as f:
        return f.read(size)


def sniff_mime(path: Path) -> str | None:
    """MIME type from a file's first bytes, whatever its name; None if unknown.

    Cheaper than `probe` (one small read, no demuxer), for callers that only
    need a type. Unreadable and non-regular files give None.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        sniffed = _sniff(_read_head(path))
    except OSError:
        return None
    return sniffed.mime if sniffed else None


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without NULs: say so in the warning, it is the usual wrong upload."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a character cut at the sniff boundary
    return True


# ---------------------------------------------------------------------------
# Images (Pillow) and SVG


_SVG_TAG = re.compile(rb"<svg\b[^>]*>", re.S | re.I)
_SVG_LENGTH = r'\s{0}\s*=\s*["\']\s*([0-9]+(?:\.[0-9]+)?)\s*(?:px)?\s*["\']'
_SVG_VIEWBOX = re.compile(
    rb'\sviewBox\s*=\s*["\']\s*[-0-9.]+[\s,]+[-0-9.]+[\s,]+([0-9.]+)[\s,]+([0-9.]+)\s*["\']', re.I
)


def _svg_size(head: bytes) -> tuple[int | None, int | None]:
    """Pixel size from the root tag's width/height (plain or px), else its viewBox."""
    tag = _SVG_TAG.search(head)
    if tag is None:
        return None, None
    text = tag.group(0)
    w = re.search(_SVG_LENGTH.format("width").encode(), text)
    h = re.search(_SVG_LENGTH.format("height").encode(), text)
    if w and h:
        return round(float(w.group(1))), round(float(h.group(1)))
    vb = _SVG_VIEWBOX.search(text)
    if vb:
        try:
            return round(float(vb.group(1))), round(float(vb.group(2)))
        except ValueError:
            pass
    return None, None


def probe_image(path: Path, sniffed: Sniffed, head: bytes, info: MediaInfo) -> bool:
    """Fill width/height from the image header; False if Pillow cannot read it."""
    if sniffed.container == "svg":
        info.width, info.height = _svg_size(head)
        if info.width is None:
            info.warnings.append("SVG root element has no pixel width/height or viewBox")
        return True
    pil_format = PILLOW_FORMATS.get(sniffed.container)
    Image.init()
    if pil_format is None or pil_format not in Image.OPEN:
        return False
    try:
        # Image.open parses the header only; pixel data is decoded lazily, never here.
        with Image.open(path, formats=[pil_format]) as im:
            info.width, info.height = im.size
    except Exception as e:
        info.warnings.append(f"cannot read {sniffed.container} image header: {_describe(e)}")
    return True


# ---------------------------------------------------------------------------
# Audio and video (PyAV / FFmpeg)


class _BudgetedReader:
    """A binary file FFmpeg may read at most `budget` bytes of; then it sees EOF.

    Seeks do not count against the bytes, so FFmpeg can still jump to an MP4
    index at the end of a file or to a Matroska cue table, but there are at
    most SEEK_BUDGET of them; past that seeks fail and reads see EOF. Failures
    are return values, not exceptions: PyAV prints exceptions raised in its
    I/O callbacks, and FFmpeg ignores some seek errors anyway (only EOF ends
    its WAV chunk walk).
    """

    def __init__(self, raw: BinaryIO, budget: int) -> None:
        self._raw = raw
        self._remaining = budget
        self._seeks_left = SEEK_BUDGET
        self._file_size = os.fstat(raw.fileno()).st_size
        self.exhausted = False  # a read was cut short by the budget, not by the file's end

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._remaining:
            size = self._remaining
            if self._raw.tell() + size < self._file_size:
                self.exhausted = True
        if size == 0:
            return b""
        data = self._raw.read(size)
        self._remaining -= len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self._seeks_left <= 0:
            self.exhausted = True
            self._remaining = 0
            return -1  # FFmpeg reads a negative result as a failed seek
        self._seeks_left -= 1
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True


def _container_name(
    format_name: str,
    sniffed: Sniffed | None,
    head: bytes,
    brand: str | None,
    video_codecs: list[str],
    audio_codecs: list[str],
) -> str:
    """A short container name ("mp4", "mov", "webm", "mkv"...) for a demuxer name.

    FFmpeg names demuxer families ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"),
    so the family member comes from the MP4 major brand or the EBML DocType,
    and failing that from whether the codecs are WebM's.
    """
    family = format_name.split(",")[0]  # a forced demuxer reports the name it was given
    if family == "mov":
        if brand is not None:
            return _ftyp_sniff(brand.ljust(4).encode("latin-1", "replace")[:4]).container
        return sniffed.container if sniffed else "mov"
    if family in {"matroska", "webm"}:
        doctype = _ebml_doctype(head)
        if doctype in {"webm", "matroska"}:
            return "webm" if doctype == "webm" else "mkv"
        webmish = all(c in _WEBM_VIDEO_CODECS for c in video_codecs) and all(
            c in _WEBM_AUDIO_CODECS for c in audio_codecs
        )
        return "webm" if webmish and (video_codecs or audio_codecs) else "mkv"
    return {"mpegts": "ts", "mpeg": "mpg"}.get(family, family)


def _rate(value: Fraction | None) -> float | None:
    """A frame rate as float, None for FFmpeg's 0/1 'unknown'."""
    if value is None or value.numerator <= 0 or value.denominator <= 0:
        return None
    return float(value)


def probe_av(path: Path, sniffed: Sniffed | None, head: bytes, size: int, info: MediaInfo) -> bool:
    """Fill kind, container, codecs, size, fps, duration and bitrate from FFmpeg.

    False (and a warning) when FFmpeg cannot open the file at all.
    """
    options = {
        "probesize": str(PROBE_BYTES),
        "analyzeduration": str(ANALYZE_MICROSECONDS),
        "format_whitelist": _FORMAT_WHITELIST,
    }
    try:
        with open(path, "rb") as raw:
            # A file object, not the path: FFmpeg reads through the budget, cannot
            # see the file name (so the type comes from the content alone, and
            # names like "concat:x" or "frame%03d.png" mean nothing), and opens no
            # other file or URL.
            reader = _BudgetedReader(raw, READ_BUDGET_BYTES)
            try:
                with av.open(
                    reader,
                    mode="r",
                    format=sniffed.demuxer if sniffed else None,
                    container_options=options,
                    metadata_errors="replace",
                ) as container:
                    _read_container(container, sniffed, head, size, info)
            except Exception as e:
                info.warnings.append(f"FFmpeg cannot demux the file: {_describe(e)}")
                return False
            finally:
                if reader.exhausted:
                    info.warnings.append(
                        f"stopped reading at the probe's limit ({READ_BUDGET_BYTES} bytes,"
                        f" {SEEK_BUDGET} seeks): values may be incomplete"
                    )
    except OSError as e:
        info.warnings.append(f"cannot read the file: {_describe(e)}")
        return False
    return True


def _read_container(
    container: InputContainer,
    sniffed: Sniffed | None,
    head: bytes,
    size: int,
    info: MediaInfo,
) -> None:
    """Copy what an opened container says into `info`."""
    format_name = container.format.name
    videos = [
        s
        for s in container.streams.video
        if not s.disposition & Disposition.attached_pic  # cover art is not video
    ]
    audios = list(container.streams.audio)
    video_codecs = [s.codec_context.codec.canonical_name for s in videos]
    audio_codecs = [s.codec_context.codec.canonical_name for s in audios]

    if videos:
        info.kind = "video"
        v = videos[0]
        info.width = v.codec_context.width or None
        info.height = v.codec_context.height or None
        info.fps = _rate(v.average_rate) or _rate(v.guessed_rate)
        if info.fps is None:
            info.warnings.append("video stream has no frame rate")
    elif audios:
        info.kind = "audio"
    else:
        info.kind = "other"
        info.warnings.append(f"{format_name} container has no audio or video stream")
    info.video_codec = video_codecs[0] if video_codecs else None
    info.audio_codec = audio_codecs[0] if audio_codecs else None
    info.container = _container_name(
        format_name,
        sniffed,
        head,
        container.metadata.get("major_brand"),
        video_codecs,
        audio_codecs,
    )
    info.mime_type = _MIME.get((info.container, info.kind)) or (sniffed.mime if sniffed else None)

    duration: float | None = None
    if container.duration is not None and container.duration > 0:
        duration = container.duration / av.time_base
    else:
        for s in [*videos, *audios]:
            if s.duration is not None and s.duration > 0 and s.time_base is not None:
                duration = float(s.duration * s.time_base)
                break
    if duration is None and container.bit_rate and size > 0:
        # FFmpeg usually makes this estimate itself (headerless CBR MP3); this
        # covers demuxers that leave it to the caller.
        duration = size * 8 / container.bit_rate
        info.warnings.append("duration estimated from file size and bitrate")
    info.duration_seconds = duration
    if duration is None and info.kind in {"video", "audio"}:
        info.warnings.append("duration unknown")

    if container.bit_rate and container.bit_rate > 0:
        info.bitrate_kbps = max(1, round(container.bit_rate / 1000))
    elif duration and size > 0:
        info.bitrate_kbps = max(1, round(size * 8 / duration / 1000))
    elif info.kind in {"video", "audio"}:
        info.warnings.append("bitrate unknown")


# ---------------------------------------------------------------------------
# Entry points


def _describe(e: BaseException) -> str:
    """'Type: message' for a warning; FFmpeg errors without their '<none>' file name."""
    if isinstance(e, av.FFmpegError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {e}"


class _Progress:
    """What a probe has learned so far, so a timed-out probe can still report it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sniffed: Sniffed | None = None

    def partial(self) -> MediaInfo:
        with self.lock:
            s = self.sniffed
        if s is None:
            return MediaInfo(kind="other")
        return MediaInfo(kind=s.kind, mime_type=s.mime, container=s.container)


def _probe(path: Path, progress: _Progress) -> MediaInfo:
    info = MediaInfo(kind="other")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            # FIFOs and devices block or never end; directories have no content.
            info.warnings.append("not a regular file")
            return info
        if st.st_size == 0:
            info.warnings.append("empty file")
            return info
        head = _read_head(path)
    except OSError as e:
        info.warnings.append(f"cannot read the file: {_describe(e)}")
        return info

    sniffed = _sniff(head)
    with progress.lock:
        progress.sniffed = sniffed
    if sniffed is not None:
        info.kind = sniffed.kind
        info.mime_type = sniffed.mime
        info.container = sniffed.container

    if sniffed is not None and sniffed.kind == "font":
        return info
    if sniffed is not None and sniffed.kind == "image":
        if probe_image(path, sniffed, head, info):
            return info
        if sniffed.demuxer is None:
            info.warnings.append(f"no reader for {sniffed.container} image headers")
            return info
        # HEIF/AVIF Pillow cannot read: FFmpeg's mov demuxer knows their size.
        image_info = info.model_copy(update={"warnings": []})
        probe_av(path, sniffed, head, st.st_size, image_info)
        info.width, info.height = image_info.width, image_info.height
        if info.width is None:  # A/V complaints (no duration...) are noise for a still
            info.warnings.extend(image_info.warnings)
        return info

    if probe_av(path, sniffed, head, st.st_size, info):
        return info
    if sniffed is not None and not sniffed.weak:
        return info  # e.g. a truncated MP4: still an MP4, with what could not be read
    if sniffed is not None:
        info.warnings.append(f"first bytes resemble {sniffed.container}, but FFmpeg disagrees")
    info.kind, info.mime_type, info.container = "other", None, None
    if _looks_like_text(head):
        info.warnings.append("content looks like text, not media")
    else:
        info.warnings.append("unrecognized content: no known media signature")
    return info


def probe(path: Path) -> MediaInfo:
    """Read media metadata from `path`'s content; never raises.

    Type comes from magic bytes and the demuxer, not the extension: a PNG named
    `x.mp4` is image/png. Reads the first 4 KiB, then headers only (Pillow) or,
    through FFmpeg, at most READ_BUDGET_BYTES with at most SEEK_BUDGET seeks, so
    memory and time do not grow with file size. For a wall-clock bound on top
    (a slow or hung backing store), use `probe_with_timeout`.
    """
    try:
        return _probe(path, _Progress())
    except Exception as e:  # a bug here must not fail the caller's close/upload
        return MediaInfo(kind="other", warnings=[f"probe failed: {_describe(e)}"])


def probe_with_timeout(path: Path, seconds: float) -> MediaInfo:
    """`probe` bounded in wall-clock time; on timeout, what the sniffer saw plus a warning.

    The probe runs in a daemon thread. Python cannot stop a thread, and FFmpeg
    runs outside the GIL, so on timeout that thread lingers until the read it is
    blocked in returns (or the process exits); its result is then discarded.
    Callers should not start unbounded numbers of probes on a hung store.
    """
    progress = _Progress()
    result: list[MediaInfo] = []

    def run() -> None:
        try:
            result.append(_probe(path, progress))
        except Exception as e:
            result.append(MediaInfo(kind="other", warnings=[f"probe failed: {_describe(e)}"]))

    thread = threading.Thread(target=run, name=f"motionfs-probe:{path.name}", daemon=True)
    thread.start()
    thread.join(seconds)
    if result:
        return result[0]
    info = progress.partial()
    info.warnings.append(f"probe timed out after {seconds:g} s")
    return info
