"""Where the rate budgets live: in this process, or shared by every run on the machine.

Limits belong to the account, not the process (FACTS §3.3). When limits are configured,
the budgets of an account (a salted hash of key and endpoint: the key itself is never
written) live in one small JSON file under ``$XDG_STATE_HOME/batchkimi/ratelimits``,
read and rewritten under an ``flock`` at each exchange. Two cron jobs on one machine
then draw on one budget per model instead of each spending the whole of it. Processes
lease blocks of it (``schedule/lease.py``), so the file is touched about ten times a
second per process, not twice per request.

The file's times are wall-clock seconds (monotonic seconds restart at every boot), and
it names the host that wrote it. A file this process cannot trust is dropped, with one
info line, and the budgets start afresh from the configured limits: one it cannot read
(another version, a torn write), one written on another host (a home folder shared
between machines: their clocks and locks are not ours), and one carrying times ahead
of this clock (written before the clock was set back). Trusting such a file stalled a
run for good before (issue 13).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from batchkimi.clock import Clock, SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.schedule.lease import LeasedLimits
from batchkimi.schedule.ratelimit import (
    LIVE_S,
    Budget,
    Grant,
    LimitsOf,
    ModelBudgets,
    ModelLimits,
    Report,
    ceiling_of,
)

FORMAT = "batchkimi-ratelimits/2"
FUTURE_TOLERANCE_S = 2.0  # what rounding and a clock's small steps may explain
_TIMES = ("updated", "grown_at", "changed_at", "learned_at")


class LimitStore(Protocol):
    """The rate budgets as the sender uses them (``LeasedLimits``)."""

    def try_reserve(
        self, model: str, tokens: float, now: float
    ) -> tuple[bool, float]: ...

    def settle(
        self,
        model: str,
        tokens_reserved: float,
        *,
        outcome: str,
        tokens_used: float | None = None,
        budget: str | None = None,
        sent_at: float | None = None,
        now: float,
    ) -> bool: ...

    def absorbs(self, model: str, budget: str | None) -> bool: ...

    def close(self) -> None: ...


class MemoryStore:
    """The budgets of this process alone."""

    def __init__(self, limits_of: LimitsOf) -> None:
        self.limits = ModelLimits(limits_of)

    def exchange(
        self, model: str, requests: Report, tokens: Report, now: float
    ) -> tuple[Grant, Grant]:
        return self.limits.exchange(model, requests, tokens, now)

    def close(self) -> None:
        pass


class MemoryLimits(LeasedLimits):
    """Leases from budgets of this process alone."""

    def __init__(self, limits_of: LimitsOf) -> None:
        super().__init__(MemoryStore(limits_of))


def state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "batchkimi" / "ratelimits"


def account_id(key: ApiKey, base_url: str) -> str:
    """Names an account's budget file without revealing anything of the key."""
    digest = hashlib.sha256(f"batchkimi-ratelimit\0{key.reveal()}\0{base_url}".encode())
    return digest.hexdigest()[:20]


class SharedStore:
    """The same budgets as ``MemoryStore``, kept in a locked file in wall-clock time.

    The time of an exchange is the wall clock's, read from ``clock`` then: the
    caller's ``now`` (its monotonic seconds, perhaps a moment old) means nothing to
    another process, and the grants a store answers with are free of times.
    """

    def __init__(
        self,
        path: Path,
        limits_of: LimitsOf,
        *,
        clock: Clock | None = None,
        on_info: Callable[[str], None] | None = None,
        host: str | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limits_of = limits_of
        self.clock = clock or SystemClock()
        self.host = host or socket.gethostname()
        self._on_info = on_info
        self._told: set[str] = set()
        self._lock_fd = os.open(
            path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )

    def close(self) -> None:
        os.close(self._lock_fd)

    def exchange(
        self, model: str, requests: Report, tokens: Report, now: float
    ) -> tuple[Grant, Grant]:
        wall = self.clock.wall().timestamp()
        with self._locked():
            limits = self._load(wall)
            grants = limits.exchange(model, requests, tokens, wall)
            self._save(limits, wall)
        return grants

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _load(self, now: float) -> ModelLimits:
        limits = ModelLimits(self.limits_of)
        try:
            trusted = self._trusted(json.loads(self.path.read_text("utf-8")), now)
        except FileNotFoundError:
            return limits
        except OSError as exc:
            trusted = _Distrust("unreadable", f"cannot be read ({exc.strerror})")
        except ValueError:  # not UTF-8, not JSON
            trusted = _Distrust("unreadable", "cannot be read (it is not JSON)")
        if isinstance(trusted, _Distrust):
            self._drop(trusted)
            return limits
        models = trusted
        for model, budgets in models.items():
            # this run's configured limits are the ceilings (the last run to act wins)
            rpm, tpm = self.limits_of(model)
            for budget, per_minute in ((budgets.requests, rpm), (budgets.tokens, tpm)):
                budget.ceiling = ceiling = ceiling_of(per_minute)
                if ceiling is not None:
                    rate = budget.rate
                    budget.rate = ceiling if rate is None else min(rate, ceiling)
                if now - budget.updated > LIVE_S:
                    budget.restart(now)  # nobody's pace any more: start afresh
            limits.models[model] = budgets
        return limits

    def _trusted(self, raw: Any, now: float) -> dict[str, ModelBudgets] | _Distrust:
        """The budgets in a file, or why this process cannot trust them."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            return _Distrust("unreadable", "are of another format or version")
        host = raw.get("host")
        if host != self.host:
            return _Distrust("host", f"were written on another host ({host})")
        models: dict[str, ModelBudgets] = {}
        try:
            for model, budgets in raw["models"].items():
                models[model] = ModelBudgets(
                    Budget(**budgets["requests"]), Budget(**budgets["tokens"])
                )
            times = [
                float(getattr(budget, name))
                for budgets in models.values()
                for budget in (budgets.requests, budgets.tokens)
                for name in _TIMES
            ]
            times.append(float(raw.get("written_at", now)))
        except (TypeError, KeyError, AttributeError, ValueError):
            return _Distrust("unreadable", "cannot be read (unknown fields)")
        if max(times) > now + FUTURE_TOLERANCE_S:
            return _Distrust(
                "future",
                f"carry times {max(times) - now:,.0f} s ahead of this clock (written "
                "before it was set back)",
            )
        return models

    def _drop(self, why: _Distrust) -> None:
        """Say once per reason that a state file was not trusted."""
        if why.reason in self._told or self._on_info is None:
            return
        self._told.add(why.reason)
        self._on_info(
            f"the shared rate budgets in {self.path} {why.detail}: they are ignored, "
            "and start afresh from the configured limits"
        )

    def _save(self, limits: ModelLimits, now: float) -> None:
        raw = {
            "format": FORMAT,
            "host": self.host,
            "written_at": now,
            "models": {
                model: {
                    "requests": dataclasses.asdict(budgets.requests),
                    "tokens": dataclasses.asdict(budgets.tokens),
                }
                for model, budgets in limits.models.items()
            },
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(raw), "utf-8")
        tmp.replace(self.path)


class _Distrust(NamedTuple):
    """Why a state file is not trusted: ``reason`` (unreadable, host, future) and the
    end of the sentence that tells the user."""

    reason: str
    detail: str


class SharedLimits(LeasedLimits):
    """Leases from budgets shared by every run on this host (see ``SharedStore``)."""

    def __init__(
        self,
        path: Path,
        limits_of: LimitsOf,
        *,
        clock: Clock | None = None,
        on_info: Callable[[str], None] | None = None,
        host: str | None = None,
    ) -> None:
        super().__init__(
            SharedStore(path, limits_of, clock=clock, on_info=on_info, host=host)
        )
