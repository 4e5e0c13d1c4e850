"""Peak memory of a whole `batchkimi run` as the manifest grows tenfold.

Runs the same labelling job on a small and a ten-times-larger manifest against the
simulator in its own process, each run in a fresh process, and prints peak RSS for both
and their ratio. Flat memory means a ratio near 1.

    .venv/bin/python bench/memory_flat.py [--rows 2000] [--factor 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, measure, simulator


def manifest(folder: Path, rows: int) -> Path:
    path = folder / f"m{rows}.csv"
    reviews = [f"Review {i}: it arrived on time and works well." for i in range(rows)]
    pl.DataFrame({"id": [f"r{i}" for i in range(rows)], "review": reviews}).write_csv(
        path
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    sizes = (args.rows, args.rows * args.factor)
    with simulator() as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = []
        for rows in sizes:
            command = batchkimi_run(
                manifest(folder, rows),
                folder / f"out{rows}",
                url,
                "--concurrency",
                "32",
                prompt="Label: {review}. Answer with one of: good, bad",
            )
            runs.append(measure(command, env=bench_env(str(folder / "state"))))
    print("rows       peak RSS    wall     rows/s")
    for rows, run in zip(sizes, runs, strict=True):
        rate = rows / run.wall_s
        print(f"{rows:>9,}  {run.peak_mb:7.1f} MB  {run.wall_s:6.1f} s  {rate:7.0f}")
    ratio = runs[1].peak_mb / runs[0].peak_mb
    print(f"peak memory ratio ({args.factor}x rows): {ratio:.2f}")


if __name__ == "__main__":
    main()
