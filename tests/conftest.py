"""Fixtures: a scrubbed environment with a canary key, and the simulator on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from batchkimi.simulator import SimulatorServer

# A safety net read by the official SDKs at import: any test that forgets to point one
# at the simulator fails on a dead loopback port instead of reaching the real service.
_NOWHERE = "http://127.0.0.1:9"
os.environ["DASHSCOPE_HTTP_BASE_URL"] = f"{_NOWHERE}/api/v1"
os.environ["DASHSCOPE_COMPATIBLE_BASE_URL"] = f"{_NOWHERE}/compatible-mode/v1"
os.environ["OPENAI_BASE_URL"] = f"{_NOWHERE}/v1"

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
def canary_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """No real key or proxy reaches a test; a canary key stands in, to be grepped for.
    Each test gets its own state folder, so rate budgets shared between runs are
    shared only within the test."""
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("DASHSCOPE_API_KEY", canary)
    return canary


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorServer]:
    with SimulatorServer.running(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def simulator(simulator_server: SimulatorServer) -> Iterator[SimulatorServer]:
    """The shared simulator, reset; a test fails if the simulator itself crashed."""
    simulator_server.reset(seed=1234)
    yield simulator_server
    assert simulator_server.app.crashes == [], simulator_server.app.crashes[0]
