"""Helpers the tests share: manifests, specs and runs against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from batchkimi.clock import Clock
from batchkimi.credentials import ApiKey
from batchkimi.prepare import prepare_job
from batchkimi.runner import RunOutcome, run_job
from batchkimi.settings import Job, Source, load_job
from batchkimi.simulator import SimulatorServer


def write_manifest(folder: Path, rows: list[dict[str, Any]], fmt: str = "csv") -> Path:
    """Write rows as a CSV, Parquet or JSONL manifest and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    elif fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    else:
        pl.DataFrame(rows).write_csv(path)
    return path


REVIEWS = [
    {"id": f"r{i}", "review": text}
    for i, text in enumerate(
        [
            "Great kettle, boils fast.",
            "Broke after two days.",
            "Fine for the price.",
            "The lamp is lovely but dim.",
            "Never arrived.",
        ]
    )
]


class Server(Protocol):
    """The simulator, or any purpose-built server on loopback."""

    @property
    def url(self) -> str: ...


def make_spec(
    tmp_path: Path,
    simulator: Server,
    rows: list[dict[str, Any]] | None = None,
    fmt: str = "csv",
    **overrides: Any,
) -> Job:
    """A job that sends to the test simulator; keyword arguments override settings."""
    manifest = write_manifest(tmp_path / "in", rows or REVIEWS, fmt)
    values: dict[str, Any] = {
        "input": manifest,
        "output": tmp_path / "out",
        "model": "kimi-k2.6",
        "prompt": "Sentiment of: {review}. Answer with one of: positive, negative",
        "base_url": simulator.url,
        "concurrency": 4,
        "rpm": 0,  # the simulator enforces no limits unless a test sets them
        "tpm": 0,
    }
    values.update(overrides)
    return job_of(values)


def job_of(values: dict[str, Any]) -> Job:
    """The job flat ``values`` describe, as the command line would build it."""
    return load_job([Source("test", values)])


def run(job: Job, *, clock: Clock | None = None) -> RunOutcome:
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
    return asyncio.run(run_job(prepare_job(job), key, clock=clock))


def read_results(job: Job) -> pl.DataFrame:
    return pl.read_parquet(job.output / "results.parquet", glob=False)


def run_args(
    tmp_path: Path,
    simulator: SimulatorServer,
    *extra: str,
    rows: list[dict[str, Any]] | None = None,
    prompt: str = "Label: {review}",
) -> list[str]:
    """Arguments of `batchkimi run` over a fresh manifest, against the simulator (which
    enforces no rate limits unless a test sets them)."""
    manifest = write_manifest(tmp_path / "in", rows or REVIEWS)
    return [
        "run",
        "-i",
        str(manifest),
        "-o",
        str(tmp_path / "out"),
        "--base-url",
        simulator.url,
        "--prompt",
        prompt,
        *("--rpm", "0", "--tpm", "0"),
        *extra,
    ]


_PROBE = """
import json, runpy, sys
sys.argv = ["batchkimi", *json.loads(sys.argv[1])]
try:
    runpy.run_module("batchkimi", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted({name.split(".")[0] for name in sys.modules})
print("\\n" + json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def run_fresh(*args: str) -> tuple[int, str, set[str]]:
    """`batchkimi ARGS` in a fresh interpreter: its exit code, what it said on
    stderr, and the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said, _, report = done.stderr.rstrip().rpartition("\n")
    found = json.loads(report)
    return found["code"] or 0, said, set(found["loaded"])
