"""The service's media limits, as the simulator enforces them (FACTS §1.4, §4.1, §6.5;
the Kimi page's "File limitations"). Written from the documentation, apart from the
client's own checks, so the two are tested against each other.

Images: each side over 10 px, at most 200:1, in a format the page lists; above 4K
(3840x2160 pixels' worth) only JPEG and PNG. 8K (7680x4320) is the *recommended*
maximum, not a limit: larger images are accepted. Videos sent as data URLs: 2 s to
1 hour, in one of the listed containers (read with PyAV).
"""

from __future__ import annotations

import base64
import binascii
import io

import av
from PIL import Image, UnidentifiedImageError

from batchkimi.simulator.reading import MediaPart

_ENCODED_MAX = 10 * 1024 * 1024  # a base64 string, as sent
_FRAMES = (4, 2000)
_FPS = (0.1, 10.0)
_PIXELS_4K = 3840 * 2160
#: the page's formats below 4K (Pillow's names; MPO is a camera's JPEG); HEIC,
#: which Pillow cannot read, is recognised by its file type box
_FORMATS = frozenset({"BMP", "JPEG", "MPO", "PNG", "TIFF", "WEBP"})
_LARGE_FORMATS = frozenset({"JPEG", "MPO", "PNG"})
_HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1")
_VIDEO_S = (2.0, 3600.0)
#: MP4, AVI, MKV, MOV, FLV, WMV as FFmpeg names their containers (WMV is ASF)
_CONTAINERS = frozenset({"mp4", "mov", "avi", "matroska", "flv", "asf"})


def _decode(url: str) -> tuple[str, bytes] | str:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return "The data URL is not base64 encoded."
    try:
        return header[5:-7], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "The base64 data of the data URL is invalid."


def _image_problem(data: bytes, mime: str) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind = image.format or ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # too many pixels for Pillow to size safely: far above 8K, which is only
        # the recommended maximum; the 4K format rule still holds, by the MIME type
        if mime not in ("image/jpeg", "image/jpg", "image/png"):
            return "Images above 4K (3840x2160) must be JPEG or PNG."
        return None
    except (UnidentifiedImageError, OSError):
        if data[4:8] == b"ftyp" and data[8:12] in _HEIC_BRANDS:
            return None  # HEIC is listed; Pillow cannot size it, nor can we
        return "The image could not be decoded."
    if kind not in _FORMATS:
        return (
            f"The image format {kind or 'unknown'} is not supported: use BMP, JPEG, "
            "PNG, TIFF, WEBP or HEIC."
        )
    if width <= 10 or height <= 10:
        return (
            "The image length and width must be greater than 10 px "
            f"(got {width}x{height})."
        )
    if max(width, height) / min(width, height) > 200:
        return "The aspect ratio of the image must not exceed 200:1."
    if width * height > _PIXELS_4K and kind not in _LARGE_FORMATS:
        return (
            f"Images above 4K (3840x2160) must be JPEG or PNG; this one is "
            f"{width}x{height} {kind}."
        )
    return None


def _video_problem(data: bytes) -> str | None:
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            names = set(container.format.name.split(","))
            seconds = (container.duration or 0) / av.time_base
            if not seconds and container.streams.video:
                stream = container.streams.video[0]
                if stream.duration is not None and stream.time_base is not None:
                    seconds = float(stream.duration * stream.time_base)
    except (av.FFmpegError, ValueError):
        return "The video could not be decoded."
    if not names & _CONTAINERS:
        return (
            f"The video format {container.format.name} is not supported: use MP4, "
            "AVI, MKV, MOV, FLV or WMV."
        )
    if not _VIDEO_S[0] <= seconds <= _VIDEO_S[1]:
        return (
            f"The video duration must be between 2 seconds and 1 hour "
            f"(got {seconds:.1f} s)."
        )
    return None


def _data_url_problem(url: str, kind: str) -> str | None:
    if len(url) > _ENCODED_MAX:
        return "The base64-encoded media exceeds the 10 MB limit."
    decoded = _decode(url)
    if isinstance(decoded, str):
        return decoded
    mime, data = decoded
    want = "image/" if kind in ("image", "frames") else "video/"
    if not mime.startswith(want):
        return f"The data URL type {mime or '(none)'} is not {want}*."
    return _image_problem(data, mime) if want == "image/" else _video_problem(data)


def media_problem(part: MediaPart) -> str | None:
    """Why the service would refuse this part (400 InvalidParameter), or None."""
    if part.kind == "frames" and not _FRAMES[0] <= len(part.urls) <= _FRAMES[1]:
        return (
            f"The number of images in a video list must be between {_FRAMES[0]} and "
            f"{_FRAMES[1]} (got {len(part.urls)})."
        )
    if part.fps is not None and (
        not isinstance(part.fps, int | float) or not _FPS[0] <= part.fps <= _FPS[1]
    ):
        return f"The fps must be in [{_FPS[0]}, {_FPS[1]}]."
    if part.max_frames is not None and (
        not isinstance(part.max_frames, int) or not 1 <= part.max_frames <= _FRAMES[1]
    ):
        return f"The max_frames must be at most {_FRAMES[1]}."
    for url in part.urls:
        if url.startswith("data:") and (problem := _data_url_problem(url, part.kind)):
            return problem
    return None
