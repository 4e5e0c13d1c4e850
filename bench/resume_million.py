"""Resuming a finished 1,000,000-row job: time and peak memory.

Sending a million real requests to set this up would take half an hour, so the finished
job is made directly: a manifest, and one journal record per row keyed by the row's real
request fingerprint (computed by batchkimi's own request builder). Then, each in a fresh
process, in the same run:

1. baseline: ``batchkimi --version`` (interpreter and imports);
2. the first resume: finds every row answered, sends nothing, and builds
   results.parquet and summary.json from the million journal records (the full path);
3. the resume of the now-finished job, as a nightly cron entry would run it.

    .venv/bin/python bench/resume_million.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from harness import bench_env, measure

from batchkimi.manifest.reader import open_manifest
from batchkimi.manifest.requests import RequestBuilder
from batchkimi.settings import Source, load_job

_PROMPT = "Label: {review}. Answer with one of: good, bad"


def make_job(folder: Path, rows: int) -> tuple[Path, Path]:
    manifest = folder / "manifest.csv"
    pl.DataFrame(
        {
            "id": [f"r{i:07d}" for i in range(rows)],
            "review": [
                f"Review {i}: it arrived on time and works well." for i in range(rows)
            ],
        }
    ).write_csv(manifest)
    output = folder / "out"
    state = output / ".batchkimi"
    state.mkdir(parents=True)
    spec = load_job(
        [Source("bench", {"input": manifest, "output": output, "prompt": _PROMPT})]
    )
    opened = open_manifest(manifest)
    builder = RequestBuilder(spec, opened.columns, str(manifest))
    index = 0
    with (state / "journal.jsonl").open("w") as journal:
        for batch in opened.iter_batches(20_000):
            for row in batch.iter_rows(named=True):
                request = builder.build(index, row)
                index += 1
                record = {
                    "fingerprint": request.fingerprint,
                    "status": "ok",
                    "model": request.model,
                    "api": "openai",
                    "content": "good",
                    "reasoning_content": None,
                    "finish_reason": "stop",
                    "input_tokens": 31,
                    "output_tokens": 1,
                    "reasoning_tokens": 0,
                    "cached_tokens": 0,
                    "total_tokens": 32,
                    "cost": None,
                    "currency": None,
                    "attempts": 1,
                    "latency_ms": 812.5,
                    "ttft_ms": 640.1,
                    "request_id": f"{index:032x}",
                    "response_model": request.model,
                    "error_code": None,
                    "error_message": None,
                    "http_status": 200,
                    "started_at": "2026-11-24T01:00:00+00:00",
                    "finished_at": "2026-11-24T01:00:01+00:00",
                    "retries": None,
                    "row_id": request.row_id,
                    "v": 1,
                }
                journal.write(json.dumps(record) + "\n")
    return manifest, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        manifest, output = make_job(Path(tmp), args.rows)
        made_s = time.monotonic() - started
        print(f"made a finished {args.rows:,}-row job in {made_s:.0f} s")
        batchkimi = [sys.executable, "-m", "batchkimi"]
        run = [
            *batchkimi,
            "run",
            "-i",
            str(manifest),
            "-o",
            str(output),
            "--prompt",
            _PROMPT,
            "--base-url",
            "http://127.0.0.1:9",
        ]
        cases = [
            ("baseline: batchkimi --version", [*batchkimi, "--version"]),
            ("first resume: full path, builds results", run),
            ("resume of the finished job", run),
        ]
        baseline = None
        print(f"{'case':42} {'wall s':>8} {'peak MB':>8} {'vs baseline':>12}")
        for name, command in cases:
            done = measure(command, env=bench_env(str(Path(tmp) / "state")))
            seconds, peak = done.wall_s, done.peak_mb
            baseline = baseline or seconds
            ratio = seconds / baseline
            print(f"{name:42} {seconds:8.2f} {peak:8.0f} {ratio:11.1f}x")
        rows = (
            pl.scan_parquet(output / "results.parquet")
            .select(pl.len())
            .collect()
            .item()
        )
        print(f"results.parquet rows: {rows:,}")


if __name__ == "__main__":
    main()
