"""The official dashscope SDK, pointed at the simulator, reads every answer as it would
the real service's (FACTS §2, §3, §5, §8.2). Its legacy API returns errors as responses
with status_code, code and message rather than raising."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import dashscope
import jsonschema  # type: ignore[import-untyped]
import pytest
from dashscope import Generation, MultiModalConversation
from dashscope.common.error import UploadFileException
from dashscope.utils.oss_utils import OssUtils

from batchkimi.simulator import SimulatorServer, error, midstream

PROMPT = "Review: lovely kettle. Answer with one of: positive, negative"
FRAMES = [f"https://example.invalid/frames/{i}.jpg" for i in range(4)]


@pytest.fixture
def sdk(
    simulator: SimulatorServer, canary_key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatorServer]:
    monkeypatch.setattr(dashscope, "base_http_api_url", simulator.native_base)
    monkeypatch.setattr(dashscope, "api_key", canary_key)
    yield simulator


def ask(call: Any = MultiModalConversation.call, **kwargs: Any) -> Any:
    """One non-streaming SDK call, narrowed from the SDK's response-or-generator."""
    response = call(**kwargs)
    assert not isinstance(response, Generator)
    return response


def ask_streaming(**kwargs: Any) -> list[Any]:
    """Every response of one streaming SDK call."""
    responses = MultiModalConversation.call(
        stream=True, incremental_output=True, **kwargs
    )
    assert isinstance(responses, Generator)
    return list(responses)


def user(*parts: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": list(parts)}]


def text_of(response: Any) -> str:
    content = response.output.choices[0].message.content
    return "".join(part.get("text", "") for part in content)


def test_multimodal_call_with_thinking(sdk: SimulatorServer) -> None:
    response = ask(
        model="kimi-k2.6", messages=user({"text": PROMPT}), enable_thinking=True
    )
    assert response.status_code == HTTPStatus.OK
    message = response.output.choices[0].message
    assert text_of(response) in {"positive", "negative"}
    assert message.reasoning_content
    assert response.output.choices[0].finish_reason == "stop"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.request_id == sdk.requests[-1].request_id


def test_incremental_stream_with_thinking(sdk: SimulatorServer) -> None:
    responses = ask_streaming(
        model="kimi-k2.5",
        messages=user({"text": PROMPT}),
        enable_thinking=True,
    )
    assert all(r.status_code == HTTPStatus.OK for r in responses)
    answer = "".join(text_of(r) for r in responses)
    reasoning = "".join(
        r.output.choices[0].message.reasoning_content or "" for r in responses
    )
    finishes = [r.output.choices[0].finish_reason for r in responses]
    assert answer in {"positive", "negative"} and reasoning
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {"null"}
    outputs = [r.usage.output_tokens for r in responses]
    assert outputs == sorted(outputs)  # usage is cumulative
    logged = sdk.requests[-1]
    assert logged.headers["x-dashscope-sse"] == "enable" and logged.stream


def test_images_and_a_frame_list(sdk: SimulatorServer) -> None:
    response = ask(
        model="kimi-k2.6",
        messages=user(
            {"image": "https://example.invalid/a.png"},
            {"video": FRAMES, "fps": 2},
            {"text": "What happens?"},
        ),
    )
    assert response.status_code == HTTPStatus.OK and text_of(response)
    assert response.usage.input_tokens > 256 + 4 * 64


def test_a_local_file_goes_through_the_upload_flow(
    sdk: SimulatorServer, tmp_path: Path
) -> None:
    picture = tmp_path / "pic.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    response = ask(
        model="kimi-k2.6",
        messages=user({"image": f"file://{picture}"}, {"text": "Describe it."}),
    )
    assert response.status_code == HTTPStatus.OK, response.message
    policy, upload, generation = sdk.requests
    assert (policy.method, policy.path, policy.model) == (
        "GET",
        "/api/v1/uploads",
        "kimi-k2.6",
    )
    assert upload.path == "/oss-upload" and upload.status == 200
    image = generation.body["input"]["messages"][0]["content"][0]["image"]
    assert image == f"oss://{upload.body['key']}" and image.endswith("/pic.png")
    assert generation.headers["x-dashscope-ossresourceresolve"] == "enable"


def test_an_upload_is_bound_to_the_model_it_was_made_for(
    sdk: SimulatorServer, tmp_path: Path
) -> None:
    picture = tmp_path / "pic.png"
    picture.write_bytes(b"png")
    url, _ = OssUtils.upload(model="kimi-k2.5", file_path=str(picture))
    response = ask(model="kimi-k2.6", messages=user({"image": url}, {"text": "?"}))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.code == "InvalidParameter" and "kimi-k2.5" in response.message


def test_an_expired_policy_is_refused_as_oss_refuses_it(
    simulator: SimulatorServer,
    canary_key: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    simulator.reset(policy_expire_s=0.2)
    monkeypatch.setattr(dashscope, "base_http_api_url", simulator.native_base)
    picture = tmp_path / "pic.png"
    picture.write_bytes(b"png")
    certificate = OssUtils.get_upload_certificate(model="kimi-k2.6", api_key=canary_key)
    assert certificate.output["expire_in_seconds"] == 0
    time.sleep(0.3)
    with pytest.raises(UploadFileException, match="Policy expired"):
        OssUtils.upload(
            model="kimi-k2.6",
            file_path=str(picture),
            api_key=canary_key,
            upload_certificate=certificate.output,
        )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("DataInspectionFailed", 400),
        ("Arrearage", 400),
        ("InvalidApiKey", 401),
        ("AccessDenied", 403),
        ("Throttling.RateQuota", 429),
        ("Throttling.AllocationQuota", 429),
        ("PrepaidBillOverdue", 429),
        ("InternalError", 500),
        ("ModelServingError", 503),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_each_error_class_comes_back_as_a_response(
    sdk: SimulatorServer, code: str, status: int, stream: bool
) -> None:
    sdk.script("*", [error(code)])
    question = {"model": "kimi-k2.6", "messages": user({"text": "hi"})}
    response = ask_streaming(**question)[0] if stream else ask(**question)
    assert (response.status_code, response.code) == (status, code)
    assert response.message and response.request_id


def test_a_mid_stream_throttle_arrives_as_an_error_response(
    sdk: SimulatorServer,
) -> None:
    sdk.script("*", [midstream("Throttling.AllocationQuota", after_chunks=1)])
    responses = ask_streaming(
        model="kimi-k2.6",
        messages=user({"text": PROMPT}),
        enable_thinking=True,
    )
    assert responses[0].status_code == HTTPStatus.OK
    # FACTS §2.2: the SDK takes the status from a status: line the service never sends
    assert (responses[-1].status_code, responses[-1].code) == (
        400,
        "Throttling.AllocationQuota",
    )


def test_a_multimodal_model_on_the_text_path_is_a_url_error(
    sdk: SimulatorServer,
) -> None:
    response = ask(
        Generation.call, model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
    )
    assert (response.status_code, response.code) == (400, "InvalidParameter")
    assert response.message.startswith("url error")


def test_a_retired_text_model_is_not_found(sdk: SimulatorServer) -> None:
    response = ask(
        Generation.call,
        model="Moonshot-Kimi-K2-Instruct",
        messages=[{"role": "user", "content": "hi"}],
        result_format="message",
    )
    assert (response.status_code, response.code) == (404, "ModelNotFound")


def test_a_plain_string_question_reads_back_as_a_string(sdk: SimulatorServer) -> None:
    """The seed's own kimi-k2.6 example: a string in, ``content`` a string out."""
    response = ask(
        model="kimi-k2.6", messages=[{"role": "user", "content": "Who are you?"}]
    )
    assert response.status_code == HTTPStatus.OK
    content = response.output.choices[0].message.content
    assert isinstance(content, str) and content


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
TOOLS = [
    {
        "type": "function",
        "function": {"name": "record_label", "parameters": LABEL_SCHEMA},
    }
]


def test_a_tool_call_is_parsed_by_the_sdk(sdk: SimulatorServer) -> None:
    response = ask(model="kimi-k2.6", messages=user({"text": PROMPT}), tools=TOOLS)
    assert response.status_code == HTTPStatus.OK, response.message
    choice = response.output.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call["id"].startswith("call_") and call["index"] == 0
    assert call["function"]["name"] == "record_label"
    jsonschema.validate(json.loads(call["function"]["arguments"]), LABEL_SCHEMA)
    assert sdk.requests[-1].body["parameters"]["tools"] == TOOLS  # natively nested


def test_incremental_tool_call_fragments_join_to_valid_arguments(
    sdk: SimulatorServer,
) -> None:
    responses = ask_streaming(
        model="kimi-k2.6",
        messages=user({"text": PROMPT}),
        tools=TOOLS,
        enable_thinking=True,
    )
    assert all(r.status_code == HTTPStatus.OK for r in responses)
    name, arguments, ids = "", "", []
    for r in responses:
        for call in r.output.choices[0].message.get("tool_calls") or []:
            ids.append(call["id"])
            name += call["function"].get("name", "")
            arguments += call["function"]["arguments"]
    assert name == "record_label" and ids[0].startswith("call_") and len(ids) >= 3
    jsonschema.validate(json.loads(arguments), LABEL_SCHEMA)
    finishes = [r.output.choices[0].finish_reason for r in responses]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {"null"}


def test_the_sdks_own_merge_rebuilds_the_call_from_our_fragments(
    sdk: SimulatorServer,
) -> None:
    """With incremental_output=False the SDK asks for fragments and joins them
    itself (FACTS §1.3): the native fragment form must survive its merge."""
    responses = MultiModalConversation.call(
        model="kimi-k2.6",
        messages=user({"text": PROMPT}),
        tools=TOOLS,
        stream=True,
        incremental_output=False,
    )
    assert isinstance(responses, Generator)
    last = list(responses)[-1]
    assert "incremental_to_full/1" in sdk.requests[-1].headers["user-agent"]
    call = last.output.choices[0].message.tool_calls[0]
    assert call["function"]["name"] == "record_label"
    assert call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]), LABEL_SCHEMA)


def test_a_follow_up_turn_is_accepted_and_an_orphan_tool_message_refused(
    sdk: SimulatorServer,
) -> None:
    first = ask(model="kimi-k2.6", messages=user({"text": PROMPT}), tools=TOOLS)
    call = first.output.choices[0].message.tool_calls[0]
    turn = [
        *user({"text": PROMPT}),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": [{"text": "done"}]},
    ]
    second = ask(model="kimi-k2.6", messages=turn, tools=TOOLS, tool_choice="none")
    assert second.status_code == HTTPStatus.OK, second.message
    assert second.output.choices[0].finish_reason == "stop"
    orphan = ask(model="kimi-k2.6", messages=[turn[0], turn[2]], tools=TOOLS)
    assert (orphan.status_code, orphan.code) == (400, "InvalidParameter")
