"""Ctrl-C on ``batchkimi run --engine ray``, as on one machine (issue 15): no worker
sends anything new, requests in flight finish within the grace period and are
kept, the run exits 3 with its outputs written, and running it again sends only
what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl

from batchkimi.simulator import SimulatorServer
from tests.helpers import run_args

ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"id": f"s{i:03d}", "review": f"signal review {i}"} for i in range(60)]


def _journaled(state: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in state.glob("journal*.jsonl"))


def test_ctrl_c_stops_every_worker_and_the_run_resumes(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(seed=1234, ttft_ms=300)
    args = run_args(
        tmp_path,
        simulator,
        *("--engine", "ray", "--ray-workers", "2", "--concurrency", "2"),
        *("--grace", "60"),
        rows=ROWS,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(
        [sys.executable, "-m", "batchkimi", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / "out" / ".batchkimi"
    deadline = time.monotonic() + 90
    while not state.exists() or _journaled(state) < 6:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no answer within 90 s"
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 3, stderr[-2000:]
    assert "SIGINT" in stderr
    first = pl.read_parquet(tmp_path / "out" / "results.parquet")
    answered = first.filter(pl.col("status") == "ok").height
    assert 6 <= answered < len(ROWS)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["stop_reason"] == "signal"

    again = subprocess.run(  # on one machine: the journals are the same folder's
        [sys.executable, "-m", "batchkimi", *run_args(tmp_path, simulator, rows=ROWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert (results["status"] == "ok").all()
    asked = Counter(str(r.body["messages"][-1]["content"]) for r in simulator.requests)
    assert len(asked) == len(ROWS)
    assert max(asked.values()) == 1  # the grace let every request in flight finish
