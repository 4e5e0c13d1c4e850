"""Leases: a process spends blocks of its budgets alone, and the limit still holds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from batchkimi.clock import ManualClock
from batchkimi.schedule.lease import LeasedLimits
from batchkimi.schedule.limitstore import MemoryStore, SharedLimits
from batchkimi.schedule.ratelimit import BLOCK_S, HEADROOM, HORIZON_S
from tests.schedule.fakes import CountingStore, per_second_limit, simulate

ABSURD = (100_000_000, 100_000_000_000)  # the raised quota


def counting(limits_of: tuple[int | None, int | None]) -> CountingStore:
    return CountingStore(MemoryStore(lambda model: limits_of))


def send_times(limits: LeasedLimits, now: float, count: int) -> list[float]:
    """Workers asking at ``now`` (and again when told) until ``count`` may go."""
    times: list[float] = []
    while len(times) < count:
        granted, wait_s = limits.try_reserve("m", 0, now)
        if granted:
            times.append(now + wait_s)
        else:
            now += wait_s
    return times


def test_a_raised_quota_touches_the_store_ten_times_a_second_not_per_request() -> None:
    """Issue 13: with limits at 100,000,000 RPM, every reserve and settle went to a
    locked file (27 times slower than no limit). A lease lasts 100 ms, whatever the
    request rate: 20,000 requests in two seconds ask the store about 20 times."""
    store = counting(ABSURD)
    limits = LeasedLimits(store)
    for i in range(20_000):
        now = i / 10_000  # 10,000 requests a second
        granted, wait_s = limits.try_reserve("m", 300, now)
        assert granted and wait_s == 0.0
        limits.settle("m", 300, outcome="accepted", tokens_used=250, now=now)
    assert store.exchanges <= 2.0 / BLOCK_S + 2


def test_with_no_limit_the_store_is_asked_as_rarely() -> None:
    store = counting((None, None))
    limits = LeasedLimits(store)
    for i in range(20_000):
        assert limits.try_reserve("m", 300, i / 10_000) == (True, 0.0)
    assert store.exchanges <= 2.0 / BLOCK_S + 2


def test_at_a_low_rate_a_lease_is_one_request() -> None:
    """500 RPM: a tenth of a second is less than a request, so each request is its
    own lease, paced exactly as before leases."""
    store = counting((500, None))
    limits = LeasedLimits(store)
    times = send_times(limits, 0.0, 20)
    assert store.exchanges >= 20
    rate = 500 / 60 * HEADROOM
    burst = int(rate * 0.5)
    assert times[:burst] == [0.0] * burst
    gaps = [b - a for a, b in itertools.pairwise(times[burst:])]
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)


def test_leases_keep_the_pace_at_a_middle_rate() -> None:
    """6,000 RPM (98 a second): leases of about ten requests, spaced as GCRA would
    space single ones, so no second holds more than the rate plus the burst."""
    limits = LeasedLimits(counting((6000, None)))
    times = send_times(limits, 0.0, 600)
    rate = 6000 / 60 * HEADROOM
    for start in range(6):
        sent = sum(1 for t in times if start <= t < start + 1)
        assert sent <= rate + rate * 0.5 + 1


def test_a_refusal_is_remembered_instead_of_asking_the_store_again() -> None:
    """64 workers against 480 RPM: the queue is a second long after eight; the
    others are told when to come back without each asking the store."""
    store = counting((480, None))
    limits = LeasedLimits(store)
    answers = [limits.try_reserve("m", 0, now=0.0) for _ in range(64)]
    granted = [wait for ok, wait in answers if ok]
    refused = [wait for ok, wait in answers if not ok]
    assert max(granted) <= HORIZON_S + 1 / 8  # only a second's worth was queued
    assert refused and min(refused) > 0
    assert store.exchanges <= len(granted) + 1


def test_token_estimates_are_corrected_with_reported_usage() -> None:
    limits = LeasedLimits(MemoryStore(lambda model: (None, 60_000)))  # 980/s
    assert limits.try_reserve("m", 400, now=0.0) == (True, 0.0)
    limits.settle("m", 400, outcome="accepted", tokens_used=100, now=0.0)
    # the 300 not used came back: 390 more still go at once (490 in the bucket)
    assert limits.try_reserve("m", 390, now=0.0) == (True, 0.0)
    granted, wait_s = limits.try_reserve("m", 98, now=0.0)
    assert granted and wait_s == pytest.approx(0.1)


def test_a_failed_request_gives_its_tokens_back() -> None:
    limits = LeasedLimits(MemoryStore(lambda model: (None, 60_000)))
    limits.try_reserve("m", 490, now=0.0)
    limits.settle("m", 490, outcome="failed", now=0.0)
    assert limits.try_reserve("m", 490, now=0.0) == (True, 0.0)


def test_a_throttled_request_keeps_its_reservation() -> None:
    """Its moment has passed; handing it back would let a re-send go at once into
    the same throttle."""
    limits = LeasedLimits(MemoryStore(lambda model: (60, None)))  # one a second
    limits.try_reserve("m", 0, now=0.0)
    limits.settle("m", 0, outcome="throttled", budget="rpm", sent_at=0.0, now=0.1)
    granted, wait_s = limits.try_reserve("m", 0, now=0.1)
    assert granted and wait_s > 0.5


def test_close_hands_back_what_was_leased_and_closes_the_store() -> None:
    store = counting((6000, None))
    limits = LeasedLimits(store)
    limits.try_reserve("m", 0, now=0.0)  # leases ten, spends one
    memory = store.store
    assert isinstance(memory, MemoryStore)
    budget = memory.limits.models["m"].requests
    assert budget.level < budget.capacity - 1
    limits.close()
    assert store.closed
    assert budget.level == pytest.approx(budget.capacity - 1)


def test_two_stores_on_one_file_stay_under_one_limit(tmp_path: Path) -> None:
    """Two runs leasing from one file, asking in turns as fast as they are let,
    send together no more than one limit allows (plus the burst and a lease)."""
    clock = ManualClock(start=0.0)
    path = tmp_path / "account.json"
    runs = [
        SharedLimits(path, lambda model: (6000, None), clock=clock) for _ in range(2)
    ]
    try:
        sent: list[float] = []
        next_ask = [0.0, 0.0]
        while min(next_ask) < 5.0:
            which = next_ask.index(min(next_ask))
            now = next_ask[which]
            clock.now = now
            granted, wait_s = runs[which].try_reserve("m", 0, now)
            if granted:
                sent.append(now + wait_s)
                next_ask[which] = now + wait_s
            else:
                next_ask[which] = now + wait_s
        rate = 6000 / 60 * HEADROOM
        sent.sort()
        for start in (0.0, 1.0, 2.0, 3.0):
            window = sum(1 for t in sent if start <= t < start + 1)
            assert window <= rate + rate * 0.5 + rate * BLOCK_S + 1
        assert len([t for t in sent if 1 <= t < 4]) >= 3 * rate * 0.95  # and use it
    finally:
        for run in runs:
            run.close()


def test_two_processes_sharing_a_file_against_a_service_are_not_throttled(
    tmp_path: Path,
) -> None:
    """The same through the whole loop, each process with its own workers."""
    clock = ManualClock(start=0.0)
    path = tmp_path / "account.json"
    service = per_second_limit(100)  # 6000 RPM, enforced per second
    both = [
        SharedLimits(path, lambda model: (6000, None), clock=clock) for _ in range(2)
    ]
    try:
        outcome = simulate(
            both, service, seconds=10, concurrency=16, start=0.0, clock=clock
        )
    finally:
        for run in both:
            run.close()
    assert outcome.throttled_share(0, 10) == 0  # together, under the one limit
    assert outcome.accepted_between(2, 10) >= 8 * 100 * HEADROOM * 0.95  # all of it
