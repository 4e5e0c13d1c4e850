"""This process's side of the rate budgets: leases spent without asking anyone.

A request needs one unit of its model's request budget and its estimated tokens of the
token budget. Asking the store for each (a locked file read and rewrite, when budgets
are shared) cost a run 27 times its speed with limits configured (issue 13). So the
process takes a **lease** of each budget: a block of about 100 ms of its rate (see
``ratelimit``), and spends it here, a few additions per request. It asks the store
again when a lease cannot cover a request or has lasted its 100 ms, handing back what
it did not spend and reporting what it sent and what was accepted (a lease of an
unlimited budget has no end but its 100 ms, so the counts still arrive). The store is
touched about ten times a second per process whatever the request rate, and at low
rates (a lease of one request) once per request, as before. A refusal (the queue is
longer than a second) is remembered until it expires, so the workers waiting do not
each ask again.

Answers are judged here too, one ``ThrottleJudge`` per budget; only its verdicts (cut,
undo, confirm) go to the store at once, with the lease of the budget concerned
handed back, so the next request goes at the new rate.

Every method takes ``now`` (this process's monotonic seconds); a lease is relative to
the moment it was granted, so the store may keep time its own way (the shared one
keeps the wall clock's). Pure but for the store it is given.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Protocol

from batchkimi.schedule.ratelimit import BLOCK_S, Action, Grant, Report
from batchkimi.schedule.throttles import ThrottleJudge, Verdict


class BudgetStore(Protocol):
    """Where the budgets live: in this process, or in a file shared by every run."""

    def exchange(
        self, model: str, requests: Report, tokens: Report, now: float
    ) -> tuple[Grant, Grant]: ...

    def close(self) -> None: ...


class Lease:
    """A block of one budget, granted at ``start``: unit ``k`` of it may go at
    ``start + (k - level) / rate`` (at once when ``rate`` is None)."""

    __slots__ = ("expires", "level", "rate", "size", "spent", "start")

    def __init__(self, grant: Grant, now: float) -> None:
        self.start = now
        self.expires = now + BLOCK_S
        self.rate = grant.rate
        self.size = grant.size
        self.level = grant.level
        self.spent = 0.0  # negative: units handed back beyond the block (credit)

    def delay(self, amount: float, now: float) -> float | None:
        """Seconds until ``amount`` more may go; None if this lease cannot cover it
        (spent, or past its time: ask the store)."""
        if now >= self.expires or self.spent + amount > self.size:
            return None
        if self.rate is None:
            return 0.0
        due = self.start + (self.spent + amount - self.level) / self.rate
        return due - now if due > now else 0.0

    def unspent(self) -> float:
        return self.size - self.spent if self.rate is not None else 0.0


@dataclass(slots=True)
class _Side:
    """One budget of one model, as this process sees it."""

    lease: Lease | None = None
    judge: ThrottleJudge = field(default_factory=ThrottleJudge)
    epoch: int = -1
    pace: float | None = None  # the budget's rate at the last exchange
    accepted_rate: float = 0.0  # ...and what the service accepted lately
    sent: float = 0.0  # units spent since the last report
    accepted: float = 0.0  # units accepted since the last report
    credit: float = 0.0  # units handed back while no lease could take them

    def give_back(self, units: float) -> None:
        """Units reserved and not used (an estimate too high, a failed request)."""
        if self.lease is not None:
            self.lease.spent -= units
        else:
            self.credit += units

    def report(
        self,
        *,
        want: float = 0.0,
        drop: bool = False,
        confirm: bool = False,
        action: Action | None = None,
        undo_to: float | None = None,
    ) -> Report:
        returned, self.credit = self.credit, 0.0
        if self.lease is not None and (want > 0 or drop):
            returned += self.lease.unspent()
            self.lease = None
        report = Report(
            returned=returned,
            sent=self.sent,
            accepted=self.accepted,
            want=want,
            epoch=self.epoch,
            confirm=confirm,
            action=action,
            undo_to=undo_to,
        )
        self.sent = self.accepted = 0.0
        return report

    def take(self, grant: Grant, now: float, *, wanted: bool) -> bool:
        """Adopt the store's answer; True if the rate changed since last seen."""
        if wanted and grant.size > 0:
            self.lease = Lease(grant, now)
        self.pace, self.accepted_rate = grant.rate, grant.accepted_rate
        if grant.epoch == self.epoch:
            return False
        self.epoch = grant.epoch
        return True


@dataclass(slots=True)
class _Model:
    requests: _Side = field(default_factory=_Side)
    tokens: _Side = field(default_factory=_Side)
    refused_until: float = -math.inf  # the store said the queue is long until then


class LeasedLimits:
    """The rate budgets as the sender sees them: ``try_reserve`` before a request,
    ``settle`` after its answer, ``close`` at the end of the run."""

    def __init__(self, store: BudgetStore) -> None:
        self.store = store
        self._models: dict[str, _Model] = {}
        self._now = -math.inf  # the latest time seen: close() hands leases back then

    def try_reserve(self, model: str, tokens: float, now: float) -> tuple[bool, float]:
        """Take one request and ``tokens`` if the queue ahead is short (at most a
        second): (True, seconds to wait before sending). Otherwise take nothing:
        (False, seconds until it is worth asking again)."""
        self._now = now
        held = self._models.get(model)
        if held is None:
            held = self._models[model] = _Model()
        if now < held.refused_until:
            return False, held.refused_until - now
        requests, tokens_side = held.requests, held.tokens
        wait_requests = requests.lease.delay(1, now) if requests.lease else None
        wait_tokens = (
            tokens_side.lease.delay(tokens, now) if tokens_side.lease else None
        )
        if wait_requests is None or wait_tokens is None:
            grant_requests, grant_tokens = self._exchange(
                model,
                held,
                now,
                requests.report(want=1 if wait_requests is None else 0),
                tokens_side.report(want=max(tokens, 1) if wait_tokens is None else 0),
                wanted=(wait_requests is None, wait_tokens is None),
            )
            wait_s = max(grant_requests.wait_s, grant_tokens.wait_s)
            if wait_s > 0:
                held.refused_until = now + wait_s
                return False, wait_s
            # the leases just granted cover this request (at least what it wants)
            wait_requests = requests.lease.delay(1, now) if requests.lease else 0.0
            wait_tokens = (
                tokens_side.lease.delay(tokens, now) if tokens_side.lease else 0.0
            )
        if requests.lease is not None:
            requests.lease.spent += 1
        if tokens_side.lease is not None:
            tokens_side.lease.spent += tokens
        requests.sent += 1
        tokens_side.sent += tokens
        return True, max(wait_requests or 0.0, wait_tokens or 0.0)

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
        self._now = now
        held = self._models.get(model)
        if held is None:
            return False
        sent = now if sent_at is None else sent_at
        requests, tokens_side = held.requests, held.tokens
        if outcome == "throttled":
            # a throttled request keeps its reservation: its moment has passed, and
            # handing it back would let a re-send go at once into the same throttle
            side = tokens_side if budget == "tpm" else requests
            verdict = side.judge.answer(
                throttled=True,
                sent_at=sent,
                now=now,
                pace=side.pace,
                accepted=side.accepted_rate,
            )
            if verdict is None:
                return False
            burst = budget == "burst"
            if side is requests:
                return self._act(model, held, now, verdict, None, burst=burst)
            return self._act(model, held, now, None, verdict, burst=burst)
        if outcome == "accepted":
            used = tokens_reserved if tokens_used is None else tokens_used
            requests.accepted += 1
            tokens_side.accepted += used
            tokens_side.give_back(tokens_reserved - used)
        else:  # failed: it still counted against requests; its tokens were not used
            tokens_side.give_back(tokens_reserved)
        on_requests = requests.judge.answer(
            throttled=False, sent_at=sent, now=now, pace=requests.pace
        )
        on_tokens = tokens_side.judge.answer(
            throttled=False, sent_at=sent, now=now, pace=tokens_side.pace
        )
        if on_requests is not None or on_tokens is not None:
            self._act(model, held, now, on_requests, on_tokens, burst=False)
        return False

    def absorbs(self, model: str, budget: str | None) -> bool:
        """Was the throttle just settled on ``budget`` of the background (not about
        the rate)? Then it is better retried at the pace than after a backoff."""
        held = self._models.get(model)
        if held is None:
            return False
        side = held.tokens if budget == "tpm" else held.requests
        return side.judge.absorbed

    def close(self) -> None:
        """Hand back what is leased and report what was counted, then close the
        store."""
        try:
            # best effort: what is not handed back refills within BLOCK_S anyway
            with contextlib.suppress(OSError):
                for model, held in self._models.items():
                    self.store.exchange(
                        model,
                        held.requests.report(drop=True),
                        held.tokens.report(drop=True),
                        self._now,
                    )
        finally:
            self.store.close()

    def _exchange(
        self,
        model: str,
        held: _Model,
        now: float,
        requests: Report,
        tokens: Report,
        *,
        wanted: tuple[bool, bool],
    ) -> tuple[Grant, Grant]:
        grants = self.store.exchange(model, requests, tokens, now)
        for side, grant, want in zip(
            (held.requests, held.tokens), grants, wanted, strict=True
        ):
            if side.take(grant, now, wanted=want):
                side.judge.changed(now)
        return grants

    def _act(
        self,
        model: str,
        held: _Model,
        now: float,
        on_requests: Verdict,
        on_tokens: Verdict,
        *,
        burst: bool,
    ) -> bool:
        """Tell the store the judges' verdicts; True if a cut was made."""
        sides = (held.requests, held.tokens)
        verdicts = (on_requests, on_tokens)
        paces = [side.pace for side in sides]
        reports = []
        for side, verdict in zip(sides, verdicts, strict=True):
            action: Action | None = None
            if verdict in ("cut", "confirm+cut"):
                action = "burst" if burst and side is held.requests else "cut"
            elif verdict == "undo":
                action = "undo"
            reports.append(
                side.report(
                    drop=action is not None,  # its lease is at the old rate
                    confirm=verdict in ("confirm", "confirm+cut"),
                    action=action,
                    undo_to=side.judge.undo_to,
                )
            )
        grants = self.store.exchange(model, reports[0], reports[1], now)
        cut = False
        for side, grant, report, pace in zip(
            sides, grants, reports, paces, strict=True
        ):
            changed = side.take(grant, now, wanted=False)
            if grant.acted and report.action in ("cut", "burst"):
                side.judge.cut_made(now, rate_before=pace, rate_cut=grant.rate)
                cut = True
            elif changed:
                side.judge.changed(now)
        return cut
