"""Run a job: manifest → requests → scheduler → journal → results.parquet, summary.json.

Everything the run needs comes in as arguments (spec, key, clock, observer), so tests
build a spec and call ``run_job`` directly. Whatever happens, the ``finally`` block
makes the journal durable and rewrites the outputs from it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from batchkimi import __version__
from batchkimi.api import protocol_for
from batchkimi.client import ModelStudioClient
from batchkimi.clock import Clock, SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.errors import ConfigError, FatalApiError
from batchkimi.jobspec import JobSpec
from batchkimi.manifest.reader import Manifest, count_rows, open_manifest
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.pricing import load_prices
from batchkimi.records import RowRequest, RowResult, RowStatus
from batchkimi.schedule.scheduler import run_scheduler
from batchkimi.schedule.sender import RowSender, SendSettings
from batchkimi.store.journal import Journal, answered_fingerprints
from batchkimi.store.results import OUTPUT_COLUMNS, RESULTS_NAME, build_results
from batchkimi.store.results import write_atomically as write_results
from batchkimi.store.rows import RowRegister
from batchkimi.store.summary import SUMMARY_NAME, build_summary, write_summary

STATE_DIR = ".batchkimi"


class RunObserver(Protocol):
    """What the CLI's progress display listens to."""

    def on_start(self, *, total_rows: int | None, already_done: int) -> None: ...

    def on_result(self, result: RowResult) -> None: ...

    def on_warning(self, message: str) -> None: ...


class _SilentObserver:
    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        pass

    def on_result(self, result: RowResult) -> None:
        pass

    def on_warning(self, message: str) -> None:
        pass


@dataclass(slots=True)
class RunOutcome:
    exit_code: int
    output: Path
    by_status: dict[str, int]
    sent: int
    summary: dict[str, Any]
    stop_reason: str | None = None
    fatal: FatalApiError | None = None
    warnings: list[str] = field(default_factory=list)


def kept_columns(spec: JobSpec, manifest: Manifest) -> dict[str, str]:
    """Manifest column → output column for the input columns the job keeps."""
    wanted = (
        list(spec.keep_columns) if spec.keep_columns is not None else manifest.columns
    )
    missing = [c for c in wanted if c not in manifest.columns]
    if missing:
        msg = (
            f"keep_columns names {', '.join(missing)}, which the manifest does not "
            f"have (it has: {', '.join(manifest.columns)})"
        )
        raise ConfigError(msg)
    kept = {}
    for column in wanted:
        if column == "id":
            continue  # becomes the output's id column itself
        kept[column] = f"input_{column}" if column in OUTPUT_COLUMNS else column
    return kept


class _RowSource:
    """Reads the manifest batch by batch, registers every row, yields what to send."""

    def __init__(
        self,
        manifest: Manifest,
        builder: RequestBuilder,
        register: RowRegister,
        done: set[str],
        batch_rows: int,
    ) -> None:
        self.manifest = manifest
        self.builder = builder
        self.register = register
        self.done = done
        self.batch_rows = batch_rows
        self.seen: set[str] = set()
        self.problems = 0
        self.duplicates = 0  # rows whose request equals an earlier row's: sent once

    def batches(self) -> Iterator[list[RowRequest]]:
        index = 0
        for batch in self.manifest.iter_batches(self.batch_rows):
            internal: dict[str, list[Any]] = {
                "_index": [],
                "id": [],
                "_fingerprint": [],
                "_problem_code": [],
                "_problem_message": [],
                "_model": [],
            }
            to_send: list[RowRequest] = []
            for row in batch.iter_rows(named=True):
                built = self.builder.build(index, row)
                internal["_index"].append(index)
                internal["id"].append(built.row_id)
                if isinstance(built, RowProblem):
                    self.problems += 1
                    internal["_fingerprint"].append(None)
                    internal["_problem_code"].append(built.code)
                    internal["_problem_message"].append(built.message)
                    internal["_model"].append(self.builder.spec.model)
                else:
                    internal["_fingerprint"].append(built.fingerprint)
                    internal["_problem_code"].append(None)
                    internal["_problem_message"].append(None)
                    internal["_model"].append(built.model)
                    fp = built.fingerprint
                    # identical requests are sent once, and never again once answered
                    if fp in self.seen:
                        self.duplicates += 1
                    elif fp not in self.done:
                        self.seen.add(fp)
                        to_send.append(built)
                index += 1
            self.register.add(batch, internal)
            yield to_send


async def run_job(
    spec: JobSpec,
    key: ApiKey,
    *,
    clock: Clock | None = None,
    observer: RunObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunOutcome:
    """Run the job to the end (or to a stop) and write its outputs."""
    clock = clock or SystemClock()
    observer = observer or _SilentObserver()
    manifest = open_manifest(spec.input)
    builder = RequestBuilder(spec, manifest.columns, str(spec.input))
    kept = kept_columns(spec, manifest)
    prices = load_prices(spec.prices)
    base_url = spec.resolved_base_url
    state = spec.output / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create the output folder {spec.output}: {exc.strerror}"
        raise ConfigError(msg) from exc

    journal, torn = Journal.open(state)
    warnings: list[str] = []
    if torn:
        warnings.append(
            f"the journal ended in a torn record ({torn} bytes, from an interrupted "
            "write); it was dropped and that row will be sent again"
        )
    rerun = (
        frozenset({RowStatus.ERROR.value, RowStatus.INCOMPLETE.value})
        if (spec.retry_errors)
        else frozenset()
    )
    done = answered_fingerprints(journal.path, rerun)
    for message in warnings:
        observer.on_warning(message)

    register = RowRegister(state, kept)
    source = _RowSource(manifest, builder, register, done, spec.batch_rows)
    batches = source.batches()
    client = ModelStudioClient(
        key,
        concurrency=spec.concurrency,
        timeout_s=spec.timeout_s,
        clock=clock,
        workspace_id=spec.workspace_id if spec.base_url is None else None,
        transport=transport,
    )
    sender = RowSender(
        client,
        protocol_for(spec.api),
        SendSettings(
            base_url=base_url,
            stream=spec.stream,
            max_attempts=spec.max_attempts,
            region=spec.region,
            prices=prices,
        ),
        clock,
    )

    def sink(request: RowRequest, result: RowResult) -> None:
        journal.append(result, row_id=request.row_id)
        observer.on_result(result)

    started_at = clock.wall()
    start = clock.monotonic()
    observer.on_start(total_rows=count_rows(manifest), already_done=len(done))
    flusher = asyncio.create_task(journal.run_flusher())
    outcome = None
    try:
        outcome = await run_scheduler(
            batches, sender, sink, concurrency=spec.concurrency, limit=spec.limit
        )
        for _ in batches:  # a stopped run still registers every row, as skipped
            pass
        register.commit()
    finally:
        flusher.cancel()
        await client.aclose()
        journal.close()
        if outcome is None:
            register.abandon()
    elapsed = clock.monotonic() - start
    frame = build_results(register.path, journal.path, api=spec.api)
    write_results(frame, spec.output / RESULTS_NAME)
    by_status = {s.value: 0 for s in RowStatus}
    for status, count in frame["status"].value_counts().iter_rows():
        by_status[status] = int(count)

    stop_reason = None
    if outcome.fatal is not None:
        exit_code, stop_reason = 5, "fatal"
    elif outcome.limit_reached:
        exit_code, stop_reason = 3, "limit"
    elif by_status["ok"] < frame.height:
        exit_code = 1
    else:
        exit_code = 0
    run_info = {
        "batchkimi": __version__,
        "started_at": started_at.isoformat(),
        "finished_at": clock.wall().isoformat(),
        "host": socket.gethostname(),
        "input": str(spec.input),
        "api": spec.api,
        "base_url": base_url,
        "region": spec.region,
        "model": spec.model,
        "stream": spec.stream,
        "concurrency": spec.concurrency,
        "stop_reason": stop_reason,
        "exit_code": exit_code,
    }
    run_info["duplicate_rows_this_run"] = source.duplicates
    summary = build_summary(
        frame, run=run_info, elapsed_s=elapsed, sent_this_run=outcome.sent
    )
    write_summary(summary, spec.output / SUMMARY_NAME)
    return RunOutcome(
        exit_code=exit_code,
        output=spec.output,
        by_status=by_status,
        sent=outcome.sent,
        summary=summary,
        stop_reason=stop_reason,
        fatal=outcome.fatal,
        warnings=warnings,
    )
