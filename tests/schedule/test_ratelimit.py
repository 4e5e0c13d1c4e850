"""Rate budgets on a controlled clock: pacing, bursts, throttles, sharing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchkimi.schedule.limitstore import SharedLimits
from batchkimi.schedule.ratelimit import (
    CUT,
    GROWTH_PER_S,
    HEADROOM,
    HORIZON_S,
    Budget,
    ModelLimits,
)


def test_requests_are_paced_evenly_after_the_burst() -> None:
    budget = Budget.limited(per_minute=600, now=0.0)  # 10/s, less headroom
    rate = 10 * HEADROOM
    waits = [budget.reserve(1, now=0.0) for _ in range(10)]
    burst = int(rate * budget.burst_s)
    assert waits[:burst] == [0.0] * burst  # half a second's worth goes at once
    gaps = [b - a for a, b in zip(waits[burst:], waits[burst + 1 :], strict=False)]
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)  # then one per 1/rate


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=6, max_value=6000),
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=60),
)
def test_no_window_gets_more_than_rate_times_window_plus_burst(
    per_minute: int, gaps: list[float]
) -> None:
    budget = Budget.limited(per_minute, now=0.0)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        starts.append(now + budget.reserve(1, now))  # when each request may go
    rate = budget.rate or 0.0
    for i, first in enumerate(starts):
        for last in starts[i:]:
            sent = sum(1 for t in starts if first <= t <= last)
            assert sent <= rate * (last - first) + budget.capacity + 1e-6


def test_a_throttle_cuts_to_what_the_service_accepted_then_grows_back() -> None:
    budget = Budget(ceiling=None, rate=None)  # no limit configured: unlimited
    for i in range(40):  # the service accepts 20 a second for two seconds
        now = i * 0.05
        budget.reserve(1, now)
        budget.accepted(1, 1, now)
    assert budget.throttled(now=2.0, sent_at=1.9) is True
    assert budget.rate == pytest.approx(20 * CUT)
    # a throttle of a request sent before the cut is an echo: no second cut
    assert budget.throttled(now=2.5, sent_at=1.95) is False
    assert budget.rate == pytest.approx(20 * CUT)
    budget.reserve(1, now=5.0)  # three seconds later, past the cooldown
    assert budget.rate == pytest.approx(20 * CUT * (1 + GROWTH_PER_S) ** 3)


def test_growth_stops_at_the_configured_ceiling() -> None:
    budget = Budget.limited(per_minute=60, now=0.0)
    budget.reserve(1, now=0.0)
    budget.accepted(1, 1, now=0.0)
    budget.throttled(now=0.5, sent_at=0.4)
    budget.reserve(1, now=1_000.0)
    assert budget.rate == budget.ceiling == pytest.approx(HEADROOM)


def test_burst_throttles_shrink_the_bucket() -> None:
    budget = Budget.limited(per_minute=6000, now=0.0)
    before = budget.capacity
    budget.throttled(now=0.1, sent_at=0.0, burst=True)
    assert budget.capacity < before


def test_token_reservations_are_corrected_with_reported_usage() -> None:
    limits = ModelLimits(lambda model: (None, 60_000))  # 980 a second, 490 at once
    assert limits.reserve("m", 400, now=0.0) == 0.0  # 90 left
    limits.settle("m", 400, outcome="accepted", tokens_used=100, now=0.0)
    assert limits.reserve("m", 390, now=0.0) == 0.0  # the 300 not used came back
    assert limits.reserve("m", 98, now=0.0) == pytest.approx(0.1)  # now it waits


def test_a_tpm_throttle_slows_tokens_not_requests() -> None:
    limits = ModelLimits(lambda model: (None, None))
    limits.reserve("m", 100, now=0.0)
    limits.settle("m", 100, outcome="accepted", tokens_used=100, now=0.0)
    limits.reserve("m", 100, now=0.5)
    assert limits.settle(
        "m", 100, outcome="throttled", budget="tpm", sent_at=0.5, now=0.6
    )
    budgets = limits.models["m"]
    assert budgets.tokens.rate is not None and budgets.requests.rate is None


def test_two_stores_on_one_file_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    first = SharedLimits(path, lambda model: (120, None))  # 2 a second
    second = SharedLimits(path, lambda model: (120, None))
    try:
        waits = [store.reserve("m", 0, now=10.0) for store in (first, second) * 3]
        assert waits[0] == 0.0
        assert sorted(waits) == waits and waits[-1] > 2.0  # one queue, not two
    finally:
        first.close()
        second.close()


def test_throttles_before_any_answer_halve_the_rate_until_it_holds() -> None:
    """The first answers may take seconds while 429s come back at once: with nothing
    accepted to learn from, each throttle of a request sent after the last cut halves
    the rate, so a run that started too fast slows down within a few round trips."""
    budget = Budget(ceiling=None, rate=None)
    for i in range(64):  # 64 requests sent in the first 10 ms
        budget.reserve(1, now=i * 0.00015)
    assert budget.throttled(now=0.012, sent_at=0.005) is True
    assert budget.rate == pytest.approx(32)
    assert budget.throttled(now=0.013, sent_at=0.009) is False  # sent before the cut
    budget.reserve(1, now=0.02)
    assert budget.throttled(now=0.03, sent_at=0.02) is True  # sent after it: cut again
    assert budget.rate == pytest.approx(16)


def test_a_cut_reaches_the_wire_within_the_horizon_not_after_the_whole_queue() -> None:
    # 64 workers against 480 RPM (8/s): unbounded reservations would queue eight
    # seconds of requests at the old pace, each one throttled again after a cut
    limits = ModelLimits(lambda model: (480, None))
    granted = [limits.try_reserve("m", 0, now=0.0) for _ in range(64)]
    waits = [wait for ok, wait in granted if ok]
    refused = [wait for ok, wait in granted if not ok]
    assert max(waits) <= HORIZON_S + 1 / 8  # only a second's worth was queued
    assert refused and min(refused) > 0  # the rest come back when the queue is short

    limits.models["m"].requests.throttled(now=0.5, sent_at=0.4)  # halved: 4/s
    cut_rate = limits.models["m"].requests.rate or 0.0
    now, sends = 0.5, list[float]()
    while len(sends) < 12:  # every worker asks again when told to
        ok, wait = limits.try_reserve("m", 0, now)
        if ok:
            sends.append(now + wait)
        now += wait if not ok else 0.01
    late = [t for t in sends if t > 0.5 + HORIZON_S + 1]
    gaps = [b - a for a, b in itertools.pairwise(late)]
    # at the new pace (growing 2% a second after the cooldown), not the old 1/8 s
    assert gaps and all(1 / (cut_rate * 1.1) <= gap <= 1 / cut_rate for gap in gaps)
