"""One rate budget per account and model for a whole Ray cluster.

Model Studio's limits belong to the account (FACTS §3.3), so every worker of every job
on the cluster that sends with one key to one endpoint draws on one budget per model.
The budgets live in a named actor per account (a salted hash of key and endpoint
names it; the key itself never leaves the workers), kept alive between jobs, as the
file of ``schedule/limitstore.py`` is on one machine. Workers see it through
``ClusterStore``, a ``BudgetStore`` under the same ``LeasedLimits`` the sender uses on
one machine: each worker leases blocks of about 100 ms of the rate and spends them
locally, so the actor is asked about ten times a second per worker, not once per
request. Throttle verdicts go through the same exchange, so a cut one worker makes
is the pace of all of them at their next lease.
"""

from __future__ import annotations

import time
from typing import Any

from batchkimi.credentials import ApiKey
from batchkimi.ray.cluster import NAMESPACE
from batchkimi.schedule.lease import LeasedLimits
from batchkimi.schedule.limitstore import account_id
from batchkimi.schedule.ratelimit import (
    Grant,
    LimitsOf,
    ModelLimits,
    Report,
    ceiling_of,
)
from batchkimi.version import __version__

#: how long a worker waits for the budget actor before the row's attempt fails
EXCHANGE_TIMEOUT_S = 30.0


class BudgetKeeper:
    """The actor: every model's budgets of one account, in this actor's clock
    (grants carry no times, so a worker's clock need not agree with it)."""

    def __init__(self) -> None:
        self._configured: dict[str, tuple[int | None, int | None]] = {}
        self._limits = ModelLimits(self._limits_of)

    def _limits_of(self, model: str) -> tuple[int | None, int | None]:
        return self._configured.get(model, (None, None))

    def exchange(
        self,
        model: str,
        configured: tuple[int | None, int | None],
        requests: Report,
        tokens: Report,
    ) -> tuple[Grant, Grant]:
        """``LeasedLimits``' exchange, with the asking job's configured limits: the
        last job to ask sets the ceilings, as on one machine."""
        now = time.monotonic()
        if self._configured.get(model, configured) != configured:
            budgets = self._limits.of(model, now)
            for budget, per_minute in zip(
                (budgets.requests, budgets.tokens), configured, strict=True
            ):
                budget.ceiling = ceiling = ceiling_of(per_minute)
                if ceiling is not None:
                    budget.rate = (
                        ceiling if budget.rate is None else min(budget.rate, ceiling)
                    )
        self._configured[model] = configured
        return self._limits.exchange(model, requests, tokens, now)


class ClusterStore:
    """A ``BudgetStore`` whose budgets are the cluster's (a ``BudgetKeeper``)."""

    def __init__(self, keeper: Any, limits_of: LimitsOf) -> None:
        self.keeper = keeper
        self.limits_of = limits_of

    def exchange(
        self, model: str, requests: Report, tokens: Report, now: float
    ) -> tuple[Grant, Grant]:
        import ray

        # a short wait on the worker's loop, about ten times a second: the lease
        # then covers every request until the next one
        grants: tuple[Grant, Grant] = ray.get(
            self.keeper.exchange.remote(model, self.limits_of(model), requests, tokens),
            timeout=EXCHANGE_TIMEOUT_S,
        )
        return grants

    def close(self) -> None:
        pass  # the keeper outlives the job: the next one shares it


def budget_keeper(key: ApiKey, base_url: str) -> Any:
    """The handle of the account's budget actor, started if no job has yet."""
    import ray

    name = f"budgets-{account_id(key, base_url)}-{__version__}"
    return (
        ray.remote(BudgetKeeper)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",  # shared by the jobs to come, as the file is
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,  # a restarted keeper starts from the limits again
        )
        .remote()
    )


def cluster_limits(keeper: Any, limits_of: LimitsOf) -> LeasedLimits:
    """The rate budgets as a worker's sender sees them."""
    return LeasedLimits(ClusterStore(keeper, limits_of))
