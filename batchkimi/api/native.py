"""Codec for DashScope's native API (``/api/v1/services/aigc/...``). Pure.

Each model is tied to one path (FACTS §1.1): the multimodal path for kimi-k2.7-code,
kimi-k2.6 and kimi-k2.5, the text path for the text models. Streaming is asked for with
``X-DashScope-SSE: enable``, never a body field (FACTS §1.2), and always with
``incremental_output: true`` (FACTS §1.3). Parameters go under ``parameters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchkimi.api.base import (
    HttpCall,
    ToolCallJoiner,
    dump_json,
    error_failure,
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
from batchkimi.catalogue import Catalogue
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

_PATHS = {
    "multimodal-generation": "/services/aigc/multimodal-generation/generation",
    "text-generation": "/services/aigc/text-generation/generation",
}


def path_for(model: str, catalogue: Catalogue | None = None) -> str:
    """FACTS §1.1: the one native path the model answers on."""
    info = (catalogue or Catalogue.packaged()).get(model)
    return _PATHS[info.native_path]


_EPHEMERAL = {"type": "ephemeral"}  # FACTS §6.3: the explicit cache's marker


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        if part.cache:
            return {"text": part.text, "cache_control": _EPHEMERAL}
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return {"image": part.url}
    wire: dict[str, Any] = {
        "video": part.url if part.url is not None else list(part.frames)
    }
    if part.fps is not None:
        wire["fps"] = part.fps
    if part.max_frames is not None:
        wire["max_frames"] = part.max_frames
    return wire


def _message(message: Message, *, multimodal: bool) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role}
    # the turns of a tool call carry plain text (FACTS §1.4: string content is
    # accepted beside the list form on the multimodal path)
    plain = message.role == "tool" or bool(message.tool_calls)
    if multimodal and not plain:
        wire["content"] = [_part(p) for p in message.parts]
    else:
        wire["content"] = "".join(
            p.text for p in message.parts if isinstance(p, TextPart)
        )
    if message.reasoning_content:
        wire["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        wire["tool_calls"] = tool_calls_to_wire(message.tool_calls, indexed=True)
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _uses_oss(request: RowRequest) -> bool:
    for message in request.messages:
        for part in message.parts:
            urls = [part.url] if isinstance(part, ImagePart) else []
            if not isinstance(part, TextPart | ImagePart):
                urls = [part.url or "", *part.frames]
            if any(u.startswith("oss://") for u in urls):
                return True
    return False


class NativeProtocol:
    name = "dashscope"

    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or Catalogue.packaged()

    def build(self, request: RowRequest, base_url: str, *, stream: bool) -> HttpCall:
        path = path_for(request.model, self.catalogue)
        multimodal = "multimodal" in path
        parameters: dict[str, Any] = {"result_format": "message"}
        parameters.update(request.parameters)
        if request.enable_thinking is not None:
            parameters["enable_thinking"] = request.enable_thinking
        if request.tools:
            parameters["tools"] = tools_to_wire(request.tools)
        if request.tool_choice is not None:
            parameters["tool_choice"] = tool_choice_to_wire(request.tool_choice)
        headers = {"Content-Type": "application/json"}
        if stream:
            parameters["incremental_output"] = True
            headers["Accept"] = "text/event-stream"
            headers["X-DashScope-SSE"] = "enable"
        else:
            headers["Accept"] = "application/json"
        if _uses_oss(request):
            # FACTS §5: oss:// URLs resolve only with this header
            headers["X-DashScope-OssResourceResolve"] = "enable"
        body = {
            "model": request.model,
            "input": {
                "messages": [
                    _message(m, multimodal=multimodal) for m in request.messages
                ]
            },
            "parameters": parameters,
        }
        return HttpCall(base_url + path, headers, dump_json(body), stream)

    def parse(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> Completion | Failure:
        data = load_json(body)
        if status != 200 or not isinstance(data, dict) or data.get("code"):
            return error_failure(status, body, headers)
        output = data.get("output")
        if not isinstance(output, dict):
            return classify_failure(
                status, "bad_response", "the answer has no output", request_id=None
            )
        choices = output.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        message = choice.get("message") if isinstance(choice, dict) else None
        message = message if isinstance(message, dict) else {}
        content = text_of(message.get("content")) or text_of(output.get("text"))
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        return Completion(
            content=content,
            reasoning_content=text_of(message.get("reasoning_content")),
            finish_reason=_finish(finish or output.get("finish_reason")),
            usage=_usage(data.get("usage")),
            request_id=request_id_from(headers, data),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            tool_calls=parse_tool_calls(message.get("tool_calls")),
        )

    def new_fold(self, headers: Mapping[str, str]) -> NativeFold:
        return NativeFold(headers)


def _finish(value: Any) -> str | None:
    # FACTS §2.1: while streaming, finish_reason is the *string* "null"
    if value is None or value == "null" or value == "":
        return None
    return str(value)


def _usage(raw: Any) -> Usage | None:
    return parse_usage(raw, input_key="input_tokens", output_key="output_tokens")


class NativeFold:
    """Folds ``event:result`` frames (incremental output) into one Completion."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.request_id: str | None = headers.get("x-request-id")
        self.tool_calls = ToolCallJoiner()

    def feed(self, event: SseEvent) -> Failure | None:
        chunk = load_json(event.data)
        if isinstance(chunk, dict) and isinstance(chunk.get("request_id"), str):
            self.request_id = chunk["request_id"]
        # FACTS §3.1: an error may arrive mid-stream on HTTP 200 as event:error with
        # the real status in the :HTTP_STATUS/ comment; any "code" means an error too
        if event.event == "error" or (isinstance(chunk, dict) and chunk.get("code")):
            code = chunk.get("code") if isinstance(chunk, dict) else None
            message = chunk.get("message") if isinstance(chunk, dict) else event.data
            return classify_failure(
                event.status,
                str(code) if code else None,
                str(message or ""),
                request_id=self.request_id,
            )
        if not isinstance(chunk, dict):
            return classify_failure(
                None, "bad_response", f"a stream frame is not JSON: {event.data[:120]}"
            )
        output = chunk.get("output") or {}
        choices = output.get("choices") if isinstance(output, dict) else None
        for choice in choices or []:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            message = message if isinstance(message, dict) else {}
            self.content.append(text_of(message.get("content")))
            self.reasoning.append(text_of(message.get("reasoning_content")))
            self.tool_calls.feed(message.get("tool_calls"))
            finish = _finish(choice.get("finish_reason"))
            if finish:
                self.finish_reason = finish
        if isinstance(output, dict) and output.get("text"):
            self.content.append(text_of(output["text"]))
        # FACTS §2.2: usage is cumulative; the last chunk's is the answer's
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        return None

    def finish(self) -> Completion | Failure:
        if self.finish_reason is None:
            return stream_incomplete(self.request_id)
        return Completion(
            content="".join(self.content),
            reasoning_content="".join(self.reasoning),
            finish_reason=self.finish_reason,
            usage=self.usage,
            request_id=self.request_id,
            model=None,
            tool_calls=self.tool_calls.calls(),
        )
