"""Real `batchkimi run` processes, signalled, killed and run twice at once.

The simulator runs in this test process (so its request log can be checked); each run
is a subprocess pointed at it, as cron would start it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from batchkimi.simulator import SimulatorServer

TIMEOUT_S = 60


def manifest(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "reviews.csv"
    pl.DataFrame(
        {
            "id": [f"r{i:03d}" for i in range(rows)],
            "review": [f"review {i}" for i in range(rows)],
        }
    ).write_csv(path)
    return path


def spawn(
    tmp_path: Path, simulator: SimulatorServer, rows: int, *extra: str
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "batchkimi",
        "run",
        "-i",
        str(manifest(tmp_path, rows)),
        "-o",
        str(tmp_path / "out"),
        "--base-url",
        simulator.url,
        "--prompt",
        "Label: {review}",
        "--log-format",
        "json",
        *("--rpm", "0", "--tpm", "0"),  # the simulator enforces no limits here
        *extra,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, err


def journal_records(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "out" / ".batchkimi" / "journal.jsonl"
    if not path.exists():
        return []
    return [
        json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")
    ]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def served(simulator: SimulatorServer) -> Counter[str]:
    return Counter(
        r.body["messages"][-1]["content"]
        for r in simulator.requests
        if r.status == 200 and r.fault is None
    )


def test_a_first_signal_lets_requests_in_flight_finish(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=300)
    process = spawn(tmp_path, simulator, 40, "--concurrency", "4")
    wait_for(lambda: len(journal_records(tmp_path)) >= 4, "first answers")
    in_flight_at_signal = len(simulator.requests) - len(journal_records(tmp_path))
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    events = [json.loads(line) for line in err.splitlines()]
    assert code == 3
    assert any(e["event"] == "stop" and e["reason"] == "signal" for e in events)
    assert "re-run the same command to resume" in events[-1]["message"]
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    ok = results.filter(pl.col("status") == "ok").height
    assert ok == len(journal_records(tmp_path))
    assert ok >= 4 + in_flight_at_signal - 1  # what was in flight was let finish
    assert set(results["status"]) == {"ok", "skipped"}
    simulator.reset()
    code, _ = finish(spawn(tmp_path, simulator, 40))
    assert code == 0
    assert sum(served(simulator).values()) == 40 - ok  # only the rest was asked


def test_a_second_signal_stops_at_once_and_loses_nothing(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=20_000)  # answers that would take far too long to wait for
    process = spawn(tmp_path, simulator, 8, "--concurrency", "4")
    wait_for(lambda: len(simulator.requests) >= 4, "requests in flight")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 3 and time.monotonic() - started < 10
    assert "results.parquet is rebuilt by the next run" in err
    simulator.reset()
    code, _ = finish(spawn(tmp_path, simulator, 8))
    assert code == 0
    assert (
        pl.read_parquet(tmp_path / "out" / "results.parquet")["status"].to_list()
        == ["ok"] * 8
    )


def test_a_second_process_is_refused_and_a_killed_holder_is_taken_over(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=20_000)
    first = spawn(tmp_path, simulator, 8)
    wait_for(lambda: len(simulator.requests) >= 1, "the first run to start")
    code, err = finish(spawn(tmp_path, simulator, 8))
    assert code == 4
    assert f"pid {first.pid} on " in err and "Wait for it to finish" in err
    first.kill()  # kill -9: its lock dies with it
    first.communicate(timeout=TIMEOUT_S)
    simulator.reset()
    code, _ = finish(spawn(tmp_path, simulator, 8))
    assert code == 0


def test_kill_9_at_random_points_never_loses_or_repeats_a_paid_answer(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Issue 4: kill a real run with SIGKILL at random moments, resume each time."""
    rows, concurrency, rng = 200, 6, random.Random(4)
    simulator.reset(seed=4, ttft_ms=100, ttft_jitter=0.6)
    kills = 0
    for _ in range(8):
        process = spawn(tmp_path, simulator, rows, "--concurrency", str(concurrency))
        time.sleep(rng.uniform(0.8, 1.8))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.communicate(timeout=TIMEOUT_S)
    code, _ = finish(
        spawn(tmp_path, simulator, rows, "--concurrency", str(concurrency))
    )
    assert code == 0
    assert kills >= 3  # the test did kill runs mid-way

    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results.height == rows and results["id"].n_unique() == rows
    assert set(results["status"]) == {"ok"}
    journal = journal_records(tmp_path)
    by_fingerprint = Counter(str(r["fingerprint"]) for r in journal)
    assert set(by_fingerprint.values()) == {1}  # nothing journalled was asked again
    answer_of = dict(zip(results["fingerprint"], results["request_id"], strict=True))
    for record in journal:
        assert answer_of[str(record["fingerprint"])] == record["request_id"]
    repeats = sum(count - 1 for count in served(simulator).values())
    assert repeats <= kills * concurrency  # at most what was in flight at each kill


@pytest.mark.parametrize("shards", [2])
def test_concurrent_shards_share_one_output(
    tmp_path: Path, simulator: SimulatorServer, shards: int
) -> None:
    simulator.reset(ttft_ms=30)
    processes = [
        spawn(tmp_path, simulator, 30, "--shard", f"{i}/{shards}") for i in (1, 2)
    ]
    assert [finish(p)[0] for p in processes] == [0, 0]
    assert (
        set(served(simulator).values()) == {1} and sum(served(simulator).values()) == 30
    )
    code, _ = finish(spawn(tmp_path, simulator, 30))
    assert code == 0
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["status"].to_list() == ["ok"] * 30
