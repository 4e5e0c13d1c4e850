"""Tool calls on the wire, both APIs: tools and tool_choice in requests, calls read
from whole answers and joined from streamed fragments, follow-up turns encoded.

Golden shapes follow FACTS §6.5 (the OpenAI convention both APIs use), not the
simulator.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchkimi.api.compatible import CompatibleProtocol
from batchkimi.api.native import NativeProtocol
from batchkimi.api.sse import SseDecoder
from batchkimi.records import (
    Completion,
    Failure,
    Message,
    RowRequest,
    TextPart,
    Tool,
    ToolCall,
)

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}
ARGS = '{"label": "b", "note": "ok"}'


def request(
    choice: str | None = "answer", *, extra: tuple[Message, ...] = ()
) -> RowRequest:
    return RowRequest(
        index=0,
        row_id="r0",
        model="kimi-k2.6",
        messages=(Message("user", (TextPart("Label it"),)), *extra),
        parameters=(),
        enable_thinking=False,
        fingerprint="f" * 64,
        tools=(Tool("answer", "Give the answer.", SCHEMA),),
        tool_choice=choice,
    )


def fold(protocol: CompatibleProtocol | NativeProtocol, payload: bytes, cut: int = 0):
    decoder = SseDecoder()
    folder = protocol.new_fold({})
    pieces = (
        [payload[i : i + cut] for i in range(0, len(payload), cut)]
        if cut
        else [payload]
    )
    events = [e for piece in pieces for e in decoder.feed(piece)] + decoder.close()
    for event in events:
        failure = folder.feed(event)
        if failure is not None:
            return failure
    return folder.finish()


WIRE_TOOL = {
    "type": "function",
    "function": {
        "name": "answer",
        "description": "Give the answer.",
        "parameters": SCHEMA,
    },
}
FORCED = {"type": "function", "function": {"name": "answer"}}


def test_compat_sends_tools_and_a_forced_choice_at_top_level() -> None:
    body = json.loads(
        CompatibleProtocol().build(request(), "http://h/v1", stream=False).body
    )
    assert body["tools"] == [WIRE_TOOL]
    assert body["tool_choice"] == FORCED


def test_native_sends_tools_and_choice_under_parameters() -> None:
    body = json.loads(
        NativeProtocol().build(request("auto"), "http://h/api/v1", stream=True).body
    )
    assert body["parameters"]["tools"] == [WIRE_TOOL]
    assert body["parameters"]["tool_choice"] == "auto"
    assert "tools" not in body


def test_a_request_without_tools_sends_neither_field() -> None:
    plain = RowRequest(
        0, "r", "kimi-k2.6", (Message("user", (TextPart("x"),)),), (), None, "f"
    )
    for protocol in (CompatibleProtocol(), NativeProtocol()):
        text = protocol.build(plain, "http://h", stream=False).body.decode()
        assert "tool" not in text


FOLLOW_UP = (
    Message(
        "assistant",
        (),
        reasoning_content="hmm",
        tool_calls=(ToolCall("call_1", "answer", '{"label": "A"}'),),
    ),
    Message("tool", (TextPart("Invalid: use a or b"),), tool_call_id="call_1"),
)


@pytest.mark.parametrize("protocol", [CompatibleProtocol(), NativeProtocol()])
def test_a_follow_up_turn_carries_the_call_and_the_tool_reply(protocol) -> None:
    body = json.loads(
        protocol.build(request(extra=FOLLOW_UP), "http://h", stream=False).body
    )
    messages = body["messages"] if "messages" in body else body["input"]["messages"]
    assistant, tool = messages[-2], messages[-1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == ""
    assert assistant["reasoning_content"] == "hmm"
    call = assistant["tool_calls"][0]
    assert call["id"] == "call_1"
    assert call["type"] == "function"
    assert call["function"] == {"name": "answer", "arguments": '{"label": "A"}'}
    assert tool == {
        "role": "tool",
        "content": "Invalid: use a or b",
        "tool_call_id": "call_1",
    }


def test_compat_reads_the_calls_of_a_whole_answer() -> None:
    body = {
        "id": "chatcmpl-x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "answer", "arguments": ARGS},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
    }
    answer = CompatibleProtocol().parse(200, json.dumps(body).encode(), {})
    assert isinstance(answer, Completion)
    assert answer.content == ""
    assert answer.finish_reason == "tool_calls"
    assert answer.tool_calls == (ToolCall("call_9", "answer", ARGS),)


def test_native_reads_the_calls_of_a_whole_answer() -> None:
    body = {
        "output": {
            "choices": [
                {
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_3",
                                "type": "function",
                                "function": {"name": "answer", "arguments": ARGS},
                            }
                        ],
                    },
                }
            ]
        },
        "usage": {"input_tokens": 50, "output_tokens": 9, "total_tokens": 59},
        "request_id": "r",
    }
    answer = NativeProtocol().parse(200, json.dumps(body).encode(), {})
    assert isinstance(answer, Completion)
    assert answer.tool_calls == (ToolCall("call_3", "answer", ARGS),)


def compat_stream(fragments: list[str]) -> bytes:
    chunks: list[dict[str, Any]] = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_7",
                                "type": "function",
                                "function": {"name": "answer", "arguments": ""},
                            }
                        ],
                    },
                    "finish_reason": None,
                }
            ]
        }
    ]
    chunks += [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": f}}]
                    },
                    "finish_reason": None,
                }
            ]
        }
        for f in fragments
    ]
    chunks.append(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    )
    chunks.append(
        {
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    )
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        + b"data: [DONE]\n\n"
    )


def native_stream(fragments: list[str]) -> bytes:
    frames = []
    for number, fragment in enumerate(fragments, start=1):
        call: dict[str, Any] = {
            "index": 0,
            "type": "function",
            "function": {"arguments": fragment},
        }
        if number == 1:
            call["id"] = "call_7"
            call["function"]["name"] = "answer"
        else:
            call["id"] = ""
        data = {
            "output": {
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "content": "",
                            "tool_calls": [call],
                        },
                        "finish_reason": "null",
                    }
                ]
            },
            "usage": {
                "input_tokens": 5,
                "output_tokens": number,
                "total_tokens": 5 + number,
            },
        }
        frames.append(data)
    frames.append(
        {
            "output": {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": ""},
                        "finish_reason": "tool_calls",
                    }
                ]
            },
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
        }
    )
    return b"".join(
        f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
        + json.dumps(d).encode()
        + b"\n\n"
        for i, d in enumerate(frames, start=1)
    )


@given(
    cuts=st.lists(st.integers(1, len(ARGS) - 1), unique=True, max_size=6),
    chunk=st.integers(0, 40),
)
def test_streamed_argument_fragments_are_joined_however_they_are_cut(
    cuts: list[int], chunk: int
) -> None:
    points = [0, *sorted(cuts), len(ARGS)]
    fragments = [ARGS[a:b] for a, b in itertools.pairwise(points)]
    for protocol, payload in (
        (CompatibleProtocol(), compat_stream(fragments)),
        (NativeProtocol(), native_stream(fragments)),
    ):
        answer = fold(protocol, payload, cut=chunk)
        assert isinstance(answer, Completion), answer
        assert answer.tool_calls == (ToolCall("call_7", "answer", ARGS),)
        assert answer.finish_reason == "tool_calls"
        assert answer.usage is not None and answer.usage.total_tokens == 12


def test_calls_at_two_indexes_stay_apart() -> None:
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "a",
                                "function": {"name": "one", "arguments": '{"x":'},
                            },
                            {
                                "index": 1,
                                "id": "b",
                                "function": {"name": "two", "arguments": '{"y":'},
                            },
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]
    payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    answer = fold(CompatibleProtocol(), payload)
    assert isinstance(answer, Completion)
    assert answer.tool_calls == (
        ToolCall("a", "one", '{"x":1}'),
        ToolCall("b", "two", '{"y":2}'),
    )


def test_a_stream_that_ends_mid_call_is_incomplete_not_an_answer() -> None:
    payload = compat_stream(['{"label"'])
    cut = payload[: payload.index(b'"finish_reason": "tool_calls"') - 40]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    answer = fold(CompatibleProtocol(), cut)
    assert isinstance(answer, Failure)
    assert answer.code == "stream_incomplete"
