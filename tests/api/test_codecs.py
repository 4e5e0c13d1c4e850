"""Both codecs build the documented requests and read the documented answers.

Golden bytes are transcribed from FACTS.md (§1.3, §2, §3, §4), not from the simulator.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from batchkimi.api.compatible import CompatibleProtocol
from batchkimi.api.native import NativeProtocol
from batchkimi.api.sse import SseDecoder
from batchkimi.records import (
    Completion,
    Failure,
    ImagePart,
    Message,
    RowRequest,
    TextPart,
    VideoPart,
)


def request(
    model: str = "kimi-k2.6",
    *,
    thinking: bool | None = True,
    parts: tuple = (TextPart("Hello"),),
) -> RowRequest:
    return RowRequest(
        index=0,
        row_id="r0",
        model=model,
        messages=(Message("system", (TextPart("Be brief."),)), Message("user", parts)),
        parameters=(("max_tokens", 64), ("temperature", 0.2)),
        enable_thinking=thinking,
        fingerprint="f" * 64,
    )


def fold(
    protocol: CompatibleProtocol | NativeProtocol, payload: bytes
) -> Completion | Failure:
    decoder = SseDecoder()
    folder = protocol.new_fold({})
    for event in decoder.feed(payload) + decoder.close():
        failure = folder.feed(event)
        if failure is not None:
            return failure
    return folder.finish()


# --- building ---------------------------------------------------------------------


def test_compat_puts_thinking_at_top_level_and_asks_for_stream_usage() -> None:
    call = CompatibleProtocol().build(
        request(), "http://h/compatible-mode/v1", stream=True
    )
    body = json.loads(call.body)
    assert call.url == "http://h/compatible-mode/v1/chat/completions"
    assert body["enable_thinking"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert "Authorization" not in call.headers


def test_compat_sends_media_as_openai_parts() -> None:
    parts = (
        ImagePart("https://x/a.png"),
        VideoPart(frames=("f1", "f2", "f3", "f4"), fps=2),
        TextPart("What?"),
    )
    body = json.loads(
        CompatibleProtocol().build(request(parts=parts), "b", stream=False).body
    )
    assert body["messages"][1]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
        {"type": "video", "video": ["f1", "f2", "f3", "f4"], "fps": 2},
        {"type": "text", "text": "What?"},
    ]
    assert "stream" not in body and "stream_options" not in body


def test_native_multimodal_model_uses_multimodal_path_and_parameters() -> None:
    call = NativeProtocol().build(request(), "http://h/api/v1", stream=True)
    body = json.loads(call.body)
    assert call.url == "http://h/api/v1/services/aigc/multimodal-generation/generation"
    # FACTS §1.2: streaming is a header, never a body field
    assert call.headers["X-DashScope-SSE"] == "enable"
    assert "stream" not in body
    assert body["parameters"] == {
        "result_format": "message",
        "max_tokens": 64,
        "temperature": 0.2,
        "enable_thinking": True,
        "incremental_output": True,
    }
    assert body["input"]["messages"][1] == {
        "role": "user",
        "content": [{"text": "Hello"}],
    }


def test_native_text_model_uses_text_path_with_string_content() -> None:
    call = NativeProtocol().build(
        request("kimi-k2-thinking", thinking=None), "b", stream=False
    )
    assert call.url.endswith("/services/aigc/text-generation/generation")
    body = json.loads(call.body)
    assert body["input"]["messages"][1] == {"role": "user", "content": "Hello"}
    assert "X-DashScope-SSE" not in call.headers
    assert "enable_thinking" not in body["parameters"]


def test_native_oss_urls_ask_the_service_to_resolve_them() -> None:
    parts = (ImagePart("oss://dashscope-instant/a/pic.png"), TextPart("?"))
    call = NativeProtocol().build(request(parts=parts), "b", stream=False)
    assert call.headers["X-DashScope-OssResourceResolve"] == "enable"


# --- non-streaming answers --------------------------------------------------------


def test_native_body_with_list_content_and_usage_details() -> None:
    body = json.dumps(
        {
            "output": {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": [{"text": "Hel"}, {"text": "lo"}],
                            "reasoning_content": "think",
                        },
                    }
                ]
            },
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "total_tokens": 15,
                "output_tokens_details": {"text_tokens": 3, "reasoning_tokens": 2},
                "prompt_tokens_details": {"cached_tokens": 4},
            },
            "request_id": "3a33621a",
        }
    ).encode()
    result = NativeProtocol().parse(200, body, {})
    assert isinstance(result, Completion)
    assert (result.content, result.reasoning_content) == ("Hello", "think")
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 5)
    assert (result.usage.reasoning_tokens, result.usage.cached_tokens) == (2, 4)
    assert result.request_id == "3a33621a"


def test_compat_body_takes_request_id_from_the_chat_id() -> None:
    body = json.dumps(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "model": "kimi-k2.6",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {
                        "role": "assistant",
                        "content": "Hi",
                        "reasoning_content": "r",
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "total_tokens": 10,
                "completion_tokens_details": {"reasoning_tokens": 1},
            },
        }
    ).encode()
    result = CompatibleProtocol().parse(200, body, {})
    assert isinstance(result, Completion)
    assert result.request_id == "abc"
    assert result.model == "kimi-k2.6"
    assert result.finish_reason == "length"
    assert result.usage is not None and result.usage.reasoning_tokens == 1


@pytest.mark.parametrize(
    ("protocol", "status", "body", "code", "kind"),
    [
        (
            NativeProtocol(),
            429,
            b'{"request_id":"x","code":"Throttling.RateQuota","message":"m"}',
            "Throttling.RateQuota",
            "transient",
        ),
        (
            NativeProtocol(),
            400,
            b'id:1\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"DataInspectionFailed","message":"m"}\n\n',
            "DataInspectionFailed",
            "row",
        ),
        (
            CompatibleProtocol(),
            401,
            b'{"error":{"message":"m","type":"invalid_api_key","code":"invalid_api_key"}}',
            "InvalidApiKey",
            "fatal",
        ),
        (
            CompatibleProtocol(),
            429,
            b'{"error":{"message":"m","type":"insufficient_quota","code":"insufficient_quota"}}',
            "Throttling.AllocationQuota",
            "transient",
        ),
        (
            CompatibleProtocol(),
            502,
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            "http_502",
            "transient",
        ),
    ],
)
def test_error_bodies_are_classified_by_code_then_status(
    protocol: CompatibleProtocol | NativeProtocol,
    status: int,
    body: bytes,
    code: str,
    kind: str,
) -> None:
    result = protocol.parse(status, body, {"x-request-id": "hdr"})
    assert isinstance(result, Failure)
    assert (result.code, result.kind, result.http_status) == (code, kind, status)


def test_native_200_body_with_code_is_an_error_not_an_answer() -> None:
    body = b'{"request_id":"x","code":"InternalError","message":"boom"}'
    result = NativeProtocol().parse(200, body, {})
    assert isinstance(result, Failure) and result.code == "InternalError"


# --- streams ----------------------------------------------------------------------


def native_frame(n: int, data: dict, event: str = "result", status: int = 200) -> bytes:
    return f"id:{n}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{json.dumps(data)}\n\n".encode()


def native_chunk(
    reasoning: str = "", content: list | None = None, finish: str = "null", out: int = 1
) -> dict:
    return {
        "output": {
            "choices": [
                {
                    "message": {
                        "content": content or [],
                        "role": "assistant",
                        "reasoning_content": reasoning,
                    },
                    "finish_reason": finish,
                }
            ]
        },
        "usage": {
            "input_tokens": 12,
            "output_tokens": out,
            "total_tokens": 12 + out,
            "output_tokens_details": {"reasoning_tokens": min(out, 2)},
        },
        "request_id": "rid-1",
    }


def test_native_stream_accumulates_incremental_reasoning_then_answer() -> None:
    payload = b"".join(
        [
            native_frame(1, native_chunk("Let ", out=1)),
            native_frame(2, native_chunk("me", out=2)),
            b":keep-alive\n\n",
            native_frame(3, native_chunk(content=[{"text": "Hi "}], out=3)),
            native_frame(4, native_chunk(content=[{"text": "there"}], out=4)),
            native_frame(5, native_chunk(content=[], finish="stop", out=4)),
        ]
    )
    result = fold(NativeProtocol(), payload)
    assert isinstance(result, Completion)
    assert (result.reasoning_content, result.content) == ("Let me", "Hi there")
    assert result.finish_reason == "stop"
    assert (
        result.usage is not None and result.usage.output_tokens == 4
    )  # cumulative: last
    assert result.request_id == "rid-1"


def test_native_midstream_error_reports_the_status_in_the_comment() -> None:
    payload = native_frame(1, native_chunk("x")) + native_frame(
        2, {"code": "Throttling.AllocationQuota", "message": "quota"}, "error", 429
    )
    result = fold(NativeProtocol(), payload)
    assert isinstance(result, Failure)
    assert (result.code, result.http_status, result.budget) == (
        "Throttling.AllocationQuota",
        429,
        "tpm",
    )


def test_a_stream_cut_before_its_finish_is_transient() -> None:
    result = fold(NativeProtocol(), native_frame(1, native_chunk("x")))
    assert isinstance(result, Failure)
    assert (result.code, result.kind) == ("stream_incomplete", "transient")


def compat_chunk(delta: dict, finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-rid-2",
        "object": "chat.completion.chunk",
        "model": "kimi-k2.6",
        "usage": None,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_compat_stream_reads_reasoning_content_and_the_usage_chunk() -> None:
    usage = {
        "id": "chatcmpl-rid-2",
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 6,
            "total_tokens": 15,
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    payload = b"".join(
        [
            compat_chunk({"role": "assistant", "content": ""}),
            compat_chunk({"content": None, "reasoning_content": "hmm"}),
            compat_chunk({"content": "Yes", "reasoning_content": ""}),
            compat_chunk({}, "stop"),
            b"data: " + json.dumps(usage).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    result = fold(CompatibleProtocol(), payload)
    assert isinstance(result, Completion)
    assert (result.reasoning_content, result.content, result.finish_reason) == (
        "hmm",
        "Yes",
        "stop",
    )
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.reasoning_tokens) == (9, 4)
    assert result.request_id == "rid-2"


def test_compat_stream_error_chunk_in_either_shape_is_an_error() -> None:
    openai_shape = (
        b'data: {"error":{"code":"limit_requests","message":"slow down"}}\n\n'
    )
    native_shape = b'data: {"code":"DataInspectionFailed","message":"bad"}\n\n'
    first = fold(CompatibleProtocol(), compat_chunk({"content": "a"}) + openai_shape)
    second = fold(CompatibleProtocol(), native_shape)
    assert isinstance(first, Failure) and (first.code, first.budget) == (
        "Throttling.RateQuota",
        "rpm",
    )
    assert isinstance(second, Failure) and second.kind == "row"


def test_an_answer_with_a_lone_surrogate_escape_is_still_an_answer() -> None:
    body = b'{"id":"c","choices":[{"index":0,"finish_reason":"stop",'
    body += b'"message":{"role":"assistant","content":"x\\ud800y"}}],'
    body += b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    result = CompatibleProtocol().parse(200, body, {})
    assert isinstance(result, Completion)
    assert result.content == "x\ud800y"


def test_a_parameter_beyond_64_bits_still_makes_valid_json() -> None:
    row = dataclasses.replace(request(), parameters=(("seed", 2**70),))
    call = CompatibleProtocol().build(row, "http://127.0.0.1:9", stream=False)
    assert json.loads(call.body)["seed"] == 2**70
