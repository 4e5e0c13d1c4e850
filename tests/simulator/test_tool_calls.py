"""Tool calling in both APIs, whole and streamed (FACTS §6.5): the simulator answers
with a call whose arguments satisfy the function's schema, refuses malformed tools
and tool turns, and takes follow-up turns; raw HTTP, no batchkimi client."""

from __future__ import annotations

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from batchkimi.simulator import SimulatorServer
from batchkimi.simulator import responses as wire
from tests.simulator.wire import (
    LABEL_SCHEMA,
    LABEL_TOOL,
    events,
    finish_of,
    fold_tool_calls,
    message_of,
    send,
    text_of,
)

USER = [{"role": "user", "content": "Review: lovely kettle, boils fast."}]
APIS = ["compat", "native"]
OTHER_TOOL = {
    "type": "function",
    "function": {
        "name": "flag_spam",
        "parameters": {
            "type": "object",
            "properties": {"spam": {"type": "boolean"}},
            "required": ["spam"],
        },
    },
}


@pytest.mark.parametrize("api", APIS)
def test_a_whole_answer_is_a_tool_call_whose_arguments_fit_the_schema(
    simulator: SimulatorServer, api: str
) -> None:
    response = send(simulator, api, USER, tools=[LABEL_TOOL])
    assert response.status_code == 200, response.text
    data = response.json()
    message = message_of(api, data)
    assert finish_of(api, data) == "tool_calls"
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "record_label"
    arguments = call["function"]["arguments"]
    assert isinstance(arguments, str)  # a JSON string, not an object
    jsonschema.validate(json.loads(arguments), LABEL_SCHEMA)
    if api == "native":
        assert call["index"] == 0
        assert message["content"] == ""  # asked in a plain string
    else:
        assert message["content"] == ""  # Model Studio's form; OpenAI sends null
    logged = simulator.requests[-1]
    assert (logged.answer_kind, logged.structured, logged.invalid_kind) == (
        "tool_call",
        True,
        None,
    )


@pytest.mark.parametrize("api", APIS)
def test_streamed_arguments_come_in_fragments_that_join_to_the_whole_answer(
    simulator: SimulatorServer, api: str
) -> None:
    whole = message_of(api, send(simulator, api, USER, tools=[LABEL_TOOL]).json())
    streamed = send(
        simulator,
        api,
        USER,
        tools=[LABEL_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = events(streamed)
    with_calls = [c for c in chunks if (c.get("choices") or api == "native")]
    fragments = [
        call for c in with_calls for call in message_of(api, c).get("tool_calls") or []
    ]
    assert len(fragments) >= 3  # the client must join them
    assert fragments[0]["id"].startswith("call_")
    assert fragments[0]["function"]["name"] == "record_label"
    assert all("name" not in f["function"] for f in fragments[1:])
    folded = fold_tool_calls(api, chunks)
    assert list(folded) == [0]
    expected = whole["tool_calls"][0]["function"]
    assert folded[0]["name"] == expected["name"]
    assert json.loads(folded[0]["args"]) == json.loads(expected["arguments"])
    finishes = [finish_of(api, c) for c in with_calls]
    assert finishes[-1] == "tool_calls"
    assert set(finishes[:-1]) == ({"null"} if api == "native" else {None})
    if api == "native":
        assert {f["id"] for f in fragments[1:]} == {""}
        usage = [c["usage"]["output_tokens"] for c in chunks]
        assert usage == sorted(usage)  # cumulative
        assert all(message_of(api, c)["content"] == "" for c in chunks)
    else:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("api", APIS)
def test_thinking_streams_reasoning_before_the_call(
    simulator: SimulatorServer, api: str
) -> None:
    chunks = events(
        send(
            simulator,
            api,
            USER,
            tools=[LABEL_TOOL],
            stream=True,
            enable_thinking=True,
        )
    )
    order = []
    for chunk in chunks:
        if api == "compat" and not chunk.get("choices"):
            continue
        message = message_of(api, chunk)
        if message.get("reasoning_content"):
            order.append("reasoning")
        if message.get("tool_calls"):
            order.append("call")
    assert order[0] == "reasoning" and order[-1] == "call"
    assert order.index("call") > max(i for i, o in enumerate(order) if o == "reasoning")


@pytest.mark.parametrize("api", APIS)
def test_tool_choice_none_answers_in_text_and_a_forced_choice_names_its_tool(
    simulator: SimulatorServer, api: str
) -> None:
    tools = [LABEL_TOOL, OTHER_TOOL]
    none = send(simulator, api, USER, tools=tools, tool_choice="none").json()
    assert finish_of(api, none) == "stop"
    assert "tool_calls" not in message_of(api, none)
    assert text_of(message_of(api, none)["content"])
    assert simulator.requests[-1].answer_kind == "text"
    for name in ("flag_spam", "record_label"):
        choice = {"type": "function", "function": {"name": name}}
        forced = send(simulator, api, USER, tools=tools, tool_choice=choice).json()
        assert message_of(api, forced)["tool_calls"][0]["function"]["name"] == name


def test_auto_picks_among_several_tools_by_request(simulator: SimulatorServer) -> None:
    names = {
        send(
            simulator,
            "compat",
            [{"role": "user", "content": f"row {i}"}],
            tools=[LABEL_TOOL, OTHER_TOOL],
        ).json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
        for i in range(12)
    }
    assert names == {"record_label", "flag_spam"}


BAD_TOOLS: list[tuple[dict[str, Any], str]] = [
    ({"tools": {"type": "function"}}, "non-empty list"),
    ({"tools": []}, "non-empty list"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "name"),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "string"}},
                }
            ]
        },
        'type "object"',
    ),
    ({"tools": [LABEL_TOOL, LABEL_TOOL]}, "more than once"),
    (
        {
            "tools": [LABEL_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
        "'nope'",
    ),
    ({"tools": [LABEL_TOOL], "tool_choice": "required"}, "tool_choice must be"),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"$ref": "#/$defs/Gone"}},
                            "required": ["a"],
                        },
                    },
                }
            ]
        },
        "Invalid schema for function 'f'",
    ),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("fields", "says"), BAD_TOOLS)
def test_malformed_tools_and_choices_are_invalid_parameters(
    simulator: SimulatorServer, api: str, fields: dict[str, Any], says: str
) -> None:
    response = send(simulator, api, USER, **fields)
    assert response.status_code == 400
    body = response.json()
    error = body["error"] if api == "compat" else body
    expected = "invalid_parameter_error" if api == "compat" else "InvalidParameter"
    assert error["code"] == expected
    assert says in error["message"]


def _call(call_id: str = "call_1") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "record_label", "arguments": '{"label": "positive"}'},
    }


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("assistant_content", [None, "", "Let me record it."])
def test_a_follow_up_turn_with_the_tool_result_is_accepted(
    simulator: SimulatorServer, api: str, assistant_content: str | None
) -> None:
    tool_content: Any = "recorded"
    if api == "native":
        tool_content = [{"text": "recorded"}]
    messages: list[dict[str, Any]] = [
        *USER,
        {"role": "assistant", "content": assistant_content, "tool_calls": [_call()]},
        {"role": "tool", "tool_call_id": "call_1", "content": tool_content},
        {"role": "user", "content": "Thanks. Anything else?"},
    ]
    response = send(simulator, api, messages, tools=[LABEL_TOOL], tool_choice="none")
    assert response.status_code == 200, response.text
    assert finish_of(api, response.json()) == "stop"


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    "before",
    [
        [],  # a tool message with no assistant turn at all
        [{"role": "assistant", "content": "plain"}],  # no tool_calls
        [{"role": "assistant", "content": None, "tool_calls": [_call("call_other")]}],
    ],
)
def test_a_tool_message_that_answers_no_call_is_refused(
    simulator: SimulatorServer, api: str, before: list[dict[str, Any]]
) -> None:
    messages = [
        *USER,
        *before,
        {"role": "tool", "tool_call_id": "call_1", "content": "recorded"},
    ]
    response = send(simulator, api, messages, tools=[LABEL_TOOL])
    assert response.status_code == 400
    assert "tool_call_id 'call_1'" in response.text


def test_a_tool_call_cut_by_max_tokens_ends_with_length_and_broken_json(
    simulator: SimulatorServer,
) -> None:
    data = send(simulator, "compat", USER, tools=[LABEL_TOOL], max_tokens=3).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(ValueError):
        json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])


def test_the_text_path_carries_a_call_beside_string_content() -> None:
    """Only retired models live on text-generation (they answer 404), so its tool-call
    shape is checked on the frames themselves: string content, as on that path."""
    answer = wire.Answer(
        reasoning="",
        content="",
        finish_reason="tool_calls",
        input_tokens=9,
        reasoning_tokens=0,
        output_tokens=4,
        tool_call=wire.ToolCall("call_1", "record_label", '{"label": "positive"}'),
    )
    whole = json.loads(wire.native_body(answer, multimodal=False, request_id="r"))
    message = whole["output"]["choices"][0]["message"]
    assert message["content"] == ""
    assert message["tool_calls"][0]["function"]["arguments"] == '{"label": "positive"}'
    frames = wire.native_frames(answer, multimodal=False, request_id="r")
    datas = [json.loads(data.split(b"data:", 1)[1]) for _, data in frames]
    assert {d["output"]["choices"][0]["message"]["content"] for d in datas} == {""}
    assert fold_tool_calls("native", datas)[0]["args"] == '{"label": "positive"}'
