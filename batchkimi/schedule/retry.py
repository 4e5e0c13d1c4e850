"""The retry policy: full-jitter exponential backoff with a cap, built with tenacity.

A server's ``retry-after`` wins over the computed wait (Model Studio sends none, FACTS
§3.3, but a proxy in front of it may). Sleep goes through the injected clock, so tests
record the waits instead of waiting.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from batchkimi.clock import Clock
from batchkimi.errors import TransientError

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0


class WaitWithRetryAfter:
    """Full jitter (AWS's "full jitter": uniform in [0, min(cap, base·2^n)]) unless the
    failure names its own wait."""

    def __init__(
        self, base_s: float, cap_s: float, rng: random.Random, *, offset: int = 0
    ) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._rng = rng
        self._offset = offset  # attempts made before this controller took over

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(exc, TransientError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._cap_s)
        ceiling = min(self._cap_s, self._base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        return self.delay(state.attempt_number + self._offset, exc)


def build_retrying(
    *,
    max_attempts: int,
    clock: Clock,
    on_retry: Callable[[TransientError], None],
    base_s: float = BACKOFF_BASE_S,
    cap_s: float = BACKOFF_CAP_S,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    offset: int = 0,
) -> AsyncRetrying:
    """A fresh tenacity controller for one row, ``offset`` attempts into it."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientError):
            on_retry(exc)

    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts - offset),
        wait=WaitWithRetryAfter(base_s, cap_s, rng or random.Random(), offset=offset),
        retry=retry_if_exception_type(TransientError),
        sleep=sleep or clock.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
