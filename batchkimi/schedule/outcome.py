"""What a row's answers come to: the verdict on one answer, and the sum of a row's
attempts (a structured row may ask several times; every attempt is paid for and
counted on the row). Pure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from batchkimi import jsoncodec
from batchkimi.pricing import PriceTable, cost_of
from batchkimi.records import (
    UNPROCESSED,
    Completion,
    RowResult,
    RowStatus,
    ToolCall,
    Usage,
)

#: the codes batchkimi gives a row itself, beside the service's own
OUTCOME_CODES = frozenset(
    {
        UNPROCESSED,
        "length",
        "length_while_thinking",
        "content_filter",
        "empty_content",
        "invalid_answer",
        "batchkimi_error",
        "invalid_media",
        "upload_failed",
    }
)


def judge(completion: Completion) -> tuple[RowStatus, str | None, str | None]:
    """(status, error_code, error_message) for an answer the service gave."""
    content = completion.content.strip()
    if completion.finish_reason == "length":
        if not content and not completion.tool_calls and completion.reasoning_content:
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
    if completion.tool_calls:
        return RowStatus.OK, None, None  # a call is an answer (FACTS §6.5)
    if not content:
        why = (
            "the model returned reasoning but an empty answer"
            if completion.reasoning_content
            else "the model returned an empty answer"
        )
        return RowStatus.INCOMPLETE, "empty_content", why
    return RowStatus.OK, None, None


def tool_calls_json(calls: tuple[ToolCall, ...]) -> str | None:
    """The calls as the ``tool_calls`` column holds them."""
    if not calls:
        return None
    return jsoncodec.dumps(
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
    ).decode()


def tool_calls_of(text: str | None) -> tuple[ToolCall, ...]:
    """The calls of a ``tool_calls`` column value (journaled by this module)."""
    if not text:
        return ()
    try:
        raw = jsoncodec.loads(text)
    except ValueError:
        return ()
    return tuple(
        ToolCall(str(c.get("id", "")), str(c.get("name", "")), str(c.get("arguments")))
        for c in raw
        if isinstance(c, dict)
    )


@dataclass(slots=True)
class Tally:
    """A row's attempts so far: tokens, cost and time summed over every answer."""

    attempts: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None
    priced: bool = True  # every answer so far had a price
    repairs: int = 0
    repair_causes: Counter[str] = field(default_factory=Counter)

    @classmethod
    def resumed(cls, record: RowResult) -> Tally:
        """The tally a journaled, unfinished row had reached."""
        tally = cls(
            attempts=record.attempts,
            latency_ms=record.latency_ms,
            ttft_ms=record.ttft_ms,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            reasoning_tokens=record.reasoning_tokens,
            cached_tokens=record.cached_tokens,
            cache_creation_tokens=record.cache_creation_tokens,
            total_tokens=record.total_tokens,
            cost=record.cost,
            currency=record.currency,
            priced=record.cost is not None or record.input_tokens is None,
            repairs=record.repairs,
        )
        tally.repair_causes.update(record.repair_causes)
        return tally

    def add_time(self, latency_ms: float, ttft_ms: float | None) -> None:
        self.latency_ms = (self.latency_ms or 0.0) + latency_ms
        if self.ttft_ms is None:
            self.ttft_ms = ttft_ms

    def add_usage(self, completion: Completion) -> None:
        """Count an answer's tokens (plain sums: nothing here can fail)."""
        usage = completion.usage
        if usage is None:
            return
        self.input_tokens = (self.input_tokens or 0) + usage.input_tokens
        self.output_tokens = (self.output_tokens or 0) + usage.output_tokens
        self.reasoning_tokens = (self.reasoning_tokens or 0) + usage.reasoning_tokens
        self.cached_tokens = (self.cached_tokens or 0) + usage.cached_tokens
        self.cache_creation_tokens = (
            self.cache_creation_tokens or 0
        ) + usage.cache_creation_tokens
        self.total_tokens = (self.total_tokens or 0) + usage.total_tokens

    def add_cost(
        self, completion: Completion, prices: PriceTable, model: str, region: str
    ) -> None:
        """Price an answer's own usage, after its tokens are counted."""
        if completion.usage is None:
            return
        cost, currency = cost_of(prices, model, region, completion.usage)
        if cost is None:
            self.priced = False
        elif currency is not None:
            self.cost = round((self.cost or 0.0) + cost, 10)
            self.currency = currency

    def reprice(self, prices: PriceTable, model: str, region: str) -> None:
        """Price the row's whole usage at once (a row processed again)."""
        if self.input_tokens is None:
            return
        usage = Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens or 0,
            reasoning_tokens=self.reasoning_tokens or 0,
            cached_tokens=self.cached_tokens or 0,
            total_tokens=self.total_tokens or 0,
            cache_creation_tokens=self.cache_creation_tokens or 0,
        )
        cost, currency = cost_of(prices, model, region, usage)
        self.cost, self.currency, self.priced = cost, currency, cost is not None

    def fill(self, result: RowResult) -> None:
        """Write the sums onto ``result``."""
        result.attempts = self.attempts
        result.latency_ms = (
            round(self.latency_ms, 3) if self.latency_ms is not None else None
        )
        result.ttft_ms = round(self.ttft_ms, 3) if self.ttft_ms is not None else None
        result.input_tokens = self.input_tokens
        result.output_tokens = self.output_tokens
        result.reasoning_tokens = self.reasoning_tokens
        result.cached_tokens = self.cached_tokens
        result.cache_creation_tokens = self.cache_creation_tokens
        result.total_tokens = self.total_tokens
        # a row with an unpriced answer has no known cost: never a partial sum
        result.cost = self.cost if self.priced else None
        result.currency = self.currency if self.priced else None
        result.repairs = self.repairs
        result.repair_causes = dict(self.repair_causes)
