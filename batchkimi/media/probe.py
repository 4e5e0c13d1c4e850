"""What a local (or data-URL) image or video is, read from its header.

Pillow reads an image's size without decoding its pixels; PyAV reads a video's
duration from its container. Neither reads a whole file, so ``plan`` can look at a
large archive quickly.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av


class ProbeError(Exception):
    """A file that is not the image or video its name says, or cannot be read."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.fix = fix


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int | None  # None: a format Pillow cannot read (HEIC), so unchecked
    height: int | None


@dataclass(frozen=True, slots=True)
class VideoInfo:
    duration_s: float
    width: int
    height: int


def image_info(source: Path | bytes) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError  # only a job with images loads it

    try:
        with Image.open(
            source if isinstance(source, Path) else io.BytesIO(source)
        ) as im:
            return ImageInfo(*im.size)
    except UnidentifiedImageError:
        if isinstance(source, Path) and source.suffix.lower() == ".heic":
            return ImageInfo(None, None)  # no HEIC decoder here: sent unchecked
        raise ProbeError("cannot be read as an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow will not even size an image this large (a warning becomes an error
        # where warnings are errors); it is far over the 8K the service takes
        raise ProbeError(
            f"is too large to read safely ({exc}); the service takes at most 8K "
            "(7680x4320)",
            "Scale it down before sending it",
        ) from None
    except OSError as exc:
        raise ProbeError(f"cannot be read: {exc}") from exc


def video_info(path: Path) -> VideoInfo:
    import av  # only a job with videos loads PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ProbeError("has no video stream")
            stream = container.streams.video[0]
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                raise ProbeError("does not say how long it is")
            return VideoInfo(
                duration, stream.codec_context.width, stream.codec_context.height
            )
    except av.FFmpegError as exc:
        raise ProbeError(f"cannot be read as a video ({ffmpeg_reason(exc)})") from exc


def ffmpeg_reason(exc: av.FFmpegError) -> str:
    """FFmpeg's own words, without its error number and the path said again."""
    return str(getattr(exc, "strerror", None) or exc)


def split_data_url(url: str) -> tuple[str, bytes]:
    """(MIME type, bytes) of a base64 data URL."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise ProbeError("is not a base64 data URL (data:<type>;base64,…)")
    try:
        return header[5:-7], base64.b64decode(payload, validate=True)
    except ValueError:
        raise ProbeError("has a data URL whose base64 does not decode") from None
