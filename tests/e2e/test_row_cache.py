"""Issue 14: a resume takes each row's request from the last run's register when the
row and the settings are as they were, and builds it when anything that shapes it
changed. A wrong hit would pass an edited row off as answered, so every test here
compares with what a run from scratch sends and writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchkimi import rowsource
from batchkimi.media.samples import make_image
from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run, write_manifest

ROWS = [{"id": f"r{i:02d}", "review": f"review number {i}"} for i in range(60)]
SAME = ["id", "review", "status", "fingerprint"]  # (the simulator answers at random)


def sent_prompts(simulator: SimulatorServer) -> list[str]:
    return [
        r.body["messages"][-1]["content"]
        for r in simulator.requests
        if r.body and "messages" in r.body
    ]


@pytest.mark.parametrize("read_rows", [7, rowsource.READ_ROWS])
def test_a_resume_after_edits_sends_the_changed_rows_and_writes_what_a_fresh_run_does(
    tmp_path: Path,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    read_rows: int,
) -> None:
    monkeypatch.setattr(rowsource, "READ_ROWS", read_rows)  # 7: batches that shift
    job = make_spec(tmp_path, simulator, rows=ROWS, batch_rows=7)
    assert run(job).exit_code == 0
    edited = [dict(r) for r in ROWS]
    edited[10]["review"] = "review number 10, edited"
    del edited[20]
    edited = [{"id": "top", "review": "a new first row"}, *edited]
    edited.append({"id": "end", "review": "a new last row"})
    write_manifest(tmp_path / "in", edited)
    simulator.reset()

    assert run(job).exit_code == 0
    assert sorted(sent_prompts(simulator)) == sorted(
        job.asking.prompt.format(review=r["review"])  # type: ignore[union-attr]
        for r in (edited[0], edited[11], edited[-1])
    )
    fresh = make_spec(tmp_path / "fresh", simulator, rows=edited, batch_rows=7)
    assert run(fresh).exit_code == 0
    assert read_results(job).select(SAME).equals(read_results(fresh).select(SAME))


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "Sentiment, in one word: {review}"},
        {"system": "You label reviews."},
        {"parameters": {"temperature": 0.3}},
        {"model": "kimi-k2.5"},
    ],
    ids=["prompt", "system", "parameters", "model"],
)
def test_a_change_to_what_shapes_requests_sends_every_row_again(
    tmp_path: Path, simulator: SimulatorServer, change: dict[str, Any]
) -> None:
    assert run(make_spec(tmp_path, simulator, rows=ROWS[:12])).exit_code == 0
    simulator.reset()
    assert run(make_spec(tmp_path, simulator, rows=ROWS[:12], **change)).sent == 12


def test_a_setting_that_only_chooses_rows_keeps_the_requests(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    assert run(make_spec(tmp_path, simulator, rows=ROWS, limit=30)).sent == 30
    simulator.reset()
    assert run(make_spec(tmp_path, simulator, rows=ROWS, concurrency=2)).sent == 30
    assert (
        read_results(make_spec(tmp_path, simulator, rows=ROWS))["status"].to_list()
        == ["ok"] * 60
    )


def test_a_local_image_rewritten_since_the_last_run_is_sent_again(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    picture = make_image(tmp_path / "in" / "a.png", 40, 40)
    rows = [{"id": "a", "review": "a picture", "image": "a.png"}]
    job = make_spec(tmp_path, simulator, rows=rows)
    assert run(job).sent == 1
    assert run(job).sent == 0
    make_image(picture, 48, 48)
    os.utime(
        picture, ns=(picture.stat().st_atime_ns, picture.stat().st_mtime_ns + 10**9)
    )
    assert run(job).sent == 1
    assert pl.read_parquet(job.output / "results.parquet")["status"].to_list() == ["ok"]


def test_identical_rows_far_apart_are_sent_once(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equal requests in different reads and pieces: the first goes, the others
    take its answer (the run's set of sent fingerprints spans the whole run)."""
    monkeypatch.setattr(rowsource, "READ_ROWS", 7)
    rows = [{"id": f"r{i:02d}", "review": f"review {i % 10}"} for i in range(50)]
    job = make_spec(tmp_path, simulator, rows=rows, batch_rows=3)
    outcome = run(job)
    assert outcome.exit_code == 0 and outcome.sent == 10
    assert len(simulator.requests) == 10
    assert outcome.summary["run"]["duplicate_rows_this_run"] == 40
    results = read_results(job)
    assert results["status"].to_list() == ["ok"] * 50
    by_review = results.group_by("review").agg(pl.col("content").n_unique())
    assert by_review["content"].to_list() == [1] * 10
