"""Frames from a local video, sampled as the service would sample them.

For a video that cannot travel as it is (over 10 MB as base64 in compatible mode, over
100 MB natively) or when the job asks: decode with PyAV, keep one frame per ``1/fps``
seconds, spread uniformly when that exceeds ``max_frames`` (the service's own rule,
FACTS §1.4), scale to at most ``max_side`` pixels and encode as JPEG. The video is
decoded once, front to back, holding one decoded frame at a time.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from batchkimi.media.limits import FRAMES_MIN, frames_to_sample
from batchkimi.media.probe import ProbeError, ffmpeg_reason, video_info

MAX_SIDE = 768  # px: plenty for captioning, and 2,000 frames stay a few tens of MB
JPEG_QUALITY = 85


def _scaled(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    # even sizes: some pixel formats need them
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def sample_times(duration_s: float, fps: float, max_frames: int) -> list[float]:
    """The moments to keep: every 1/fps seconds, or ``max_frames`` spread evenly."""
    count = frames_to_sample(duration_s, fps, max_frames)
    step = duration_s / count
    return [step * (i + 0.5) for i in range(count)]


class ExtractionStopped(Exception):
    """The run stopped while frames were being extracted."""


def extract_frames(
    path: Path,
    *,
    fps: float,
    max_frames: int,
    max_side: int = MAX_SIDE,
    stop: threading.Event | None = None,
    threads: int = 0,
) -> list[bytes]:
    """JPEG frames of ``path`` at the sampled moments. Runs in a worker thread, which
    nothing can cancel from outside: ``stop`` is looked at after every decoded frame,
    so a run told to stop at once is not kept waiting for an hour of video.
    ``threads``: decoding threads (0: FFmpeg's choice)."""
    import av  # only a job that extracts frames loads PyAV

    info = video_info(path)
    targets = sample_times(info.duration_s, fps, max_frames)
    width, height = _scaled(info.width, info.height, max_side)
    frames: list[bytes] = []
    last: bytes | None = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if threads:
                stream.codec_context.thread_count = threads
            start = (
                float(stream.start_time * stream.time_base)
                if (stream.start_time is not None and stream.time_base is not None)
                else 0.0
            )
            for frame in container.decode(stream):
                if stop is not None and stop.is_set():
                    raise ExtractionStopped(str(path))
                moment = (frame.time or 0.0) - start
                if moment + 1e-6 < targets[len(frames)]:
                    continue
                image = frame.reformat(width=width, height=height, format="rgb24")
                buffer = io.BytesIO()
                picture = image.to_image()  # type: ignore[no-untyped-call]
                picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
                last = buffer.getvalue()
                while (
                    len(frames) < len(targets) and moment + 1e-6 >= targets[len(frames)]
                ):
                    frames.append(last)
                if len(frames) == len(targets):
                    break
    except av.FFmpegError as exc:
        raise ProbeError(f"cannot be decoded ({ffmpeg_reason(exc)})") from exc
    if last is not None:  # a container that overstates its duration: repeat the end
        frames.extend(last for _ in range(len(targets) - len(frames)))
    if len(frames) < FRAMES_MIN:
        raise ProbeError(f"gave {len(frames)} frames; at least {FRAMES_MIN} are needed")
    return frames
