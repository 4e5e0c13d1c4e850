"""Peak memory of a whole `batchkimi run` as the manifest grows a hundredfold.

Runs the same labelling job on a small and a hundred-times-larger manifest against
the simulator in its own process (zero latency, concurrency 64), each run in a fresh
process, and prints peak RSS for both and their ratio. Flat memory means a ratio
near 1 (issue 14 asks at most 1.3). With --million, a 1,000,000-row run too (about
five minutes; issue 14 asks under 400 MB).

    .venv/bin/python bench/memory_flat.py [--rows 1000] [--factor 100] [--million]
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
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--factor", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--million", action="store_true", help="add a 1M-row run")
    args = parser.parse_args()
    sizes = [args.rows, args.rows * args.factor]
    if args.million:
        sizes.append(1_000_000)
    with simulator() as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = []
        for rows in sizes:
            command = batchkimi_run(
                manifest(folder, rows),
                folder / f"out{rows}",
                url,
                "--concurrency",
                str(args.concurrency),
                prompt="Label: {review}. Answer with one of: good, bad",
            )
            runs.append(measure(command, env=bench_env(str(folder / "state"))))
            (folder / f"m{rows}.csv").unlink()
    print("rows       peak RSS    wall     rows/s")
    for rows, run in zip(sizes, runs, strict=True):
        rate = rows / run.wall_s
        print(f"{rows:>9,}  {run.peak_mb:7.1f} MB  {run.wall_s:6.1f} s  {rate:7.0f}")
    ratio = runs[1].peak_mb / runs[0].peak_mb
    print(f"peak memory ratio ({args.factor}x rows): {ratio:.2f} (issue 14: <= 1.3)")
    if args.million:
        print(f"1,000,000 rows: {runs[2].peak_mb:.0f} MB (issue 14: < 400 MB)")


if __name__ == "__main__":
    main()
