"""batchkimi from Python (issue 14): each manifest kind, inside a running loop, resume,
and the same results as the command line on the same job."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

import batchkimi
from batchkimi.cli import cli
from batchkimi.errors import ConfigError
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, write_manifest

#: columns that differ between two runs of the same job (times, the service's ids)
VOLATILE = (
    "latency_ms",
    "ttft_ms",
    "request_id",
    "started_at",
    "finished_at",
    "wait_ms",
)
PROMPT = "Sentiment of: {review}. Answer with one of: positive, negative"


def settings(simulator: SimulatorServer, output: Path) -> dict[str, Any]:
    return {
        "prompt": PROMPT,
        "model": "kimi-k2.5",
        "output": output,
        "base_url": simulator.url,
        "rpm": 0,
        "tpm": 0,
        "concurrency": 4,
    }


def stable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(VOLATILE)


@pytest.mark.parametrize("kind", ["path", "polars", "pandas", "arrow"])
def test_every_manifest_kind_gives_the_same_results(
    tmp_path: Path, simulator: SimulatorServer, kind: str
) -> None:
    frame = pl.DataFrame(REVIEWS)
    manifests: dict[str, Any] = {
        "path": write_manifest(tmp_path / "in", REVIEWS, "parquet"),
        "polars": frame,
        "pandas": frame.to_pandas(),
        "arrow": frame.to_arrow(),
    }
    results = batchkimi.run(manifests[kind], **settings(simulator, tmp_path / "out"))
    assert isinstance(results, pl.DataFrame)
    assert results["id"].to_list() == [r["id"] for r in REVIEWS]
    assert results["review"].to_list() == [r["review"] for r in REVIEWS]
    assert set(results["status"]) == {"ok"}
    assert set(results["content"]) <= {"positive", "negative"}


def test_a_table_run_again_resumes(tmp_path: Path, simulator: SimulatorServer) -> None:
    frame = pd.DataFrame(REVIEWS)
    first = batchkimi.run(frame, **settings(simulator, tmp_path / "out"))
    sent = len(simulator.requests)
    again = batchkimi.run(frame.copy(), **settings(simulator, tmp_path / "out"))
    assert len(simulator.requests) == sent  # nothing sent twice
    assert stable(again).equals(stable(first))


async def test_it_runs_inside_a_running_event_loop(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """As in Jupyter: the caller's loop is running; the job gets its own."""
    results = batchkimi.run(
        pl.DataFrame(REVIEWS), **settings(simulator, tmp_path / "o")
    )
    assert set(results["status"]) == {"ok"}


def test_the_results_are_the_command_lines(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    api = batchkimi.run(manifest, **settings(simulator, tmp_path / "api"))
    simulator.reset(seed=1234)  # the same answers again
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "-i",
            str(manifest),
            "-o",
            str(tmp_path / "cli"),
            "--prompt",
            PROMPT,
            "--model",
            "kimi-k2.5",
            "--base-url",
            simulator.url,
            "--rpm",
            "0",
            "--tpm",
            "0",
            "--concurrency",
            "4",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    command_line = pl.read_parquet(tmp_path / "cli" / "results.parquet")
    assert stable(api).equals(stable(command_line))


def test_a_job_from_a_toml_file_with_keywords_that_win(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = tmp_path / "job.toml"
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    spec.write_text(f'input = "{manifest}"\nprompt = "{{review}}"\nconcurrency = 2\n')
    job = batchkimi.job(spec, concurrency=3, output=tmp_path / "out")
    assert isinstance(job, batchkimi.Job)
    assert job.pacing.concurrency == 3
    results = batchkimi.run(job=job, base_url=simulator.url, rpm=0, tpm=0)
    assert results.height == len(REVIEWS)


def test_plan_and_wrong_settings_through_the_api(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    made = batchkimi.plan(manifest, prompt=PROMPT)
    assert made.to_send == len(REVIEWS)
    with pytest.raises(ConfigError, match=r"concurrency = 1\.5"):
        batchkimi.plan(manifest, prompt=PROMPT, concurrency=1.5)
    with pytest.raises(ConfigError, match="no output given"):
        batchkimi.run(manifest, prompt=PROMPT)


def test_simulate_needs_no_key_and_no_server(tmp_path: Path) -> None:
    results = batchkimi.run(
        pl.DataFrame(REVIEWS), prompt=PROMPT, output=tmp_path / "out", simulate=True
    )
    assert set(results["status"]) == {"ok"}


def test_a_run_stopped_by_a_limit_warns_and_returns_what_it_has(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = batchkimi.run(
            pl.DataFrame(REVIEWS), limit=2, **settings(simulator, tmp_path / "out")
        )
    assert any(issubclass(w.category, batchkimi.RunStoppedWarning) for w in caught)
    assert (results["status"] == "ok").sum() == 2
