"""A two-node Ray cluster on this machine (``ray start --head`` and ``ray start
--address``), and ``batchkimi run --engine ray --ray-address`` run on it as a user
would, from another process (issue 15). Slower than the other Ray tests: it starts
a cluster of its own, and stops only that cluster's processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, run_args

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"the head node did not listen on {port} within {within_s:g} s")


_COUNT_CPUS = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 60
while ray.cluster_resources().get("CPU", 0) < float(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.2)
"""


def _joined(address: str, *, cpus: int, env: dict[str, str]) -> None:
    """Wait for every node to join, as a user does before running a job."""
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_CPUS, address, str(cpus)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the second node did not join: {done.stderr[-500:]!r}")


def _ours(temp: Path) -> list[int]:
    """Processes of this cluster: every one names its own temporary folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(temp).encode() in command:
            found.append(int(entry.name))
    return found


#: a throwaway cluster on this machine, gone with the test: no token to share
#: between its nodes and the command that runs the job (Ray's own business)
TOKEN = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture
def two_nodes() -> Iterator[str]:
    """A head node and a second node, one CPU each, on loopback; stopped at the
    end by their process groups and temporary folder, never by name."""
    port = _free_port()
    temp = Path(
        tempfile.mkdtemp(prefix="bk-ray-", dir="/tmp")
    )  # socket paths are short
    env = {
        **os.environ,
        **TOKEN,
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
    nodes = [
        subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                f"--port={port}",
                "--block",
                *common,
                "--include-dashboard=false",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _listening(port, 60)
        nodes.append(
            subprocess.Popen(
                [str(RAY), "start", f"--address=127.0.0.1:{port}", "--block", *common],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _joined(f"127.0.0.1:{port}", cpus=2, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            with _gone():
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for pid in _ours(temp):
            with _gone():
                os.kill(pid, signal.SIGKILL)


class _gone:
    """Ignore a process that has already exited."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is ProcessLookupError


def test_a_two_node_cluster_runs_a_job_from_the_command_line(
    tmp_path: Path, simulator: SimulatorServer, two_nodes: str, canary_key: str
) -> None:
    # answers take a while, so the second node's worker (slower to start: its
    # node fetches the job's code first) comes to have rows to send
    simulator.reset(seed=1234, ttft_ms=800)
    rows = [
        {"id": f"{r['id']}-{n}", "review": f"{r['review']} ({n})"}
        for n in range(8)
        for r in REVIEWS
    ]
    args = run_args(
        tmp_path,
        simulator,
        *("--engine", "ray", "--ray-address", two_nodes, "--ray-workers", "2"),
        *("--concurrency", "2"),
        rows=rows,
    )
    env = {**os.environ, **TOKEN, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "batchkimi", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results.height == len(rows)
    assert (results["status"] == "ok").all()
    assert len(simulator.requests) == len(rows)
    state = tmp_path / "out" / ".batchkimi"
    # a worker on each node (one CPU each) journaled answers there
    senders = [
        p for p in state.glob("journal-shard-ray-*.jsonl") if p.stat().st_size > 0
    ]
    assert len(senders) == 2, done.stderr
    report = subprocess.run(  # the report reads every worker's journal too
        [sys.executable, "-m", "batchkimi", "report", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "40" in report.stdout
    assert canary_key not in done.stdout + done.stderr + report.stdout
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert canary_key.encode() not in path.read_bytes(), path
