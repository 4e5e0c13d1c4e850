"""A bounded queue feeding N workers: memory stays flat however long the manifest.

The producer pulls batches of requests from a synchronous source in a worker thread
(reading and hashing rows is CPU work that must not stall the event loop) and hands
them to ``concurrency`` workers through a queue of bounded size. A fatal account error
stops scheduling at once; requests already in flight finish and are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from batchkimi.errors import FatalApiError
from batchkimi.records import RowRequest, RowResult
from batchkimi.schedule.sender import RowSender

Sink = Callable[[RowRequest, RowResult], None]


@dataclass(slots=True)
class SchedulerOutcome:
    sent: int = 0
    fatal: FatalApiError | None = None
    limit_reached: bool = False


async def run_scheduler(
    source: Iterator[list[RowRequest]],
    sender: RowSender,
    sink: Sink,
    *,
    concurrency: int,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
) -> SchedulerOutcome:
    """Send what ``source`` yields (up to ``limit``); results go to ``sink``."""
    outcome = SchedulerOutcome()
    stop = stop or asyncio.Event()
    queue: asyncio.Queue[RowRequest | None] = asyncio.Queue(maxsize=4 * concurrency)

    async def produce() -> None:
        enqueued = 0
        try:
            while not stop.is_set():
                batch = await asyncio.to_thread(next, source, None)
                if batch is None:
                    return
                for request in batch:
                    if limit is not None and enqueued >= limit:
                        outcome.limit_reached = True
                        return
                    if stop.is_set():
                        return
                    await queue.put(request)
                    enqueued += 1
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    async def work() -> None:
        while (request := await queue.get()) is not None:
            if stop.is_set():
                continue  # drain: a stopped run sends nothing new
            try:
                result = await sender.process(request)
            except FatalApiError as exc:
                outcome.fatal = outcome.fatal or exc
                stop.set()
                continue
            outcome.sent += 1
            sink(request, result)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        for _ in range(concurrency):
            group.create_task(work())
    return outcome
