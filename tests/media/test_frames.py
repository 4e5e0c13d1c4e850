"""Frames extracted from a generated video, as the service would sample them."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchkimi.media.frames import ExtractionStopped, extract_frames, sample_times
from batchkimi.media.paths import MediaRoot
from batchkimi.media.preflight import MediaSettings
from batchkimi.media.samples import make_video
from batchkimi.records import Message, RowRequest, VideoPart
from batchkimi.schedule import media


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


def test_a_stopped_extraction_ends_at_the_next_frame(clip: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(ExtractionStopped):
        extract_frames(clip, fps=2, max_frames=2000, stop=stop)


def test_cancelling_a_row_stops_its_extraction_thread(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread cannot be cancelled from outside, and a run told to stop at once
    must not wait for an hour of video to be decoded: cancelling the row's task
    tells its extraction to stop, which it does at the next frame."""
    started, cancelled, done = threading.Event(), threading.Event(), threading.Event()
    outcome: list[str] = []

    def extraction(path: Path, **kwargs: Any) -> list[bytes]:
        started.set()
        cancelled.wait(30)  # hold the thread until the row's task has been cancelled
        try:
            return extract_frames(path, **kwargs)
        except ExtractionStopped:
            outcome.append("stopped")
            raise
        finally:
            done.set()

    monkeypatch.setattr(media, "extract_frames", extraction)
    preparer = media.MediaPreparer(
        MediaSettings(native=False, video_frames="always"), uploader=None
    )
    request = RowRequest(
        index=0,
        row_id="v",
        model="kimi-k2.6",
        messages=(Message("user", (VideoPart(url=MediaRoot.uri(clip)),)),),
        parameters=(),
        enable_thinking=None,
        fingerprint="f",
    )

    async def cancel_while_extracting() -> None:
        task = asyncio.ensure_future(preparer.prepare(request))
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.set()

    asyncio.run(cancel_while_extracting())
    assert done.wait(30)
    assert outcome == ["stopped"]
