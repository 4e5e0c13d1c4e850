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
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from batchkimi.simulator import responses as wire
from batchkimi.simulator.admission import (
    input_too_long,
    media_refusal,
    model_problem,
    read_ask,
)
from batchkimi.simulator.behaviour import (
    ANSWER_FAULTS,
    Behaviour,
    Fault,
    count_text_tokens,
)
from batchkimi.simulator.cache import ContextCache, Prefixes
from batchkimi.simulator.composer import Ask, compose
from batchkimi.simulator.facts import ERRORS, MODELS, MULTIMODAL, TEXT, URL_ERROR
from batchkimi.simulator.limits import RateLimiter
from batchkimi.simulator.tools import RequestProblem
from batchkimi.simulator.uploads import UploadError, UploadStore

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_NATIVE_PREFIX = "/api/v1/services/aigc/"
_NATIVE_PATHS = {
    f"{_NATIVE_PREFIX}{MULTIMODAL}/generation": MULTIMODAL,
    f"{_NATIVE_PREFIX}{TEXT}/generation": TEXT,
}
_COMPAT_PATH = "/compatible-mode/v1/chat/completions"
_POLICY_PATH = "/api/v1/uploads"
_UPLOAD_FORM_PATH = "/oss-upload"


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
    input_tokens: int = 0
    output_tokens: int = 0
    #: what was answered: text | tool_call | json (None: no answer was composed)
    answer_kind: str | None = None
    invalid_kind: str | None = None  # enum | missing | type | json: a spoilt answer
    structured: bool = False  # tools to call, or a schema in the system message
    cached_tokens: int = 0  # context cache hit, explicit or implicit
    cache_creation_tokens: int = 0  # explicit cache written
    at: float = field(default_factory=time.monotonic)


class _Abort(Exception):
    pass


class SimulatorApp:
    """The ASGI application. ``behaviour`` may be replaced between tests."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: list[LoggedRequest] = []
        self.crashes: list[str] = []
        self.reset(behaviour)

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """New knobs, fresh budgets and uploads, an empty request log."""
        with self._lock:
            self.behaviour = behaviour or Behaviour()
            self.limiter = RateLimiter(self.behaviour.limits)
            self.uploads = UploadStore(self.behaviour.policy_expire_s)
            self.cache = ContextCache(
                self.behaviour.clock,
                self.behaviour.seed,
                self.behaviour.implicit_cache_hit_rate,
            )
            self.requests = []
            self.crashes = []

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
        except Exception:
            # kept for tests to assert on: uvicorn's own log is silenced
            self.crashes.append(traceback.format_exc())
            raise

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
        if path == _UPLOAD_FORM_PATH and scope["method"] == "POST":
            await self._upload(headers, body, log, send)
            return
        if path == _POLICY_PATH:
            log.api = "upload"
        elif path == _COMPAT_PATH:
            log.api = "compatible"
        elif path in _NATIVE_PATHS:
            log.api = "native"
        else:
            await _send(send, 404, b'{"code":"NotFound","message":"Not found."}', log)
            return
        if scope["method"] != ("GET" if log.api == "upload" else "POST"):
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
        if log.api == "upload":
            await self._policy(scope, headers, log, send)
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

    # --- temporary uploads (FACTS §5) -----------------------------------------

    async def _policy(
        self, scope: Scope, headers: dict[str, str], log: LoggedRequest, send: Send
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        model = (query.get("model") or [""])[0]
        if (query.get("action") or [""])[0] != "getPolicy" or not model:
            await self._error(
                send,
                log,
                "InvalidParameter",
                "Required parameter missing: action=getPolicy and model.",
            )
            return
        log.model = model
        fault = self.behaviour.scripted("getPolicy")
        if fault is not None and fault.code:
            await self._error(send, log, fault.code)
            return
        host = headers.get("host") or "127.0.0.1"
        data = self.uploads.issue_policy(model, f"http://{host}{_UPLOAD_FORM_PATH}")
        body = wire.dumps({"request_id": log.request_id, "data": data})
        await _send(send, 200, body, log)

    async def _upload(
        self, headers: dict[str, str], body: bytes, log: LoggedRequest, send: Send
    ) -> None:
        log.api = "oss"
        fault = self.behaviour.scripted("oss")
        try:
            if fault is not None and fault.code:  # the store's own failure, as XML
                _raise_store_error(fault.code)
            key = self.uploads.accept(headers.get("content-type", ""), body)
        except UploadError as exc:
            log.fault = exc.code
            await _send(
                send, exc.status, exc.xml(), log, content_type="application/xml"
            )
            return
        log.body = {"key": key}
        await _send(send, 200, b"", log, content_type="text/plain")

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

    async def _delay_first(
        self, fault: Fault | None, send_keepalive: Callable[[], Awaitable[None]] | None
    ) -> None:
        delay_s = self.behaviour.first_byte_delay_s()
        if delay_s:
            await asyncio.sleep(delay_s)
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
        model = request["model"]
        problem = model_problem(model, params, thinking)
        if problem is None and MODELS[model].path != path_kind:
            # FACTS §1.1: the gateway ties each model to one path; on a stream the
            # refusal arrives as a 200 with an event:error frame
            if log.stream:
                error = wire.native_error(
                    "InvalidParameter", URL_ERROR, log.request_id or ""
                )
                log.fault = "InvalidParameter"
                frame = wire.native_frame(1, error, event="error", status=400)
                await _send(send, 200, frame, log, content_type=_SSE)
                return
            problem = ("InvalidParameter", URL_ERROR)
        if (
            problem is None
            and log.stream
            and params.get("incremental_output") is not True
            and (thinking or MODELS[model].thinking == "always")
        ):
            problem = (
                "InvalidParameter",
                'The incremental_output parameter must be "true" when enable_thinking '
                "is true",
            )
        if problem is None:
            oss_ok = log.headers.get("x-dashscope-ossresourceresolve", "") == "enable"
            if why := media_refusal(messages, model, self.uploads, oss_ok=oss_ok):
                problem = ("InvalidParameter", why)
        if problem is not None:
            await self._error(send, log, problem[0], problem[1])
            return
        await self._read_and_serve(
            model,
            messages,
            params,
            thinking,
            log,
            send,
            multimodal=path_kind == MULTIMODAL,
        )

    async def _compatible(
        self, request: dict[str, Any], log: LoggedRequest, send: Send
    ) -> None:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            await self._error(send, log, "InvalidParameter", "Required body invalid.")
            return
        thinking = request.get("enable_thinking")
        model = request["model"]
        problem = model_problem(model, request, thinking)
        if problem is not None:
            await self._error(send, log, problem[0], problem[1])
            return
        # FACTS §5: temporary oss:// URLs are not usable in compatible mode
        if why := media_refusal(messages, model, self.uploads, oss_ok=False):
            await self._error(send, log, "InvalidParameter", why)
            return
        await self._read_and_serve(
            model, messages, request, thinking, log, send, multimodal=None
        )

    async def _read_and_serve(
        self,
        model: str,
        messages: list[Any],
        params: dict[str, Any],
        thinking: bool | None,
        log: LoggedRequest,
        send: Send,
        *,
        multimodal: bool | None,  # None: the compatible API
    ) -> None:
        try:
            ask, prefixes = read_ask(model, messages, params, thinking)
            await self._serve(ask, prefixes, log, send, multimodal=multimodal)
        except RequestProblem as exc:
            await self._error(send, log, "InvalidParameter", str(exc))

    async def _serve(
        self,
        ask: Ask,
        prefixes: Prefixes,
        log: LoggedRequest,
        send: Send,
        *,
        multimodal: bool | None,
    ) -> None:
        """Admit, then answer in the request's API and mode, with any fault drawn.

        Raises RequestProblem before anything is sent if a tool's schema cannot be
        answered."""
        model, rid = ask.model, log.request_id or ""
        plan = self.cache.lookup(model, prefixes)
        composed = compose(
            ask,
            self.behaviour,
            request_id=rid,
            input_tokens=prefixes.tokens,
            cache=plan.usage,
        )
        answer = composed.answer
        if too_long := input_too_long(ask, answer.input_tokens):
            await self._error(send, log, "InvalidParameter", too_long)
            return
        log.input_tokens, log.output_tokens = answer.input_tokens, answer.output_tokens
        throttle = self.limiter.admit(
            model, answer.input_tokens + answer.output_tokens, time.monotonic()
        )
        if throttle is not None:
            await self._error(send, log, throttle)
            return
        fault = self.behaviour.next_fault(
            model, structured=ask.structured, tools=ask.calls_a_tool
        )
        if fault is not None and fault.kind in ANSWER_FAULTS:
            composed = compose(
                ask,
                self.behaviour,
                request_id=rid,
                input_tokens=prefixes.tokens,
                cache=plan.usage,
                fault=fault,
            )
            answer, fault = composed.answer, None
            log.output_tokens = answer.output_tokens
        log.structured, log.answer_kind = ask.structured, composed.kind
        log.invalid_kind = composed.invalid
        log.cached_tokens = answer.cache.cached_tokens
        log.cache_creation_tokens = answer.cache.creation_tokens
        if await self._fault_before_answer(fault, send, log):
            return
        native = multimodal is not None
        if not log.stream:
            await self._delay_first(fault, None)
            body = (
                wire.native_body(answer, multimodal=bool(multimodal), request_id=rid)
                if native
                else wire.compat_body(answer, model=model, request_id=rid)
            )
            # FACTS §6.3: the cache is usable once the answer is complete; stored
            # just before its last bytes leave, so whoever has read the whole
            # answer finds it stored, and nobody earlier does
            self.cache.commit(plan)
            await _send(send, 200, body, log)
            return
        await _start(send, 200, _SSE, log)
        keepalive = b":keep-alive\n\n" if native else b": keep-alive\n\n"
        await self._delay_first(fault, lambda: _chunk(send, keepalive))
        if native:
            frames = wire.native_frames(
                answer, multimodal=bool(multimodal), request_id=rid
            )
            tail: list[bytes] = []
        else:
            frames = wire.compat_chunks(answer, model=model, request_id=rid)
            tail = [wire.COMPAT_DONE]
            if (ask.params.get("stream_options") or {}).get("include_usage") is True:
                usage = wire.compat_usage(answer)
                tail.insert(
                    0,
                    wire.compat_chunk(
                        model=model,
                        request_id=rid,
                        delta={},
                        usage=usage,
                        choices=False,
                    ),
                )
        breaks_at = None
        if fault is not None and fault.kind in ("midstream", "disconnect"):
            # a stream shorter than after_chunks breaks just before its final frame
            breaks_at = min(fault.after_chunks, len(frames) - 1) + 1
        for number, (piece, data) in enumerate(frames, start=1):
            if fault is not None and number == breaks_at:
                if fault.kind == "disconnect":
                    log.fault = "disconnect"
                    raise _Abort
                log.fault = fault.code
                await _chunk(
                    send, wire.stream_error(fault.code, number, rid, native=native)
                )
                await _chunk(send, b"", more=False)
                return
            await self._pace(piece)
            if number == len(frames):
                self.cache.commit(plan)  # as above: before the finish frame leaves
            await _chunk(send, data)
        for data in tail:
            await _chunk(send, data)
        await _chunk(send, b"", more=False)


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


def _raise_store_error(code: str) -> None:
    spec = ERRORS[code]
    raise UploadError(spec.status, code, spec.message)
