"""One row, start to finish: build the call, send with retries, judge the answer.

The worker's boundary: whatever happens to a row becomes a ``RowResult``; only a fatal
account error escapes (to stop the run). A cut-off or empty answer is ``incomplete``,
never silently ``ok``. A structured job's answer is checked against its schema and
asked again, with the validator's words, while repairs remain: the repair loop wraps
the retry loop (a transient failure is retried within its turn; an invalid answer is
a new turn), and every turn's tokens and cost add up on the row.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from batchkimi.answers.check import AnswerChecker, Invalid, Valid
from batchkimi.answers.repair import repair_request
from batchkimi.api.base import HttpCall, WireProtocol, read_raw_answer
from batchkimi.catalogue import Catalogue
from batchkimi.client import Exchange, ModelStudioClient
from batchkimi.clock import Clock
from batchkimi.errors import FatalApiError, TransientError
from batchkimi.estimate import request_input_tokens, worst_output_tokens
from batchkimi.pricing import PriceTable
from batchkimi.records import (
    UNPROCESSED,
    Completion,
    Failure,
    RowRequest,
    RowResult,
    RowStatus,
)
from batchkimi.schedule.cachegate import PrefixGate
from batchkimi.schedule.limitstore import LimitStore
from batchkimi.schedule.media import MediaPreparer
from batchkimi.schedule.outcome import Tally, judge, tool_calls_json, tool_calls_of
from batchkimi.schedule.retry import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    WaitWithRetryAfter,
    build_retrying,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SendSettings:
    base_url: str
    stream: bool
    max_attempts: int
    region: str
    prices: PriceTable
    #: stop the run when throttles have gone on this long with no answer between
    max_throttle_wait_s: float = 600.0
    catalogue: Catalogue = field(default_factory=Catalogue.packaged)


class ThrottleStop(Exception):
    """Throttling, or an outage, has outlasted its waiting budget: stop the run,
    resumably."""


class RowSender:
    """Sends rows through one client and codec; stateless between rows."""

    def __init__(
        self,
        client: ModelStudioClient,
        protocol: WireProtocol,
        settings: SendSettings,
        clock: Clock,
        rng: random.Random | None = None,
        on_retry: Callable[[RowRequest, TransientError, int], None] | None = None,
        limits: LimitStore | None = None,
        media: MediaPreparer | None = None,
        answers: AnswerChecker | None = None,
        on_answer: Callable[[RowRequest, RowResult], None] | None = None,
        resume: Mapping[str, RowResult] | None = None,
    ) -> None:
        """``answers`` checks a structured job's answers; ``on_answer`` journals an
        invalid answer before its repair; ``resume`` holds the rows an earlier run
        left between an answer and its repair, by fingerprint."""
        self.client = client
        self.answers = answers
        self.on_answer = on_answer
        self.resume = resume
        self.media = media
        self.protocol = protocol
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_retry = on_retry
        self.limits = limits
        self.answered_at = clock.monotonic()  # the last answer that was not transient
        self._in_hand: dict[str, _RowRun] = {}  # fingerprint -> a row being processed
        self.prefixes = PrefixGate()  # explicitly cached prefixes, created or not
        #: the code of the last transient failure since then, and if it was a throttle
        self._last_transient: tuple[str, bool] | None = None
        self._output_tokens: dict[str, float] = {}  # model -> running mean of output

    def _tokens_to_reserve(self, request: RowRequest) -> float:
        """Estimated input plus the output this model has been giving lately."""
        worst = worst_output_tokens(request, self.settings.catalogue.get(request.model))
        expected = self._output_tokens.get(request.model, min(worst, 512))
        return request_input_tokens(request) + min(expected, worst)

    async def _paced_send(
        self, request: RowRequest, call: HttpCall, tokens: float, wait: list[float]
    ) -> Exchange:
        """One attempt: wait for the rate budgets, send, and settle them."""
        sent_at = self.clock.monotonic()
        limits = self.limits
        while limits is not None:
            granted, delay = limits.try_reserve(request.model, tokens, sent_at)
            if delay > 0:
                self._check_wait(sent_at + delay - self.answered_at)
                wait[0] += delay
                await self.clock.sleep(delay)
            if granted:
                break
            sent_at = self.clock.monotonic()  # the moment it asks again
        exchange = await self.client.send(call, self.protocol)
        now = self.clock.monotonic()
        result = exchange.result
        if isinstance(result, Completion):
            self.answered_at, self._last_transient = now, None
            used = result.usage.total_tokens if result.usage else None
            if result.usage is not None:
                mean = self._output_tokens.get(
                    request.model, result.usage.output_tokens
                )
                self._output_tokens[request.model] = (
                    0.9 * mean + 0.1 * result.usage.output_tokens
                )
            if self.limits is not None:
                self.limits.settle(
                    request.model, tokens, outcome="accepted", tokens_used=used, now=now
                )
            return exchange
        throttled = result.budget is not None
        if result.kind == "transient":
            self._last_transient = (result.code, throttled)
        if self.limits is not None:
            self.limits.settle(
                request.model,
                tokens,
                budget=result.budget,
                sent_at=sent_at,
                now=now,
                outcome="throttled" if throttled else "failed",
            )
            if throttled and self.limits.absorbs(request.model, result.budget):
                # a throttle of the background says nothing about the rate: the
                # pacing spaces the retry, and a backoff would only idle a worker
                # (at zero latency, a quarter of a second for 5% of rows halves a
                # run; issue 13). So the wait to retry after it is none.
                result = dataclasses.replace(result, retry_after_s=0.0)
                exchange = dataclasses.replace(exchange, result=result)
        # a throttle, a 5xx or a lost connection says nothing about the row: when
        # nothing else has come back for a long time, the run stops (resumable)
        # instead of spinning through the manifest on an outage
        if result.kind == "transient":
            self._check_wait(now - self.answered_at)
        else:
            self.answered_at, self._last_transient = now, None
        return exchange

    def _check_wait(self, waiting_s: float) -> None:
        """Stop the run (resumably) when it has waited, or a pacing delay would make
        it wait, longer than --max-throttle-wait with no answer between: every wait
        is bounded, the rate budgets' included."""
        if waiting_s <= self.settings.max_throttle_wait_s:
            return
        if self._last_transient is not None:
            code, throttled = self._last_transient
            what = "throttled every request" if throttled else "answered no request"
            msg = (
                f"the service has {what} for {waiting_s:.0f} s (last: {code}); "
                "the run stops here, resumable. Wait, lower --concurrency / --rpm / "
                "--tpm, check --base-url and the network, or raise --max-throttle-wait"
            )
        else:
            msg = (
                f"the rate budgets would hold requests for {waiting_s:.0f} s with no "
                "answer between; the run stops here, resumable. Raise --rpm / --tpm "
                "if the account allows more, or raise --max-throttle-wait"
            )
        raise ThrottleStop(msg)

    async def process(self, request: RowRequest) -> RowResult:
        """Send ``request`` (asking again while its structured answer is invalid)
        and return what became of it. A row an earlier run left with an answer in
        hand (unprocessed, or invalid and owed a repair) carries on from that
        answer: what was paid for is never asked for again."""
        row = _RowRun(self.clock.wall().isoformat())
        self._in_hand[request.fingerprint] = row
        previous = self.resume.get(request.fingerprint) if self.resume else None
        given: Completion | None = None
        if previous is not None and not _in_hand(previous):
            # a paid answer this run asks again (--rerun): a fresh ask, with what
            # was already spent on the row kept on it
            row.carry(previous)
            previous = None
        if previous is not None:
            row.resume_from(previous)
            if previous.error_code == UNPROCESSED:
                recovered = self._recover(previous, row, request)
                if isinstance(recovered, Failure):
                    return self._done(
                        request, self._result(request, row, None, recovered)
                    )
                given = recovered
        if self.answers is None:
            failure: Failure | None = None
            if given is None:
                given, failure = await self._ask(request, row)
            return self._done(request, self._result(request, row, given, failure))
        answered = await self._answer(request, row, self.answers, given, previous)
        return self._done(request, answered)

    def _done(self, request: RowRequest, result: RowResult) -> RowResult:
        self._in_hand.pop(request.fingerprint, None)
        return result

    async def _prepared(
        self, request: RowRequest, row: _RowRun
    ) -> RowRequest | Failure:
        """``request`` with its local media made sendable (an upload may fail and be
        tried again, with the backoff of a request, up to max_attempts)."""
        if self.media is None or row.media_ready:
            return request
        tries = 0
        while True:
            tries += 1
            try:
                prepared = _raise_unless_row(await self.media.prepare(request))
            except TransientError as exc:
                if tries >= self.settings.max_attempts:
                    return _gave_up(exc, tries, "tries")
                self._count_retry(request, row, exc)
                await self._backoff(row, self._backoff_s(tries, exc))
                continue
            row.media_ready = isinstance(prepared, RowRequest)
            return prepared

    async def _ask(
        self, request: RowRequest, row: _RowRun
    ) -> tuple[Completion | None, Failure | None]:
        """One turn: send with retries; the answer, or the failure that ended the
        turn. Attempts, waits, times and tokens go on ``row``. The first request of
        an explicitly cached prefix goes alone (``cachegate``)."""
        if request.cache_key is None:
            return await self._send_turn(request, row)
        async with self.prefixes.turn(request.cache_key) as turn:
            answer, failure = await self._send_turn(request, row)
            turn.created = answer is not None
        return answer, failure

    async def _send_turn(
        self, request: RowRequest, row: _RowRun
    ) -> tuple[Completion | None, Failure | None]:
        prepared = await self._prepared(request, row)
        if isinstance(prepared, Failure):
            return None, prepared
        request = prepared
        call = self.protocol.build(
            request, self.settings.base_url, stream=self.settings.stream
        )
        exchange: Exchange | None = None
        tokens = self._tokens_to_reserve(request)
        failure: Failure | None = None
        tally = row.tally
        try:
            # The first attempt runs without a retry controller: most rows need no
            # other, and building one per row is a measurable share of a fast run.
            tally.attempts += 1
            exchange = await self._paced_send(request, call, tokens, row.waited)
            failure = _row_failure(exchange)
        except TransientError as first:
            failure = _gave_up(first, row.turn_attempts(tally))
            if self.settings.max_attempts > 1:
                self._count_retry(request, row, first)
                await self._backoff(row, self._backoff_s(1, first))
                retrying = build_retrying(
                    max_attempts=self.settings.max_attempts,
                    clock=self.clock,
                    on_retry=lambda exc: self._count_retry(request, row, exc),
                    rng=self.rng,
                    sleep=lambda seconds: self._backoff(row, seconds),
                    offset=1,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            tally.attempts += 1
                            exchange = await self._paced_send(
                                request, call, tokens, row.waited
                            )
                            failure = _row_failure(exchange)
                except TransientError as exc:
                    failure = _gave_up(exc, row.turn_attempts(tally))
        row.turn_start = tally.attempts
        if exchange is None:
            return None, failure
        tally.add_time(exchange.latency_ms, exchange.ttft_ms)
        answer = exchange.result
        if failure is not None or not isinstance(answer, Completion):
            return None, failure
        # the answer is in hand: from here on, a fault keeps it (``crashed``)
        row.received = answer
        tally.add_usage(answer)
        tally.add_cost(
            answer, self.settings.prices, request.model, self.settings.region
        )
        return answer, None

    def _recover(
        self, previous: RowResult, row: _RowRun, request: RowRequest
    ) -> Completion | Failure:
        """The answer an earlier run received but could not process, read again
        here (from its raw body when it could not even be parsed), priced anew."""
        if previous.raw_response is not None:
            recovered = read_raw_answer(self.protocol, previous.raw_response)
            if isinstance(recovered, Failure):
                return recovered
            row.tally.add_usage(recovered)
        else:
            recovered = _journaled_answer(previous)
        row.received = recovered
        row.tally.reprice(self.settings.prices, request.model, self.settings.region)
        return recovered

    async def _answer(
        self,
        request: RowRequest,
        row: _RowRun,
        checker: AnswerChecker,
        given: Completion | None,
        previous: RowResult | None,
    ) -> RowResult:
        """Ask, check the answer against the schema, and re-ask with the
        validator's words while repairs remain. Each invalid answer is journaled
        as it arrives (``on_answer``), so a kill before its repair loses nothing
        paid for: the next run carries on from it."""
        spec = checker.spec
        turn = request
        if previous is not None and given is None and previous.validation_error:
            # an earlier run stopped between an invalid answer and its repair
            last = _journaled_answer(previous)
            invalid = _journaled_invalid(previous)
            if row.tally.repairs >= spec.max_repairs:
                return self._invalid(request, row, last, invalid, final=True)
            row.last_invalid = (last, invalid)
            row.tally.repairs += 1
            row.tally.repair_causes[invalid.cause] += 1
            turn = repair_request(turn, last, invalid, spec)
        while True:
            failure: Failure | None = None
            completion: Completion | None = given
            given = None
            if completion is None:
                completion, failure = await self._ask(turn, row)
            if completion is None:
                result = self._result(request, row, None, failure)
                if row.last_invalid is not None:  # the repair turn got no answer:
                    # it is owed again (the next run sends it), not spent
                    self._keep_invalid(result, *row.last_invalid)
                    result.repairs -= 1
                    causes = Counter(result.repair_causes)
                    causes[row.last_invalid[1].cause] -= 1
                    result.repair_causes = dict(+causes)
                return result
            status, _, _ = judge(completion)
            if status is RowStatus.ERROR or completion.finish_reason == "length":
                # filtered, or cut off at the output limit: nothing to check, and
                # asking again would meet the same limit
                return self._result(request, row, completion, None)
            verdict = checker.check(completion)
            if isinstance(verdict, Valid):
                result = self._result(request, row, completion, None)
                result.status, result.error_code, result.error_message = (
                    RowStatus.OK,
                    None,
                    None,
                )
                result.answer_json = verdict.json
                return result
            final = row.tally.repairs >= spec.max_repairs
            result = self._invalid(request, row, completion, verdict, final=final)
            if final:
                return result
            if self.on_answer is not None:
                self.on_answer(request, result)  # journaled before the repair
            row.received = None  # journaled: no longer only in hand
            row.last_invalid = (completion, verdict)
            row.tally.repairs += 1
            row.tally.repair_causes[verdict.cause] += 1
            turn = repair_request(turn, completion, verdict, spec)

    def _invalid(
        self,
        request: RowRequest,
        row: _RowRun,
        completion: Completion,
        invalid: Invalid,
        *,
        final: bool,
    ) -> RowResult:
        """An invalid answer: final when its repairs ran out; otherwise the record
        journaled before its repair, which the next run continues (retryable)."""
        result = self._base(request, row)
        self._keep_invalid(result, completion, invalid)
        result.status = RowStatus.INVALID
        result.http_status = 200
        result.request_id = completion.request_id
        result.response_model = completion.model
        result.finish_reason = completion.finish_reason
        result.error_code = "invalid_answer"
        result.error_message = (
            f"the answer did not match the schema after {row.tally.repairs} "
            f"repair{'s' if row.tally.repairs != 1 else ''}: {invalid.message}"
        )
        result.retryable = not final
        return result

    @staticmethod
    def _keep_invalid(
        result: RowResult, completion: Completion, invalid: Invalid
    ) -> None:
        """The invalid answer on the row: what the model said, and why it failed."""
        result.content = completion.content
        result.reasoning_content = completion.reasoning_content or None
        result.tool_calls = tool_calls_json(completion.tool_calls)
        result.validation_error = f"{invalid.cause}: {invalid.message}"

    def _count_retry(
        self, request: RowRequest, row: _RowRun, exc: TransientError
    ) -> None:
        row.retries[exc.code] += 1
        if self.on_retry is not None:
            self.on_retry(request, exc, row.tally.attempts)

    async def _backoff(self, row: _RowRun, seconds: float) -> None:
        # no wait outlasts --max-throttle-wait, a Retry-After of an hour included:
        # the attempt after it fails the run (resumably) if nothing has come back
        seconds = min(seconds, self.settings.max_throttle_wait_s)
        row.waited[0] += seconds
        await self.clock.sleep(seconds)

    def _base(self, request: RowRequest, row: _RowRun) -> RowResult:
        result = RowResult(
            fingerprint=request.fingerprint,
            status=RowStatus.ERROR,
            model=request.model,
            api=self.protocol.name,
            started_at=row.started_at,
            retries=dict(row.retries),
            wait_ms=round(row.waited[0] * 1000, 3),
        )
        row.tally.fill(result)
        result.finished_at = self.clock.wall().isoformat()
        return result

    def _result(
        self,
        request: RowRequest,
        row: _RowRun,
        completion: Completion | None,
        failure: Failure | None,
    ) -> RowResult:
        result = self._base(request, row)
        if failure is not None:
            result.error_code = failure.code
            result.error_message = failure.message
            result.http_status = failure.http_status
            result.request_id = failure.request_id
            # a body that could not be read is kept, and read again next run
            result.retryable = failure.kind == "transient" or failure.raw is not None
            result.raw_response = failure.raw
        elif completion is not None:
            result.status, result.error_code, result.error_message = judge(completion)
            result.http_status = 200
            result.content = completion.content
            result.reasoning_content = completion.reasoning_content or None
            result.finish_reason = completion.finish_reason
            result.request_id = completion.request_id
            result.response_model = completion.model
            result.tool_calls = tool_calls_json(completion.tool_calls)
        return result

    def _backoff_s(self, attempt: int, exc: TransientError) -> float:
        """The wait after failed attempt ``attempt``, as tenacity waits after the
        later ones (made only on failure: most rows never need it)."""
        return WaitWithRetryAfter(BACKOFF_BASE_S, BACKOFF_CAP_S, self.rng).delay(
            attempt, exc
        )

    def crashed(self, request: RowRequest, exc: Exception) -> RowResult:
        """The result of a row whose processing raised what no rule foresaw: an
        error for this row alone. An answer already in hand is kept (it was paid
        for), and the next run processes it again here instead of sending it; a
        row with no answer yet is sent again by the next run."""
        now = self.clock.wall().isoformat()
        row = self._in_hand.pop(request.fingerprint, None)
        what = f"{type(exc).__name__}: {exc}"
        if row is not None and row.received is not None:
            result = self._result(request, row, row.received, None)
            result.status = RowStatus.ERROR
            result.error_code = UNPROCESSED
            result.error_message = (
                f'row {request.index + 1:,} (id "{request.row_id}"): batchkimi failed '
                f"on this row after the service answered ({what}). The answer is "
                "kept, and the next run processes it again without sending it. "
                "This is batchkimi's bug: please report it"
            )
            result.retryable = True
            return result
        return RowResult(
            fingerprint=request.fingerprint,
            status=RowStatus.ERROR,
            model=request.model,
            api=self.protocol.name,
            error_code="batchkimi_error",
            error_message=(
                f'row {request.index + 1:,} (id "{request.row_id}"): batchkimi failed '
                f"on this row ({what}). This is batchkimi's bug, not your data's: "
                "please report it. The next run tries the row again"
            ),
            retryable=True,
            started_at=now,
            finished_at=now,
        )


@dataclass(slots=True)
class _RowRun:
    """One row's progress through its turns and attempts."""

    started_at: str
    tally: Tally = field(default_factory=Tally)
    retries: Counter[str] = field(default_factory=Counter)
    waited: list[float] = field(default_factory=lambda: [0.0])  # seconds paced
    turn_start: int = 0  # attempts made before the current turn
    media_ready: bool = False  # local media made sendable
    #: the last invalid answer and why, while a repair of it is under way
    last_invalid: tuple[Completion, Invalid] | None = None
    #: an answer received and not yet journaled (kept if processing it fails)
    received: Completion | None = None

    def turn_attempts(self, tally: Tally) -> int:
        return tally.attempts - self.turn_start

    def resume_from(self, record: RowResult) -> None:
        """Carry on from the journaled record an earlier run left."""
        self.tally = Tally.resumed(record)
        self.retries.update(record.retries)
        self.waited[0] += record.wait_ms / 1000

    def carry(self, record: RowResult) -> None:
        """Start afresh, keeping what the row has already cost (tokens, price,
        attempts): every attempt a row was paid for stays counted on it."""
        self.resume_from(record)
        self.tally.repairs = 0
        self.tally.repair_causes.clear()


def _in_hand(record: RowResult) -> bool:
    """Whether ``record`` left a paid answer to carry on from (an invalid answer
    owed a repair, or one batchkimi failed to process)."""
    return record.retryable and (
        record.validation_error is not None or record.error_code == UNPROCESSED
    )


def _journaled_answer(record: RowResult) -> Completion:
    """The invalid answer an unfinished row's journal record holds."""
    return Completion(
        content=record.content or "",
        reasoning_content=record.reasoning_content or "",
        finish_reason=record.finish_reason,
        usage=None,
        request_id=record.request_id,
        model=record.response_model,
        tool_calls=tool_calls_of(record.tool_calls),
    )


def _journaled_invalid(record: RowResult) -> Invalid:
    """Why that answer was invalid (``validation_error`` is "cause: message")."""
    cause, sep, message = (record.validation_error or "").partition(": ")
    return Invalid(cause, message) if sep else Invalid("invalid", cause)


def _gave_up(exc: TransientError, attempts: int, what: str = "attempts") -> Failure:
    return Failure(
        kind="transient",
        code=exc.code,
        message=f"gave up after {attempts} {what}: {exc.message}",
        http_status=exc.http_status,
        request_id=exc.request_id,
    )


def _row_failure(exchange: Exchange) -> Failure | None:
    """A failure of the row alone, or None when answered; others are raised."""
    outcome = _raise_unless_row(exchange.result)
    return outcome if isinstance(outcome, Failure) else None


def _raise_unless_row(outcome: T) -> T:
    """Raise transient and fatal failures; return anything else (an answer, a
    request made ready, or a failure of the row alone) as it is."""
    if not isinstance(outcome, Failure):
        return outcome
    if outcome.kind == "transient":
        raise TransientError(
            outcome.code,
            outcome.message,
            http_status=outcome.http_status,
            budget=outcome.budget,
            retry_after_s=outcome.retry_after_s,
            request_id=outcome.request_id,
        )
    if outcome.kind == "fatal":
        raise FatalApiError(
            outcome.code, outcome.message, http_status=outcome.http_status
        )
    return outcome
