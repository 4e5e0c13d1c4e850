"""One row, start to finish: build the call, send with retries, judge the answer.

The worker's boundary: whatever happens to a row becomes a ``RowResult``; only a fatal
account error escapes (to stop the run). A cut-off or empty answer is ``incomplete``,
never silently ``ok``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from batchkimi.api.base import HttpCall, WireProtocol
from batchkimi.catalogue import get_model
from batchkimi.client import Exchange, ModelStudioClient
from batchkimi.clock import Clock
from batchkimi.errors import FatalApiError, TransientError
from batchkimi.estimate import input_tokens, worst_output_tokens
from batchkimi.pricing import PriceTable, cost_of
from batchkimi.records import Completion, Failure, RowRequest, RowResult, RowStatus
from batchkimi.schedule.limitstore import LimitStore
from batchkimi.schedule.media import MediaPreparer
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


class ThrottleStop(Exception):
    """Throttling, or an outage, has outlasted its waiting budget: stop the run,
    resumably."""


def judge(completion: Completion) -> tuple[RowStatus, str | None, str | None]:
    """(status, error_code, error_message) for an answer the service gave."""
    content = completion.content.strip()
    if completion.finish_reason == "length":
        if not content and completion.reasoning_content:
            return (
                RowStatus.INCOMPLETE,
                "length_while_thinking",
                "the output limit was reached while the model was still thinking, so "
                "there is no answer. Raise max_completion_tokens (or max_tokens), or "
                "lower thinking_budget",
            )
        return (
            RowStatus.INCOMPLETE,
            "length",
            "the answer was cut off at the output limit. Raise max_tokens",
        )
    if completion.finish_reason == "content_filter":
        return RowStatus.ERROR, "content_filter", "the service filtered the answer"
    if not content:
        why = (
            "the model returned reasoning but an empty answer"
            if completion.reasoning_content
            else "the model returned an empty answer"
        )
        return RowStatus.INCOMPLETE, "empty_content", why
    return RowStatus.OK, None, None


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
    ) -> None:
        self.client = client
        self.media = media
        self.protocol = protocol
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_retry = on_retry
        self.limits = limits
        self.answered_at = clock.monotonic()  # the last answer that was not transient
        #: the code of the last transient failure since then, and if it was a throttle
        self._last_transient: tuple[str, bool] | None = None
        self._output_tokens: dict[str, float] = {}  # model -> running mean of output

    def _tokens_to_reserve(self, request: RowRequest) -> float:
        """Estimated input plus the output this model has been giving lately."""
        worst = worst_output_tokens(request, get_model(request.model))
        expected = self._output_tokens.get(request.model, min(worst, 512))
        return input_tokens(request.messages) + min(expected, worst)

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
        started_at = self.clock.wall().isoformat()
        retries: Counter[str] = Counter()
        waited = [0.0]  # seconds paced by the limits or backing off between attempts
        attempts = 0

        async def backoff(seconds: float) -> None:
            waited[0] += seconds
            await self.clock.sleep(seconds)

        def count_retry(exc: TransientError) -> None:
            retries[exc.code] += 1
            if self.on_retry is not None:
                self.on_retry(request, exc, attempts)

        def unsent(failure: Failure) -> RowResult:
            return self._unsent(request, failure, started_at, retries, waited[0])

        if self.media is not None:
            # local media made sendable (an upload may fail and be tried again, with
            # the backoff of a request, up to max_attempts)
            for tries in range(1, self.settings.max_attempts + 1):
                try:
                    prepared = _raise_unless_row(await self.media.prepare(request))
                except TransientError as exc:
                    if tries == self.settings.max_attempts:
                        return unsent(_gave_up(exc, tries, "tries"))
                    count_retry(exc)
                    await backoff(self._backoff_s(tries, exc))
                    continue
                if isinstance(prepared, Failure):
                    return unsent(prepared)
                request = prepared
                break
        call = self.protocol.build(
            request, self.settings.base_url, stream=self.settings.stream
        )
        exchange: Exchange | None = None
        tokens = self._tokens_to_reserve(request)
        failure: Failure | None = None
        try:
            # The first attempt runs without a retry controller: most rows need no
            # other, and building one per row is a measurable share of a fast run.
            attempts = 1
            exchange = await self._paced_send(request, call, tokens, waited)
            failure = _row_failure(exchange)
        except TransientError as first:
            failure = _gave_up(first, attempts)
            if self.settings.max_attempts > 1:
                count_retry(first)
                await backoff(self._backoff_s(1, first))
                retrying = build_retrying(
                    max_attempts=self.settings.max_attempts,
                    clock=self.clock,
                    on_retry=count_retry,
                    rng=self.rng,
                    sleep=backoff,
                    offset=1,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            attempts += 1
                            exchange = await self._paced_send(
                                request, call, tokens, waited
                            )
                            failure = _row_failure(exchange)
                except TransientError as exc:
                    failure = _gave_up(exc, attempts)
        result = RowResult(
            fingerprint=request.fingerprint,
            status=RowStatus.ERROR,
            model=request.model,
            api=self.protocol.name,
            attempts=attempts,
            started_at=started_at,
            retries=dict(retries),
            wait_ms=round(waited[0] * 1000, 3),
        )
        if exchange is not None:
            result.latency_ms = round(exchange.latency_ms, 3)
            result.ttft_ms = (
                round(exchange.ttft_ms, 3) if exchange.ttft_ms is not None else None
            )
        if failure is not None:
            result.error_code = failure.code
            result.error_message = failure.message
            result.http_status = failure.http_status
            result.request_id = failure.request_id
            result.retryable = failure.kind == "transient"
        elif exchange is not None and isinstance(exchange.result, Completion):
            self._fill(result, exchange.result)
        result.finished_at = self.clock.wall().isoformat()
        return result

    def _backoff_s(self, attempt: int, exc: TransientError) -> float:
        """The wait after failed attempt ``attempt``, as tenacity waits after the
        later ones (made only on failure: most rows never need it)."""
        return WaitWithRetryAfter(BACKOFF_BASE_S, BACKOFF_CAP_S, self.rng).delay(
            attempt, exc
        )

    def crashed(self, request: RowRequest, exc: Exception) -> RowResult:
        """The result of a row whose processing raised what no rule foresaw: an
        error for this row alone, sent again by the next run."""
        now = self.clock.wall().isoformat()
        return RowResult(
            fingerprint=request.fingerprint,
            status=RowStatus.ERROR,
            model=request.model,
            api=self.protocol.name,
            error_code="batchkimi_error",
            error_message=(
                f'row {request.index + 1:,} (id "{request.row_id}"): batchkimi failed '
                f"on this row ({type(exc).__name__}: {exc}). This is batchkimi's bug, "
                "not your data's: please report it. The next run tries the row again"
            ),
            retryable=True,
            started_at=now,
            finished_at=now,
        )

    def _unsent(
        self,
        request: RowRequest,
        failure: Failure,
        started_at: str,
        retries: Counter[str],
        waited_s: float,
    ) -> RowResult:
        """A row whose media could not be made ready: nothing was sent."""
        return RowResult(
            fingerprint=request.fingerprint,
            status=RowStatus.ERROR,
            model=request.model,
            api=self.protocol.name,
            attempts=0,
            error_code=failure.code,
            error_message=failure.message,
            http_status=failure.http_status,
            retryable=failure.kind == "transient",
            retries=dict(retries),
            wait_ms=round(waited_s * 1000, 3),
            started_at=started_at,
            finished_at=self.clock.wall().isoformat(),
        )

    def _fill(self, result: RowResult, completion: Completion) -> None:
        status, code, message = judge(completion)
        result.status = status
        result.error_code = code
        result.error_message = message
        result.http_status = 200
        result.content = completion.content
        result.reasoning_content = completion.reasoning_content or None
        result.finish_reason = completion.finish_reason
        result.request_id = completion.request_id
        result.response_model = completion.model
        usage = completion.usage
        if usage is not None:
            result.input_tokens = usage.input_tokens
            result.output_tokens = usage.output_tokens
            result.reasoning_tokens = usage.reasoning_tokens
            result.cached_tokens = usage.cached_tokens
            result.cache_creation_tokens = usage.cache_creation_tokens
            result.total_tokens = usage.total_tokens
            result.cost, result.currency = cost_of(
                self.settings.prices, result.model, self.settings.region, usage
            )


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
