"""Compose the answer to one admitted request: prose, a tool call, or prompt-mode JSON.

Thinking comes first, then the answer, both cut to the request's token budgets.
Everything is drawn from the simulator seed and the request itself, so the same request
gets the same answer; a scripted or drawn answer fault (``invalid_answer``,
``text_answer``) changes what is answered, never how it is framed.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from batchkimi.simulator.answers import SchemaError, break_value, generate, wrap_json
from batchkimi.simulator.behaviour import (
    Behaviour,
    Fault,
    compose_answer,
    count_text_tokens,
)
from batchkimi.simulator.cache import CacheUsage
from batchkimi.simulator.facts import MODELS
from batchkimi.simulator.reading import last_user_text
from batchkimi.simulator.responses import Answer, ToolCall
from batchkimi.simulator.tools import RequestProblem, ToolSpec


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks for, read once from either API's body."""

    model: str
    messages: list[Any]
    params: dict[str, Any]  # the generation parameters (top level in compat mode)
    thinking: bool | None
    tools: ToolSpec | None = None
    schema: dict[str, Any] | None = None  # stated in the system message (prompt mode)
    plain_text: bool = False  # the last user message's content is a string

    @property
    def calls_a_tool(self) -> bool:
        return self.tools is not None and self.tools.calls_a_tool

    @property
    def structured(self) -> bool:
        """Whether the answer should be structured: a tool call or JSON."""
        return self.calls_a_tool or self.schema is not None

    @property
    def thinks(self) -> bool:
        if self.thinking is not None:
            return self.thinking
        info = MODELS[self.model]
        return info.thinking == "always" or bool(info.enable_thinking_default)


@dataclass(frozen=True, slots=True)
class Composed:
    answer: Answer
    kind: str  # text | tool_call | json
    invalid: str | None = None  # the bad-answer kind applied, if any


def _request_rng(seed: int, ask: Ask) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1f{ask.model}\x1f".encode())
    digest.update(json.dumps(ask.messages, sort_keys=True, default=str).encode())
    if ask.tools is not None:
        digest.update(repr(ask.tools).encode())
    return random.Random(digest.digest())


def compose(
    ask: Ask,
    behaviour: Behaviour,
    *,
    request_id: str,
    input_tokens: int,
    cache: CacheUsage,
    fault: Fault | None = None,
) -> Composed:
    """The answer. Raises RequestProblem if a tool's schema cannot be met; a schema
    in the system message that cannot be met is answered in prose, as a model would
    answer a prompt it cannot follow."""
    seed = behaviour.seed
    prompt = last_user_text(ask.messages)
    reasoning = (
        compose_answer(prompt, seed, behaviour.reasoning_words, salt="r")
        if ask.thinks
        else ""
    )
    # hashing the whole request costs time on media rows: only when it is used
    rng = _request_rng(seed, ask) if ask.structured else random.Random(seed)
    prose = compose_answer(prompt, seed, behaviour.answer_words)
    wanted = (
        fault.code if fault is not None and fault.kind == "invalid_answer" else None
    )
    as_text = fault is not None and fault.kind == "text_answer"
    tool: str | None = None
    if ask.tools is not None and ask.calls_a_tool and not as_text:
        tool = ask.tools.forced or rng.choice(ask.tools.functions).name
        try:
            body, invalid = _json(ask.tools.function(tool).parameters, rng, wanted)
        except SchemaError as exc:
            msg = f"Invalid schema for function {tool!r}: {exc}."
            raise RequestProblem(msg) from exc
        kind = "tool_call"
    else:
        body, kind, invalid = prose, "text", None
        if ask.schema is not None and not as_text:
            try:
                body, invalid = _json(ask.schema, rng, wanted)
                body, kind = wrap_json(body, rng), "json"
            except SchemaError:
                body, kind, invalid = prose, "text", None
    body, finish = _budget(ask.params, reasoning, body)
    reasoning = (
        reasoning if finish != "reasoning" else reasoning[: _cap(ask.params) * 4]
    )
    if finish == "reasoning":
        finish, body = "length", ""
    call = None
    if tool is not None:
        call = ToolCall("call_" + request_id.replace("-", "")[:24], tool, body)
        finish = "tool_calls" if finish == "stop" else finish
    reasoning_tokens = count_text_tokens(reasoning)
    answer = Answer(
        reasoning=reasoning,
        content="" if call is not None else body,
        finish_reason=finish,
        input_tokens=input_tokens,
        reasoning_tokens=reasoning_tokens,
        output_tokens=reasoning_tokens + count_text_tokens(body),
        tool_call=call,
        plain_text=ask.plain_text,
        cache=cache,
    )
    return Composed(answer, kind, invalid)


def _json(
    schema: dict[str, Any], rng: random.Random, invalid: str | None
) -> tuple[str, str | None]:
    if invalid is None:
        return json.dumps(generate(schema, rng), ensure_ascii=False), None
    _, text, applied = break_value(schema, rng, invalid)
    return text, applied


def _cap(params: dict[str, Any]) -> int:
    budget = params.get("max_completion_tokens")
    return budget if isinstance(budget, int) else 0


def _budget(params: dict[str, Any], reasoning: str, body: str) -> tuple[str, str]:
    """The body cut to the budgets, and why it ended: ``stop``, ``length``, or
    ``reasoning`` when the chain of thought alone used up max_completion_tokens."""
    budget = params.get("max_completion_tokens")
    if isinstance(budget, int):  # counts the chain of thought too
        if count_text_tokens(reasoning) >= budget:
            return "", "reasoning"
        left = budget - count_text_tokens(reasoning)
        if count_text_tokens(body) > left:
            return body[: left * 4], "length"
    cap = params.get("max_tokens")  # the answer alone
    if isinstance(cap, int) and count_text_tokens(body) > cap:
        return body[: cap * 4], "length"
    return body, "stop"
