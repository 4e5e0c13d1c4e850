"""The bytes the simulated service answers with, in each API's exact shape.

Native (FACTS §2): ``output.choices[].message`` with list-of-``{text}`` content on the
multimodal path (a string when the user asked in a plain string, as the seed's
kimi-k2.6 example shows) and a string on the text path; SSE frames ``id:N`` /
``event:result`` / ``:HTTP_STATUS/200`` / ``data:{…}`` with ``finish_reason`` the
string ``"null"`` until the end, cumulative usage, and no ``[DONE]``. Compatible
(FACTS §4): OpenAI shapes, ``data: {…}`` frames, a usage chunk with ``choices: []``,
then ``data: [DONE]``. Usage carries the context cache in ``prompt_tokens_details``
in both APIs (FACTS §2.1, §4.2).

Tool calls (FACTS §6.5), where the documentation leaves the form open:

- compatible, whole: ``content`` is ``""`` beside ``tool_calls``, as Model Studio's
  function-calling examples show (OpenAI sends null; clients must take both);
- compatible, streamed: OpenAI's form, a delta with ``index``, ``id``, ``type`` and
  ``name`` and empty ``arguments``, then deltas of ``arguments`` fragments only;
- native, streamed: every frame carries ``tool_calls: [{index, id, type, function:
  {arguments: <fragment>}}]``; the first also has the name and the call's id, later
  ones an empty id and no name (the dashscope SDK's own merge joins ``name`` and
  ``arguments`` by concatenation and keeps the non-empty id, so this form survives
  it); content stays empty and ``finish_reason`` is ``"null"`` until the last frame.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from batchkimi.simulator.answers import fragments
from batchkimi.simulator.behaviour import count_text_tokens, split_pieces
from batchkimi.simulator.cache import CacheUsage
from batchkimi.simulator.facts import ERRORS


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as the model wrote it (maybe not valid JSON)


@dataclass(frozen=True, slots=True)
class Answer:
    reasoning: str
    content: str
    finish_reason: str
    input_tokens: int
    reasoning_tokens: int
    output_tokens: int  # reasoning included, as billed
    tool_call: ToolCall | None = None
    plain_text: bool = False  # the user asked in a string: answer content as one
    cache: CacheUsage = field(default_factory=CacheUsage)


def cache_details(cache: CacheUsage) -> dict[str, Any]:
    """``prompt_tokens_details`` as FACTS §2.1/§4.2 list it, in both APIs."""
    details: dict[str, Any] = {"cached_tokens": cache.cached_tokens}
    if cache.creation_tokens:
        details["cache_creation_input_tokens"] = cache.creation_tokens
        details["cache_creation"] = {"ephemeral_5m_input_tokens": cache.creation_tokens}
    if cache.ephemeral:
        details["cache_type"] = "ephemeral"
    return details


def _tool_call(call: ToolCall, *, index: bool) -> dict[str, Any]:
    wire: dict[str, Any] = {"index": 0} if index else {}
    wire.update(
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
    )
    return wire


# --- native ------------------------------------------------------------------------


def native_usage(
    answer: Answer, reasoning_so_far: int, output_so_far: int
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": answer.input_tokens,
        "output_tokens": output_so_far,
        "total_tokens": answer.input_tokens + output_so_far,
        "prompt_tokens_details": cache_details(answer.cache),
    }
    if answer.reasoning_tokens:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning_so_far}
    return usage


def _listed(answer: Answer, multimodal: bool) -> bool:
    return multimodal and not answer.plain_text


def native_body(answer: Answer, *, multimodal: bool, request_id: str) -> bytes:
    listed = _listed(answer, multimodal)
    content: Any = [{"text": answer.content}] if listed else answer.content
    if answer.tool_call is not None and not answer.content:
        content = [] if listed else ""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_call is not None:
        message["tool_calls"] = [_tool_call(answer.tool_call, index=True)]
    return dumps(
        {
            "output": {
                "choices": [{"finish_reason": answer.finish_reason, "message": message}]
            },
            "usage": native_usage(
                answer, answer.reasoning_tokens, answer.output_tokens
            ),
            "request_id": request_id,
        }
    )


def native_frame(
    event_id: int, data: dict[str, Any], *, event: str = "result", status: int = 200
) -> bytes:
    return (
        f"id:{event_id}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:".encode()
        + dumps(data)
        + b"\n\n"
    )


def native_chunk(
    answer: Answer,
    *,
    multimodal: bool,
    request_id: str,
    reasoning: str = "",
    content: str = "",
    arguments: str | None = None,
    first_fragment: bool = False,
    finish_reason: str = "null",
    reasoning_so_far: int,
    output_so_far: int,
) -> dict[str, Any]:
    listed = _listed(answer, multimodal)
    empty: Any = [] if listed else ""
    wire_content: Any = (
        ([{"text": content}] if listed else content) if content else empty
    )
    message: dict[str, Any] = {"content": wire_content, "role": "assistant"}
    if answer.reasoning:
        message["reasoning_content"] = reasoning
    call = answer.tool_call
    if call is not None and arguments is not None:
        function: dict[str, Any] = {"arguments": arguments}
        if first_fragment:
            function = {"name": call.name, **function}
        message["tool_calls"] = [
            {
                "index": 0,
                "id": call.id if first_fragment else "",
                "type": "function",
                "function": function,
            }
        ]
    return {
        "output": {"choices": [{"message": message, "finish_reason": finish_reason}]},
        "usage": native_usage(answer, reasoning_so_far, output_so_far),
        "request_id": request_id,
    }


def native_error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "code": code, "message": message}


# --- compatible --------------------------------------------------------------------


def compat_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": cache_details(answer.cache),
        "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
    }


def compat_body(answer: Answer, *, model: str, request_id: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_call is not None:
        message["tool_calls"] = [_tool_call(answer.tool_call, index=False)]
    return dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "service_tier": None,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": answer.finish_reason,
                    "logprobs": None,
                    "message": message,
                }
            ],
            "usage": compat_usage(answer),
        }
    )


def compat_chunk(
    *,
    model: str,
    request_id: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> bytes:
    chunk: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "service_tier": None,
        "usage": usage,
        "choices": (
            [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ]
            if choices
            else []
        ),
    }
    return b"data: " + dumps(chunk) + b"\n\n"


COMPAT_DONE = b"data: [DONE]\n\n"


def compat_error(code: str, compat_code: str, message: str, request_id: str) -> bytes:
    return dumps(
        {
            "error": {
                "message": message,
                "type": compat_code,
                "param": None,
                "code": compat_code,
            },
            "id": f"chatcmpl-{request_id}",
            "request_id": request_id,
        }
    )


BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


# --- whole answers as frames ------------------------------------------------------


def stream_error(code: str, number: int, request_id: str, *, native: bool) -> bytes:
    """A mid-stream error frame: native event:error with the real status in the
    :HTTP_STATUS/ comment (FACTS §3.1), or a compat data: {"error": …} chunk (§4.4)."""
    spec = ERRORS[code]
    if native:
        error = native_error(code, spec.message, request_id)
        return native_frame(number, error, event="error", status=spec.status)
    body = compat_error(code, spec.compat_code, spec.message, request_id)
    return b"data: " + body + b"\n\n"


def native_frames(
    answer: Answer, *, multimodal: bool, request_id: str
) -> list[tuple[str, bytes]]:
    """(piece, frame) pairs: reasoning first, then the answer, then the finish."""
    frames: list[tuple[str, bytes]] = []
    reasoning_so_far = output_so_far = 0

    def add(piece: str, **fields: Any) -> None:
        data = native_chunk(
            answer,
            multimodal=multimodal,
            request_id=request_id,
            reasoning_so_far=reasoning_so_far,
            output_so_far=output_so_far,
            **fields,
        )
        frames.append((piece, native_frame(len(frames) + 1, data)))

    for piece in split_pieces(answer.reasoning) if answer.reasoning else []:
        reasoning_so_far = min(
            reasoning_so_far + count_text_tokens(piece), answer.reasoning_tokens
        )
        output_so_far = reasoning_so_far
        add(piece, reasoning=piece)
    reasoning_so_far = answer.reasoning_tokens
    for piece in split_pieces(answer.content) if answer.content else []:
        output_so_far = min(
            max(output_so_far, reasoning_so_far) + count_text_tokens(piece),
            answer.output_tokens,
        )
        add(piece, content=piece)
    if answer.tool_call is not None:
        pieces = fragments(answer.tool_call.arguments)
        for number, piece in enumerate(pieces):
            output_so_far = min(
                max(output_so_far, reasoning_so_far) + count_text_tokens(piece),
                answer.output_tokens,
            )
            add(piece, arguments=piece, first_fragment=number == 0)
    output_so_far = answer.output_tokens
    add("", finish_reason=answer.finish_reason)
    return frames


def compat_chunks(
    answer: Answer, *, model: str, request_id: str
) -> list[tuple[str, bytes]]:
    """(piece, chunk) pairs: role, reasoning deltas, answer deltas, the finish."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return compat_chunk(
            model=model, request_id=request_id, delta=delta, finish_reason=finish_reason
        )

    chunks = [("", chunk({"role": "assistant", "content": ""}))]
    reasoning = split_pieces(answer.reasoning) if answer.reasoning else []
    content = split_pieces(answer.content) if answer.content else []
    chunks.extend(
        (p, chunk({"content": None, "reasoning_content": p})) for p in reasoning
    )
    chunks.extend(
        (p, chunk({"content": p, "reasoning_content": None})) for p in content
    )
    call = answer.tool_call
    if call is not None:
        head = _tool_call(ToolCall(call.id, call.name, ""), index=True)
        chunks.append(("", chunk({"content": None, "tool_calls": [head]})))
        chunks.extend(
            (p, chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
            for p in fragments(call.arguments)
        )
        chunks.append(("", chunk({}, answer.finish_reason)))
        return chunks
    chunks.append(("", chunk({"content": ""}, answer.finish_reason)))
    return chunks
