"""The official openai SDK, pointed at the simulator, reads every answer as it would the
real service's (FACTS §4, §8.1), and raises on errors exactly where it would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import openai
import pytest

from batchkimi.simulator import SimulatorServer, error, html502, midstream

PROMPT = "Review: lovely kettle. Answer with one of: positive, negative"
FRAMES = [f"https://example.invalid/frames/{i}.jpg" for i in range(4)]


@pytest.fixture
def client(simulator: SimulatorServer, canary_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key=canary_key, base_url=simulator.compatible_base, max_retries=0
    ) as sdk:
        yield sdk


def test_non_streaming_answer_with_thinking(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": PROMPT}],
        extra_body={"enable_thinking": True},
    )
    choice = completion.choices[0]
    assert choice.message.content in {"positive", "negative"}
    assert (
        choice.message.model_extra and choice.message.model_extra["reasoning_content"]
    )
    assert choice.finish_reason == "stop"
    assert completion.id.startswith("chatcmpl-") and completion.model == "kimi-k2.6"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert 0 < reasoning < usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="kimi-k2.5",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"enable_thinking": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text in {"positive", "negative"} and reasoning
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_images_and_a_frame_list_are_accepted(client: openai.OpenAI) -> None:
    # a frame list is Model Studio's own part type, which the SDK's types do not model
    message: Any = {
        "role": "user",
        "content": [
            {
                "type": "image_url",
                "image_url": {"url": "https://example.invalid/a.png"},
            },
            {"type": "video", "video": FRAMES, "fps": 2},
            {"type": "text", "text": "What happens?"},
        ],
    }
    completion = client.chat.completions.create(model="kimi-k2.6", messages=[message])
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 256 + 4 * 64  # image and frames count


@pytest.mark.parametrize(
    ("code", "exception", "status", "compat_code"),
    [
        ("DataInspectionFailed", openai.BadRequestError, 400, "data_inspection_failed"),
        ("Arrearage", openai.BadRequestError, 400, "Arrearage"),
        ("InvalidApiKey", openai.AuthenticationError, 401, "invalid_api_key"),
        ("AccessDenied", openai.PermissionDeniedError, 403, "access_denied"),
        ("Throttling.RateQuota", openai.RateLimitError, 429, "limit_requests"),
        (
            "Throttling.AllocationQuota",
            openai.RateLimitError,
            429,
            "insufficient_quota",
        ),
        ("Throttling.BurstRate", openai.RateLimitError, 429, "limit_burst_rate"),
        ("CommodityNotPurchased", openai.RateLimitError, 429, "CommodityNotPurchased"),
        ("InternalError", openai.InternalServerError, 500, "internal_error"),
        ("ModelServingError", openai.InternalServerError, 503, "ModelServingError"),
    ],
)
def test_each_error_class_raises_the_sdks_own_exception(
    client: openai.OpenAI,
    simulator: SimulatorServer,
    code: str,
    exception: type[openai.APIStatusError],
    status: int,
    compat_code: str,
) -> None:
    simulator.script("*", [error(code)])
    with pytest.raises(exception) as caught:
        client.chat.completions.create(
            model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == status
    assert caught.value.code == compat_code
    assert caught.value.response.headers["x-request-id"]


@pytest.mark.parametrize("model", ["no-such-model", "kimi-k2-thinking"])
def test_unknown_and_retired_models_are_not_found(
    client: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found"


def test_a_proxys_502_page_is_a_server_error_without_a_code(
    client: openai.OpenAI, simulator: SimulatorServer
) -> None:
    simulator.script("*", [html502()])
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502 and caught.value.code is None


def test_a_mid_stream_error_raises_while_iterating(
    client: openai.OpenAI, simulator: SimulatorServer
) -> None:
    simulator.script("*", [midstream("Throttling.AllocationQuota", after_chunks=1)])
    stream = client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert caught.value.code == "insufficient_quota"


def test_thinking_off_for_a_thinking_only_model_is_a_bad_request(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="kimi-k2.7-code",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"enable_thinking": False},
        )


# --- tool calls (FACTS §6.5) ----------------------------------------------------------

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "record_label", "parameters": LABEL_SCHEMA},
    }
]


def test_a_tool_call_is_parsed_by_the_sdk(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": PROMPT}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "record_label"}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "record_label"
    jsonschema.validate(json.loads(call.function.arguments), LABEL_SCHEMA)


def test_streamed_tool_call_deltas_join_to_valid_arguments(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(
        model="kimi-k2.5",
        messages=[{"role": "user", "content": PROMPT}],
        tools=TOOLS,
        stream=True,
        extra_body={"enable_thinking": True},
    )
    ids, names, arguments, finishes = set(), "", "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        finishes.append(chunk.choices[0].finish_reason)
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            ids.add(delta.id)
            if delta.function is not None:
                names += delta.function.name or ""
                arguments += delta.function.arguments or ""
    assert names == "record_label" and len(ids - {None}) == 1
    jsonschema.validate(json.loads(arguments), LABEL_SCHEMA)
    assert finishes[-1] == "tool_calls"


def test_a_follow_up_turn_is_accepted_and_an_orphan_tool_message_refused(
    client: openai.OpenAI,
) -> None:
    first = client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": PROMPT}], tools=TOOLS
    )
    assistant = first.choices[0].message
    assert assistant.tool_calls is not None
    turn: Any = [
        {"role": "user", "content": PROMPT},
        assistant.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": assistant.tool_calls[0].id,
            "content": "recorded",
        },
    ]
    second = client.chat.completions.create(
        model="kimi-k2.6", messages=turn, tools=TOOLS, tool_choice="none"
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="kimi-k2.6", messages=[turn[0], turn[2]], tools=TOOLS
        )
    assert caught.value.code == "invalid_parameter_error"
