"""A worker on the cluster: sends its batches' rows with batchkimi's own sender.

Ray Data runs one ``RowWorker`` per actor and calls it with batch after batch on an
event loop of the actor's own. The worker builds its ``RowSender`` as a run on one
machine does (``batchkimi.sending``): the same requests, media checks, frames
extracted here (on as many threads as the CPUs Ray gave the worker), retries and
error classification; the rate budgets are the cluster's (``budget.py``).

Every answer is journaled, as it arrives, into the worker's own journal stream in the
output folder (``journal-shard-ray-<id>``: a shared file system on a real cluster),
and the stream is fsynced before a batch is handed back, so a worker that dies loses
nothing it received. Before sending, the worker claims its rows (``claims.py``); a row
claimed before is first looked up in the journal, so Ray's retry of a dead worker's
batch pays only for rows that were never answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from batchkimi.clock import SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.errors import FatalApiError
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.media.preflight import media_settings
from batchkimi.pricing import load_prices
from batchkimi.ray.budget import cluster_limits
from batchkimi.ray.rows import REQUEST, requests_of, results_table
from batchkimi.records import RowRequest, RowResult, RowStatus
from batchkimi.runner import STATE_DIR
from batchkimi.schedule.sender import ThrottleStop
from batchkimi.sending import Sending, open_sender
from batchkimi.settings import Job
from batchkimi.store.journal import Journal, answered_fingerprints
from batchkimi.store.unfinished import recorded_answers

#: how often a worker looks whether the run is stopping (a signal, another worker)
STOP_POLL_S = 0.25
Row = tuple[str, RowResult, bool]


class WorkerKey:
    """The API key on its way to a worker, inside the actor's constructor: masked
    wherever it is shown (Ray prints the arguments of an actor that fails)."""

    __slots__ = ("_secret",)

    def __init__(self, key: ApiKey) -> None:
        self._secret = key.reveal()

    def key(self) -> ApiKey:
        return ApiKey(self._secret)

    def __repr__(self) -> str:
        return f"WorkerKey({self.key().masked()})"

    __str__ = __repr__


class RowWorker:
    """``map_batches``' callable class (async): a batch of rows in, their results
    out (``rows.RESULT_SCHEMA``).

    A batch holds either requests the driver built (``batchkimi run --engine ray``)
    or manifest rows, built here with the job's ``RequestBuilder``
    (``batchkimi.ray.process``), which then also skips rows whose answer a run
    journaled before.
    """

    def __init__(
        self,
        job: Job,
        key: WorkerKey,
        keeper: Any,
        ledger: Any,
        *,
        resume: dict[str, RowResult] | None = None,
        threads: int = 1,
    ) -> None:
        self.job = job
        self._key = key
        self.keeper = keeper
        self.ledger = ledger
        self.threads = max(1, threads)
        self.state = job.output / STATE_DIR
        self.stream = f"ray-{uuid.uuid4().hex[:12]}"
        self.journal, _ = Journal.open(self.state, shard=self.stream)
        self.resume: dict[str, RowResult] = dict(resume or {})
        self.stopping = False
        self._sending: Sending | None = None
        # bound to the loop of its first use (the actor's), since Python 3.10
        self._slots = asyncio.Semaphore(job.pacing.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._journal_thread = ThreadPoolExecutor(1, "batchkimi-journal")
        self._builder: RequestBuilder | None = None
        self._answered: set[str] | None = None  # for manifest rows: answered before
        self._built = 0
        ledger.enrol.remote(self.stream, os.getpid())

    async def __call__(self, batch: pa.Table) -> pa.Table:
        sending = await self._started()
        requests, rows = self._requests(batch)
        before = await self.ledger.claim.remote([r.fingerprint for r in requests])
        if before is None:  # the run is stopping: nothing new goes out
            self.stopping = True
            rows += [self._skipped(r) for r in requests]
            return results_table(rows)
        look_up = set(before)
        if self._answered is not None:
            look_up |= {r.fingerprint for r in requests} & self._answered
        standing: dict[str, RowResult] = {}
        loop = asyncio.get_running_loop()
        if look_up:  # rows another worker (or an earlier run) may have answered
            standing, in_hand = await loop.run_in_executor(
                self._journal_thread,
                recorded_answers,
                self.state,
                look_up,
                self.job.writing.rerun_set,
            )
            self.resume.update(in_hand)  # the sender carries on from those answers
        rows += await asyncio.gather(
            *(self._one(sending, r, standing.get(r.fingerprint)) for r in requests)
        )
        # durable before it counts (on a thread of its own: the media threads may
        # all be extracting frames)
        await loop.run_in_executor(self._journal_thread, self.journal.sync)
        return results_table(rows)

    async def _one(
        self, sending: Sending, request: RowRequest, answered: RowResult | None
    ) -> Row:
        if answered is not None:
            return request.row_id, answered, False
        async with self._slots:
            if self.stopping:
                return self._skipped(request)
            try:
                result = await sending.sender.process(request)
            except FatalApiError as exc:
                fatal = (exc.code, exc.service_message, exc.http_status)
                await self._stop("fatal", str(exc), fatal)
                return self._skipped(request)
            except ThrottleStop as exc:
                await self._stop("throttle", str(exc))
                return self._skipped(request)
            except Exception as exc:  # noqa: BLE001 - the worker's boundary, as the
                # scheduler's: a fault in one row is that row's error
                result = sending.sender.crashed(request, exc)
        self.journal.append(result, row_id=request.row_id)
        return request.row_id, result, True

    def _skipped(self, request: RowRequest) -> Row:
        result = RowResult(
            request.fingerprint,
            RowStatus.SKIPPED,
            request.model,
            self.job.connection.api,
        )
        return request.row_id, result, False

    async def _stop(
        self, reason: str, detail: str, fatal: tuple[str, str, int | None] | None = None
    ) -> None:
        self.stopping = True
        await self.ledger.stop.remote(reason, detail, fatal)

    def _requests(self, batch: pa.Table) -> tuple[list[RowRequest], list[Row]]:
        """The batch's requests, and the results of rows that cannot be sent."""
        if REQUEST in batch.column_names:
            return requests_of(batch), []
        if self._builder is None:
            self._builder = RequestBuilder(
                self.job, batch.column_names, "the Ray dataset"
            )
            self._answered = answered_fingerprints(
                self.state, self.job.writing.rerun_set
            )
        requests: list[RowRequest] = []
        problems: list[Row] = []
        for row in batch.to_pylist():
            built = self._builder.build(self._built, row)
            self._built += 1
            if isinstance(built, RowProblem):
                result = RowResult(
                    "",
                    RowStatus.ERROR,
                    self.job.asking.model,
                    self.job.connection.api,
                    error_code=built.code,
                    error_message=built.message,
                )
                problems.append((built.row_id, result, False))
            else:
                requests.append(built)
        return requests, problems

    async def _started(self) -> Sending:
        """The sender, made on the first batch: on the loop it will run on."""
        if self._sending is not None:
            return self._sending
        loop = asyncio.get_running_loop()
        # frames are extracted on the CPUs Ray gave this worker, no more: the
        # cluster's other workers have theirs
        loop.set_default_executor(
            ThreadPoolExecutor(self.threads, thread_name_prefix="batchkimi-media")
        )
        job = self.job
        self._sending = open_sender(
            job,
            load_prices(job.writing.prices),
            # frames are decoded on the CPUs Ray gave this worker, no more
            dataclasses.replace(media_settings(job), decode_threads=self.threads),
            self._key.key(),
            clock=SystemClock(),
            limits=cluster_limits(self.keeper, job.limits_of),
            on_answer=lambda request, result: self.journal.append(
                result, row_id=request.row_id
            ),
            resume=self.resume,
        )
        self._tasks = [
            loop.create_task(self.journal.run_flusher()),
            loop.create_task(self._watch_stop()),
        ]
        return self._sending

    async def _watch_stop(self) -> None:
        while not self.stopping:
            if await self.ledger.stopped.remote() is not None:
                self.stopping = True
            await asyncio.sleep(STOP_POLL_S)
