"""A service and workers on simulated time, to drive the rate budgets without waiting.

``simulate`` runs ``concurrency`` workers (shared out between processes, given
several) against a fake service, in event order on a clock that jumps: each worker asks ``try_reserve``, waits what it is told, sends, gets
its answer ``latency_s`` later, settles it and, when throttled, backs off as the
sender does (full jitter from 0.5 s), unless the throttle was absorbed. What the tests read are counts: requests sent,
accepted and throttled per window of simulated time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from batchkimi.clock import ManualClock
from batchkimi.schedule.lease import BudgetStore, LeasedLimits
from batchkimi.schedule.ratelimit import Grant, Report

#: the service's answer to a request sent at a time: "ok" or "throttled"
Service = Callable[[float], str]


def no_limit(noise: float = 0.0, seed: int = 1) -> Service:
    """Throttles ``noise`` of requests at random, whatever the rate."""
    rng = random.Random(seed)
    return lambda now: "throttled" if rng.random() < noise else "ok"


def per_second_limit(rate: float, noise: float = 0.0, seed: int = 1) -> Service:
    """Accepts ``rate`` a second with a bucket of one second (as the simulator's
    ``--limit-window-s 1``), and throttles ``noise`` of the rest at random."""
    rng = random.Random(seed)
    state = {"level": rate, "at": 0.0}

    def answer(now: float) -> str:
        state["level"] = min(rate, state["level"] + (now - state["at"]) * rate)
        state["at"] = now
        if rng.random() < noise:
            return "throttled"
        if state["level"] < 1:
            return "throttled"
        state["level"] -= 1
        return "ok"

    return answer


@dataclass
class Outcome:
    sent: list[float] = field(default_factory=list)  # when each request went
    accepted: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    cuts: int = 0

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)

    def throttled_share(self, start: float, end: float) -> float:
        sent = [t for t in self.sent if start <= t < end]
        refused = [t for t in self.throttled if start <= t < end]
        return len(refused) / len(sent) if sent else 0.0


def simulate(
    limits: LeasedLimits | Sequence[LeasedLimits],
    service: Service,
    *,
    seconds: float,
    concurrency: int = 16,
    latency_s: float = 0.05,
    tokens: float = 0.0,
    seed: int = 7,
    start: float = 0.0,
    clock: ManualClock | None = None,
) -> Outcome:
    runs = [limits] if isinstance(limits, LeasedLimits) else list(limits)
    rng = random.Random(seed)
    outcome = Outcome()
    events: list[tuple[float, int, str, float]] = []  # (time, worker, what, asked)
    for worker in range(concurrency):
        heapq.heappush(events, (start, worker, "ask", start))
    end = start + seconds
    while events:
        now, worker, what, asked = heapq.heappop(events)
        if now >= end:
            break
        run = runs[worker % len(runs)]  # workers take turns between processes
        if clock is not None:
            clock.now = now  # what a shared store reads
        if what == "ask":
            granted, wait_s = run.try_reserve("m", tokens, now)
            if not granted:
                heapq.heappush(events, (now + max(wait_s, 1e-3), worker, "ask", now))
                continue
            heapq.heappush(events, (now + wait_s, worker, "send", now))
        elif what == "send":
            answer = service(now)
            outcome.sent.append(now)
            heapq.heappush(events, (now + latency_s, worker, answer, asked))
        else:  # an answer: settle it, then ask again (at once, or after a backoff)
            throttled = what == "throttled"
            (outcome.throttled if throttled else outcome.accepted).append(now)
            outcome.cuts += run.settle(
                "m",
                tokens,
                outcome="throttled" if throttled else "accepted",
                budget="rpm" if throttled else None,
                sent_at=asked,
                now=now,
            )
            # the sender retries a throttle of the background at once
            backoff = throttled and not run.absorbs("m", "rpm")
            later = now + (rng.uniform(0, 0.5) if backoff else 0.0)
            heapq.heappush(events, (later, worker, "ask", later))
    return outcome


class CountingStore:
    """A store that counts how often it is asked (how often a file would be
    touched)."""

    def __init__(self, store: BudgetStore) -> None:
        self.store = store
        self.exchanges = 0
        self.closed = False

    def exchange(
        self, model: str, requests: Report, tokens: Report, now: float
    ) -> tuple[Grant, Grant]:
        self.exchanges += 1
        return self.store.exchange(model, requests, tokens, now)

    def close(self) -> None:
        self.closed = True
        self.store.close()
