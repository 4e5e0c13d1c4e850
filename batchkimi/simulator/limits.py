"""Per-model request and token limits, enforced as Model Studio may enforce them.

FACTS §3.3: limits are per account and model, stated per minute, and may be enforced
per second (RPS = RPM/60, TPS = TPM/60), so a burst can be throttled while the minute's
total is under the limit. Each budget is a token bucket that refills at the per-second
rate and holds ``window_s`` seconds of it: ``window_s=1`` enforces per second,
``window_s=60`` per minute. A throttled request consumes nothing. Pure: the caller
passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``rate`` per second, at most ``capacity`` saved up."""

    rate: float
    capacity: float
    level: float = field(init=False)
    updated: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.level = min(
                self.capacity, self.level + (now - self.updated) * self.rate
            )
        self.updated = now

    def has(self, amount: float, now: float) -> bool:
        self._refill(now)
        # a request larger than the whole bucket passes when the bucket is full, as a
        # big prompt is not refused forever; it then leaves the bucket in debt
        return self.level >= min(amount, self.capacity)

    def take(self, amount: float) -> None:
        self.level -= amount


@dataclass(slots=True)
class Limits:
    """The knobs: per-model RPM/TPM, the enforcement window, and a burst cap."""

    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 1.0
    burst_rps: float | None = None  # more than this in one second: Throttling.BurstRate


@dataclass(slots=True)
class _ModelState:
    requests: Bucket | None
    tokens: Bucket | None
    recent: list[float] = field(default_factory=list)  # admission times, last second


class RateLimiter:
    """Decides, per request, whether a model's budgets allow it (and if not, which
    429 code says so)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._models: dict[str, _ModelState] = {}

    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            lim = self.limits
            requests = tokens = None
            if lim.rpm:
                rate = lim.rpm / 60
                requests = Bucket(rate, max(1.0, rate * lim.window_s))
            if lim.tpm:
                rate = lim.tpm / 60
                tokens = Bucket(rate, rate * lim.window_s)
            state = self._models[model] = _ModelState(requests, tokens)
        return state

    def admit(self, model: str, tokens: int, now: float) -> str | None:
        """None if the request may go ahead (its cost is taken), else the 429 code."""
        state = self._state(model)
        if self.limits.burst_rps is not None:
            state.recent = [t for t in state.recent if now - t < 1.0]
            if len(state.recent) + 1 > self.limits.burst_rps:
                return "Throttling.BurstRate"
        if state.requests is not None and not state.requests.has(1, now):
            return "Throttling.RateQuota"
        if state.tokens is not None and not state.tokens.has(tokens, now):
            return "Throttling.AllocationQuota"
        if state.requests is not None:
            state.requests.take(1)
        if state.tokens is not None:
            state.tokens.take(tokens)
        if self.limits.burst_rps is not None:
            state.recent.append(now)
        return None
