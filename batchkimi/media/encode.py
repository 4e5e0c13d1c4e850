"""Media into what the wire carries: base64 data URLs, and (on request) images made
small enough to be accepted."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from batchkimi.media.limits import ENCODED_MAX_BYTES, PIXELS_4K, data_url_length

#: a re-encoded image aims under this, leaving room for the data URL's prefix
_FIT_BYTES = int(ENCODED_MAX_BYTES * 3 / 4) - 1024


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_data_url(path: Path, mime: str) -> str:
    return data_url(path.read_bytes(), mime)


def fits_as_data_url(nbytes: int, mime: str) -> bool:
    return data_url_length(nbytes, mime) <= ENCODED_MAX_BYTES


def shrink_image(path: Path) -> bytes:
    """A JPEG of ``path`` within 4K and small enough for a data URL: the fix for an
    image too large (in bytes or pixels) or in a format not accepted at its size."""
    from PIL import Image  # only a job with images to shrink loads it

    with Image.open(path) as source:
        image = source.convert("RGB")
    scale = min(1.0, (PIXELS_4K / (image.width * image.height)) ** 0.5)
    quality = 90
    while True:
        size = (max(11, int(image.width * scale)), max(11, int(image.height * scale)))
        frame = image.resize(size, Image.Resampling.LANCZOS) if scale < 1 else image
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= _FIT_BYTES:
            return buffer.getvalue()
        if quality > 60:
            quality -= 15
        else:
            scale *= 0.75
