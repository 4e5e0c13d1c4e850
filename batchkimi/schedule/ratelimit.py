"""Request and token budgets per model, as the store keeps them: pure arithmetic.

Each budget (requests or tokens, of one model) is a bucket that refills at ``rate``
units per second and holds at most ``burst_s`` seconds of it (GCRA: the level may go
negative, which is the queue of what has been handed out ahead of time). Pacing is
therefore smooth at the per-second scale, where Model Studio may enforce its
per-minute limits (FACTS §3.3).

A process does not ask the store for every request. It takes a **lease**: a block of
about ``BLOCK_S`` of the budget's rate (at least what the request needs), which it
spends alone (``schedule/lease.py``) and whose unused part it hands back with its
next exchange. A lease is the store's queue position for a block instead of one unit:
unit ``k`` of a block granted at level ``L`` may go ``(k - L) / rate`` seconds after
the grant, exactly when GCRA would have let it go, so two processes leasing from one
store together keep the limit (in any window, at most a block beyond what single
requests could take: what a lease hands back returns to the bucket), while each
touches the store about ten times a second whatever its request rate. A process
reports what it sent and what was accepted with the same exchange; the store needs
those counts to know what the service accepts.

The rate adapts. A process that judges a throttle to be about the rate
(``schedule/throttles.py`` decides; the store only does the arithmetic) asks for a
**cut**: the rate becomes a share of what the service accepted over the last second
(its limit, as seen from here), or half of what was sent while nothing has been
accepted yet. A cut that turns out not to have helped (throttles as frequent at the
lower rate: they were not about the rate) is **undone**. After a change the rate grows
a little each second, up to the ceiling (a configured limit less a small headroom) or
until the next cut. With no limit configured a budget starts unlimited and only a cut
gives it a rate: that is how batchkimi finds a server's limit by itself. Every change
bumps ``epoch``, so a process can tell the throttles of requests sent before it (an
echo of a rate already corrected) from new ones, and a cut or undo asked for against
an epoch that has since moved on (another process acted first) is ignored.

What outlives a run is only the **learned** limit: the rate the service accepted when
a cut was confirmed to be about the rate. A later run starts from it, relaxing toward
the configured ceiling (the gap halves every ``RELAX_S``), and never below
``LEARNED_FLOOR`` of it; the live pace itself is trusted for ``LIVE_S`` only (limits
recover within about a minute, FACTS §3.3). So a rate collapsed by one run's bad luck
is never the next run's truth.

Every method takes ``now`` in the store's seconds (wall-clock seconds for the shared
file, so that it means the same in every process and after a reboot). Tests drive
them with plain numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

HEADROOM = 0.98  # run just under a configured limit: clocks and networks jitter
BURST_S = 0.5  # a bucket holds half a second of its rate (the service may hold one)
CUT = 0.9  # after a throttle about the rate: this share of what was accepted
GROWTH_PER_S = 0.02  # then this much more each second (multiplicative)
COOLDOWN_S = 1.0  # the rate does not grow this soon after a change
FLOOR = 1 / 60  # never slower than one unit a minute
HORIZON_S = 1.0  # leases queue at most this far ahead: a cut bites within it
BLOCK_S = 0.1  # a lease holds this much of the rate (and at least one request)
LIVE_S = 60.0  # a pace nobody has touched for this long is nobody's pace any more
RELAX_S = 600.0  # a learned limit's gap to the configured one halves this often
LEARNED_FLOOR = 0.25  # a later run starts at no less than this share of the ceiling
FORGET_S = 3600.0  # with no ceiling, a learned limit is forgotten after this long
NEVER = -1e18  # a time before anything (JSON has no -inf)

Action = Literal["cut", "burst", "undo"]


@dataclass(slots=True)
class Budget:
    """One budget's state. ``rate`` None means unlimited (nothing throttled yet)."""

    ceiling: float | None  # units per second at most (from a configured limit)
    rate: float | None
    burst_s: float = BURST_S
    level: float = 0.0  # units available now; negative: leased ahead (queued)
    updated: float = 0.0
    grown_at: float = 0.0
    changed_at: float = NEVER  # the last cut or undo
    epoch: int = 0  # bumped by every change of rate a process must notice
    # what was sent and accepted in the current one-second slot and the one before
    slot: int = 0
    sent_now: float = 0.0
    sent_before: float = 0.0
    accepted_now: float = 0.0
    accepted_before: float = 0.0
    # the rate accepted when the last cut was made; ``learned`` once confirmed
    cut_accepted: float = 0.0
    learned: float | None = None
    learned_at: float = NEVER

    @classmethod
    def limited(cls, per_minute: int | None, now: float) -> Budget:
        budget = cls(ceiling=ceiling_of(per_minute), rate=None, updated=now)
        budget.restart(now)
        return budget

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst_s) if self.rate is not None else 0.0

    def restart(self, now: float) -> None:
        """Start afresh from what outlives a run: the ceiling, or the learned limit
        relaxed toward it. Nobody's live state is kept."""
        self.rate = self.start_rate(now)
        self.burst_s = BURST_S
        self.updated = self.grown_at = now
        self.changed_at = NEVER
        self.epoch += 1
        self.slot = math.floor(now)
        self.sent_now = self.sent_before = 0.0
        self.accepted_now = self.accepted_before = 0.0
        self.level = self.capacity

    def start_rate(self, now: float) -> float | None:
        """The rate a run starts at: never below what the service was seen to accept
        when a cut was confirmed, and relaxing toward the configured ceiling."""
        learned, ceiling = self.learned, self.ceiling
        if learned is None:
            return ceiling
        age = max(0.0, now - self.learned_at)
        if ceiling is None:  # nothing configured: forget slowly, upward
            return None if age > FORGET_S else learned * math.pow(2.0, age / RELAX_S)
        if learned >= ceiling:
            return ceiling
        relaxed = ceiling - (ceiling - learned) * math.pow(0.5, age / RELAX_S)
        return max(relaxed, ceiling * LEARNED_FLOOR)

    def _roll(self, now: float) -> None:
        slot = math.floor(now)
        if slot > self.slot:
            fresh = slot == self.slot + 1
            self.sent_before = self.sent_now if fresh else 0.0
            self.accepted_before = self.accepted_now if fresh else 0.0
            self.sent_now = self.accepted_now = 0.0
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
        if self.rate is not None and now - self.changed_at >= COOLDOWN_S:
            grown = self.rate * (1 + GROWTH_PER_S) ** elapsed
            self.rate = min(grown, self.ceiling) if self.ceiling is not None else grown

    def _per_second(self, before: float, current: float, now: float) -> float:
        """Units per second over the last second: all of this slot and the part of
        the one before that is still within a second (a sliding window). Early in a
        budget's life this is a lower bound, never an extrapolation, which would
        overshoot many times on the opening burst."""
        share_before = 1.0 - (now - self.slot)
        return current + before * max(0.0, min(1.0, share_before))

    def refresh(self, now: float) -> None:
        """Bring level, slots and rate up to ``now``."""
        self._refill(now)
        self._grow(now)

    def accepted_rate(self, now: float) -> float:
        self._roll(now)
        return self._per_second(self.accepted_before, self.accepted_now, now)

    def ahead_s(self, now: float) -> float:
        """Seconds of leases queued ahead of a new one."""
        self._refill(now)
        self._grow(now)
        if self.rate is None or self.level >= 0:
            return 0.0
        return -self.level / self.rate

    def lease(self, want: float, now: float, block_s: float = BLOCK_S) -> Grant:
        """Hand out a block of at least ``want`` units (about ``block_s`` of the
        rate). The caller has checked ``ahead_s`` against its horizon."""
        self._refill(now)
        self._grow(now)
        if self.rate is None:
            return self.grant(now, size=math.inf, level=math.inf)
        size = max(want, self.rate * block_s)
        level, self.level = self.level, self.level - size
        return self.grant(now, size=size, level=level)

    def give_back(self, units: float, now: float) -> None:
        """Units leased and not spent (negative: spent beyond the lease, as when an
        answer used more tokens than were reserved for it)."""
        self._refill(now)
        if self.rate is not None:
            self.level = min(self.capacity, self.level + units)

    def count(self, sent: float, accepted: float, now: float) -> None:
        self._roll(now)
        self.sent_now += sent
        self.accepted_now += accepted

    def cut(self, now: float, *, burst: bool = False) -> None:
        """Slow down to a share of what the service accepted over the last second;
        with nothing accepted yet, to half of what is being sent."""
        self._refill(now)
        accepted = self.accepted_rate(now)
        if accepted > 0:
            rate = accepted * CUT
        else:  # nothing answered yet to learn from: halve what is being sent
            sent = self._per_second(self.sent_before, self.sent_now, now)
            rate = (self.rate if self.rate is not None else sent) / 2
        if self.rate is not None:  # a cut never speeds up, however much was accepted
            rate = min(rate, self.rate)
        rate = max(rate, FLOOR)
        self.rate = min(rate, self.ceiling) if self.ceiling is not None else rate
        self.cut_accepted = accepted
        if burst:
            self.burst_s = max(self.burst_s / 2, 0.05)
        self.level = min(self.level, self.capacity)
        self._changed(now)

    def undo(self, rate: float | None, now: float) -> None:
        """Back to ``rate`` (the rate before a cut that did not help)."""
        self._refill(now)
        ceiling = self.ceiling
        if rate is None:
            self.rate = ceiling
        else:
            self.rate = min(rate, ceiling) if ceiling is not None else rate
        self.level = min(self.level, self.capacity)
        self._changed(now)

    def confirm(self, now: float) -> None:
        """The last cut was about the rate: what the service accepted then is the
        account's limit as far as anyone knows."""
        if self.cut_accepted > 0:
            self.learned = self.cut_accepted
            self.learned_at = now

    def _changed(self, now: float) -> None:
        self.changed_at = self.grown_at = now
        self.epoch += 1

    def grant(
        self, now: float, *, size: float = 0.0, level: float = 0.0, wait_s: float = 0.0
    ) -> Grant:
        """The answer a process gets: the pace, and a lease of ``size`` if any."""
        return Grant(
            rate=self.rate,
            epoch=self.epoch,
            size=size,
            level=level,
            wait_s=wait_s,
            accepted_rate=self.accepted_rate(now),
        )


def ceiling_of(per_minute: int | None) -> float | None:
    """Units per second at most, from a configured limit per minute."""
    return per_minute / 60 * HEADROOM if per_minute else None


@dataclass(slots=True)
class Report:
    """What one process tells the store about one budget, and asks of it."""

    returned: float = 0.0  # leased units it did not spend (and will not)
    sent: float = 0.0  # units it spent since its last report
    accepted: float = 0.0  # units the service accepted since then
    want: float = 0.0  # > 0: a new lease of at least this much
    epoch: int = -1  # the epoch its confirmation or action is about
    confirm: bool = False  # the last cut was about the rate
    action: Action | None = None
    undo_to: float | None = None  # for "undo": the rate before the cut


@dataclass(frozen=True, slots=True)
class Grant:
    """The store's answer about one budget: its pace, and a lease if one was asked
    for. Free of times, so it means the same in the asking process's clock."""

    rate: float | None
    epoch: int
    size: float = 0.0  # units leased (inf: unlimited); 0: none
    level: float = 0.0  # of them, this many may go at once; then one per 1/rate
    wait_s: float = 0.0  # > 0: refused (the queue is long); ask again after this
    accepted_rate: float = 0.0  # units per second the service accepted lately
    acted: bool = False  # the action asked for was applied


@dataclass(slots=True)
class ModelBudgets:
    requests: Budget
    tokens: Budget

    def exchange(
        self, requests: Report, tokens: Report, now: float, horizon_s: float
    ) -> tuple[Grant, Grant]:
        """Apply both reports at once; lease both or neither."""
        pairs = ((self.requests, requests), (self.tokens, tokens))
        acted = [_apply(budget, report, now) for budget, report in pairs]
        ahead = max(
            (budget.ahead_s(now) for budget, report in pairs if report.want > 0),
            default=0.0,
        )
        grants = []
        for (budget, report), did in zip(pairs, acted, strict=True):
            if report.want <= 0:
                grant = budget.grant(now)
            elif ahead > horizon_s:
                # at least a millisecond: a wait that rounds to nothing is a spin
                grant = budget.grant(now, wait_s=max(ahead - horizon_s, 0.001))
            else:
                grant = budget.lease(report.want, now)
            grants.append(dataclasses.replace(grant, acted=True) if did else grant)
        return grants[0], grants[1]


def _apply(budget: Budget, report: Report, now: float) -> bool:
    budget.refresh(now)
    if report.returned:
        budget.give_back(report.returned, now)
    if report.sent or report.accepted:
        budget.count(report.sent, report.accepted, now)
    if report.epoch != budget.epoch:
        return False  # about a rate that has changed since: another process acted
    if report.confirm:
        budget.confirm(now)
    if report.action == "undo":
        budget.undo(report.undo_to, now)
    elif report.action is not None:
        budget.cut(now, burst=report.action == "burst")
    return report.action is not None


#: a model's (requests per minute, tokens per minute); None: no limit configured
LimitsOf = Callable[[str], tuple[int | None, int | None]]


@dataclass(slots=True)
class ModelLimits:
    """Both budgets of every model, created on first use from the configured limits.
    The whole state a store keeps."""

    limits_of: LimitsOf
    models: dict[str, ModelBudgets] = field(default_factory=dict)

    def of(self, model: str, now: float) -> ModelBudgets:
        budgets = self.models.get(model)
        if budgets is None:
            rpm, tpm = self.limits_of(model)
            budgets = ModelBudgets(Budget.limited(rpm, now), Budget.limited(tpm, now))
            self.models[model] = budgets
        return budgets

    def exchange(
        self,
        model: str,
        requests: Report,
        tokens: Report,
        now: float,
        horizon_s: float = HORIZON_S,
    ) -> tuple[Grant, Grant]:
        return self.of(model, now).exchange(requests, tokens, now, horizon_s)
