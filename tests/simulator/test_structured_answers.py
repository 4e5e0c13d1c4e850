"""Structured answers without tools (a schema stated in the system message), the
knobs and scripts that spoil structured answers, and response_format (FACTS §6.5)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer, error, invalid_answer, text_answer
from tests.simulator.wire import (
    AUTH,
    COMPAT,
    LABEL_SCHEMA,
    LABEL_TOOL,
    finish_of,
    message_of,
    send,
    text_of,
)

SYSTEM = (
    "You label product reviews. Answer with JSON that satisfies this schema:\n"
    f"```json\n{json.dumps(LABEL_SCHEMA, indent=2)}\n```\nNothing else."
)
APIS = ["compat", "native"]


def ask(review: str, system: str = SYSTEM) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Review: {review}"},
    ]


def json_in(content: str) -> tuple[str, Any]:
    """(form, value) of a prompt-mode answer: bare, fenced, or a sentence + fence."""
    fenced = re.search(r"```json\n(.*?)\n```", content, re.DOTALL)
    if fenced is None:
        return "bare", json.loads(content)
    form = "fenced" if content.startswith("```") else "sentence"
    return form, json.loads(fenced.group(1))


@pytest.mark.parametrize("api", APIS)
def test_a_schema_in_the_system_message_is_answered_with_json_in_every_form(
    simulator: SimulatorServer, api: str
) -> None:
    forms = set()
    labels = set()
    for i in range(24):
        data = send(simulator, api, ask(f"item {i} was fine")).json()
        assert finish_of(api, data) == "stop"
        form, value = json_in(text_of(message_of(api, data)["content"]))
        jsonschema.validate(value, LABEL_SCHEMA)
        forms.add(form)
        labels.add(value["label"])
        assert simulator.requests[-1].answer_kind == "json"
    assert forms == {"bare", "fenced", "sentence"}
    assert labels == {"positive", "negative", "neutral"}


def test_only_a_json_block_that_is_a_schema_asks_for_json(
    simulator: SimulatorServer,
) -> None:
    example = 'For example:\n```json\n{"label": "positive"}\n```'
    data = send(simulator, "compat", ask("ok", example)).json()
    assert simulator.requests[-1].answer_kind == "text"
    with pytest.raises(ValueError):
        json_in(data["choices"][0]["message"]["content"])
    # the last schema block wins, and tools win over it
    later = SYSTEM + '\n```json\n{"type": "string", "enum": ["yes", "no"]}\n```'
    content = send(simulator, "compat", ask("ok", later)).json()["choices"][0]
    assert json_in(content["message"]["content"])[1] in {"yes", "no"}
    send(simulator, "compat", ask("ok"), tools=[LABEL_TOOL])
    assert simulator.requests[-1].answer_kind == "tool_call"
    send(simulator, "compat", ask("ok"), tools=[LABEL_TOOL], tool_choice="none")
    assert simulator.requests[-1].answer_kind == "json"


def _spoilt(api: str, data: dict[str, Any], tool: bool) -> tuple[str, Any]:
    message = message_of(api, data)
    text = (
        message["tool_calls"][0]["function"]["arguments"]
        if tool
        else json_in_or_raw(text_of(message["content"]))
    )
    return text, LABEL_SCHEMA


def json_in_or_raw(content: str) -> str:
    fenced = re.search(r"```json\n(.*?)(\n```|$)", content, re.DOTALL)
    return fenced.group(1) if fenced else content


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("tool", [True, False], ids=["tool", "prompt"])
@pytest.mark.parametrize("kind", ["enum", "missing", "type", "json"])
def test_a_scripted_invalid_answer_spoils_the_next_structured_answer_only(
    simulator: SimulatorServer, api: str, tool: bool, kind: str
) -> None:
    simulator.script("kimi-k2.6", [invalid_answer(kind)])
    fields = {"tools": [LABEL_TOOL]} if tool else {}
    plain = send(simulator, api, [{"role": "user", "content": "hi"}])
    assert simulator.requests[-1].invalid_kind is None  # not structured: not taken
    assert plain.status_code == 200
    spoilt = send(simulator, api, ask("great"), **fields).json()
    text, schema = _spoilt(api, spoilt, tool)
    logged = simulator.requests[-1]
    assert logged.invalid_kind == kind and logged.structured
    if kind == "json":
        with pytest.raises(ValueError):
            json.loads(text)
    else:
        value = json.loads(text)
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
        assert errors
        assert errors[0].validator == {"enum": "enum", "missing": "required"}.get(
            kind, "type"
        )
    after = send(simulator, api, ask("great"), **fields).json()
    jsonschema.validate(json.loads(_spoilt(api, after, tool)[0]), LABEL_SCHEMA)


@pytest.mark.parametrize("api", APIS)
def test_a_scripted_text_answer_replaces_the_tool_call(
    simulator: SimulatorServer, api: str
) -> None:
    simulator.script("*", [text_answer()])
    data = send(simulator, api, ask("great"), tools=[LABEL_TOOL]).json()
    message = message_of(api, data)
    assert finish_of(api, data) == "stop" and "tool_calls" not in message
    assert text_of(message["content"])
    logged = simulator.requests[-1]
    assert (logged.answer_kind, logged.structured) == ("text", True)


def test_an_unstructured_request_passes_over_answer_faults_but_not_errors(
    simulator: SimulatorServer,
) -> None:
    simulator.script("kimi-k2.6", [invalid_answer("missing"), error("InternalError")])
    assert (
        send(simulator, "compat", [{"role": "user", "content": "hi"}]).status_code
        == 500
    )
    send(simulator, "compat", ask("great"), tools=[LABEL_TOOL])
    assert simulator.requests[-1].invalid_kind == "missing"


def test_rates_spoil_a_seeded_share_of_structured_answers_only(
    simulator: SimulatorServer,
) -> None:
    def kinds(seed: int) -> list[tuple[str | None, str | None]]:
        simulator.reset(
            seed=seed,
            invalid_answer_rates={"enum": 0.2, "json": 0.2},
            text_instead_of_tool_rate=0.2,
        )
        for i in range(30):
            send(simulator, "compat", [{"role": "user", "content": f"plain {i}"}])
            send(simulator, "compat", ask(f"row {i}"), tools=[LABEL_TOOL])
        return [(r.answer_kind, r.invalid_kind) for r in simulator.requests]

    first = kinds(1)
    assert first == kinds(1)  # seeded
    plain, structured = first[0::2], first[1::2]
    assert set(plain) == {("text", None)}
    counts = {k: structured.count(k) for k in set(structured)}
    assert counts[("text", None)] >= 2  # prose instead of the tool
    assert counts[("tool_call", "enum")] >= 2 and counts[("tool_call", "json")] >= 2
    assert counts[("tool_call", None)] >= 10


def test_text_instead_of_tool_applies_only_when_tools_are_given(
    simulator: SimulatorServer,
) -> None:
    simulator.reset(text_instead_of_tool_rate=1.0)
    send(simulator, "native", ask("great"), tools=[LABEL_TOOL])
    send(simulator, "native", ask("great"))
    assert [r.answer_kind for r in simulator.requests] == ["text", "json"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_response_format_is_refused_by_models_without_structured_output(
    simulator: SimulatorServer, api: str, kind: str
) -> None:
    """FACTS §6.5: kimi-k2.7-code, kimi-k2.6 and kimi-k2.5 have no structured output:
    asking for it is refused, not silently ignored."""
    fmt: dict[str, Any] = {"type": kind}
    if kind == "json_schema":
        fmt["json_schema"] = {"name": "label", "schema": LABEL_SCHEMA}
    for model in ("kimi-k2.7-code", "kimi-k2.6", "kimi-k2.5"):
        response = send(simulator, api, ask("ok"), model=model, response_format=fmt)
        assert response.status_code == 400
        assert "response_format" in response.text and model in response.text
    text = send(simulator, api, ask("ok"), response_format={"type": "text"})
    assert text.status_code == 200


@pytest.mark.parametrize(
    "knob",
    [
        "--invalid-answer-rate nope=0.1",
        "--invalid-answer-rate enum=2",
        "--text-instead-of-tool-rate 1.5",
        "--implicit-cache-hit-rate -0.1",
    ],
)
def test_bad_structured_knob_values_are_refused(knob: str) -> None:
    result = CliRunner().invoke(cli, ["simulator", *knob.split()])
    assert result.exit_code == 2


def test_the_command_line_knobs_reach_the_answers() -> None:
    command = [
        sys.executable,
        "-m",
        "batchkimi",
        "simulator",
        "--port",
        "0",
        "--invalid-answer-rate",
        "missing=1",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            body = {"model": "kimi-k2.6", "messages": ask("ok"), "tools": [LABEL_TOOL]}
            response = httpx.post(url + COMPAT, headers=AUTH, json=body, timeout=10)
            call = response.json()["choices"][0]["message"]["tool_calls"][0]
            assert len(json.loads(call["function"]["arguments"])) == 1
        finally:
            process.terminate()
