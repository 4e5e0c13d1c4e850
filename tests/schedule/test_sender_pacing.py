"""The sender's side of pacing: waits bounded by --max-throttle-wait, and throttles of
the background retried without a backoff. Against the simulator, on a manual clock,
with a stand-in for the rate budgets that answers as a test needs."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from batchkimi.api import protocol_for
from batchkimi.client import ModelStudioClient
from batchkimi.clock import ManualClock
from batchkimi.credentials import ApiKey
from batchkimi.pricing import load_prices
from batchkimi.records import Message, RowRequest, RowResult, TextPart
from batchkimi.schedule.sender import RowSender, SendSettings, ThrottleStop
from batchkimi.simulator import SimulatorServer, error

REQUEST = RowRequest(
    index=0,
    row_id="r0",
    model="kimi-k2.6",
    messages=(Message("user", (TextPart("Label: fine"),)),),
    parameters=(),
    enable_thinking=None,
    fingerprint="f0",
)


class Budgets:
    """Grants what it is told to, and says whether a throttle was background."""

    def __init__(self, *, delay_s: float = 0.0, absorbs: bool = False) -> None:
        self.delay_s = delay_s
        self.absorbing = absorbs
        self.settled: list[str] = []

    def try_reserve(self, model: str, tokens: float, now: float) -> tuple[bool, float]:
        return True, self.delay_s

    def settle(self, model: str, tokens_reserved: float, **how: object) -> bool:
        self.settled.append(str(how["outcome"]))
        return False

    def absorbs(self, model: str, budget: str | None) -> bool:
        return self.absorbing

    def close(self) -> None:
        pass


def send(
    simulator: SimulatorServer,
    budgets: Budgets,
    clock: ManualClock,
    max_throttle_wait_s: float = 600.0,
    max_attempts: int = 3,
) -> RowResult:
    async def one() -> RowResult:
        key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
        client = ModelStudioClient(key, concurrency=1, timeout_s=30, clock=clock)
        sender = RowSender(
            client,
            protocol_for("openai"),
            SendSettings(
                base_url=f"{simulator.url}/compatible-mode/v1",
                stream=False,
                max_attempts=max_attempts,
                region="cn-beijing",
                prices=load_prices(None),
                max_throttle_wait_s=max_throttle_wait_s,
            ),
            clock,
            rng=random.Random(1),
            limits=budgets,
        )
        try:
            return await sender.process(REQUEST)
        finally:
            await client.aclose()

    return asyncio.run(one())


def test_a_throttle_of_the_background_is_retried_without_a_backoff(
    simulator: SimulatorServer,
) -> None:
    simulator.script("*", [error("Throttling.RateQuota")])
    budgets, clock = Budgets(absorbs=True), ManualClock()
    result = send(simulator, budgets, clock)
    assert result.status == "ok" and result.attempts == 2
    assert budgets.settled == ["throttled", "accepted"]
    assert clock.sleeps == [0.0]  # the retry's wait was none
    assert result.wait_ms == 0


def test_a_throttle_about_the_rate_is_backed_off_as_ever(
    simulator: SimulatorServer,
) -> None:
    simulator.script("*", [error("Throttling.RateQuota")])
    budgets, clock = Budgets(absorbs=False), ManualClock()
    result = send(simulator, budgets, clock)
    assert result.status == "ok" and result.attempts == 2
    assert len(clock.sleeps) == 1 and clock.sleeps[0] > 0


def test_a_pacing_delay_beyond_max_throttle_wait_stops_before_waiting(
    simulator: SimulatorServer,
) -> None:
    """Issue 13: a stale state file held a run for 120 s and --max-throttle-wait
    never fired. Now no pacing delay outlasts it: the run stops, resumable."""
    budgets, clock = Budgets(delay_s=120.0), ManualClock()
    with pytest.raises(ThrottleStop, match="rate budgets would hold requests"):
        send(simulator, budgets, clock, max_throttle_wait_s=60.0)
    assert clock.sleeps == []  # it did not start to wait
    assert simulator.requests == []


def test_a_pacing_delay_within_max_throttle_wait_is_waited(
    simulator: SimulatorServer,
) -> None:
    budgets, clock = Budgets(delay_s=30.0), ManualClock()
    result = send(simulator, budgets, clock, max_throttle_wait_s=60.0)
    assert result.status == "ok"
    assert clock.sleeps == [30.0] and result.wait_ms == 30_000


def test_no_backoff_outlasts_max_throttle_wait(simulator: SimulatorServer) -> None:
    """A backoff doubles up to a minute; with --max-throttle-wait 1 no single wait
    is longer than 1 s (the third would have been 1.5 s), and a service that keeps
    throttling stops the run."""
    simulator.script("*", [error("Throttling.RateQuota")] * 12)
    budgets, clock = Budgets(absorbs=False), ManualClock()
    with pytest.raises(ThrottleStop, match="throttled every request"):
        send(simulator, budgets, clock, max_throttle_wait_s=1.0, max_attempts=12)
    assert len(clock.sleeps) >= 3 and max(clock.sleeps) <= 1.0
