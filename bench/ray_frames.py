"""Captioning local videos on Ray, frames extracted on the workers: two workers on two
cores against one worker, in the same run (issue 15; target: at least 1.6 times).

100 generated 20-second videos (640x360, 25 fps, H.264; cached between runs) are
captioned by ``batchkimi run -i 'videos/*.mp4' --video-frames always --engine ray``
against a zero-latency simulator in its own process: each video is decoded, sampled
at 2 frames a second (40 frames), JPEG-encoded and sent as a frame list, on the worker
that sends it. The job runs once with ``--ray-workers 1`` and once with
``--ray-workers 2`` (the order alternates between rounds) on one local Ray cluster of
two CPUs, started once; each run starts its own workers. A run's throughput is its
steady pace: the middle 80% of its answers over the time they took (results.parquet's
``finished_at``), so the cluster's and the workers' start-up (a second worker comes up
a moment after the first) and the last batches' tail are left out. The runs' results
are read back to check that every video was captioned.

    .venv/bin/python bench/ray_frames.py [--videos 100] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl
from harness import bench_env, make_archive, simulator

ROOT = Path(__file__).resolve().parents[1]


def caption(archive: Path, output: Path, url: str, address: str, workers: int) -> float:
    """Run the job on the cluster at ``address``; its videos per second."""
    command = [
        *(sys.executable, "-m", "batchkimi", "run", "-i", str(archive / "*.mp4")),
        *("-o", str(output), "--prompt", "Describe this video in one sentence."),
        *("--base-url", url, "--quiet", "--rpm", "0", "--tpm", "0"),
        *("--video-frames", "always", "--no-stream", "--concurrency", "4"),
        *("--engine", "ray", "--ray-address", address),
        *("--ray-workers", str(workers)),
    ]
    env = {**bench_env(str(output.parent / "state")), "PYTHONPATH": str(ROOT)}
    quiet = subprocess.DEVNULL
    subprocess.run(command, env=env, check=True, stdout=quiet, stderr=quiet)
    results = pl.read_parquet(output / "results.parquet")
    ok = results.filter(pl.col("status") == "ok").height
    if ok != results.height:
        raise SystemExit(f"only {ok} of {results.height} videos were captioned")
    # the steady pace: the middle 80% of answers, past the workers' staggered
    # start and before the last batches finish one by one
    done = sorted(datetime.fromisoformat(t) for t in results["finished_at"])
    low, high = len(done) // 10, len(done) - 1 - len(done) // 10
    return (high - low) / (done[high] - done[low]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "batchkimi-bench"
    )
    args = parser.parse_args()
    archive = make_archive(
        args.cache / f"videos-{args.videos}x{args.seconds:g}s",
        args.videos,
        args.seconds,
    )
    frames = min(2000, max(4, int(args.seconds * 2)))
    import ray

    # the cluster a user would start (`ray start --head --num-cpus 2`), on loopback
    ray_env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    os.environ.update(ray_env)
    context = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        _node_ip_address="127.0.0.1",
    )
    address = context.address_info["gcs_address"]
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        with simulator() as url, tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                order = (1, 2) if round_ % 2 == 0 else (2, 1)
                for workers in order:
                    output = Path(tmp) / f"out-{round_}-{workers}"
                    rates[workers].append(
                        caption(archive, output, url, address, workers)
                    )
    finally:
        ray.shutdown()
    print(
        f"{args.videos} videos of {args.seconds:g} s (640x360, 25 fps), 2 frames a "
        f"second ({frames} a video, {args.videos * frames:,} in all), extracted on "
        f"the workers; a Ray cluster of 2 CPUs, {os.cpu_count()} cores here"
    )
    print(f"{'':24} {'videos/s':>9} {'frames/s':>9}   rounds")
    for workers, found in rates.items():
        best = statistics.median(found)
        each = ", ".join(f"{r:.2f}" for r in found)
        print(
            f"{workers} worker{'s' if workers > 1 else ' '} (x{workers} CPU)      "
            f"{best:9.2f} {best * frames:9.0f}   {each}"
        )
    ratio = statistics.median(rates[2]) / statistics.median(rates[1])
    print(f"ratio (two workers / one worker): {ratio:.2f}  (target: at least 1.6)")


if __name__ == "__main__":
    main()
