"""Runs on a local Ray cluster against the simulator on loopback (issue 15): the same
results as one machine, one rate budget for every worker, no paid answer lost or paid
twice when a worker dies, and a resume on one machine that sends only what is
missing. Counts and statuses are asserted, never durations (those are in bench/)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from batchkimi.credentials import read_api_key
from batchkimi.jobs import execute
from batchkimi.outcome import RunOutcome
from batchkimi.ray.claims import LEDGER_PREFIX
from batchkimi.settings import Job
from batchkimi.simulator import Limits, SimulatorServer
from tests.helpers import make_spec, read_results

ROWS = [{"id": f"r{i:03d}", "review": f"review number {i}"} for i in range(40)]
#: what differs between two runs of one job however they are run: timing, and the
#: attempt a row was answered at
TIMING = ("latency_ms", "ttft_ms", "wait_ms", "started_at", "finished_at")


def run_on(job: Job) -> RunOutcome:
    return execute(job, read_api_key())


def journal_records(job: Job) -> list[dict[str, Any]]:
    """Every record of every journal stream in the output folder."""
    records = []
    for path in sorted((job.output / ".batchkimi").glob("journal*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def test_results_on_ray_are_those_of_one_machine(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    local = make_spec(tmp_path / "local", simulator, rows=ROWS)
    assert run_on(local).exit_code == 0
    simulator.reset(seed=1234)
    on_ray = make_spec(tmp_path / "ray", simulator, rows=ROWS, engine="ray")
    outcome = run_on(on_ray)
    assert outcome.exit_code == 0
    assert outcome.sent == len(ROWS)
    assert len(simulator.requests) == len(ROWS)
    expected = read_results(local).drop(TIMING)
    got = read_results(on_ray).drop(TIMING)
    assert got.columns == expected.columns
    # the simulator names each answer's request anew: not the run's doing
    assert got.drop("request_id").equals(expected.drop("request_id"))
    summary = json.loads((on_ray.output / "summary.json").read_text())
    assert summary["overall"]["by_status"]["ok"] == len(ROWS)
    streams = list((on_ray.output / ".batchkimi").glob("journal-shard-ray-*.jsonl"))
    assert len(streams) >= 1  # each worker journaled into the output folder


def test_workers_share_one_rate_budget(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    rpm = 1200  # 20 a second
    simulator.reset(seed=1234, limits=Limits(rpm=rpm, window_s=1.0))
    rows = [{"id": f"r{i:03d}", "review": f"review {i}"} for i in range(140)]
    job = make_spec(
        tmp_path, simulator, rows=rows, engine="ray", ray_workers=2, rpm=rpm
    )
    outcome = run_on(job)
    assert outcome.exit_code == 0
    assert sum(1 for r in simulator.requests if r.status == 429) == 0
    times = sorted(r.at for r in simulator.requests)
    # past the first second (the budget's burst, and the workers starting), the
    # pace is the configured limit's: at most it, and at least 90% of it
    steady = [t for t in times if t >= times[0] + 1.0]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 0.9 * rpm / 60 <= rate <= rpm / 60, f"{rate:.2f} requests/s"
    assert len(_worker_streams(job)) == 2, "both workers sent"


def _worker_streams(job: Job) -> list[str]:
    return [
        p.name
        for p in (job.output / ".batchkimi").glob("journal-shard-ray-*.jsonl")
        if p.stat().st_size > 0
    ]


def test_a_worker_killed_mid_run_loses_no_paid_answer(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    """Ray restarts the actor and sends its batch again: rows its journal holds are
    read back, not asked again; only rows in flight at the kill are sent twice."""
    simulator.reset(seed=1234, ttft_ms=250)
    rows = [{"id": f"r{i:03d}", "review": f"review {i}"} for i in range(48)]
    job = make_spec(
        tmp_path, simulator, rows=rows, engine="ray", ray_workers=2, concurrency=4
    )
    done: list[RunOutcome | BaseException] = []

    def run_in_thread() -> None:
        try:
            done.append(run_on(job))
        except BaseException as exc:
            done.append(exc)

    runner = threading.Thread(target=run_in_thread)
    runner.start()
    victim, killed_at = _kill_a_worker_once_it_answered(ray_cluster, job, runner, done)
    runner.join(timeout=240)
    outcome = done[0]
    assert isinstance(outcome, RunOutcome), outcome
    assert outcome.exit_code == 0
    assert any(r.at > killed_at for r in simulator.requests)  # it was mid-run
    assert (read_results(job)["status"] == "ok").all()
    journaled = Counter(r["fingerprint"] for r in journal_records(job))
    assert max(journaled.values()) == 1  # nothing journaled was asked again
    asked = Counter(_review_of(r.body) for r in simulator.requests)
    assert len(asked) == len(rows)
    by_victim = (
        job.output / ".batchkimi" / f"journal-shard-{victim}.jsonl"
    ).read_text()
    answered_before = [json.loads(line)["row_id"] for line in by_victim.splitlines()]
    assert len(answered_before) >= 4
    for row_id in answered_before:
        review = next(r["review"] for r in rows if r["id"] == row_id)
        assert asked[_prompt_of(review)] == 1  # paid once, kept, not asked again
    twice = [row for row, n in asked.items() if n > 1]
    assert len(twice) <= 4  # at most what the killed worker had in flight


def _prompt_of(review: str) -> str:
    return f"Sentiment of: {review}. Answer with one of: positive, negative"


def _review_of(body: Any) -> str:
    return str(body["messages"][-1]["content"])


def _kill_a_worker_once_it_answered(
    ray: ModuleType, job: Job, runner: threading.Thread, done: list[Any]
) -> tuple[str, float]:
    """SIGKILL one worker's process as soon as its journal holds answers: (its
    journal stream, when)."""
    deadline = time.monotonic() + 100
    state = job.output / ".batchkimi"
    while time.monotonic() < deadline:
        if not runner.is_alive():
            pytest.fail(f"the run ended before a worker could be killed: {done}")
        workers: dict[str, int] = {}
        for name in ray.util.list_named_actors():  # this run's, and older ones
            if name.startswith(LEDGER_PREFIX):
                with contextlib.suppress(ValueError, ray.exceptions.RayActorError):
                    workers |= ray.get(ray.get_actor(name).workers.remote())
        for stream, pid in workers.items():
            journal = state / f"journal-shard-{stream}.jsonl"  # this run's only
            if journal.exists() and journal.read_bytes().count(b"\n") >= 4:
                os.kill(pid, signal.SIGKILL)
                return stream, time.monotonic()
        time.sleep(0.05)
    pytest.fail("no worker answered within 100 s")


def test_a_ray_run_resumes_on_one_machine_sending_only_what_is_missing(
    tmp_path: Path, simulator: SimulatorServer, ray_cluster: ModuleType
) -> None:
    on_ray = make_spec(tmp_path, simulator, rows=ROWS, engine="ray", limit=15)
    first = run_on(on_ray)
    assert first.exit_code == 3  # --limit: resumable
    assert len(simulator.requests) == 15
    simulator.reset(seed=1234)
    here = make_spec(tmp_path, simulator, rows=ROWS)
    assert here.output == on_ray.output
    second = run_on(here)
    assert second.exit_code == 0
    assert len(simulator.requests) == len(ROWS) - 15
    assert (read_results(here)["status"] == "ok").all()
    simulator.reset(seed=1234)
    again = make_spec(tmp_path, simulator, rows=ROWS, engine="ray")
    assert run_on(again).exit_code == 0
    assert simulator.requests == []  # nothing left to send, on Ray either
    assert pl.read_parquet(again.output / "results.parquet").height == len(ROWS)
