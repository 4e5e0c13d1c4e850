"""Saturate the quota, never storm it: runs against a simulator enforcing limits.

The simulator enforces its limits per second, as the service may (FACTS §3.3). These
tests assert counts (throttles, rows, statuses), never durations: speed is measured in
bench/.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchkimi.clock import ManualClock
from batchkimi.credentials import ApiKey
from batchkimi.outcome import RunOutcome, SilentObserver
from batchkimi.prepare import prepare_job
from batchkimi.runner import run_job
from batchkimi.schedule.limitstore import account_id, state_home
from batchkimi.settings import Job
from batchkimi.simulator import Limits, SimulatorServer, error
from tests.helpers import make_spec, read_results, run

ROWS = [{"id": f"r{i:02d}", "review": f"review number {i}"} for i in range(40)]


def throttles(simulator: SimulatorServer) -> int:
    return sum(1 for r in simulator.requests if r.status == 429)


def test_configured_limits_are_kept_without_a_single_throttle(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(limits=Limits(rpm=1200, window_s=1.0))  # 20 a second
    spec = make_spec(tmp_path, simulator, rows=ROWS, concurrency=16, rpm=1200)
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 0
    assert throttles(simulator) == 0
    assert (results["attempts"] == 1).all()
    assert results["wait_ms"].sum() > 0  # the pacing was doing the work


def test_with_no_limit_configured_the_run_finds_the_servers_limit(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(limits=Limits(rpm=1200, window_s=1.0))
    rows = [
        {"id": f"{r['id']}-{n}", "review": f"{r['review']} ({n})"}
        for n in (1, 2)
        for r in ROWS
    ]
    outcome = run(make_spec(tmp_path, simulator, rows=rows, concurrency=16))
    assert outcome.exit_code == 0  # every row ok in the end
    sent = len(simulator.requests)
    assert throttles(simulator) >= 1  # it had to learn the limit...
    assert throttles(simulator) <= 0.35 * sent  # ...and did not keep storming it


def test_two_runs_at_once_share_one_budget(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(limits=Limits(rpm=1200, window_s=1.0))
    specs = [
        make_spec(
            tmp_path / name,
            simulator,
            concurrency=8,
            rpm=1200,
            rows=[{"id": f"{name}{i}", "review": f"{name} {i}"} for i in range(30)],
        )
        for name in ("a", "b")
    ]
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])

    async def both() -> list[int]:
        outcomes = await asyncio.gather(
            *(run_job(prepare_job(spec), key) for spec in specs)
        )
        return [o.exit_code for o in outcomes]

    assert asyncio.run(both()) == [0, 0]
    assert len(simulator.requests) == 60
    assert throttles(simulator) == 0  # together, under the one limit


def test_a_throttle_that_never_ends_stops_the_run_resumably(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("*", [error("Throttling.RateQuota")] * 40)
    spec = make_spec(
        tmp_path,
        simulator,
        rows=ROWS[:3],
        concurrency=1,
        max_attempts=50,
        max_throttle_wait_s=5,
    )
    outcome = run(spec, clock=ManualClock())
    assert outcome.exit_code == 3 and outcome.stop_reason == "throttle"
    assert "throttled every request" in outcome.stop_detail
    assert set(read_results(spec)["status"]) == {"skipped"}  # not failed: resumable
    simulator.reset()
    assert run(make_spec(tmp_path, simulator, rows=ROWS[:3])).exit_code == 0


def test_a_storm_of_faults_leaves_every_row_ok_or_with_its_permanent_error(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Issue 7's fault mix: 10% InternalError, 5% throttling, 2% streams cut off
    mid-answer, 1% DataInspectionFailed. Nothing is lost; only moderation fails."""
    simulator.reset(
        seed=7,
        error_rates={
            "InternalError": 0.10,
            "Throttling.RateQuota": 0.05,
            "DataInspectionFailed": 0.01,
        },
        disconnect_rate=0.02,
    )
    rows = [{"id": f"f{i:03d}", "review": f"review {i}"} for i in range(300)]
    spec = make_spec(tmp_path, simulator, rows=rows, concurrency=16, max_attempts=8)
    outcome = run(spec, clock=ManualClock())
    results = read_results(spec)
    assert results["id"].to_list() == [r["id"] for r in rows]
    failed = results.filter(results["status"] != "ok")
    assert set(failed["error_code"]) <= {"DataInspectionFailed"}
    assert outcome.exit_code == (1 if failed.height else 0)
    faults = {r.fault for r in simulator.requests} - {None}
    assert {"InternalError", "Throttling.RateQuota", "disconnect"} <= faults
    retried = results.filter(results["attempts"] > 1).height
    assert retried > 30  # the faults really happened, and were recovered from


def test_an_unwritable_state_folder_falls_back_to_this_runs_own_budgets(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    spec = make_spec(tmp_path, simulator, rows=ROWS[:4], rpm=6000)
    outcome = run(spec)
    assert outcome.exit_code == 0


def test_an_outage_that_never_ends_stops_the_run_resumably(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A night without the service (here: a port nobody listens on) is not spun
    through row after row until dawn: when nothing has been answered for
    --max-throttle-wait, the run stops, every row left for the next run."""
    spec = make_spec(
        tmp_path,
        simulator,
        rows=ROWS[:5],
        concurrency=1,
        max_attempts=50,
        max_throttle_wait_s=5,
        base_url="http://127.0.0.1:9",
    )
    outcome = run(spec, clock=ManualClock())
    assert outcome.exit_code == 3 and outcome.stop_reason == "throttle"
    assert "answered no request" in outcome.stop_detail
    assert "connection_error" in outcome.stop_detail
    assert set(read_results(spec)["status"]) == {"skipped"}
    assert run(make_spec(tmp_path, simulator, rows=ROWS[:5])).exit_code == 0


def test_an_endpoint_that_does_not_exist_stops_the_run_before_failing_rows(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A wrong --base-url answers 404 to every request. Failing each row would mark
    them all refused for good; the run stops instead (exit 5), and once the URL is
    right, the same rows are sent without --retry-errors."""
    wrong = make_spec(
        tmp_path, simulator, rows=ROWS[:5], base_url=f"{simulator.url}/wrong"
    )
    outcome = run(wrong)
    assert outcome.exit_code == 5
    assert outcome.fatal is not None and outcome.fatal.code == "NotFound"
    assert "check --base-url" in str(outcome.fatal)
    assert set(read_results(wrong)["status"]) == {"skipped"}
    assert run(make_spec(tmp_path, simulator, rows=ROWS[:5])).exit_code == 0


def test_two_runs_share_a_limit_fast_enough_to_lease_blocks(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Issue 13: at 6,000 RPM a lease holds about ten requests, spent by a run
    without asking the shared file; two runs together still keep the limit."""
    simulator.reset(limits=Limits(rpm=6000, window_s=1.0))  # 100 a second
    specs = [
        make_spec(
            tmp_path / name,
            simulator,
            concurrency=16,
            rpm=6000,
            rows=[{"id": f"{name}{i}", "review": f"{name} {i}"} for i in range(150)],
        )
        for name in ("a", "b")
    ]
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])

    async def both() -> list[int]:
        outcomes = await asyncio.gather(
            *(run_job(prepare_job(spec), key) for spec in specs)
        )
        return [o.exit_code for o in outcomes]

    assert asyncio.run(both()) == [0, 0]
    assert len(simulator.requests) == 300
    assert throttles(simulator) == 0


class Listener(SilentObserver):
    """Keeps the info lines a run says."""

    def __init__(self) -> None:
        self.info: list[str] = []

    def on_info(self, message: str) -> None:
        self.info.append(message)


def run_told(spec: Job, listener: Listener) -> RunOutcome:
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
    return asyncio.run(run_job(prepare_job(spec), key, observer=listener))


def state_file_of(spec: Job) -> Path:
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
    return state_home() / f"{account_id(key, spec.connection.resolved_base_url)}.json"


def edit_state(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    raw = json.loads(path.read_text())
    for budgets in raw["models"].values():
        budgets["requests"]["level"] = -1e7  # a queue no run would live to see end
    edit(raw)
    path.write_text(json.dumps(raw))


def shift_ahead(raw: dict[str, Any]) -> None:
    """As after a reboot with the old monotonic times, or a clock set back."""
    raw["written_at"] += 86_400
    for budgets in raw["models"].values():
        for budget in budgets.values():
            budget["updated"] += 86_400


def another_host(raw: dict[str, Any]) -> None:
    raw["host"] = "another-machine"


@pytest.mark.parametrize(
    ("edit", "said"),
    [(shift_ahead, "ahead of this clock"), (another_host, "another host")],
)
def test_a_state_file_that_cannot_be_trusted_does_not_slow_a_run(
    tmp_path: Path,
    simulator: SimulatorServer,
    edit: Callable[[dict[str, Any]], None],
    said: str,
) -> None:
    """Issue 13: a state file from before a reboot stopped a run at 10 of 60 rows
    for 120 s. One from the future, or from another host, is now dropped with an
    info line, and the run paces from the configured limit alone: at 6,000 RPM its
    first 20 rows go at once, with no wait at all."""
    first = make_spec(tmp_path / "first", simulator, rows=ROWS[:5], rpm=6000)
    assert run(first).exit_code == 0
    edit_state(state_file_of(first), edit)
    spec = make_spec(tmp_path / "second", simulator, rows=ROWS[:20], rpm=6000)
    listener = Listener()
    outcome = run_told(spec, listener)
    assert outcome.exit_code == 0
    assert read_results(spec)["wait_ms"].sum() == 0
    assert [line for line in listener.info if said in line]


def test_a_pacing_wait_longer_than_max_throttle_wait_stops_the_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Every wait is bounded by --max-throttle-wait, the rate budgets' included:
    at one request a minute the second row would wait a minute, which is more than
    the 5 s allowed. The run stops, resumable, and says why."""
    spec = make_spec(tmp_path, simulator, rows=ROWS[:3], rpm=1, max_throttle_wait_s=5)
    outcome = run(spec, clock=ManualClock())
    assert outcome.exit_code == 3 and outcome.stop_reason == "throttle"
    assert "rate budgets would hold requests" in outcome.stop_detail
    assert (read_results(spec)["status"] == "ok").sum() == 1  # the first went
