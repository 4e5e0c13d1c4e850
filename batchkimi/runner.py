"""Run a job: manifest → requests → scheduler → journal → results.parquet, summary.json.

Everything the run needs comes in as arguments (spec, key, clock, observer), so tests
build a spec and call ``run_job`` directly. The output folder is locked for the whole
run; whatever happens, the journal is closed (fsynced) before the lock is released, and
the outputs are rebuilt from it unless a second signal asked to stop at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import polars as pl

from batchkimi import __version__
from batchkimi.api import protocol_for
from batchkimi.client import ModelStudioClient
from batchkimi.clock import Clock, SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.errors import ConfigError, FatalApiError, ManifestError
from batchkimi.jobspec import JobSpec
from batchkimi.manifest.keys import shard_of
from batchkimi.manifest.reader import Manifest, check_rows, open_manifest
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.media.preflight import media_settings
from batchkimi.pricing import load_prices
from batchkimi.records import RowRequest, RowResult, RowStatus
from batchkimi.schedule.budget import CostBudget, CostGate
from batchkimi.schedule.limitstore import (
    LimitStore,
    MemoryLimits,
    SharedLimits,
    account_id,
    state_home,
)
from batchkimi.schedule.media import MediaPreparer
from batchkimi.schedule.scheduler import run_scheduler
from batchkimi.schedule.sender import RowSender, SendSettings
from batchkimi.schedule.stopper import StopControl
from batchkimi.store.journal import (
    Journal,
    JournalError,
    answered_fingerprints,
    resend_condition,
)
from batchkimi.store.lock import OutputLock, outputs_lock
from batchkimi.store.results import OUTPUT_COLUMNS, RESULTS_NAME, build_results
from batchkimi.store.results import write_atomically as write_results
from batchkimi.store.rows import INTERNAL_COLUMNS, RowRegister
from batchkimi.store.state import (
    RunState,
    current_state,
    inputs_key,
    journal_sizes,
    load_state,
    save_state,
    stamp_manifest,
)
from batchkimi.store.summary import SUMMARY_NAME, build_summary, write_summary
from batchkimi.uploads import TemporaryUploader
from batchkimi.urlcheck import UrlChecker

STATE_DIR = ".batchkimi"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunObserver(Protocol):
    """What the CLI's progress display and JSON log listen to."""

    def on_start(self, *, total_rows: int | None, already_done: int) -> None: ...

    def on_result(self, result: RowResult) -> None: ...

    def on_retry(self, row_id: str, code: str, attempt: int) -> None: ...

    def on_warning(self, message: str) -> None: ...

    def on_info(self, message: str) -> None: ...

    def on_stop(self, reason: str, detail: str) -> None: ...


class _SilentObserver:
    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        pass

    def on_result(self, result: RowResult) -> None:
        pass

    def on_retry(self, row_id: str, code: str, attempt: int) -> None:
        pass

    def on_warning(self, message: str) -> None:
        pass

    def on_info(self, message: str) -> None:
        pass

    def on_stop(self, reason: str, detail: str) -> None:
        pass


@dataclass(slots=True)
class RunOutcome:
    exit_code: int
    output: Path
    by_status: dict[str, int]
    sent: int
    summary: dict[str, Any]
    stop_reason: str | None = None
    stop_detail: str = ""
    fatal: FatalApiError | None = None
    warnings: list[str] = field(default_factory=list)
    results_written: bool = True
    pending: int = 0  # in-scope rows the next run would send


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
    return {
        column: f"input_{column}" if column in OUTPUT_COLUMNS else column
        for column in wanted
        if column != "id"  # the manifest's id becomes the output's id itself
    }


class _RowSource:
    """Reads the manifest batch by batch, registers every row, yields what to send."""

    def __init__(
        self,
        manifest: Manifest,
        builder: RequestBuilder,
        register: RowRegister,
        done: set[str],
        spec: JobSpec,
    ) -> None:
        self.manifest = manifest
        self.builder = builder
        self.register = register
        self.done = done
        self.spec = spec
        self.seen: set[str] = set()
        self.duplicates = 0  # rows whose request equals an earlier row's: sent once
        self.local_media = False  # some row names a local file

    def batches(self) -> Iterator[list[RowRequest]]:
        index = 0
        shard = self.spec.shard_parts
        for batch in self.manifest.iter_batches(self.spec.batch_rows):
            internal: dict[str, list[Any]] = {name: [] for name in INTERNAL_COLUMNS}
            to_send: list[RowRequest] = []
            for row in batch.iter_rows(named=True):
                built = self.builder.build(index, row)
                in_scope = shard is None or shard_of(built.row_id, shard[1]) == shard[0]
                internal["_index"].append(index)
                internal["id"].append(built.row_id)
                internal["_in_scope"].append(in_scope)
                if isinstance(built, RowProblem):
                    internal["_fingerprint"].append(None)
                    internal["_problem_code"].append(built.code)
                    internal["_problem_message"].append(built.message)
                    internal["_model"].append(self.spec.model)
                else:
                    internal["_fingerprint"].append(built.fingerprint)
                    internal["_problem_code"].append(None)
                    internal["_problem_message"].append(None)
                    internal["_model"].append(built.model)
                    self.local_media = self.local_media or _has_local_media(built)
                    self._consider(built, in_scope, to_send)
                index += 1
            self.register.add(batch, internal)
            yield to_send

    def _consider(
        self, request: RowRequest, in_scope: bool, to_send: list[RowRequest]
    ) -> None:
        fp = request.fingerprint
        if not in_scope or fp in self.done:
            return
        if fp in self.seen:
            self.duplicates += 1  # identical requests are sent once
            return
        self.seen.add(fp)
        to_send.append(request)


def _has_local_media(request: RowRequest) -> bool:
    return any(
        getattr(part, "stamp", "")
        for message in request.messages
        for part in message.parts
    )


def _open_state(spec: JobSpec) -> Path:
    state = spec.output / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        probe = state / f".writable.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        msg = (
            f"cannot write to the output folder {spec.output}: {exc.strerror}. "
            "Choose another --output or fix its permissions"
        )
        raise ConfigError(msg) from exc
    return state


async def run_job(
    spec: JobSpec,
    key: ApiKey,
    *,
    clock: Clock | None = None,
    observer: RunObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    handle_signals: bool = False,
) -> RunOutcome:
    """Run the job to the end (or to a stop) and write its outputs."""
    manifest = open_manifest(spec.input)
    builder = RequestBuilder(spec, manifest.columns, str(spec.input))
    kept = kept_columns(spec, manifest)
    state = _open_state(spec)
    with OutputLock(state, shard=spec.shard_label):
        return await _run_locked(
            spec,
            key,
            manifest,
            builder,
            kept,
            state,
            clock=clock or SystemClock(),
            observer=observer or _SilentObserver(),
            transport=transport,
            handle_signals=handle_signals,
        )


async def _run_locked(
    spec: JobSpec,
    key: ApiKey,
    manifest: Manifest,
    builder: RequestBuilder,
    kept: dict[str, str],
    state: Path,
    *,
    clock: Clock,
    observer: RunObserver,
    transport: httpx.AsyncBaseTransport | None,
    handle_signals: bool,
) -> RunOutcome:
    previous = load_state(state, spec.shard_label)
    stamp = stamp_manifest(spec.input, previous.manifest if previous else None)
    inputs = inputs_key(spec, stamp)
    outputs = [spec.output / RESULTS_NAME, spec.output / SUMMARY_NAME]
    if (current := current_state(previous, inputs, state, outputs)) is not None:
        return _already_current(spec, current, observer)
    total_rows = check_rows(manifest)  # a broken line stops the job before any send
    prices = load_prices(spec.prices)
    if spec.max_cost is not None and (spec.model, spec.region) not in prices:
        msg = (
            f"--max-cost needs a price, and none is known for {spec.model} in "
            f"{spec.region}: give one with --prices FILE (see `batchkimi models`)"
        )
        raise ConfigError(msg)
    journal, torn = Journal.open(state, shard=spec.shard_label)
    warnings: list[str] = []
    if torn:
        warnings.append(
            f"the journal ended in a torn record ({torn} bytes, from an interrupted "
            "write); it was dropped and that row will be sent again"
        )
    done = answered_fingerprints(state, spec.rerun_set)
    for message in warnings:
        observer.on_warning(message)

    register = RowRegister(state, kept, spec.shard_label)
    source = _RowSource(manifest, builder, register, done, spec)
    batches = source.batches()
    client = ModelStudioClient(
        key,
        concurrency=spec.concurrency,
        timeout_s=spec.timeout_s,
        idle_timeout_s=spec.idle_timeout_s,
        clock=clock,
        workspace_id=spec.workspace_id if spec.base_url is None else None,
        transport=transport,
    )
    limits = _limit_store(spec, key, observer, clock)
    native = spec.api == "dashscope"
    uploader = (
        TemporaryUploader(key, spec.resolved_base_url, clock=clock, transport=transport)
        if native
        else None
    )
    urls = UrlChecker(concurrency=spec.concurrency) if spec.check_urls else None
    media = MediaPreparer(media_settings(spec), uploader, urls)
    sender = RowSender(
        client,
        protocol_for(spec.api),
        SendSettings(
            base_url=spec.resolved_base_url,
            stream=spec.stream,
            max_attempts=spec.max_attempts,
            region=spec.region,
            prices=prices,
            max_throttle_wait_s=spec.max_throttle_wait_s,
        ),
        clock,
        on_retry=lambda request, exc, attempt: observer.on_retry(
            request.row_id, exc.code, attempt
        ),
        limits=limits,
        media=media,
    )

    def sink(request: RowRequest, result: RowResult) -> None:
        journal.append(result, row_id=request.row_id)
        observer.on_result(result)

    stop = StopControl(grace_s=spec.grace_s)
    gate = (
        CostGate(CostBudget(spec.max_cost), prices, spec.region)
        if (spec.max_cost is not None)
        else None
    )
    loop = asyncio.get_running_loop()
    timers = []
    if spec.max_runtime_s is not None:
        detail = f"--max-runtime {spec.max_runtime_s:g} s reached"
        timers.append(
            loop.call_later(spec.max_runtime_s, stop.stop, "max_runtime", detail)
        )
    if handle_signals:
        _install_signal_handlers(loop, stop, observer)

    started_at = clock.wall()
    start = clock.monotonic()
    observer.on_start(total_rows=total_rows, already_done=len(done))
    flusher = asyncio.create_task(journal.run_flusher())
    journal_error: JournalError | None = None
    manifest_error: ManifestError | None = None
    sent, fatal, limit_reached = 0, None, False
    try:
        try:
            outcome = await run_scheduler(
                batches,
                sender,
                sink,
                concurrency=spec.concurrency,
                stop=stop,
                limit=spec.limit,
                gate=gate,
            )
            sent, fatal = outcome.sent, outcome.fatal
            limit_reached = outcome.limit_reached
            manifest_error = outcome.manifest_error
            if outcome.pending_read is not None:
                await outcome.pending_read
        except* JournalError as group:
            journal_error = next(
                e for e in group.exceptions if isinstance(e, JournalError)
            )
        if limit_reached and not stop.stopping:
            stop.reason, stop.detail = "limit", f"--limit {spec.limit} reached"
        if stop.reason is not None and manifest_error is None:
            observer.on_stop(stop.reason, stop.detail)
        if journal_error is None and manifest_error is None and not stop.hard:
            for _ in batches:  # a stopped run still registers every row, as skipped
                pass
            register.commit()
    finally:
        for timer in timers:
            timer.cancel()
        stop.close()
        if handle_signals:
            for signum in _STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        flusher.cancel()
        if isinstance(limits, SharedLimits):
            limits.close()
        await client.aclose()
        if uploader is not None:
            await uploader.aclose()
        if urls is not None:
            await urls.aclose()
        journal.close()
        register.abandon()
    if journal_error is not None:
        raise journal_error
    if manifest_error is not None:
        raise ManifestError(
            manifest_error.problem,
            path=manifest_error.path,
            fix=f"{manifest_error.fix}. The file changed during the run; every "
            "answer received before this line is kept, so run again to resume",
        )
    if stop.hard:
        return RunOutcome(
            exit_code=3,
            output=spec.output,
            by_status={},
            sent=sent,
            summary={},
            stop_reason=stop.reason,
            stop_detail=stop.detail,
            fatal=fatal,
            warnings=warnings,
            results_written=False,
        )
    with outputs_lock(state):
        # journal sizes are taken before the rebuild reads them: anything another
        # shard appends meanwhile makes the next run take the full path (never less)
        sizes = journal_sizes(state)
        written = _write_outputs(
            spec,
            state,
            source,
            stop,
            sent,
            fatal,
            warnings,
            started_at=started_at.isoformat(),
            elapsed_s=clock.monotonic() - start,
            finished_at=clock.wall().isoformat(),
        )
        save_state(
            state,
            spec.shard_label,
            RunState(
                key=inputs,
                manifest=stamp,
                journals=sizes,
                pending=written.pending,
                rows=source.register.rows,
                exit_code=written.exit_code,
                by_status=written.by_status,
                local_media=source.local_media,
            ),
        )
    return written


def _already_current(
    spec: JobSpec, state: RunState, observer: RunObserver
) -> RunOutcome:
    """A finished job, run again on the same inputs: nothing to send or rebuild."""
    observer.on_info(
        f"nothing to do: all {state.rows:,} rows have their results and "
        "results.parquet is current (--retry-errors or --rerun sends failed rows again)"
    )
    summary = json.loads((spec.output / SUMMARY_NAME).read_text("utf-8"))
    return RunOutcome(
        exit_code=state.exit_code,
        output=spec.output,
        by_status=state.by_status,
        sent=0,
        summary=summary,
    )


def _limit_store(
    spec: JobSpec, key: ApiKey, observer: RunObserver, clock: Clock
) -> LimitStore:
    """Budgets shared by every run on this machine when a limit is configured (limits
    are the account's, not the process's); otherwise this run's own, adaptive ones."""
    if spec.limits_of(spec.model) == (None, None):
        return MemoryLimits(spec.limits_of)
    account = account_id(key, spec.resolved_base_url)
    try:
        return SharedLimits(
            state_home() / f"{account}.json",
            spec.limits_of,
            clock=clock,
            on_info=observer.on_info,
        )
    except OSError as exc:
        observer.on_warning(
            f"cannot keep rate budgets in {state_home()} ({exc.strerror}): this run "
            "keeps its own, so runs beside it do not share them. Set XDG_STATE_HOME "
            "to a writable folder to share them"
        )
        return MemoryLimits(spec.limits_of)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: StopControl, observer: RunObserver
) -> None:
    def on_signal(signum: signal.Signals) -> None:
        if not stop.stopping:
            observer.on_warning(
                f"{signum.name}: no new requests; those in flight have "
                f"{stop.grace_s:g} s to finish. Send it again to stop at once"
            )
            stop.stop("signal", signum.name)
        else:
            stop.abort(hard=True)

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


def _write_outputs(
    spec: JobSpec,
    state: Path,
    source: _RowSource,
    stop: StopControl,
    sent: int,
    fatal: FatalApiError | None,
    warnings: list[str],
    *,
    started_at: str,
    finished_at: str,
    elapsed_s: float,
) -> RunOutcome:
    frame = build_results(source.register.path, state, api=spec.api)
    scope = frame.filter(frame["_in_scope"].fill_null(True))
    frame = frame.drop("_in_scope")
    by_status = {s.value: 0 for s in RowStatus}
    for status, count in scope["status"].value_counts().iter_rows():
        by_status[status] = int(count)
    # rows the next run would send: what is re-sent anyway, and what was never sent
    pending = scope.filter(resend_condition(spec.rerun_set | {"skipped"})).height
    shared_ids = (  # derived ids repeat only for identical rows: no surprise there
        scope.filter(scope["id"].is_duplicated())["id"]
        if source.builder.col("id") in source.builder.present
        else pl.Series("id", [], pl.String)
    )
    stop_reason = stop.reason
    if fatal is not None:
        exit_code, stop_reason = 5, "fatal"
    elif stop_reason is not None:
        exit_code = 3
    elif by_status["ok"] < scope.height:
        exit_code = 1
    else:
        exit_code = 0
    run_info = {
        "batchkimi": __version__,
        "started_at": started_at,
        "finished_at": finished_at,
        "host": socket.gethostname(),
        "input": str(spec.input),
        "api": spec.api,
        "base_url": spec.resolved_base_url,
        "region": spec.region,
        "model": spec.model,
        "stream": spec.stream,
        "concurrency": spec.concurrency,
        "shard": spec.shard,
        "stop_reason": stop_reason,
        "stop_detail": stop.detail or None,
        "exit_code": exit_code,
        "duplicate_rows_this_run": source.duplicates,
        # rows whose id another row also has: results keep them all, but a join on
        # id would not tell them apart
        "rows_with_shared_id": shared_ids.len(),
        "first_shared_id": shared_ids[0] if shared_ids.len() else None,
    }
    summary = build_summary(
        frame, run=run_info, elapsed_s=elapsed_s, sent_this_run=sent
    )
    write_results(frame, spec.output / RESULTS_NAME)
    write_summary(summary, spec.output / SUMMARY_NAME)
    return RunOutcome(
        exit_code=exit_code,
        output=spec.output,
        by_status=by_status,
        sent=sent,
        summary=summary,
        stop_reason=stop_reason,
        stop_detail=stop.detail,
        fatal=fatal,
        warnings=warnings,
        pending=pending,
    )
