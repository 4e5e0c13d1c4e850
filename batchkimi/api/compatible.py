"""Codec for Model Studio's OpenAI-compatible API (``/compatible-mode/v1``). Pure.

DashScope-only fields such as ``enable_thinking`` go at the top level of the body
(FACTS §4.1). Streams end with ``data: [DONE]`` and carry usage in a last chunk with
``choices: []`` when ``stream_options.include_usage`` is set (FACTS §4.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchkimi.api.base import (
    HttpCall,
    ToolCallJoiner,
    as_int,
    dump_json,
    error_failure,
    error_fields,
    load_json,
    parse_tool_calls,
    parse_usage,
    request_id_from,
    stream_incomplete,
    text_of,
    tool_calls_to_wire,
    tool_choice_to_wire,
    tools_to_wire,
)
from batchkimi.api.failures import classify_failure
from batchkimi.api.sse import SseEvent
from batchkimi.records import (
    Completion,
    Failure,
    ImagePart,
    Message,
    Part,
    RowRequest,
    TextPart,
    Usage,
)

PATH = "/chat/completions"


_EPHEMERAL = {"type": "ephemeral"}  # FACTS §6.3: the explicit cache's marker


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        if part.cache:
            return {"type": "text", "text": part.text, "cache_control": _EPHEMERAL}
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url}}
    wire: dict[str, Any]
    if part.url is not None:
        wire = {"type": "video_url", "video_url": {"url": part.url}}
    else:
        wire = {"type": "video", "video": list(part.frames)}
    if part.fps is not None:
        wire["fps"] = part.fps
    return wire


def _message(message: Message) -> dict[str, Any]:
    texts_only = all(isinstance(p, TextPart) and not p.cache for p in message.parts)
    wire: dict[str, Any] = {"role": message.role}
    if texts_only and (message.role != "user" or len(message.parts) == 1):
        wire["content"] = "".join(
            p.text for p in message.parts if isinstance(p, TextPart)
        )
    else:
        wire["content"] = [_part(p) for p in message.parts]
    if message.reasoning_content:
        wire["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        wire["tool_calls"] = tool_calls_to_wire(message.tool_calls, indexed=False)
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


class CompatibleProtocol:
    name = "openai"

    def build(self, request: RowRequest, base_url: str, *, stream: bool) -> HttpCall:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
        }
        body.update(request.parameters)
        if request.enable_thinking is not None:
            body["enable_thinking"] = request.enable_thinking
        if request.tools:
            body["tools"] = tools_to_wire(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice_to_wire(request.tool_choice)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        return HttpCall(base_url + PATH, headers, dump_json(body), stream)

    def parse(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> Completion | Failure:
        data = load_json(body)
        if status != 200 or not isinstance(data, dict) or "error" in data:
            return error_failure(status, body, headers)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return classify_failure(
                status, "bad_response", "the answer has no choices", request_id=None
            )
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        return Completion(
            content=text_of(message.get("content")),
            reasoning_content=text_of(message.get("reasoning_content")),
            finish_reason=choice.get("finish_reason"),
            usage=_usage(data.get("usage")),
            request_id=_request_id(headers, data),
            model=data.get("model"),
            tool_calls=parse_tool_calls(message.get("tool_calls")),
        )

    def new_fold(self, headers: Mapping[str, str]) -> CompatibleFold:
        return CompatibleFold(headers)


def _usage(raw: Any) -> Usage | None:
    return parse_usage(raw, input_key="prompt_tokens", output_key="completion_tokens")


def _request_id(headers: Mapping[str, str], data: Any) -> str | None:
    found = request_id_from(headers, data)
    if found:
        return found
    chat_id = data.get("id") if isinstance(data, dict) else None
    # FACTS §4.2: the id is "chatcmpl-" + the request id in real captures
    if isinstance(chat_id, str) and chat_id.startswith("chatcmpl-"):
        return chat_id.removeprefix("chatcmpl-")
    return chat_id if isinstance(chat_id, str) else None


class CompatibleFold:
    """Folds ``data: {chunk}`` events into one Completion."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.request_id: str | None = headers.get("x-request-id")
        self.model: str | None = None
        self.tool_calls = ToolCallJoiner()
        self.done = False

    def feed(self, event: SseEvent) -> Failure | None:
        data = event.data
        if data == "[DONE]" or data.strip() == "[DONE]":
            self.done = True
            return None
        chunk = load_json(data)
        if not isinstance(chunk, dict):
            return classify_failure(
                None, "bad_response", f"a stream chunk is not JSON: {data[:120]}"
            )
        if self.request_id is None:
            self.request_id = _request_id({}, chunk)
        # FACTS §4.4: errors may come as {"error": {...}} or as a bare {code, message}
        if event.event == "error" or chunk.get("error") or chunk.get("code"):
            code, message = error_fields(chunk)
            return classify_failure(
                event.status,
                code,
                message or data[:200],
                request_id=self.request_id,
            )
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or as_int(choice.get("index")) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._take(delta)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return None

    def _take(self, delta: dict[str, Any]) -> None:
        """One delta's pieces (most carry one of the three)."""
        content = delta.get("content")
        if content:
            self.content.append(
                content if isinstance(content, str) else text_of(content)
            )
        reasoning = delta.get("reasoning_content")
        if reasoning:
            self.reasoning.append(
                reasoning if isinstance(reasoning, str) else text_of(reasoning)
            )
        calls = delta.get("tool_calls")
        if calls:
            self.tool_calls.feed(calls)

    def finish(self) -> Completion | Failure:
        if self.finish_reason is None:
            return stream_incomplete(self.request_id)
        return Completion(
            content="".join(self.content),
            reasoning_content="".join(self.reasoning),
            finish_reason=self.finish_reason,
            usage=self.usage,
            request_id=self.request_id,
            model=self.model,
            tool_calls=self.tool_calls.calls(),
        )
