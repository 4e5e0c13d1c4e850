"""``batchkimi run --engine ray``: a run whose rows are sent by workers on a cluster.

The driver does what a run on one machine does (the runner: lock, resume, the row
register, stops, results and summary); only the sending is handed to Ray. The rows
to send, built here by the runner's own builder, go to the cluster's object store in
blocks; Ray Data fans them out with ``map_batches`` to a pool of ``RowWorker``
actors, one CPU each, and their results stream back for the progress display while
each worker journals its answers into the output folder. At the end the runner
builds ``results.parquet`` and ``summary.json`` from every journal stream, as it
does for shards.

A stop (a signal, ``--max-runtime``) is recorded in the run's claim ledger, so no
worker sends anything new; requests in flight have the grace period to finish. A
worker's own stop (an account refused, throttles that outlast their wait) reaches
the driver the same way, within half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from batchkimi.credentials import ApiKey
from batchkimi.errors import FatalApiError, ManifestError
from batchkimi.outcome import RunObserver
from batchkimi.ray.budget import budget_keeper
from batchkimi.ray.claims import start_ledger
from batchkimi.ray.cluster import connected, require_ray
from batchkimi.ray.rows import requests_table, results_of
from batchkimi.ray.worker import RowWorker, WorkerKey
from batchkimi.records import RowRequest, RowResult, RowStatus
from batchkimi.schedule.scheduler import SchedulerOutcome
from batchkimi.schedule.stopper import StopControl
from batchkimi.settings import Job

#: how often the driver looks whether a worker stopped the run
_POLL_S = 0.5
_DONE, _ABORT = object(), object()


def batch_rows(job: Job) -> int:
    """Rows per batch a worker is handed: half its requests in flight, so that two
    batches keep it busy while a third is on its way."""
    return max(1, job.pacing.concurrency // 2)


def worker_count(ray: ModuleType, job: Job) -> tuple[int, int]:
    """(at least, at most) workers: ``--ray-workers``, or one per CPU the cluster
    has; as many as it has CPUs for now, more as it grows."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    wanted = job.pacing.ray_workers or cpus
    return min(wanted, cpus), wanted


def map_rows(ray: ModuleType, dataset: Any, job: Job, worker: dict[str, Any]) -> Any:
    """``dataset`` sent by a pool of ``RowWorker``s: the one fan-out of both
    ``run --engine ray`` and ``batchkimi.ray.process``."""
    least, most = worker_count(ray, job)
    return dataset.map_batches(
        RowWorker,
        fn_constructor_kwargs=worker,
        batch_size=batch_rows(job),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=least, max_size=most),
        num_cpus=1,
    )


class RayDispatch:
    """The runner's ``Dispatch`` onto a Ray cluster."""

    def __init__(self, job: Job, key: ApiKey) -> None:
        require_ray()  # a missing Ray is exit 2, before the run starts
        self.job = job
        self.key = key

    async def __call__(
        self,
        batches: Iterator[list[RowRequest]],
        *,
        stop: StopControl,
        in_hand: dict[str, RowResult],
        observer: RunObserver,
    ) -> SchedulerOutcome:
        outcome = SchedulerOutcome()
        with connected(self.job.pacing.ray_address) as ray:
            ledger = start_ledger()
            try:
                blocks = await asyncio.to_thread(
                    self._blocks, ray, batches, stop, outcome
                )
                if blocks:
                    worker = {
                        "job": self.job,
                        "key": WorkerKey(self.key),
                        "keeper": budget_keeper(
                            self.key, self.job.connection.resolved_base_url
                        ),
                        "ledger": ledger,
                        "resume": in_hand,
                    }
                    least, most = worker_count(ray, self.job)
                    observer.on_info(
                        f"on Ray: {least} worker{'s' if least > 1 else ''}"
                        + (
                            f" (up to {most} as the cluster grows)"
                            if most > least
                            else ""
                        )
                        + f", {self.job.pacing.concurrency} requests in flight each"
                    )
                    dataset = map_rows(
                        ray, ray.data.from_arrow_refs(blocks), self.job, worker
                    )
                    await _Follow(dataset, ledger, stop, observer, outcome).run()
            finally:
                ray.kill(ledger)
        return outcome

    def _blocks(
        self,
        ray: ModuleType,
        batches: Iterator[list[RowRequest]],
        stop: StopControl,
        outcome: SchedulerOutcome,
    ) -> list[Any]:
        """The rows to send (up to ``--limit``), into the object store in blocks
        of a few batches: the units Ray hands to workers."""
        limit, size = self.job.reading.limit, 4 * batch_rows(self.job)
        blocks: list[Any] = []
        pending: list[RowRequest] = []
        queued = 0
        try:
            for batch in batches:
                for request in batch:
                    if limit is not None and queued >= limit:
                        outcome.limit_reached = True
                        break
                    pending.append(request)
                    queued += 1
                    if len(pending) == size:
                        blocks.append(ray.put(requests_table(pending)))
                        pending = []
                if outcome.limit_reached or stop.stopping:
                    break
        except ManifestError as exc:
            outcome.manifest_error = exc  # the runner says so, and stops
            return []
        if pending:
            blocks.append(ray.put(requests_table(pending)))
        return blocks


class _Follow:
    """Follows a running dataset: results to the observer, stops both ways."""

    def __init__(
        self,
        dataset: Any,
        ledger: Any,
        stop: StopControl,
        observer: RunObserver,
        outcome: SchedulerOutcome,
    ) -> None:
        self.dataset = dataset
        self.ledger = ledger
        self.stop = stop
        self.observer = observer
        self.outcome = outcome
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: set[str] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        aborted = threading.Event()

        def consume() -> None:
            item: Any = _DONE
            try:
                for table in self.dataset.iter_batches(
                    batch_size=None, batch_format="pyarrow"
                ):
                    loop.call_soon_threadsafe(self.queue.put_nowait, table)
                    if aborted.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - handed to the loop below
                item = exc
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(self.queue.put_nowait, item)

        # a daemon: after an abort, Ray's shutdown ends it, and nothing waits on it
        threading.Thread(target=consume, name="batchkimi-ray", daemon=True).start()
        self.stop.on_abort(lambda: self.queue.put_nowait(_ABORT))
        watchers = [
            asyncio.create_task(self._tell_workers()),
            asyncio.create_task(self._hear_workers()),
        ]
        try:
            while (item := await self.queue.get()) is not _DONE:
                if item is _ABORT:
                    aborted.set()
                    break
                if isinstance(item, Exception):
                    self.stop.stop("ray", _failure_detail(item))
                    break
                self._take(item)
        finally:
            for task in watchers:
                task.cancel()
        self._heard(await self.ledger.stopped.remote())

    def _take(self, table: Any) -> None:
        for _, result, sent in results_of(table):
            if result.status is RowStatus.SKIPPED and not sent:
                continue  # not reached: the run stopped first
            if sent and result.fingerprint not in self.seen:
                self.outcome.sent += 1
            self.seen.add(result.fingerprint)
            self.observer.on_result(result)

    async def _tell_workers(self) -> None:
        await self.stop.event.wait()
        await self.ledger.stop.remote(self.stop.reason or "signal", self.stop.detail)

    async def _hear_workers(self) -> None:
        while not self.stop.stopping:
            self._heard(await self.ledger.stopped.remote())
            await asyncio.sleep(_POLL_S)

    def _heard(self, stopped: Any) -> None:
        """A worker's stop, made the run's (the driver's own is known already)."""
        if stopped is None:
            return
        reason, detail, fatal = stopped
        if fatal is not None and self.outcome.fatal is None:
            code, message, status = fatal
            self.outcome.fatal = FatalApiError(code, message, http_status=status)
        if not self.stop.stopping:
            self.stop.stop(reason, detail)


def _failure_detail(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    what = lines[-1] if lines else type(exc).__name__
    return (
        f"the Ray job failed ({what}); every answer received is journaled, run the "
        "same command again to resume"
    )
