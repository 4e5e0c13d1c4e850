"""Nothing paid for is lost, nothing is sent twice: locks, limits, shards, full disks.

Runs here are in-process (``run_job``) against the simulator over loopback; the
process-level cases (signals, kill -9, a second process) are in test_processes.py.
"""

from __future__ import annotations

import errno
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.errors import ConfigError, OutputLockedError
from batchkimi.simulator import SimulatorServer, error
from batchkimi.store import journal as journal_module
from batchkimi.store.journal import JournalError
from batchkimi.store.lock import OutputLock
from tests.helpers import make_spec, read_results, run, run_args

ROWS = [{"id": f"r{i:02d}", "review": f"review number {i}"} for i in range(24)]


def prompts_sent(simulator: SimulatorServer) -> Counter[str]:
    return Counter(
        r.body["messages"][-1]["content"] for r in simulator.requests if r.status == 200
    )


def test_a_second_run_on_a_locked_output_is_refused_naming_the_holder(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, rows=ROWS)
    with (
        OutputLock(spec.output / ".batchkimi"),
        pytest.raises(OutputLockedError) as caught,
    ):
        run(spec)
    message = str(caught.value)
    assert caught.value.exit_code == 4
    assert "pid " in message and "started " in message and " on " in message
    assert simulator.requests == []
    assert run(spec).exit_code == 0  # released: the next run goes ahead


def test_shards_lock_separately_and_exclude_an_unsharded_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    state = tmp_path / "out" / ".batchkimi"
    with OutputLock(state, shard="1-of-2"):
        with OutputLock(state, shard="2-of-2"):
            pass  # other shards may run beside it
        with pytest.raises(OutputLockedError, match="shard 1-of-2"):
            OutputLock(state, shard="1-of-2").acquire()
        with pytest.raises(OutputLockedError, match="shard 1-of-2"):
            OutputLock(state).acquire()


def test_shards_cover_the_manifest_exactly_once(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    outcomes = [
        run(make_spec(tmp_path, simulator, rows=ROWS, shard=f"{i}/3"))
        for i in (1, 2, 3)
    ]
    assert [o.exit_code for o in outcomes] == [0, 0, 0]
    assert sum(o.sent for o in outcomes) == len(ROWS)
    assert all(0 < o.sent < len(ROWS) for o in outcomes)
    assert set(prompts_sent(simulator).values()) == {1}
    results = read_results(make_spec(tmp_path, simulator, rows=ROWS))
    assert results["status"].to_list() == ["ok"] * len(ROWS)
    journals = sorted(
        p.name for p in (tmp_path / "out" / ".batchkimi").glob("journal*")
    )
    assert journals == [f"journal-shard-{i}-of-3.jsonl" for i in (1, 2, 3)]
    assert run(make_spec(tmp_path, simulator, rows=ROWS)).sent == 0  # all answered


def test_a_full_disk_stops_the_run_and_loses_nothing_journalled(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = journal_module._write
    writes = 0

    def fill_up(fd: int, data: bytes) -> int:
        nonlocal writes
        writes += 1
        if writes > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module, "_write", fill_up)
    spec = make_spec(tmp_path, simulator, rows=ROWS, concurrency=1)
    with pytest.raises(JournalError, match="No space left on device") as caught:
        run(spec)
    assert caught.value.exit_code == 3
    journal = spec.output / ".batchkimi" / "journal.jsonl"
    assert len(journal.read_text().splitlines()) == 5
    monkeypatch.setattr(journal_module, "_write", real_write)
    resumed = run(spec)
    assert (resumed.exit_code, resumed.sent) == (0, len(ROWS) - 5)
    assert read_results(spec)["status"].to_list() == ["ok"] * len(ROWS)


def test_an_output_that_cannot_be_written_is_refused_before_sending(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    spec = make_spec(tmp_path, simulator, rows=ROWS, output=blocker / "out")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        run(spec)
    assert simulator.requests == []


def test_max_cost_is_never_exceeded_under_concurrency(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(
        tmp_path,
        simulator,
        rows=ROWS,
        model="kimi-k2.5",
        concurrency=8,
        max_cost=0.002,
        parameters={"max_tokens": 16},
    )
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 3 and outcome.stop_reason == "max_cost"
    assert "budget of 0.002" in outcome.stop_detail
    spent = results["cost"].sum()
    assert 0 < spent <= 0.002
    assert 0 < outcome.sent < len(ROWS)
    assert set(results["status"]) == {"ok", "skipped"}
    rest = run(
        make_spec(
            tmp_path,
            simulator,
            rows=ROWS,
            model="kimi-k2.5",
            parameters={"max_tokens": 16},
        )
    )
    assert rest.sent == len(ROWS) - outcome.sent


def test_max_cost_without_a_known_price_is_refused_up_front(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, rows=ROWS, model="kimi-k2.6", max_cost=1.0)
    with pytest.raises(ConfigError, match="--prices"):
        run(spec)
    assert simulator.requests == []


def test_max_runtime_stops_scheduling_and_the_rest_resumes(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=250)
    spec = make_spec(tmp_path, simulator, rows=ROWS, concurrency=2, max_runtime_s=1)
    outcome = run(spec)
    statuses = read_results(spec)["status"].to_list()
    assert outcome.exit_code == 3 and outcome.stop_reason == "max_runtime"
    assert 2 <= statuses.count("ok") < len(ROWS)
    assert set(statuses) == {"ok", "skipped"}
    simulator.reset()
    assert run(make_spec(tmp_path, simulator, rows=ROWS)).sent == statuses.count(
        "skipped"
    )


def test_rerun_sends_again_only_the_named_outcomes(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("DataInspectionFailed"), error("InvalidParameter")])
    spec = make_spec(tmp_path, simulator, rows=ROWS[:4], concurrency=1)
    assert run(spec).exit_code == 1
    again = run(
        make_spec(
            tmp_path,
            simulator,
            rows=ROWS[:4],
            concurrency=1,
            rerun=("DataInspectionFailed",),
        )
    )
    assert again.sent == 1
    statuses = read_results(spec)["error_code"].to_list()
    assert (
        statuses.count("InvalidParameter") == 1
        and "DataInspectionFailed" not in statuses
    )


def test_json_log_is_one_event_per_line(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("InternalError")])
    args = run_args(tmp_path, simulator, "--log-format", "json", rows=ROWS)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "summary" and "retry" in names
    retry = events[names.index("retry")]
    assert retry["cause"] == "InternalError" and retry["attempt"] == 1
    assert events[-1]["by_status"]["ok"] == len(ROWS) and events[-1]["exit_code"] == 0
    assert result.stdout == ""


def test_a_finished_job_run_again_sends_and_rewrites_nothing(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, rows=ROWS)
    first = run(spec)
    results = spec.output / "results.parquet"
    written = results.stat().st_mtime_ns
    again = run(spec)
    assert (again.exit_code, again.sent) == (first.exit_code, 0)
    assert again.by_status == first.by_status
    assert results.stat().st_mtime_ns == written  # already current: not rebuilt
    spec.reading.input.touch()  # a new mtime, the same content: still current
    assert run(spec).sent == 0 and results.stat().st_mtime_ns == written
    paced = make_spec(tmp_path, simulator, rows=ROWS, rpm=100, concurrency=2)
    assert run(paced).sent == 0  # how fast to send does not change what was answered
    assert results.stat().st_mtime_ns == written
    grown = make_spec(tmp_path, simulator, rows=[*ROWS, {"id": "new", "review": "new"}])
    assert run(grown).sent == 1  # an edited manifest takes the full path
    assert read_results(grown)["id"].to_list()[-1] == "new"


def test_failed_rows_keep_a_finished_job_current_until_asked_to_retry(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("DataInspectionFailed")])
    spec = make_spec(tmp_path, simulator, rows=ROWS[:3], concurrency=1)
    assert run(spec).exit_code == 1
    assert (run(spec).exit_code, len(simulator.requests)) == (1, 3)
    retried = run(make_spec(tmp_path, simulator, rows=ROWS[:3], retry_errors=True))
    assert (retried.exit_code, retried.sent) == (0, 1)


def test_what_a_killed_run_left_half_written_is_cleared_by_the_next(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """kill -9 in the middle of writing leaves temporary files (a million-row
    register is ~85 MB); the next run, holding the same locks, removes them."""
    spec = make_spec(tmp_path, simulator)
    state = spec.output / ".batchkimi"
    state.mkdir(parents=True)
    leftovers = [
        state / "rows.parquet.99999.tmp",
        spec.output / ".results.parquet.99999.tmp",
        spec.output / ".summary.json.99999.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half written")
    assert run(spec).exit_code == 0
    assert [p for p in leftovers if p.exists()] == []
    assert (spec.output / "results.parquet").is_file()
