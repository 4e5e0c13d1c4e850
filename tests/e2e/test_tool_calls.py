"""Tool calling as documented (issue 16, FACTS §6.5): a job's own functions, the
model's calls in the results, and histories that carry calls and their results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run
from tests.hostile.conftest import invoke

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def tools_file(folder: Path, content: Any) -> Path:
    path = folder / "tools.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_a_rows_call_is_an_answer_kept_in_tool_calls(
    tmp_path: Path, simulator: SimulatorServer, api: str, stream: bool
) -> None:
    tools = tools_file(tmp_path, {"tools": [WEATHER], "tool_choice": "get_weather"})
    spec = make_spec(tmp_path, simulator, api=api, stream=stream, tools=tools)
    assert run(spec).exit_code == 0
    results = read_results(spec)
    assert set(results["status"]) == {"ok"}
    assert set(results["finish_reason"]) == {"tool_calls"}
    for raw in results["tool_calls"]:
        (call,) = json.loads(raw)
        assert call["name"] == "get_weather"
        assert "city" in json.loads(call["arguments"])
    body = simulator.requests[0].body
    params = body if api == "openai" else body["parameters"]
    assert params["tools"] == [WEATHER]
    assert params["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


def test_tool_choice_none_gets_text(tmp_path: Path, simulator: SimulatorServer) -> None:
    spec = make_spec(
        tmp_path, simulator, tools=tools_file(tmp_path, [WEATHER]), tool_choice="none"
    )
    assert run(spec).exit_code == 0
    results = read_results(spec)
    assert results["tool_calls"].is_null().all()
    assert (results["content"].str.len_chars() > 0).all()


@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_a_history_with_a_call_and_its_result_is_sent_as_written(
    tmp_path: Path, simulator: SimulatorServer, api: str
) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
        {"role": "user", "content": "So, umbrella?"},
    ]
    rows = [{"id": "h", "messages": json.dumps(history)}]
    spec = make_spec(
        tmp_path,
        simulator,
        rows=rows,
        fmt="jsonl",
        prompt=None,
        api=api,
        tools=tools_file(tmp_path, [WEATHER]),
        tool_choice="none",
    )
    assert run(spec).exit_code == 0, read_results(spec)["error_message"].to_list()
    body = simulator.requests[0].body
    sent = body["messages"] if api == "openai" else body["input"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    call = sent[1]["tool_calls"][0]
    assert call["id"] == "call_1"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert sent[2]["tool_call_id"] == "call_1"


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ([{"role": "tool", "content": "x"}], "without a tool_call_id"),
        (
            [
                {
                    "role": "user",
                    "content": "x",
                    "tool_calls": [{"function": {"name": "f"}}],
                }
            ],
            "Only assistant turns",
        ),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
            "tool_calls that are not",
        ),
        ([{"role": "robot", "content": "x"}], "system, user, assistant or tool"),
    ],
)
def test_a_broken_tool_history_fails_its_row_with_the_fix(
    tmp_path: Path, simulator: SimulatorServer, cell: list[dict[str, Any]], words: str
) -> None:
    rows = [{"id": "bad", "messages": json.dumps(cell)}]
    spec = make_spec(tmp_path, simulator, rows=rows, fmt="jsonl", prompt=None)
    run(spec)
    row = read_results(spec).row(0, named=True)
    assert row["error_code"] == "invalid_messages"
    assert words in row["error_message"]
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tool_choice": "get_time"}, "tool_choice = 'get_time'"),
        ({"labels": "a,b"}, "a structured job's one tool is its answer"),
    ],
)
def test_tool_settings_that_cannot_work_are_exit_2(
    tmp_path: Path, settings: dict[str, Any], words: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,review\n1,x\n")
    args = [
        "plan",
        "-i",
        str(manifest),
        "--prompt",
        "{review}",
        "--tools",
        str(tools_file(tmp_path, [WEATHER])),
    ]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", value]
    result = invoke(*args)
    assert result.exit_code == 2
    assert words in result.stderr


def test_a_tools_file_that_is_not_functions_is_exit_2(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,review\n1,x\n")
    for content, words in (
        ([{"type": "function", "function": {"name": "bad name!"}}], "needs a name"),
        ([{"name": "f"}], "is not"),
        (
            [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "x"}},
                }
            ],
            "not a valid JSON Schema",
        ),
    ):
        result = invoke(
            "plan",
            "-i",
            str(manifest),
            "--prompt",
            "{review}",
            "--tools",
            str(tools_file(tmp_path, content)),
        )
        assert result.exit_code == 2
        assert words in result.stderr
