"""Where the rate budgets live: in this process, or shared by every run on the machine.

Limits belong to the account, not the process (FACTS §3.3). When limits are configured,
the budgets of an account (a salted hash of key and endpoint: the key itself is never
written) live in one small JSON file under ``$XDG_STATE_HOME/batchkimi/ratelimits``,
read and written under an ``flock`` for each operation. Two cron jobs on one machine
then draw on one budget per model instead of each spending the whole of it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from batchkimi.credentials import ApiKey
from batchkimi.schedule.ratelimit import (
    HORIZON_S,
    Budget,
    LimitsOf,
    ModelBudgets,
    ModelLimits,
)

T = TypeVar("T")


class LimitStore(Protocol):
    def reserve(self, model: str, tokens: float, now: float) -> float: ...

    def try_reserve(
        self, model: str, tokens: float, now: float, horizon_s: float = HORIZON_S
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


class MemoryLimits(ModelLimits):
    """The budgets of this process alone."""


def state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "batchkimi" / "ratelimits"


def account_id(key: ApiKey, base_url: str) -> str:
    """Names an account's budget file without revealing anything of the key."""
    digest = hashlib.sha256(f"batchkimi-ratelimit\0{key.reveal()}\0{base_url}".encode())
    return digest.hexdigest()[:20]


class SharedLimits:
    """The same arithmetic as MemoryLimits, on state kept in a locked file."""

    def __init__(self, path: Path, limits_of: LimitsOf) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limits_of = limits_of
        self._lock_fd = os.open(
            path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )

    def close(self) -> None:
        os.close(self._lock_fd)

    def _load(self) -> ModelLimits:
        limits = ModelLimits(self.limits_of)
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return limits
        for model, budgets in raw.items():
            try:
                requests, tokens = (
                    Budget(**budgets["requests"]),
                    Budget(**budgets["tokens"]),
                )
            except (TypeError, KeyError):
                continue  # a file from another version: start that model afresh
            # this run's configured limits are the ceilings (the last run to act wins)
            rpm, tpm = self.limits_of(model)
            requests.ceiling = Budget.limited(rpm, 0).ceiling
            tokens.ceiling = Budget.limited(tpm, 0).ceiling
            limits.models[model] = ModelBudgets(requests, tokens)
        return limits

    def _save(self, limits: ModelLimits) -> None:
        raw = {m: dataclasses.asdict(b) for m, b in limits.models.items()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(raw), "utf-8")
        tmp.replace(self.path)

    def _locked(self, action: Callable[[ModelLimits], T]) -> T:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            limits = self._load()
            result = action(limits)
            self._save(limits)
            return result
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def reserve(self, model: str, tokens: float, now: float) -> float:
        return self._locked(lambda limits: limits.reserve(model, tokens, now))

    def try_reserve(
        self, model: str, tokens: float, now: float, horizon_s: float = HORIZON_S
    ) -> tuple[bool, float]:
        return self._locked(
            lambda limits: limits.try_reserve(model, tokens, now, horizon_s)
        )

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
    ) -> bool:
        return self._locked(
            lambda limits: limits.settle(
                model,
                tokens_reserved,
                outcome=outcome,
                tokens_used=tokens_used,
                budget=budget,
                sent_at=sent_at,
                now=now,
            )
        )
