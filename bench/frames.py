"""Captioning a folder of local videos with frames extracted here: frames/s and peak
memory, against a bare PyAV loop doing the same extraction, in the same run.

200 generated 30-second videos (640x360, 25 fps, H.264; cached between runs) are
captioned by ``batchkimi run -i 'videos/*.mp4' --video-frames always``: each video is
decoded, sampled at 2 frames a second (60 frames), JPEG-encoded and sent as a frame
list to a zero-latency simulator (on core 0). The baseline, on the same core 1 as the
run, is a bare loop doing the same extraction (decode, keep the sampled frames,
convert to RGB with ``reformat``, JPEG at quality 85), one video after another, with
nothing sent: the ratio is what the rest of a run (base64, requests, journal,
Parquet) costs on top of the extraction itself. The bare loop runs with glibc told to
keep freed memory (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``): otherwise it
hands each frame's buffers back to the kernel and spends a third of its time in page
faults, which batchkimi's larger heap never does, and the baseline would be slower
than the run. The run's results are read back to check that every video was captioned.

    .venv/bin/python bench/frames.py [--videos 200] [--seconds 30] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, make_archive, measure, simulator

BARE_LOOP = """
import io, sys, av
from pathlib import Path
total = 0
for path in sorted(Path(sys.argv[1]).glob("*.mp4")):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = container.duration / av.time_base
        count = min(2000, max(4, int(duration * 2)))
        targets = [duration / count * (i + 0.5) for i in range(count)]
        kept = []
        for frame in container.decode(stream):
            if len(kept) == count:
                break
            if (frame.time or 0.0) + 1e-6 < targets[len(kept)]:
                continue
            rgb = frame.reformat(width=frame.width, height=frame.height, format="rgb24")
            buffer = io.BytesIO()
            rgb.to_image().save(buffer, format="JPEG", quality=85)
            kept.append(buffer.getvalue())
        total += len(kept)
print(total)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "batchkimi-bench"
    )
    args = parser.parse_args()
    archive = make_archive(
        args.cache / f"videos-{args.videos}x{args.seconds:g}s",
        args.videos,
        args.seconds,
    )
    frames = args.videos * min(2000, max(4, int(args.seconds * 2)))
    with simulator(core=0) as url, tempfile.TemporaryDirectory() as tmp:
        env = bench_env(str(Path(tmp) / "state"))
        bare = [sys.executable, "-c", BARE_LOOP, str(archive)]
        run = batchkimi_run(
            archive / "*.mp4",
            Path(tmp) / "out",
            url,
            *("--video-frames", "always", "--no-stream"),
            *("--concurrency", str(args.concurrency)),
            prompt="Describe this video in one sentence.",
        )
        print(
            f"{args.videos} videos of {args.seconds:g} s (640x360, 25 fps), 2 frames "
            f"a second: {frames:,} frames; client on core 1, simulator on core 0"
        )
        print(f"{'':30} {'frames/s':>9} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}")
        rates = {}
        keep_heap = {"MALLOC_TRIM_THRESHOLD_": "8000000", "MALLOC_TOP_PAD_": "8000000"}
        for name, command, environ in (
            ("bare PyAV loop (baseline)", bare, {**env, **keep_heap}),
            ("batchkimi run", run, env),
        ):
            done = measure(command, env=environ, core=1)
            rates[name] = frames / done.wall_s
            print(
                f"{name:30} {rates[name]:9.0f} {done.wall_s:7.1f} {done.cpu_s:6.1f} "
                f"{done.peak_mb:8.0f}"
            )
        captioned = pl.read_parquet(Path(tmp) / "out" / "results.parquet")
        ok = captioned.filter(pl.col("status") == "ok").height
        if ok != args.videos:
            raise SystemExit(f"only {ok} of {args.videos} videos were captioned")
        ratio = rates["batchkimi run"] / rates["bare PyAV loop (baseline)"]
        print(f"ratio (batchkimi / bare loop): {ratio:.2f}")


if __name__ == "__main__":
    main()
