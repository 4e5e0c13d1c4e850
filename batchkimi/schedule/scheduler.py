"""A bounded queue feeding N workers: memory stays flat however long the manifest.

The producer pulls batches of requests from a synchronous source in a worker thread
(reading and hashing rows is CPU work that must not stall the event loop) and hands
them to ``concurrency`` workers through a queue of bounded size. Stopping is the
``StopControl``'s job: a stop ends scheduling, an abort cancels what is in flight. A
fatal account error stops scheduling at once; requests already in flight finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from batchkimi.errors import FatalApiError, ManifestError
from batchkimi.records import RowRequest, RowResult
from batchkimi.schedule.sender import RowSender, ThrottleStop
from batchkimi.schedule.stopper import StopControl

Sink = Callable[[RowRequest, RowResult], None]


class Gate(Protocol):
    """Decides whether one more request may be sent (``--max-cost``)."""

    def admit(self, request: RowRequest) -> str | None:
        """None to send it; otherwise why the run must stop instead."""

    def settle(self, request: RowRequest, result: RowResult | None) -> None:
        """The request ended (``None``: cancelled or refused by the account)."""


@dataclass(slots=True)
class SchedulerOutcome:
    sent: int = 0
    fatal: FatalApiError | None = None
    limit_reached: bool = False  # requests remained beyond --limit
    #: a manifest read still running in its thread when the run was aborted; the
    #: source may be resumed only after it has finished
    pending_read: asyncio.Future[list[RowRequest] | None] | None = None
    #: the manifest broke mid-run (it changed after it was checked): scheduling
    #: stopped there, and requests in flight finished
    manifest_error: ManifestError | None = None


async def run_scheduler(
    source: Iterator[list[RowRequest]],
    sender: RowSender,
    sink: Sink,
    *,
    concurrency: int,
    stop: StopControl,
    limit: int | None = None,
    gate: Gate | None = None,
) -> SchedulerOutcome:
    """Send what ``source`` yields (up to ``limit``); results go to ``sink``."""
    outcome = SchedulerOutcome()
    queue: asyncio.Queue[RowRequest | None] = asyncio.Queue(maxsize=4 * concurrency)

    async def feed() -> None:
        enqueued = 0
        while not stop.stopping:
            read = asyncio.ensure_future(asyncio.to_thread(next, source, None))
            outcome.pending_read = read
            try:
                batch = await asyncio.shield(read)
            except ManifestError as exc:
                outcome.pending_read = None
                outcome.manifest_error = exc
                stop.stop("manifest", str(exc))
                return
            outcome.pending_read = None
            if batch is None:
                return
            for request in batch:
                if limit is not None and enqueued >= limit:
                    outcome.limit_reached = True  # not a stop: the queue is still sent
                    return
                if stop.stopping:
                    return
                await queue.put(request)
                enqueued += 1

    async def produce() -> None:
        await feed()
        # one end marker per worker, only after a normal finish: when the producer is
        # cancelled, so are the workers, and a full queue would never drain
        for _ in range(concurrency):
            await queue.put(None)

    async def work() -> None:
        while (request := await queue.get()) is not None:
            if stop.stopping:
                continue  # drain: a stopped run sends nothing new
            if gate is not None and (why := gate.admit(request)) is not None:
                stop.stop("max_cost", why)
                continue
            result: RowResult | None = None
            try:
                result = await sender.process(request)
            except FatalApiError as exc:
                outcome.fatal = outcome.fatal or exc
                stop.stop("fatal", str(exc))
                continue
            except ThrottleStop as exc:
                stop.stop("throttle", str(exc))
                continue  # not journalled: the row is sent again on resume
            except Exception as exc:  # noqa: BLE001 - the worker's boundary: a fault
                # in one row (a bug, a file no reader expected) is that row's error,
                # and every other row and answer carries on
                result = sender.crashed(request, exc)
            finally:
                if gate is not None:
                    gate.settle(request, result)
            outcome.sent += 1
            sink(request, result)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(produce())]
        tasks += [group.create_task(work()) for _ in range(concurrency)]

        def abort() -> None:
            # a task cancelled from outside ends alone; the group carries on
            for task in tasks:
                task.cancel()

        stop.on_abort(abort)
    return outcome
