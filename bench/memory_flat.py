"""Peak memory of a whole `batchkimi run` as the manifest grows tenfold.

Runs the same labelling job on a small and a ten-times-larger manifest against the
simulator in its own process, each run in a fresh process, and prints peak RSS for both
and their ratio. Flat memory means a ratio near 1.

    .venv/bin/python bench/memory_flat.py [--rows 2000] [--factor 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

_MEASURE = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def manifest(folder: Path, rows: int) -> Path:
    path = folder / f"m{rows}.csv"
    pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "review": [
                f"Review {i}: it arrived on time and works well." for i in range(rows)
            ],
        }
    ).write_csv(path)
    return path


def run(url: str, path: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one run in a fresh process."""
    command = [
        sys.executable, "-c", _MEASURE, sys.executable, "-m", "batchkimi", "run",
        "-i", str(path), "-o", str(out), "--base-url", url, "--concurrency", "32",
        "--prompt", "Label: {review}. Answer with one of: good, bad", "-q",
        "--rpm", "0", "--tpm", "0",  # the simulator here enforces no limits
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DASHSCOPE_API_KEY": "sk-bench"},
    )
    peak_kb, code = done.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"run failed ({code}): {done.stderr}")
    return int(peak_kb) / 1024, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "batchkimi", "simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            small, large = args.rows, args.rows * args.factor
            small_mb, small_s = run(url, manifest(folder, small), folder / "o1")
            large_mb, large_s = run(url, manifest(folder, large), folder / "o2")
    finally:
        simulator.terminate()
        simulator.wait()
    print("rows       peak RSS    wall     rows/s")
    print(f"{small:>9,}  {small_mb:7.1f} MB  {small_s:6.1f} s  {small / small_s:7.0f}")
    print(f"{large:>9,}  {large_mb:7.1f} MB  {large_s:6.1f} s  {large / large_s:7.0f}")
    print(f"peak memory ratio ({args.factor}x rows): {large_mb / small_mb:.2f}")


if __name__ == "__main__":
    main()
