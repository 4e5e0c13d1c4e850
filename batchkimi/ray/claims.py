"""Which rows this run has handed to a worker: so a row is never paid for twice.

Ray retries the batch of a worker that died (its actor is restarted, the batch sent
again). Before sending, a worker claims its batch's rows here; a row claimed before
may have been answered, and journaled, by the dead worker: the worker then reads the
journal for it and returns that answer instead of asking again. Only rows in flight
when a worker died (paid for, perhaps, but never received) are sent twice; nothing
journaled ever is.

The ledger is also how a run stops on the whole cluster: the driver (a signal,
``--max-runtime``) or a worker (a fatal account error, throttles that outlast their
wait) records a stop here, and every worker sends nothing new from then on.
"""

from __future__ import annotations

import uuid
from typing import Any

#: (reason, detail, fatal error's code, message, HTTP status, or None)
Stop = tuple[str, str, tuple[str, str, int | None] | None]


class ClaimLedger:
    """The actor. Holds one string per row the run has handed out."""

    def __init__(self) -> None:
        self._claimed: set[str] = set()
        self._stop: Stop | None = None
        self._workers: dict[str, int] = {}

    def claim(self, fingerprints: list[str]) -> list[str] | None:
        """Claim rows to send; those claimed before (perhaps answered by a worker
        that died since), or None when the run is stopping: send nothing."""
        if self._stop is not None:
            return None
        before = [fp for fp in fingerprints if fp in self._claimed]
        self._claimed.update(fingerprints)
        return before

    def stop(
        self,
        reason: str,
        detail: str,
        fatal: tuple[str, str, int | None] | None = None,
    ) -> None:
        """Stop the run everywhere; the first reason given is the run's."""
        if self._stop is None:
            self._stop = (reason, detail, fatal)

    def stopped(self) -> Stop | None:
        return self._stop

    def enrol(self, stream: str, pid: int) -> None:
        """A worker started: its journal stream and process (what a test kills)."""
        self._workers[stream] = pid

    def workers(self) -> dict[str, int]:
        return dict(self._workers)


LEDGER_PREFIX = "batchkimi-claims-"


def start_ledger() -> Any:
    """A ledger for one run, owned by this process (it ends with the run), named
    ``batchkimi-claims-…`` so that ``ray.util.list_named_actors`` shows it."""
    import ray

    return (
        ray.remote(ClaimLedger)
        .options(
            name=f"{LEDGER_PREFIX}{uuid.uuid4().hex}",
            num_cpus=0,
        )
        .remote()
    )
