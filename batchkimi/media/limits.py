"""The service's documented media limits, and the checks against them. Pure.

From the Kimi page's "File limitations" (FACTS §1.4, §4.1, §5; the English and
Japanese pages agree). Each check returns a sentence naming the limit, or None, so
``plan`` and the sender say the same thing about the same file.
"""

from __future__ import annotations

import math

MB = 1024 * 1024

#: image formats by extension, with their MIME types (below 4K, all of them)
IMAGE_TYPES = {
    ".bmp": "image/bmp",
    ".jpe": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".heic": "image/heic",
}
#: above 4K (3840x2160) and up to 8K, only these
LARGE_IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".avi": "video/x-msvideo",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".flv": "video/x-flv",
    ".wmv": "video/x-ms-wmv",
}

MIN_SIDE_PX = 10  # width and height must each exceed this
MAX_ASPECT = 200  # longest side : shortest side
PIXELS_4K = 3840 * 2160
PIXELS_8K = 7680 * 4320  # the recommended maximum
IMAGE_MAX_BYTES = 10 * MB  # a file (URL or local path)
ENCODED_MAX_BYTES = 10 * MB  # a base64 data URL, as sent
VIDEO_URL_MAX_BYTES = 2 * 1024 * MB
VIDEO_LOCAL_MAX_BYTES = 100 * MB  # the temporary upload (native API only)
VIDEO_MIN_S, VIDEO_MAX_S = 2.0, 3600.0
FRAMES_MIN, FRAMES_MAX = 4, 2000
FPS_MIN, FPS_MAX, FPS_DEFAULT = 0.1, 10.0, 2.0
MAX_FRAMES_DEFAULT = 2000


def data_url_length(raw_bytes: int, mime: str) -> int:
    """The length of ``data:<mime>;base64,<…>`` for a file of ``raw_bytes``."""
    return len(f"data:{mime};base64,") + 4 * math.ceil(raw_bytes / 3)


def _mb(nbytes: float) -> str:
    return f"{nbytes / MB:,.1f} MB"


def check_image(
    width: int, height: int, mime: str, file_bytes: int | None
) -> str | None:
    """What is wrong with an image of this size and type, or None."""
    if width <= MIN_SIDE_PX or height <= MIN_SIDE_PX:
        return (
            f"is {width}x{height} px; width and height must each exceed "
            f"{MIN_SIDE_PX} px"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        return (
            f"has an aspect ratio of {ratio:,.0f}:1 ({width}x{height}); at most "
            f"{MAX_ASPECT}:1 is accepted"
        )
    pixels = width * height
    if pixels > PIXELS_4K and mime not in LARGE_IMAGE_TYPES:
        return (
            f"is {width}x{height} px, above 4K, where only JPEG and PNG are accepted "
            f"(this is {mime})"
        )
    if file_bytes is not None and file_bytes > IMAGE_MAX_BYTES:
        return f"is {_mb(file_bytes)}; an image may be at most {_mb(IMAGE_MAX_BYTES)}"
    return None


def image_advice(width: int, height: int) -> str | None:
    """What the service advises against for an image it still takes, or None. 8K is
    the *recommended* maximum (both seed pages): "higher resolutions may cause API
    call timeouts", so a larger image is sent, with a warning."""
    if width * height > PIXELS_8K:
        return (
            f"is {width}x{height} px, above the 8K (7680x4320) the service "
            "recommends: it is sent, but may time out. --fix-images shrinks it"
        )
    return None


def check_encoded(length: int, what: str) -> str | None:
    """A data URL longer than the service takes."""
    if length > ENCODED_MAX_BYTES:
        return (
            f"would be {_mb(length)} as a base64 data URL; the encoded string must be "
            f"at most {_mb(ENCODED_MAX_BYTES)} for {what}"
        )
    return None


def check_duration(seconds: float) -> str | None:
    if seconds < VIDEO_MIN_S or seconds > VIDEO_MAX_S:
        return (
            f"lasts {seconds:,.1f} s; a video must last from {VIDEO_MIN_S:g} s to "
            f"{VIDEO_MAX_S / 3600:g} hour"
        )
    return None


def check_frame_count(count: int) -> str | None:
    if not FRAMES_MIN <= count <= FRAMES_MAX:
        return (
            f"has {count:,} frames; a video given as images needs {FRAMES_MIN} to "
            f"{FRAMES_MAX:,}"
        )
    return None


def check_fps(fps: float) -> str | None:
    if not FPS_MIN <= fps <= FPS_MAX:
        return f"fps = {fps:g} is outside the accepted {FPS_MIN:g} to {FPS_MAX:g}"
    return None


def check_max_frames(max_frames: int) -> str | None:
    if not 1 <= max_frames <= MAX_FRAMES_DEFAULT:
        return f"max_frames = {max_frames} is outside 1 to {MAX_FRAMES_DEFAULT:,}"
    return None


def frames_to_sample(duration_s: float, fps: float, max_frames: int) -> int:
    """How many frames sampling at ``fps`` yields, capped at ``max_frames`` (the
    service then spreads them uniformly), and never fewer than the minimum."""
    wanted = math.floor(duration_s * fps) or 1
    return max(FRAMES_MIN, min(wanted, max_frames))
