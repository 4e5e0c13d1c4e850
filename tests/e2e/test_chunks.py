"""Issue 14: a run reads, registers and assembles its rows in chunks sized to the job
(about a 32nd of its rows, a power of two within ``CHUNK_ROWS``), so a small job holds
little at once; the register's row groups line up with the results' blocks, and a job
that grows keeps its chunk size, so a resume after rows were appended finds every
block but the last unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchkimi.simulator import SimulatorServer
from batchkimi.store import rows as rows_module
from tests.helpers import make_spec, read_results, run, write_manifest


def groups(path: Path) -> list[int]:
    metadata = pq.read_metadata(path)
    return [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]


def manifest_rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"r{i:04d}", "review": f"review {i}"} for i in range(count)]


@pytest.mark.parametrize(("count", "chunk"), [(60, 4), (320, 8), (600, 16)])
def test_the_register_and_the_results_are_written_in_chunks_sized_to_the_job(
    tmp_path: Path,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    chunk: int,
) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_ROWS", (4, 16))  # as 4,096 and 16,384
    # handed over 2 at a time, as 2,000 (the default) are within 4,096
    job = make_spec(tmp_path, simulator, rows=manifest_rows(count), batch_rows=2)
    assert run(job).exit_code == 0
    whole, rest = divmod(count, chunk)
    expected = [chunk] * whole + ([rest] if rest else [])
    assert groups(job.output / ".batchkimi" / "rows.parquet") == expected
    assert groups(job.output / "results.parquet") == expected


def test_a_grown_job_keeps_its_chunks_and_only_its_last_block_changes(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_ROWS", (4, 16))
    rows = manifest_rows(324)  # chunks of 8
    job = make_spec(tmp_path, simulator, rows=rows, batch_rows=2)
    assert run(job).exit_code == 0
    record = job.output / ".batchkimi" / "rows.results-blocks.json"
    before = json.loads(record.read_text("utf-8"))["keys"]

    # a 32nd grows from 10 to 11: rounded down to a power of two, still 8
    write_manifest(tmp_path / "in", manifest_rows(360))
    assert run(job).exit_code == 0
    after = json.loads(record.read_text("utf-8"))["keys"]
    assert len(before) == 41 and len(after) == 45  # 40 whole blocks and 4 rows
    assert after[:40] == before[:40]  # so the first 40 were copied, not assembled
    assert after[40] != before[40]
    assert groups(job.output / "results.parquet") == [8] * 45
    results = read_results(job)
    assert results["id"].to_list() == [f"r{i:04d}" for i in range(360)]
    assert results["status"].unique().to_list() == ["ok"]
