"""How a run stops early: gently (finish what is in flight), or at once.

A gentle stop (a first signal, ``--max-runtime``, ``--max-cost``, ``--limit``) stops
scheduling and lets requests in flight finish within a grace period; then they are
cancelled. A hard stop (a second signal) cancels them at once. Either way every result
already received stays in the journal, and the run is resumable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StopControl:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.event = asyncio.Event()
        self.reason: str | None = (
            None  # signal | max_runtime | max_cost | limit | fatal
        )
        self.detail = ""
        self.hard = False
        self._abort: Callable[[], None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def on_abort(self, abort: Callable[[], None]) -> None:
        """What cancels the requests in flight (set by the scheduler)."""
        self._abort = abort

    def stop(self, reason: str, detail: str = "") -> None:
        """Stop scheduling; cancel what is in flight after the grace period."""
        if self.stopping:
            return
        self.reason, self.detail = reason, detail
        self.event.set()
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(self.grace_s, self.abort)

    def abort(self, *, hard: bool = False) -> None:
        """Cancel everything in flight now; ``hard`` also skips the final rebuild of
        results.parquet (the journal has everything; the next run rebuilds it)."""
        if not self.stopping:
            self.reason = self.reason or "signal"
            self.event.set()
        self.hard = self.hard or hard
        if self._grace is not None:
            self._grace.cancel()
        if self._abort is not None:
            self._abort()

    def close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
