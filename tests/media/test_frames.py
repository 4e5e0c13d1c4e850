"""Frames extracted from a generated video, as the service would sample them."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from PIL import Image

from batchkimi.media.frames import extract_frames, sample_times
from batchkimi.media.samples import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a yellow square crossing a blue field from left to right in 6 s
    return make_video(
        tmp_path_factory.mktemp("v") / "walk.mp4",
        seconds=6,
        fps=10,
        width=320,
        height=240,
    )


def square_x(jpeg: bytes) -> float:
    """Where the yellow square is, as a share of the width."""
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB")
        row = rgb.height // 2
        pixels = [rgb.getpixel((x, row)) for x in range(rgb.width)]
        xs = [
            x
            for x, pixel in enumerate(pixels)
            if isinstance(pixel, tuple) and pixel[0] > 150 and pixel[2] < 120
        ]
        return sum(xs) / len(xs) / rgb.width


def test_frames_are_taken_every_1_over_fps_seconds(clip: Path) -> None:
    frames = extract_frames(clip, fps=2, max_frames=2000)
    assert len(frames) == 12  # 6 s at 2 a second
    positions = [square_x(f) for f in frames]
    assert positions == sorted(positions)  # the square moves on, frame after frame
    assert positions[0] < 0.25 and positions[-1] > 0.6


def test_max_frames_spreads_the_frames_uniformly(clip: Path) -> None:
    assert sample_times(6.0, 10, 5) == pytest.approx([0.6, 1.8, 3.0, 4.2, 5.4])
    frames = extract_frames(clip, fps=10, max_frames=5)
    assert len(frames) == 5
    positions = [square_x(f) for f in frames]
    steps = [b - a for a, b in itertools.pairwise(positions)]
    assert all(step == pytest.approx(steps[0], abs=0.05) for step in steps)


def test_frames_are_jpegs_no_larger_than_max_side(clip: Path) -> None:
    frames = extract_frames(clip, fps=1, max_frames=2000, max_side=200)
    for jpeg in frames:
        with Image.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG"
            assert max(image.size) <= 200 and image.size == (200, 150)


def test_a_short_video_still_gives_the_minimum_of_four_frames(tmp_path: Path) -> None:
    short = make_video(tmp_path / "short.mp4", seconds=2, fps=10)
    assert len(extract_frames(short, fps=0.5, max_frames=2000)) == 4
