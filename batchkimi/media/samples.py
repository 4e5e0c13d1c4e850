"""Synthetic images and videos, made here, for the sample jobs, tests and benchmarks.

Nothing is downloaded: each picture is a few shapes on a coloured ground, each video a
shape crossing the frame, encoded with the FFmpeg inside PyAV. Seeded by the name, so
the same call makes the same bytes.
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 50, 47),
    "green": (40, 160, 60),
    "blue": (38, 100, 210),
    "yellow": (240, 200, 40),
    "purple": (130, 70, 180),
    "orange": (240, 130, 30),
}


def _rng(name: str) -> random.Random:
    return random.Random(hashlib.sha256(name.encode()).digest())


def draw_picture(
    width: int, height: int, *, shape: str, colour: str, ground: str, seed: str
) -> Image.Image:
    """A ``colour`` ``shape`` (circle, square or triangle) on a ``ground`` field."""
    rng = _rng(seed)
    image = Image.new("RGB", (width, height), COLOURS[ground])
    draw = ImageDraw.Draw(image)
    side = min(width, height) * rng.uniform(0.3, 0.5)
    x = rng.uniform(0.1 * width, 0.9 * width - side)
    y = rng.uniform(0.1 * height, 0.9 * height - side)
    box = (x, y, x + side, y + side)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.polygon(
            [(x, y + side), (x + side / 2, y), (x + side, y + side)],
            fill=COLOURS[colour],
        )
    return image


def make_image(path: Path, width: int = 320, height: int = 240, **kind: str) -> Path:
    """Save a picture (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = draw_picture(
        width,
        height,
        shape=kind.get("shape", "circle"),
        colour=kind.get("colour", "red"),
        ground=kind.get("ground", "blue"),
        seed=path.name,
    )
    picture.save(path)
    return path


def make_video(
    path: Path,
    *,
    seconds: float = 4.0,
    fps: int = 10,
    width: int = 160,
    height: int = 120,
    colour: str = "yellow",
    ground: str = "blue",
) -> Path:
    """An MP4 (H.264) of a ``colour`` square crossing a ``ground`` field."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = max(1, round(seconds * fps))
    side = height // 3
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(frames):
            image = Image.new("RGB", (width, height), COLOURS[ground])
            x = int((width - side) * i / max(1, frames - 1))
            ImageDraw.Draw(image).rectangle(
                (x, height // 3, x + side, height // 3 + side), fill=COLOURS[colour]
            )
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
