"""How a run behaves when the service misbehaves, answers short, or is asked twice.

Faults are scripted on the simulator and cross a real socket. Retry waits go through a
ManualClock, so they are recorded instead of slept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchkimi.clock import ManualClock
from batchkimi.simulator import (
    Fault,
    SimulatorServer,
    disconnect,
    error,
    html502,
    midstream,
    stall,
)
from tests.helpers import REVIEWS, make_spec, read_results, run


@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_transient_errors_are_retried_until_the_row_is_ok(
    tmp_path: Path, simulator: SimulatorServer, api: str
) -> None:
    simulator.script("*", [error("InternalError"), error("Throttling.RateQuota")])
    clock = ManualClock()
    spec = make_spec(tmp_path, simulator, rows=REVIEWS[:1], api=api)
    outcome = run(spec, clock=clock)
    results = read_results(spec)
    assert outcome.exit_code == 0
    assert results["status"].to_list() == ["ok"]
    assert results["attempts"].to_list() == [3]
    assert json.loads(results["retries"][0]) == {
        "InternalError": 1,
        "Throttling.RateQuota": 1,
    }
    # backed off twice (and, after the throttle, maybe paced by the adaptive limit),
    # all on the manual clock and all accounted in the row
    assert len(clock.sleeps) >= 2
    assert results["wait_ms"][0] == pytest.approx(sum(clock.sleeps) * 1000, abs=0.01)
    assert [r.status for r in simulator.requests] == [500, 429, 200]
    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["retries_by_cause"] == {
        "InternalError": 1,
        "Throttling.RateQuota": 1,
    }


@pytest.mark.parametrize(
    "fault",
    [
        disconnect(after_chunks=2),
        midstream("Throttling.AllocationQuota"),
        html502(),
        stall(2.0),
    ],
    ids=["disconnect", "midstream-429", "html-502", "keepalive-stall"],
)
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_broken_streams_are_retried_and_nothing_half_received_is_kept(
    tmp_path: Path, simulator: SimulatorServer, api: str, fault: Fault
) -> None:
    simulator.script("*", [fault])
    spec = make_spec(tmp_path, simulator, rows=REVIEWS[:1], api=api, timeout_s=1)
    outcome = run(spec, clock=ManualClock())
    results = read_results(spec)
    assert outcome.exit_code == 0
    assert results["attempts"].to_list() == [2]
    assert results["content"][0] in {"positive", "negative"}
    assert results["request_id"][0] == simulator.requests[-1].request_id


def test_retries_that_run_out_leave_a_failed_row_and_exit_1(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("InternalError")] * 3)
    spec = make_spec(
        tmp_path, simulator, rows=REVIEWS[:2], max_attempts=3, concurrency=1
    )
    outcome = run(spec, clock=ManualClock())
    results = read_results(spec)
    assert outcome.exit_code == 1
    assert results["status"].to_list() == ["error", "ok"]
    assert results["error_code"][0] == "InternalError"
    assert results["error_message"][0].startswith("gave up after 3 attempts")
    assert results["http_status"][0] == 500
    assert results["retryable"].to_list() == [True, False]
    # running out of attempts is not a permanent failure: the next run tries again,
    # with no --retry-errors needed (the service has recovered by then)
    again = run(spec, clock=ManualClock())
    assert (again.exit_code, again.sent) == (0, 1)
    assert read_results(spec)["status"].to_list() == ["ok", "ok"]


def test_content_moderation_fails_only_that_row_without_retrying(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("DataInspectionFailed")])
    spec = make_spec(tmp_path, simulator, rows=REVIEWS[:3], concurrency=1)
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 1
    assert results["status"].to_list() == ["error", "ok", "ok"]
    assert (results["error_code"][0], results["attempts"][0]) == (
        "DataInspectionFailed",
        1,
    )
    assert len(simulator.requests) == 3


@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_an_account_error_stops_the_run_keeps_answers_and_exits_5(
    tmp_path: Path, simulator: SimulatorServer, api: str
) -> None:
    rows = [{"id": f"r{i}", "review": f"text {i}"} for i in range(40)]
    simulator.script("*", [error("Arrearage")])
    spec = make_spec(tmp_path, simulator, rows=rows, api=api, concurrency=1)
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 5
    assert outcome.fatal is not None and outcome.fatal.code == "Arrearage"
    assert "top it up" in str(outcome.fatal)
    assert len(simulator.requests) == 1  # nothing more was sent
    assert results.height == 40  # every row is still accounted for
    assert set(results["status"]) == {"skipped"}


def test_a_cut_off_answer_is_incomplete_not_ok(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": "long", "prompt": "Describe everything in detail."}]
    spec = make_spec(
        tmp_path, simulator, rows=rows, prompt=None, parameters={"max_tokens": 2}
    )
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 1
    assert (results["status"][0], results["finish_reason"][0]) == (
        "incomplete",
        "length",
    )
    assert results["error_code"][0] == "length"
    assert results["content"][0]  # what did arrive is kept: it was paid for


def test_running_out_of_tokens_while_thinking_is_flagged(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": "deep", "prompt": "Think hard."}]
    spec = make_spec(
        tmp_path,
        simulator,
        rows=rows,
        prompt=None,
        thinking=True,
        api="dashscope",
        parameters={"max_completion_tokens": 3},
    )
    run(spec)
    results = read_results(spec)
    assert results["status"][0] == "incomplete"
    assert results["error_code"][0] == "length_while_thinking"
    assert results["reasoning_content"][0]
    assert results["content"][0] == ""


def test_rerunning_sends_nothing_already_answered(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    first = read_results(spec)
    sent = len(simulator.requests)
    again = run(spec)
    assert again.exit_code == 0 and again.sent == 0
    assert len(simulator.requests) == sent
    assert read_results(spec)["content"].to_list() == first["content"].to_list()


def test_failed_rows_wait_for_retry_errors(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("DataInspectionFailed")])
    spec = make_spec(tmp_path, simulator, rows=REVIEWS[:2], concurrency=1)
    assert run(spec).exit_code == 1
    assert run(spec).sent == 0  # failed rows are not retried by default
    retried = make_spec(
        tmp_path, simulator, rows=REVIEWS[:2], concurrency=1, retry_errors=True
    )
    outcome = run(retried)
    assert (outcome.exit_code, outcome.sent) == (0, 1)
    assert set(read_results(retried)["status"]) == {"ok"}


def test_identical_requests_are_paid_for_once(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [
        {"id": "a", "review": "same"},
        {"id": "b", "review": "same"},
        {"id": "c", "review": "other"},
    ]
    spec = make_spec(tmp_path, simulator, rows=rows)
    outcome = run(spec)
    results = read_results(spec)
    assert len(simulator.requests) == 2
    assert results["content"][0] == results["content"][1]
    assert outcome.summary["run"]["duplicate_rows_this_run"] == 1


def test_a_limit_stops_early_and_the_rest_resumes(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, limit=2, concurrency=1)
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 3
    assert results["status"].to_list() == ["ok", "ok", "skipped", "skipped", "skipped"]
    rest = run(make_spec(tmp_path, simulator))
    assert (rest.exit_code, rest.sent) == (0, 3)


def test_rows_added_to_the_manifest_are_sent_on_the_next_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    run(make_spec(tmp_path, simulator, rows=REVIEWS[:3]))
    outcome = run(make_spec(tmp_path, simulator, rows=REVIEWS))
    assert outcome.sent == 2
    assert (
        read_results(make_spec(tmp_path, simulator))["status"].to_list() == ["ok"] * 5
    )


def test_a_torn_journal_tail_is_dropped_with_a_warning(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    journal = spec.output / ".batchkimi" / "journal.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 30])  # a crash mid-write
    outcome = run(spec)
    assert outcome.sent == 1  # only the torn row is asked again
    assert any("torn" in w for w in outcome.warnings)
    assert set(read_results(spec)["status"]) == {"ok"}


def test_a_damaged_journal_line_costs_only_that_row(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    journal = spec.output / ".batchkimi" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = b"\x00\x00 not json at all \x00\n"  # a bad sector, say
    journal.write_bytes(b"".join(lines))
    outcome = run(spec)
    assert (outcome.exit_code, outcome.sent) == (0, 1)
    assert set(read_results(spec)["status"]) == {"ok"}
