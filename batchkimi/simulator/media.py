"""The service's media limits, as the simulator enforces them (FACTS §1.4, §4.1; the
Kimi page's "File limitations"). Written from the documentation, apart from the
client's own checks, so the two are tested against each other.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from batchkimi.simulator.reading import MediaPart

_ENCODED_MAX = 10 * 1024 * 1024  # a base64 string, as sent
_FRAMES = (4, 2000)
_FPS = (0.1, 10.0)


def _decode(url: str) -> tuple[str, bytes] | str:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return "The data URL is not base64 encoded."
    try:
        return header[5:-7], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "The base64 data of the data URL is invalid."


def _image_problem(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        return "The image could not be decoded."
    if width <= 10 or height <= 10:
        return (
            "The image length and width must be greater than 10 px "
            f"(got {width}x{height})."
        )
    if max(width, height) / min(width, height) > 200:
        return "The aspect ratio of the image must not exceed 200:1."
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
    return _image_problem(data) if want == "image/" else None


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
