"""Fixtures: a scrubbed environment with a canary key, and the simulator on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from batchkimi.simulator import SimulatorServer

_SCRUB = (
    "DASHSCOPE_API_KEY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


@pytest.fixture(autouse=True)
def canary_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """No real key or proxy reaches a test; a canary key stands in, to be grepped for."""
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("DASHSCOPE_API_KEY", canary)
    return canary


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorServer]:
    with SimulatorServer.running(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def simulator(simulator_server: SimulatorServer) -> SimulatorServer:
    simulator_server.reset(seed=1234)
    return simulator_server
