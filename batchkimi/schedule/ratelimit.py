"""Request and token budgets per model: smooth pacing that adapts to throttles. Pure.

Each budget (requests or tokens, of one model) is a bucket that refills at ``rate``
units per second and holds at most ``burst_s`` seconds of it. A request *reserves* its
amount and learns how long to wait until the bucket covers it (GCRA: the level may go
negative, which is the queue of reservations ahead). Pacing is therefore smooth at the
per-second scale, where Model Studio may enforce its per-minute limits (FACTS §3.3).

The rate adapts, AIMD-style. A throttle on this budget cuts the rate to a share of
what the service accepted in the last second (its limit, as seen from here), or halves
it while nothing has been accepted yet. Only a request sent after the last cut can cut
again: throttles of requests sent before it are echoes of a rate already corrected.
Then the rate grows a little each second, up to the ceiling (a configured limit less a
small headroom) or until the next throttle. With no limit configured a budget starts
unlimited and only a throttle gives it a rate: that is how batchkimi finds a server's
limit by itself. A burst throttle also halves the bucket, so the ramp is smoother.

A request may reserve at most ``HORIZON_S`` ahead of the queue (``try_reserve``); past
that it waits and asks again. Reservations already granted keep the pace they were
granted at, so without this bound a cut would only reach the wire after every queued
request (concurrency / rate seconds: eight at 500 RPM and concurrency 64), each one
throttled again at the old pace.

Every method takes ``now`` (monotonic seconds): tests drive them with a ManualClock,
and ``limitstore`` keeps the same state in a file shared by every run on the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HEADROOM = 0.98  # run just under a configured limit: clocks and networks jitter
BURST_S = 0.5  # a bucket holds half a second of its rate (the service may hold one)
CUT = 0.9  # after a throttle: this share of what the service accepted last second
GROWTH_PER_S = 0.02  # then this much more each second (multiplicative)
COOLDOWN_S = 1.0  # the rate does not grow this soon after a cut
FLOOR = 1 / 60  # never slower than one unit a minute
HORIZON_S = 1.0  # reservations queue at most this far ahead: a cut bites within it


@dataclass(slots=True)
class Budget:
    """One budget's state. ``rate`` None means unlimited (nothing throttled yet)."""

    ceiling: float | None  # units per second at most (from a configured limit)
    rate: float | None
    burst_s: float = BURST_S
    level: float = 0.0  # units available now; negative: reservations queued
    updated: float = 0.0
    grown_at: float = 0.0
    cut_at: float = -1e9
    # what was admitted and accepted in the current one-second slot and the one before
    slot: int = 0
    admitted_now: float = 0.0
    accepted_now: float = 0.0
    accepted_before: float = 0.0

    @classmethod
    def limited(cls, per_minute: int | None, now: float) -> Budget:
        ceiling = per_minute / 60 * HEADROOM if per_minute else None
        budget = cls(ceiling=ceiling, rate=ceiling, updated=now, grown_at=now)
        budget.slot = int(now)
        budget.level = budget.capacity
        return budget

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst_s) if self.rate is not None else 0.0

    def _roll(self, now: float) -> None:
        slot = int(now)
        if slot != self.slot:
            self.accepted_before = self.accepted_now if slot == self.slot + 1 else 0.0
            self.admitted_now = self.accepted_now = 0.0
            self.slot = slot

    def _refill(self, now: float) -> None:
        self._roll(now)
        if self.rate is not None:
            elapsed = max(0.0, now - self.updated)
            self.level = min(self.capacity, self.level + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def _grow(self, now: float) -> None:
        elapsed = max(0.0, now - self.grown_at)
        self.grown_at = max(self.grown_at, now)
        if self.rate is not None and now - self.cut_at >= COOLDOWN_S:
            grown = self.rate * (1 + GROWTH_PER_S) ** elapsed
            self.rate = min(grown, self.ceiling) if self.ceiling is not None else grown

    def queued_s(self, now: float) -> float:
        """Seconds of reservations queued ahead of a new one."""
        self._refill(now)
        self._grow(now)
        if self.rate is None or self.level >= 0:
            return 0.0
        return -self.level / self.rate

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount``; return the seconds to wait before using it."""
        self._refill(now)
        self._grow(now)
        self.admitted_now += amount
        if self.rate is None:
            return 0.0
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def accepted(self, reserved: float, actual: float, now: float) -> None:
        """The service answered: count it, and correct the reservation with what was
        really used (tokens reported against tokens estimated)."""
        self._refill(now)
        self.accepted_now += actual
        if self.rate is not None:
            self.level = min(self.capacity, self.level + reserved - actual)

    def released(self, reserved: float, now: float) -> None:
        """A reservation that was never used (the request was throttled or failed)."""
        self._refill(now)
        if self.rate is not None:
            self.level = min(self.capacity, self.level + reserved)

    def throttled(self, now: float, *, sent_at: float, burst: bool = False) -> bool:
        """The service refused a request (reserved at ``sent_at``) on this budget:
        slow down. True if this throttle cut the rate."""
        self._refill(now)
        if sent_at < self.cut_at:
            return False  # sent before the last cut: that rate is corrected already
        # accepted in the last whole second, or (a lower bound) in this one so far:
        # never an extrapolation, which early in a run would overshoot many times
        accepted = max(self.accepted_before, self.accepted_now)
        if accepted > 0:
            rate = accepted * CUT
        else:  # nothing answered yet to learn from: halve what is being sent
            rate = (self.rate if self.rate is not None else self.admitted_now) / 2
        rate = max(rate, FLOOR)
        self.rate = min(rate, self.ceiling) if self.ceiling is not None else rate
        if burst:
            self.burst_s = max(self.burst_s / 2, 0.05)
        self.level = min(self.level, self.capacity)
        self.cut_at = self.grown_at = now
        return True


@dataclass(slots=True)
class ModelBudgets:
    requests: Budget
    tokens: Budget


#: a model's (requests per minute, tokens per minute); None: no limit configured
LimitsOf = Callable[[str], tuple[int | None, int | None]]


class ModelLimits:
    """Both budgets of every model, created on first use from the configured limits."""

    def __init__(self, limits_of: LimitsOf) -> None:
        self.limits_of = limits_of
        self.models: dict[str, ModelBudgets] = {}

    def _of(self, model: str, now: float) -> ModelBudgets:
        budgets = self.models.get(model)
        if budgets is None:
            rpm, tpm = self.limits_of(model)
            budgets = ModelBudgets(Budget.limited(rpm, now), Budget.limited(tpm, now))
            self.models[model] = budgets
        return budgets

    def reserve(self, model: str, tokens: float, now: float) -> float:
        """Reserve one request and ``tokens``; the seconds to wait for both."""
        budgets = self._of(model, now)
        return max(
            budgets.requests.reserve(1, now), budgets.tokens.reserve(tokens, now)
        )

    def try_reserve(
        self, model: str, tokens: float, now: float, horizon_s: float = HORIZON_S
    ) -> tuple[bool, float]:
        """Reserve as ``reserve`` does if the queue ahead is at most ``horizon_s``:
        (True, seconds to wait). Otherwise reserve nothing: (False, seconds until the
        queue is short enough to ask again)."""
        budgets = self._of(model, now)
        ahead = max(budgets.requests.queued_s(now), budgets.tokens.queued_s(now))
        if ahead > horizon_s:
            return False, ahead - horizon_s
        return True, self.reserve(model, tokens, now)

    def settle(
        self,
        model: str,
        tokens_reserved: float,
        *,
        outcome: str,  # accepted | throttled | failed
        tokens_used: float | None = None,
        budget: str | None = None,  # rpm | tpm | burst, for throttles
        sent_at: float | None = None,  # when the request was reserved
        now: float,
    ) -> bool:
        """Apply how a request ended; True if a throttle cut a rate."""
        budgets = self._of(model, now)
        if outcome == "accepted":
            budgets.requests.accepted(1, 1, now)
            used = tokens_reserved if tokens_used is None else tokens_used
            budgets.tokens.accepted(tokens_reserved, used, now)
            return False
        if outcome != "throttled":
            # a failed request still counted against requests per minute; its tokens
            # were not used
            budgets.tokens.released(tokens_reserved, now)
            return False
        # a throttled request keeps its reservation: its moment has passed, and handing
        # it back would let a re-send go at once into the same throttle
        sent = now if sent_at is None else sent_at
        if budget == "tpm":
            return budgets.tokens.throttled(now, sent_at=sent)
        return budgets.requests.throttled(now, sent_at=sent, burst=budget == "burst")
