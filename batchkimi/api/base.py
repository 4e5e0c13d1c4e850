"""The seam between a codec and the client: an ``HttpCall`` out, bytes and events in.

A codec (``compatible``, ``native``) is pure: it builds calls without the key, parses
bodies, and folds stream events. The client owns sockets, the key and the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from batchkimi import jsoncodec
from batchkimi.api.failures import classify_failure
from batchkimi.api.sse import SseDecoder, SseEvent, looks_like_sse
from batchkimi.records import (
    UNPROCESSED,
    Completion,
    Failure,
    RowRequest,
    Tool,
    ToolCall,
    Usage,
)


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One HTTP request, without credentials (the client adds Authorization)."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool


class StreamFold(Protocol):
    """Accumulates one streamed answer, event by event."""

    def feed(self, event: SseEvent) -> Failure | None:
        """Take one event; a Failure if the stream reported an error."""

    def finish(self) -> Completion | Failure:
        """The whole answer once the stream has ended."""


class WireProtocol(Protocol):
    name: str

    def build(
        self, request: RowRequest, base_url: str, *, stream: bool
    ) -> HttpCall: ...

    def parse(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> Completion | Failure: ...

    def new_fold(self, headers: Mapping[str, str]) -> StreamFold: ...


def dump_json(body: Mapping[str, Any]) -> bytes:
    return jsoncodec.dumps(body)


def load_json(body: bytes | str) -> Any:
    """Parse JSON, or None when it is not JSON (a 502 HTML page, a torn body)."""
    try:
        return jsoncodec.loads(body)
    except ValueError:
        return None


def text_of(content: Any) -> str:
    """Content as one string, whether it came as a string or a list of ``{text}``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") for part in content if isinstance(part, dict)
        )
    return ""


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def request_id_from(headers: Mapping[str, str], body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("request_id"), str):
        return str(body["request_id"])
    return headers.get("x-request-id")


def error_failure(
    status: int | None, body: bytes, headers: Mapping[str, str]
) -> Failure:
    """Classify an error body in either API's shape (or no shape at all)."""
    data = load_json(body)
    if data is None and looks_like_sse(body):
        data = first_sse_data(body)  # FACTS §3.1: SSE-framed error bodies
    code, message = error_fields(data)
    if code is None and message is None:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"unexpected response body: {snippet or '(empty)'}"
        if status == 200:  # "success" with no answer in it: a proxy's glitch, retried
            code = "bad_response"
    return classify_failure(
        status,
        code,
        message or "",
        request_id=request_id_from(headers, data),
        retry_after_s=retry_after(headers),
    )


def error_fields(data: Any) -> tuple[str | None, str | None]:
    """(code, message) from ``{"error": {...}}`` or ``{"code", "message"}``."""
    if not isinstance(data, dict):
        return None, None
    inner = data.get("error")
    if isinstance(inner, dict):
        code = inner.get("code") or inner.get("type")
        return (str(code) if code else None), str(inner.get("message") or "")
    if data.get("code"):
        return str(data["code"]), str(data.get("message") or "")
    return None, None


def first_sse_data(body: bytes) -> Any:
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            return load_json(line[5:].strip())
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after``, if a server sent them."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if seconds >= 0:
                return seconds
    return None


def stream_incomplete(request_id: str | None) -> Failure:
    return classify_failure(
        None,
        "stream_incomplete",
        "the stream ended before the answer was complete (no finish_reason)",
        request_id=request_id,
    )


def parse_usage(raw: Any, *, input_key: str, output_key: str) -> Usage | None:
    """Usage in batchkimi's words from either API's usage object."""
    if not isinstance(raw, dict):
        return None
    input_tokens = as_int(raw.get(input_key))
    output_tokens = as_int(raw.get(output_key))
    out_details = raw.get("output_tokens_details") or raw.get(
        "completion_tokens_details"
    )
    in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details")
    reasoning = (
        as_int(out_details.get("reasoning_tokens"))
        if isinstance(out_details, dict)
        else 0
    )
    details = in_details if isinstance(in_details, dict) else {}
    created = as_int(
        details.get(
            "cache_creation_input_tokens", raw.get("cache_creation_input_tokens")
        )
    )
    total = as_int(raw.get("total_tokens")) or input_tokens + output_tokens
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning,
        cached_tokens=as_int(details.get("cached_tokens")),
        total_tokens=total,
        cache_creation_tokens=created,
        explicit_cache=details.get("cache_type") == "ephemeral",
    )


# --- tool calls (FACTS §6.5: the OpenAI convention, which both APIs follow) ----------


def tools_to_wire(tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]


def tool_choice_to_wire(choice: str) -> str | dict[str, Any]:
    """ "auto" and "none" as they are; any other name forces that function."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def tool_calls_to_wire(
    calls: tuple[ToolCall, ...], *, indexed: bool
) -> list[dict[str, Any]]:
    """An assistant turn's calls, as sent back in a follow-up turn (natively each
    carries its ``index`` too)."""
    wire = []
    for index, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        if indexed:
            item["index"] = index
        wire.append(item)
    return wire


class ToolCallJoiner:
    """Joins tool calls as they arrive, whole or in fragments: per ``index``, the
    first id and name seen, and every arguments fragment in order."""

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, fragments]

    def feed(self, raw: Any) -> None:
        if not isinstance(raw, list):
            return
        for position, item in enumerate(raw):
            if not isinstance(item, dict):
                continue
            index = item.get("index")
            index = index if isinstance(index, int) else position
            call = self._calls.setdefault(index, ["", "", []])
            function = item.get("function")
            function = function if isinstance(function, dict) else {}
            if isinstance(item.get("id"), str) and item["id"] and not call[0]:
                call[0] = item["id"]
            name = function.get("name")
            if isinstance(name, str) and name and not call[1]:
                call[1] = name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call[2].append(arguments)

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=call[0], name=call[1], arguments="".join(call[2]))
            for _, call in sorted(self._calls.items())
        )


def parse_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    """The calls of a whole (non-streamed) message."""
    joiner = ToolCallJoiner()
    joiner.feed(raw)
    return joiner.calls()


def unreadable(raw: bytes | str, exc: Exception) -> Failure:
    """A paid answer the codec failed on: kept whole, to be read again later."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return Failure(
        kind="row",
        code=UNPROCESSED,
        message=(
            f"the service answered, but batchkimi could not read the answer "
            f"({type(exc).__name__}: {exc}). It is kept, and the next run reads it "
            "again without sending the row. This is batchkimi's bug: please report it"
        ),
        http_status=200,
        raw=text,
    )


def read_raw_answer(protocol: WireProtocol, raw: str) -> Completion | Failure:
    """Read a kept 200 body again: a whole JSON answer or a stream's events."""
    body = raw.encode()
    try:
        if not looks_like_sse(body):
            return protocol.parse(200, body, {})
        decoder = SseDecoder()
        fold = protocol.new_fold({})
        for event in decoder.feed(body) + decoder.close():
            failure = fold.feed(event)
            if failure is not None:
                return failure
        return fold.finish()
    except Exception as exc:  # noqa: BLE001 - the answer is kept, whatever broke
        return unreadable(raw, exc)
