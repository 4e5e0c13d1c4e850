"""Run a job: manifest → requests → scheduler → journal → results.parquet, summary.json.

Everything the run needs comes in as arguments (job, key, clock, observer), so tests
build a spec and call ``run_job`` directly. The output folder is locked for the whole
run; whatever happens, the journal is closed (fsynced) before the lock is released, and
the outputs are rebuilt from it unless a second signal asked to stop at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from batchkimi.clock import Clock, SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.errors import ConfigError, FatalApiError, ManifestError
from batchkimi.outcome import RunObserver as RunObserver  # where it was
from batchkimi.outcome import RunOutcome as RunOutcome  # where it was
from batchkimi.outcome import SilentObserver
from batchkimi.prepare import PreparedJob, uncached_note
from batchkimi.records import RowRequest, RowResult
from batchkimi.rowsource import Answered, RowSource, cache_digest
from batchkimi.schedule.budget import CostBudget, CostGate
from batchkimi.schedule.limitstore import (
    LimitStore,
    MemoryLimits,
    SharedLimits,
    account_id,
    state_home,
)
from batchkimi.schedule.scheduler import SchedulerOutcome, run_scheduler
from batchkimi.schedule.stopper import StopControl
from batchkimi.sending import Sending, open_sender
from batchkimi.settings import Job
from batchkimi.store.appended import TEXT_FORMATS, carried_rows
from batchkimi.store.files import file_facts
from batchkimi.store.journal import (
    Journal,
    JournalError,
    answered_set,
    resend_condition,
)
from batchkimi.store.lock import OutputLock, outputs_lock
from batchkimi.store.lookup import JournalLookup
from batchkimi.store.results import (
    RESULTS_NAME,
    SharedIds,
    shared_ids,
    write_results,
)
from batchkimi.store.rowcache import RowCache
from batchkimi.store.rows import (
    RegisterFiles,
    RowRegister,
    chunk_rows_for,
    register_files,
)
from batchkimi.store.state import (
    RunState,
    already_current,
    current_state,
    inputs_key,
    journal_sizes,
    load_state,
    save_state,
    settings_key,
    settled,
    stamp_growth,
)
from batchkimi.store.summary import SUMMARY_NAME, write_summary
from batchkimi.store.unfinished import answers_in_hand
from batchkimi.version import __version__

STATE_DIR = ".batchkimi"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Dispatch(Protocol):
    """Sends what ``batches`` yields elsewhere than this process (up to the job's
    ``--limit``), tells ``observer`` of each result and stops with ``stop``; the
    results are journaled into the output folder by whoever sent them."""

    async def __call__(
        self,
        batches: Iterator[list[RowRequest]],
        *,
        stop: StopControl,
        in_hand: dict[str, RowResult],
        observer: RunObserver,
    ) -> SchedulerOutcome: ...


class _Advisories:
    """Warnings about media sent all the same (an image over 8K): the first few in
    full, then a count, so an archive of camera photos does not flood the log."""

    SHOWN = 3

    def __init__(self, observer: RunObserver) -> None:
        self.observer = observer
        self.more = 0
        self.shown = 0

    def add(self, message: str) -> None:
        if self.shown < self.SHOWN:
            self.shown += 1
            self.observer.on_warning(message)
        else:
            self.more += 1

    def close(self) -> None:
        if self.more:
            self.observer.on_warning(
                f"… and {self.more:,} more rows with such media (`batchkimi plan` "
                "lists them all)"
            )


def _open_state(job: Job) -> Path:
    state = job.output / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        probe = state / f".writable.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        msg = (
            f"cannot write to the output folder {job.output}: {exc.strerror}. "
            "Choose another --output or fix its permissions"
        )
        raise ConfigError(msg) from exc
    return state


async def run_job(
    prepared: PreparedJob,
    key: ApiKey,
    *,
    clock: Clock | None = None,
    observer: RunObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    handle_signals: bool = False,
    dispatch: Dispatch | None = None,
    raw_key: str | None = None,
) -> RunOutcome:
    """Run a prepared job to the end (or to a stop) and write its outputs.

    ``dispatch`` sends the rows somewhere else (``batchkimi.ray``: workers on a
    cluster, which journal into this output folder themselves); everything else —
    the lock, resume, the row register, stops and the outputs — is the same.
    ``raw_key`` (the command line's, see ``jobs.execute``) is kept in the state."""
    state = _open_state(prepared.job)
    with OutputLock(state, shard=prepared.job.reading.shard_label):
        return await _run_locked(
            prepared,
            key,
            state,
            clock=clock or SystemClock(),
            observer=observer or SilentObserver(),
            transport=transport,
            handle_signals=handle_signals,
            dispatch=dispatch,
            raw_key=raw_key,
        )


async def _run_locked(
    prepared: PreparedJob,
    key: ApiKey,
    state: Path,
    *,
    clock: Clock,
    observer: RunObserver,
    transport: httpx.AsyncBaseTransport | None,
    handle_signals: bool,
    dispatch: Dispatch | None = None,
    raw_key: str | None = None,
) -> RunOutcome:
    job, prices = prepared.job, prepared.prices
    shard = job.reading.shard_label
    previous = load_state(state, shard)
    stamp, grown = stamp_growth(
        job.reading.input, previous.manifest if previous else None
    )
    settings = job.results_settings()
    inputs = inputs_key(settings, stamp)
    outputs = [job.output / RESULTS_NAME, job.output / SUMMARY_NAME]
    if (current := current_state(previous, inputs, state, outputs)) is not None:
        return _already_current(job, current, observer)
    total_rows = prepared.read_rows()  # a broken line stops the job before any send
    digest = cache_digest(job, prepared.manifest.schema)
    # before the journal opens: its files must be as the last build left them (a
    # dispatch's workers look answers up themselves)
    last = register_files(state, shard)
    reading = _reading(
        prepared,
        previous if dispatch is None else None,
        last,
        state,
        grown=grown,
        settings=settings_key(settings),
        digest=digest,
        total_rows=total_rows,
    )
    carried = reading.carried
    journal, torn = Journal.open(state, shard=shard)
    warnings: list[str] = []
    if torn:
        warnings.append(
            f"the journal ended in a torn record ({torn} bytes, from an interrupted "
            "write); it was dropped and that row will be sent again"
        )
    answered, in_hand, already_done = _answers(
        state, job.writing.rerun_set, reading.settled
    )
    for message in warnings:
        observer.on_warning(message)
    if carried:
        observer.on_info(
            f"the manifest only grew: its first {carried:,} rows stand as the last "
            f"run left them; reading the {total_rows - carried:,} after them"
        )

    # rows carried from the last run are not read: the new ones are new
    cache = None if digest is None or carried else RowCache.load(last, digest)
    register = RowRegister(
        state,
        prepared.kept,
        shard,
        digest,
        group_rows=chunk_rows_for(total_rows),
        after=last if carried else None,
    )
    source = RowSource(
        prepared.manifest,
        prepared.builder,
        register,
        answered,
        job,
        cache,
        skip=carried,
        settled=reading.settled is not None,
    )
    del answered  # the source's alone: it lets go of it before the results build
    batches = source.batches()
    advice = _Advisories(observer)
    limits: LimitStore | None = None
    sending: Sending | None = None
    if dispatch is None:  # a dispatch's workers pace, send and journal for themselves
        limits = _limit_store(job, key, observer, clock)
        sending = open_sender(
            job,
            prices,
            prepared.media,
            key,
            clock=clock,
            limits=limits,
            on_answer=lambda request, result: journal.append(
                result, row_id=request.row_id
            ),
            on_retry=observer.on_retry,
            on_advice=advice.add,
            on_note=observer.on_info,
            resume=in_hand,
            transport=transport,
        )

    def sink(request: RowRequest, result: RowResult) -> None:
        journal.append(result, row_id=request.row_id)
        observer.on_result(result)

    stop = StopControl(grace_s=job.stopping.grace_s)
    answer_spec = job.asking.answer
    gate = (
        CostGate(
            CostBudget(job.stopping.max_cost),
            prices,
            job.connection.region,
            repairs=answer_spec.max_repairs if answer_spec is not None else 0,
            catalogue=job.catalogue,
        )
        if (job.stopping.max_cost is not None)
        else None
    )
    loop = asyncio.get_running_loop()
    timers = []
    if job.stopping.max_runtime_s is not None:
        detail = f"--max-runtime {job.stopping.max_runtime_s:g} s reached"
        timers.append(
            loop.call_later(
                job.stopping.max_runtime_s, stop.stop, "max_runtime", detail
            )
        )
    if handle_signals:
        _install_signal_handlers(loop, stop, observer)

    started_at = clock.wall()
    start = clock.monotonic()
    observer.on_start(total_rows=total_rows, already_done=already_done)
    flusher = asyncio.create_task(journal.run_flusher())
    journal_error: JournalError | None = None
    manifest_error: ManifestError | None = None
    sent, fatal, limit_reached = 0, None, False
    try:
        try:
            if sending is not None:
                outcome = await run_scheduler(
                    batches,
                    sending.sender,
                    sink,
                    concurrency=job.pacing.concurrency,
                    stop=stop,
                    limit=job.reading.limit,
                    gate=gate,
                )
            else:
                assert dispatch is not None  # noqa: S101 (one of the two is given)
                outcome = await dispatch(
                    batches, stop=stop, in_hand=in_hand, observer=observer
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
            stop.reason, stop.detail = "limit", f"--limit {job.reading.limit} reached"
        advice.close()
        if prepared.builder.uncached:
            observer.on_warning(uncached_note(prepared.builder.uncached))
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
        if sending is not None:
            await sending.aclose()
        journal.close(seal=not stop.hard)  # a hard stop waits for nothing more
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
            output=job.output,
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
            job,
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
            job.reading.shard_label,
            RunState(
                key=inputs,
                manifest=stamp,
                journals=sizes,
                pending=written.pending,
                rows=source.register.rows,
                register=source.register.files().facts(),
                exit_code=written.exit_code,
                by_status=written.by_status,
                local_media=source.local_media,
                raw=raw_key,
                # rows are carried only from a manifest that was the stamped
                # one throughout the run (not one appended to while it read)
                settings=(
                    settings_key(settings)
                    if file_facts(job.reading.input) == stamp.facts
                    else None
                ),
            ),
        )
    return written


@dataclass(frozen=True, slots=True)
class _Reading:
    """How a run reads the manifest, from what the last run left."""

    settled: RunState | None  # the last run's state, when all its rows stand
    carried: int  # the first rows, taken as the last run left them


def _reading(
    prepared: PreparedJob,
    previous: RunState | None,
    register: RegisterFiles | None,
    state: Path,
    *,
    grown: bool,
    settings: str,
    digest: str | None,
    total_rows: int,
) -> _Reading:
    """Whether the last run's rows all stand answered (``state.settled``), and, if
    so, how many of them this run carries because the manifest only grew
    (``store.appended``)."""
    facts = register.facts() if register is not None else None
    if not settled(previous, settings=settings, register=facts, state_dir=state):
        return _Reading(None, 0)
    assert previous is not None  # noqa: S101 (settled says so)
    carried = carried_rows(
        previous,
        register,
        grown=grown and prepared.manifest.format in TEXT_FORMATS,
        rows_now=total_rows,
        digest=digest,
        kept=prepared.kept,
    )
    return _Reading(previous, carried)


def _answers(
    state: Path, rerun: frozenset[str], settled_state: RunState | None
) -> tuple[Answered, dict[str, RowResult], int]:
    """What the row source asks answers of, the rows left with a paid answer in
    hand (or paid for and sent again now), and how many answers a resume keeps.

    Of a settled job, only the rows built now are asked about, in the journal
    (``JournalLookup``, which finds their answers in hand too); otherwise the
    answered set and the answers in hand are two reads of the journal, side by
    side (polars works without the GIL)."""
    if settled_state is not None:
        in_hand: dict[str, RowResult] = {}
        lookup = JournalLookup(state, rerun, in_hand)
        return lookup, in_hand, sum(settled_state.by_status.values())
    with ThreadPoolExecutor(1, thread_name_prefix="answers-in-hand") as pool:
        finding = pool.submit(answers_in_hand, state, rerun)
        answered = answered_set(state, rerun)
        return answered, finding.result(), len(answered)


def _already_current(job: Job, state: RunState, observer: RunObserver) -> RunOutcome:
    """A finished job, run again on the same inputs: nothing to send or rebuild."""
    return already_current(job.output, state, observer.on_info)


def _limit_store(
    job: Job, key: ApiKey, observer: RunObserver, clock: Clock
) -> LimitStore:
    """Budgets shared by every run on this machine when a limit is configured (limits
    are the account's, not the process's); otherwise this run's own, adaptive ones."""
    if job.limits_of(job.asking.model) == (None, None):
        return MemoryLimits(job.limits_of)
    account = account_id(key, job.connection.resolved_base_url)
    try:
        return SharedLimits(
            state_home() / f"{account}.json",
            job.limits_of,
            clock=clock,
            on_info=observer.on_info,
        )
    except OSError as exc:
        observer.on_warning(
            f"cannot keep rate budgets in {state_home()} ({exc.strerror}): this run "
            "keeps its own, so runs beside it do not share them. Set XDG_STATE_HOME "
            "to a writable folder to share them"
        )
        return MemoryLimits(job.limits_of)


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
    job: Job,
    state: Path,
    source: RowSource,
    stop: StopControl,
    sent: int,
    fatal: FatalApiError | None,
    warnings: list[str],
    *,
    started_at: str,
    finished_at: str,
    elapsed_s: float,
) -> RunOutcome:
    answer = job.asking.answer
    # the row source is spent: its sets (a string per row) go before the build
    source.close()
    # streamed from the register and the journal, counting as it goes: flat memory
    built = write_results(
        source.register.files(),
        state,
        job.output / RESULTS_NAME,
        api=job.connection.api,
        answer_schema=answer.schema if answer is not None else None,
        # rows the next run would send: what is re-sent anyway, and what never was
        resend=resend_condition(job.writing.rerun_set | {"skipped"}),
    )
    by_status, pending = built.by_status, built.pending
    shared = (  # derived ids repeat only for identical rows: no surprise there
        shared_ids(source.register.files())
        if source.builder.col("id") in source.builder.present
        else SharedIds(0, None)
    )
    stop_reason = stop.reason
    if fatal is not None:
        exit_code, stop_reason = 5, "fatal"
    elif stop_reason is not None:
        exit_code = 3
    elif by_status["ok"] < built.rows:
        exit_code = 1
    else:
        exit_code = 0
    run_info = {
        "batchkimi": __version__,
        "started_at": started_at,
        "finished_at": finished_at,
        "host": socket.gethostname(),
        "input": str(job.reading.input),
        "api": job.connection.api,
        "base_url": job.connection.resolved_base_url,
        "region": job.connection.region,
        "model": job.asking.model,
        "stream": job.connection.stream,
        "concurrency": job.pacing.concurrency,
        "shard": job.reading.shard,
        "stop_reason": stop_reason,
        "stop_detail": stop.detail or None,
        "exit_code": exit_code,
        "duplicate_rows_this_run": source.duplicates,
        # rows whose id another row also has: results keep them all, but a join on
        # id would not tell them apart
        "rows_with_shared_id": shared.rows,
        "first_shared_id": shared.first,
    }
    summary = built.summary(run=run_info, elapsed_s=elapsed_s, sent_this_run=sent)
    write_summary(summary, job.output / SUMMARY_NAME)
    return RunOutcome(
        exit_code=exit_code,
        output=job.output,
        by_status=by_status,
        sent=sent,
        summary=summary,
        stop_reason=stop_reason,
        stop_detail=stop.detail,
        fatal=fatal,
        warnings=warnings,
        pending=pending,
    )
