"""The store's arithmetic on plain numbers: leases, cuts, undos, what outlives a run."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchkimi.schedule.ratelimit import (
    BLOCK_S,
    CUT,
    GROWTH_PER_S,
    HEADROOM,
    LEARNED_FLOOR,
    RELAX_S,
    Budget,
    ModelLimits,
    Report,
)


def lease_times(budget: Budget, now: float, units: int) -> list[float]:
    """When each of ``units`` leased one at a time at ``now`` may go."""
    times = []
    for _ in range(units):
        grant = budget.lease(1, now, block_s=0.0)
        assert grant.rate is not None
        times.append(now + max(0.0, (1 - grant.level) / grant.rate))
    return times


def test_requests_are_paced_evenly_after_the_burst() -> None:
    budget = Budget.limited(per_minute=600, now=0.0)  # 10/s, less headroom
    rate = 10 * HEADROOM
    times = lease_times(budget, 0.0, 10)
    burst = int(rate * budget.burst_s)
    assert times[:burst] == [0.0] * burst  # half a second's worth goes at once
    gaps = [b - a for a, b in zip(times[burst:], times[burst + 1 :], strict=False)]
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)  # then one per 1/rate


def test_a_lease_is_a_block_of_about_a_tenth_of_a_second() -> None:
    budget = Budget.limited(per_minute=60_000, now=0.0)  # 980 a second
    grant = budget.lease(1, 0.0)
    assert grant.size == pytest.approx(1000 / 60 * HEADROOM * 60 * BLOCK_S)
    assert budget.lease(5000, 0.0).size == 5000  # at least what is asked for
    unlimited = Budget.limited(per_minute=None, now=0.0)
    assert unlimited.lease(1, 0.0).size == math.inf


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=6, max_value=6000),
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.integers(1, 50)),
        min_size=1,
        max_size=60,
    ),
)
def test_no_window_gets_more_than_rate_times_window_plus_burst(
    per_minute: int, asks: list[tuple[float, int]]
) -> None:
    """Leases of any size at any moments: unit k of a lease granted at level L goes
    at (k - L) / rate after the grant, and no window holds more than the rate allows
    plus the burst."""
    budget = Budget.limited(per_minute, now=0.0)
    now, starts = 0.0, []
    for gap, size in asks:
        now += gap
        grant = budget.lease(size, now, block_s=0.0)
        assert grant.rate is not None
        starts += [
            now + max(0.0, (k - grant.level) / grant.rate) for k in range(1, size + 1)
        ]
    rate = budget.rate or 0.0
    starts.sort()
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= rate * (starts[j] - first) + budget.capacity + 1e-6


def test_units_handed_back_go_to_the_next_lease() -> None:
    budget = Budget.limited(per_minute=600, now=0.0)
    level = budget.level
    budget.lease(3, 0.0, block_s=0.0)
    budget.give_back(2, 0.0)
    assert budget.level == pytest.approx(level - 1)
    budget.give_back(100, 0.0)
    assert budget.level == budget.capacity  # never more than the bucket holds


def test_a_cut_is_a_share_of_what_was_accepted_then_the_rate_grows_back() -> None:
    budget = Budget.limited(per_minute=None, now=0.0)  # nothing configured
    budget.count(sent=20, accepted=20, now=0.5)  # 20 accepted in the first second
    budget.count(sent=20, accepted=20, now=1.5)  # and in the next
    budget.cut(now=2.0)
    assert budget.rate == pytest.approx(20 * CUT)
    assert budget.cut_accepted == pytest.approx(20)
    budget.refresh(5.0)  # three seconds later, two past the cooldown
    assert budget.rate == pytest.approx(20 * CUT * (1 + GROWTH_PER_S) ** 3)


def test_a_cut_with_nothing_accepted_halves_what_is_being_sent() -> None:
    """The first answers may take seconds while 429s come back at once."""
    budget = Budget.limited(per_minute=None, now=0.0)
    budget.count(sent=64, accepted=0, now=0.01)
    budget.cut(now=0.012)
    assert budget.rate == pytest.approx(32)
    budget.cut(now=0.03)
    assert budget.rate == pytest.approx(16)


def test_a_cut_never_speeds_up() -> None:
    """Early in a run the service spends an allowance it saved up: what it accepted
    over the last second can be more than the rate, and a "cut" to a share of it
    would be a raise."""
    budget = Budget.limited(per_minute=600, now=0.0)
    budget.count(sent=30, accepted=30, now=0.9)
    before = budget.rate
    budget.cut(now=1.0)
    assert before is not None and budget.rate == pytest.approx(before)


def test_growth_stops_at_the_configured_ceiling() -> None:
    budget = Budget.limited(per_minute=60, now=0.0)
    budget.count(sent=1, accepted=1, now=0.0)
    budget.cut(now=0.5)
    budget.refresh(1_000.0)
    assert budget.rate == budget.ceiling == pytest.approx(HEADROOM)


def test_burst_throttles_shrink_the_bucket() -> None:
    budget = Budget.limited(per_minute=6000, now=0.0)
    before = budget.capacity
    budget.cut(now=0.1, burst=True)
    assert budget.capacity < before


def test_an_undo_goes_back_to_the_rate_before_within_the_ceiling() -> None:
    budget = Budget.limited(per_minute=None, now=0.0)
    budget.count(sent=10, accepted=10, now=0.5)
    budget.cut(now=1.0)
    budget.undo(None, now=1.5)
    assert budget.rate is None  # unlimited again
    configured = Budget.limited(per_minute=600, now=0.0)
    configured.undo(1e6, now=1.0)
    assert configured.rate == configured.ceiling


def test_every_change_moves_the_epoch_and_a_stale_action_is_ignored() -> None:
    limits = ModelLimits(lambda model: (6000, None))
    first, _ = limits.exchange("m", Report(want=1), Report(), now=0.0)
    cut, _ = limits.exchange(
        "m", Report(epoch=first.epoch, action="cut"), Report(), 1.0
    )
    assert cut.acted and cut.epoch == first.epoch + 1
    # a second process asks for a cut of the rate it knew: already corrected
    late, _ = limits.exchange(
        "m", Report(epoch=first.epoch, action="cut"), Report(), 1.1
    )
    assert not late.acted and late.rate == cut.rate


def test_both_budgets_are_leased_or_neither() -> None:
    """A request needs both; a token lease refused must not strand a request."""
    limits = ModelLimits(lambda model: (60_000, 60))  # plenty of requests, 1 token/s
    requests, tokens = limits.exchange("m", Report(want=1), Report(want=5), now=0.0)
    assert requests.size > 0 and tokens.size == 5
    level = limits.models["m"].requests.level
    requests, tokens = limits.exchange("m", Report(want=1), Report(want=5), now=0.0)
    assert requests.wait_s > 0 and tokens.wait_s > 0
    assert requests.size == tokens.size == 0
    assert limits.models["m"].requests.level == level


def test_a_refusal_waits_at_least_a_millisecond() -> None:
    """A wait that rounds to nothing would be a loop asking again at once."""
    limits = ModelLimits(lambda model: (60, None))
    limits.exchange("m", Report(want=1), Report(), now=0.0)
    budget = limits.models["m"].requests
    budget.level = -(budget.rate or 0) * (1 + 1e-12)  # a hair past the horizon
    grant, _ = limits.exchange("m", Report(want=1), Report(), now=0.0)
    assert grant.wait_s >= 0.001


def test_a_confirmed_cut_is_learned_and_a_later_run_starts_from_it() -> None:
    budget = Budget.limited(per_minute=600, now=0.0)  # ceiling 9.8/s
    budget.count(sent=6, accepted=6, now=0.5)
    budget.count(sent=6, accepted=6, now=1.5)
    budget.cut(now=2.0)
    budget.confirm(now=2.0)
    assert budget.learned == pytest.approx(6)
    ceiling = budget.ceiling or 0.0
    assert budget.start_rate(2.0) == pytest.approx(6)
    # the gap to the ceiling halves every RELAX_S
    assert budget.start_rate(2.0 + RELAX_S) == pytest.approx((6 + ceiling) / 2)
    budget.learned = 0.1  # never start below a share of the configured limit
    assert budget.start_rate(2.0) == pytest.approx(ceiling * LEARNED_FLOOR)


def test_a_cut_that_is_not_confirmed_is_not_learned() -> None:
    budget = Budget.limited(per_minute=600, now=0.0)
    budget.count(sent=6, accepted=6, now=0.5)
    budget.cut(now=1.0)
    budget.undo(None, now=2.0)
    assert budget.learned is None
    assert budget.start_rate(3.0) == budget.ceiling


def test_with_no_ceiling_a_learned_limit_grows_then_is_forgotten() -> None:
    budget = Budget(ceiling=None, rate=None, learned=10.0, learned_at=0.0)
    assert budget.start_rate(0.0) == pytest.approx(10)
    assert budget.start_rate(RELAX_S) == pytest.approx(20)
    assert budget.start_rate(10 * RELAX_S) is None
