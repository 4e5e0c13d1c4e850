"""A raw-ASGI Model Studio: both APIs, streaming, thinking, usage, errors, faults.

Routes (FACTS §9): ``POST /compatible-mode/v1/chat/completions`` and
``POST /api/v1/services/aigc/{multimodal,text}-generation/generation``. Each model
answers on its own native path only; the other answers 400 "url error" as the gateway
does. Every request served is logged for tests to assert on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from batchkimi.simulator import responses as wire
from batchkimi.simulator.behaviour import (
    Behaviour,
    Fault,
    compose_answer,
    count_input_tokens,
    count_text_tokens,
    split_pieces,
)
from batchkimi.simulator.facts import ERRORS, MODELS, MULTIMODAL, TEXT, URL_ERROR

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_NATIVE_PREFIX = "/api/v1/services/aigc/"
_NATIVE_PATHS = {
    f"{_NATIVE_PREFIX}{MULTIMODAL}/generation": MULTIMODAL,
    f"{_NATIVE_PREFIX}{TEXT}/generation": TEXT,
}
_COMPAT_PATH = "/compatible-mode/v1/chat/completions"


@dataclass(slots=True)
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    api: str | None = None
    model: str | None = None
    stream: bool = False
    status: int = 0
    fault: str | None = None
    request_id: str | None = None
    at: float = field(default_factory=time.monotonic)


class _Abort(Exception):
    pass


class SimulatorApp:
    """The ASGI application. ``behaviour`` may be replaced between tests."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()

    def reset(self, behaviour: Behaviour | None = None) -> None:
        with self._lock:
            self.behaviour = behaviour or Behaviour()
            self.requests = []

    def _request_id(self) -> str:
        return str(uuid.UUID(int=self.behaviour.rng.getrandbits(128), version=4))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
        }
        log = LoggedRequest(scope["method"], scope["path"], headers, None)
        with self._lock:
            self.requests.append(log)
        try:
            await self._route(scope, headers, body, log, send)
        except _Abort:
            return  # uvicorn closes a connection whose response never completed

    async def _route(
        self,
        scope: Scope,
        headers: dict[str, str],
        body: bytes,
        log: LoggedRequest,
        send: Send,
    ) -> None:
        path = scope["path"]
        log.request_id = self._request_id()
        if path == _COMPAT_PATH:
            log.api = "compatible"
        elif path in _NATIVE_PATHS:
            log.api = "native"
        else:
            await _send(send, 404, b'{"code":"NotFound","message":"Not found."}', log)
            return
        if scope["method"] != "POST":
            await self._error(send, log, "InvalidParameter", "Method not allowed.", 405)
            return
        auth = headers.get("authorization", "")
        token = (
            auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        )
        keys = self.behaviour.api_keys
        if not token or (keys is not None and token not in keys):
            await self._error(send, log, "InvalidApiKey")
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        log.body = request
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            await self._error(send, log, "InvalidParameter", "Required body invalid.")
            return
        log.model = request["model"]
        if log.api == "native":
            log.stream = headers.get("x-dashscope-sse", "").lower() == "enable"
            await self._native(request, _NATIVE_PATHS[path], log, send)
        else:
            log.stream = request.get("stream") is True
            await self._compatible(request, log, send)

    # --- shared ----------------------------------------------------------------

    async def _error(
        self,
        send: Send,
        log: LoggedRequest,
        code: str,
        message: str | None = None,
        status: int | None = None,
    ) -> None:
        spec = ERRORS[code]
        status = status or spec.status
        message = message or spec.message
        rid = log.request_id or ""
        log.fault = log.fault or code
        if log.api == "compatible":
            body = wire.compat_error(code, spec.compat_code, message, rid)
            await _send(send, status, body, log)
        elif log.stream:
            frame = wire.native_frame(
                1, wire.native_error(code, message, rid), event="error", status=status
            )
            await _send(send, status, frame, log, content_type=_SSE)
        else:
            await _send(
                send, status, wire.dumps(wire.native_error(code, message, rid)), log
            )

    def _check(
        self, request: dict[str, Any], thinking: bool | None
    ) -> tuple[str, str] | None:
        model = MODELS.get(request["model"])
        if model is None or model.retired:
            return "ModelNotFound", "Model not exist."
        if thinking is False and model.thinking == "always":
            return "InvalidParameter", (
                f"The model {request['model']} only supports thinking mode: "
                "enable_thinking must be true."
            )
        if thinking is True and model.thinking == "never":
            return "InvalidParameter", "This model does not support enable_thinking."
        return None

    def _answer(
        self,
        model: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        thinking: bool | None,
    ) -> wire.Answer:
        info = MODELS[model]
        thinks = thinking if thinking is not None else info.thinking == "always"
        prompt = _last_user_text(messages)
        seed = self.behaviour.seed
        reasoning = (
            compose_answer(prompt, seed, self.behaviour.reasoning_words, salt="r")
            if thinks
            else ""
        )
        content = compose_answer(prompt, seed, self.behaviour.answer_words)
        finish = "stop"
        budget = params.get("max_completion_tokens")
        if isinstance(budget, int) and count_text_tokens(reasoning) >= budget:
            reasoning, content, finish = reasoning[: budget * 4], "", "length"
        elif isinstance(budget, int):
            left = budget - count_text_tokens(reasoning)
            if count_text_tokens(content) > left:
                content, finish = content[: left * 4], "length"
        cap = params.get("max_tokens")
        if (
            finish == "stop"
            and isinstance(cap, int)
            and count_text_tokens(content) > cap
        ):
            content, finish = content[: cap * 4], "length"
        reasoning_tokens = count_text_tokens(reasoning)
        return wire.Answer(
            reasoning=reasoning,
            content=content,
            finish_reason=finish,
            input_tokens=count_input_tokens(messages),
            reasoning_tokens=reasoning_tokens,
            output_tokens=reasoning_tokens + count_text_tokens(content),
        )

    async def _delay_first(
        self, fault: Fault | None, send_keepalive: Callable[[], Awaitable[None]] | None
    ) -> None:
        if self.behaviour.ttft_ms:
            await asyncio.sleep(self.behaviour.ttft_ms / 1000)
        if fault is not None and fault.kind == "stall":
            deadline = time.monotonic() + fault.seconds
            while time.monotonic() < deadline:
                if send_keepalive is not None:
                    await send_keepalive()
                await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    async def _pace(self, piece: str) -> None:
        tps = self.behaviour.tokens_per_s
        if tps > 0:
            await asyncio.sleep(count_text_tokens(piece) / tps)

    async def _fault_before_answer(
        self, fault: Fault | None, send: Send, log: LoggedRequest
    ) -> bool:
        """Answer a scripted fault that replaces the whole answer; True if it did."""
        if fault is None:
            return False
        if fault.kind == "error":
            await self._error(send, log, fault.code)
            return True
        if fault.kind == "html502":
            log.fault = "html502"
            await _send(send, 502, wire.BAD_GATEWAY_HTML, log, content_type="text/html")
            return True
        if fault.kind == "disconnect" and not log.stream:
            log.fault = "disconnect"
            raise _Abort
        return False

    # --- native ----------------------------------------------------------------

    async def _native(
        self, request: dict[str, Any], path_kind: str, log: LoggedRequest, send: Send
    ) -> None:
        params = request.get("parameters") or {}
        messages = (request.get("input") or {}).get("messages")
        if (
            not isinstance(params, dict)
            or not isinstance(messages, list)
            or not messages
        ):
            await self._error(send, log, "InvalidParameter", "Required body invalid.")
            return
        thinking = params.get("enable_thinking")
        problem = self._check(request, thinking)
        if problem is None and MODELS[request["model"]].path != path_kind:
            # FACTS §1.1: the gateway ties each model to one path
            if log.stream:
                frame = wire.native_frame(
                    1,
                    wire.native_error(
                        "InvalidParameter", URL_ERROR, log.request_id or ""
                    ),
                    event="error",
                    status=400,
                )
                log.fault = "InvalidParameter"
                await _send(send, 200, frame, log, content_type=_SSE)
                return
            problem = ("InvalidParameter", URL_ERROR)
        if (
            problem is None
            and log.stream
            and params.get("incremental_output") is not True
            and (thinking or MODELS[request["model"]].thinking == "always")
        ):
            problem = (
                "InvalidParameter",
                'The incremental_output parameter must be "true" when enable_thinking '
                "is true",
            )
        if problem is not None:
            await self._error(send, log, problem[0], problem[1])
            return
        fault = self.behaviour.next_fault(request["model"])
        if await self._fault_before_answer(fault, send, log):
            return
        answer = self._answer(request["model"], messages, params, thinking)
        multimodal = path_kind == MULTIMODAL
        rid = log.request_id or ""
        if not log.stream:
            await self._delay_first(fault, None)
            await _send(
                send,
                200,
                wire.native_body(answer, multimodal=multimodal, request_id=rid),
                log,
            )
            return
        await _start(send, 200, _SSE, log)
        await self._delay_first(fault, lambda: _chunk(send, b":keep-alive\n\n"))
        frames = _native_frames(answer, multimodal=multimodal, request_id=rid)
        for number, (piece, data) in enumerate(frames, start=1):
            if (
                fault is not None
                and fault.kind in ("midstream", "disconnect")
                and number > min(fault.after_chunks, len(frames) - 1)
            ):
                log.fault = fault.code if fault.kind == "midstream" else "disconnect"
                if fault.kind == "disconnect":
                    raise _Abort
                spec = ERRORS[fault.code]
                await _chunk(
                    send,
                    wire.native_frame(
                        number,
                        wire.native_error(fault.code, spec.message, rid),
                        event="error",
                        status=spec.status,
                    ),
                )
                await _chunk(send, b"", more=False)
                return
            await self._pace(piece)
            await _chunk(send, wire.native_frame(number, data))
        await _chunk(send, b"", more=False)

    # --- compatible ------------------------------------------------------------

    async def _compatible(
        self, request: dict[str, Any], log: LoggedRequest, send: Send
    ) -> None:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            await self._error(send, log, "InvalidParameter", "Required body invalid.")
            return
        thinking = request.get("enable_thinking")
        problem = self._check(request, thinking)
        if problem is not None:
            await self._error(send, log, problem[0], problem[1])
            return
        fault = self.behaviour.next_fault(request["model"])
        if await self._fault_before_answer(fault, send, log):
            return
        model = request["model"]
        answer = self._answer(model, messages, request, thinking)
        rid = log.request_id or ""
        if not log.stream:
            await self._delay_first(fault, None)
            await _send(
                send, 200, wire.compat_body(answer, model=model, request_id=rid), log
            )
            return
        await _start(send, 200, _SSE, log)
        await self._delay_first(fault, lambda: _chunk(send, b": keep-alive\n\n"))
        include_usage = (request.get("stream_options") or {}).get(
            "include_usage"
        ) is True
        chunks = _compat_chunks(answer, model=model, request_id=rid)
        for number, (piece, data) in enumerate(chunks, start=1):
            if (
                fault is not None
                and fault.kind in ("midstream", "disconnect")
                and number > min(fault.after_chunks, len(chunks) - 1)
            ):
                log.fault = fault.code if fault.kind == "midstream" else "disconnect"
                if fault.kind == "disconnect":
                    raise _Abort
                spec = ERRORS[fault.code]
                await _chunk(
                    send,
                    b"data: "
                    + wire.compat_error(fault.code, spec.compat_code, spec.message, rid)
                    + b"\n\n",
                )
                await _chunk(send, b"", more=False)
                return
            await self._pace(piece)
            await _chunk(send, data)
        if include_usage:
            await _chunk(
                send,
                wire.compat_chunk(
                    model=model,
                    request_id=rid,
                    delta={},
                    usage=wire.compat_usage(answer),
                    choices=False,
                ),
            )
        await _chunk(send, wire.COMPAT_DONE)
        await _chunk(send, b"", more=False)


def _native_frames(
    answer: wire.Answer, *, multimodal: bool, request_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """(piece, frame) pairs: reasoning first, then the answer, then the finish."""
    frames: list[tuple[str, dict[str, Any]]] = []
    reasoning_so_far = output_so_far = 0

    def add(piece: str, **fields: Any) -> None:
        frames.append(
            (
                piece,
                wire.native_chunk(
                    answer,
                    multimodal=multimodal,
                    request_id=request_id,
                    reasoning_so_far=reasoning_so_far,
                    output_so_far=output_so_far,
                    **fields,
                ),
            )
        )

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
    output_so_far = answer.output_tokens
    add("", finish_reason=answer.finish_reason)
    return frames


def _compat_chunks(
    answer: wire.Answer, *, model: str, request_id: str
) -> list[tuple[str, bytes]]:
    """(piece, chunk) pairs: role, reasoning deltas, answer deltas, the finish."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return wire.compat_chunk(
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
    chunks.append(("", chunk({"content": ""}, answer.finish_reason)))
    return chunks


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text"))
                for p in content
                if isinstance(p, dict) and p.get("text")
            )
    return ""


_SSE = "text/event-stream;charset=UTF-8"


def _headers(content_type: str, log: LoggedRequest) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", content_type.encode()),
        (b"x-request-id", (log.request_id or "").encode()),
        (b"x-dashscope-call-gateway", b"true"),
        (b"req-cost-time", b"1"),
    ]


async def _send(
    send: Send,
    status: int,
    body: bytes,
    log: LoggedRequest,
    content_type: str = "application/json",
) -> None:
    log.status = status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _headers(content_type, log),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _start(
    send: Send, status: int, content_type: str, log: LoggedRequest
) -> None:
    log.status = status
    headers = [*_headers(content_type, log), (b"x-accel-buffering", b"no")]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _chunk(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
