"""``batchkimi.ray.process(dataset, job)``: a Ray Dataset of manifest rows in, a
Dataset of results out, journaled into the job's output folder so the same rows
are never paid for twice (issue 15)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import batchkimi
import batchkimi.ray
from batchkimi.simulator import SimulatorServer

ROWS = [{"id": f"p{i:02d}", "review": f"pipeline review {i}"} for i in range(12)]


def test_a_dataset_is_answered_and_a_second_pass_pays_nothing(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    settings: dict[str, Any] = {
        "prompt": "Sentiment of: {review}",
        "output": tmp_path / "out",
        "base_url": simulator.url,
        "rpm": 0,
        "tpm": 0,
        "concurrency": 4,
        "ray_workers": 2,
    }
    rows = ray_cluster.data.from_items(ROWS)
    first = batchkimi.ray.process(rows, **settings).take_all()
    assert sorted(r["id"] for r in first) == [r["id"] for r in ROWS]
    assert {r["status"] for r in first} == {"ok"}
    assert all(r["sent"] and r["content"] for r in first)
    assert len(simulator.requests) == len(ROWS)
    again = batchkimi.ray.process(rows, **settings).take_all()
    assert len(simulator.requests) == len(ROWS)  # nothing sent the second time
    assert not any(r["sent"] for r in again)
    assert {r["id"]: r["content"] for r in again} == {
        r["id"]: r["content"] for r in first
    }


def test_a_row_that_cannot_be_sent_is_an_error_row_not_a_failed_job(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    rows = ray_cluster.data.from_items(
        [{"id": "ok", "prompt": "hello"}, {"id": "broken", "prompt": ""}]
    )
    job = batchkimi.job(  # a job as for batchkimi.run: its input is not read here
        input=tmp_path,
        output=tmp_path / "out",
        base_url=simulator.url,
        rpm=0,
        tpm=0,
    )
    results = {r["id"]: r for r in batchkimi.ray.process(rows, job).take_all()}
    assert results["ok"]["status"] == "ok"
    assert results["broken"]["status"] == "error"
    assert results["broken"]["error_code"]
    assert not results["broken"]["sent"]
