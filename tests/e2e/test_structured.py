"""Structured labels end to end over loopback HTTP (issue 11): the answer asked for
through a tool or the prompt, checked, repaired when wrong, and written as typed
columns; every attempt counted and priced; nothing paid for lost to a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchkimi.simulator import (
    SimulatorServer,
    error,
    invalid_answer,
    stall,
    text_answer,
)
from tests.e2e.test_processes import journal_records, wait_for
from tests.helpers import REVIEWS, make_spec, read_results, run, write_manifest

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "aspects": {
            "type": "array",
            "items": {"type": "string", "enum": ["price", "quality", "delivery"]},
            "uniqueItems": True,
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "recommend": {"type": "boolean"},
    },
    "required": ["sentiment", "aspects", "confidence", "stars", "recommend"],
    "additionalProperties": False,
}
TYPES = {
    "sentiment": pl.String,
    "aspects": pl.List(pl.String),
    "confidence": pl.Float64,
    "stars": pl.Int64,
    "recommend": pl.Boolean,
}


def structured(tmp_path: Path, simulator: SimulatorServer, **overrides: Any) -> Any:
    settings: dict[str, Any] = {"schema": SCHEMA, "model": "kimi-k2.5"}
    settings.update(overrides)
    return make_spec(tmp_path, simulator, **settings)


def messages_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        body["messages"] if "messages" in body else body["input"]["messages"]
    )
    return found


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content or ""


@pytest.mark.parametrize("mode", ["tool", "prompt"])
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_every_row_gets_a_checked_answer_in_typed_columns(
    tmp_path: Path, simulator: SimulatorServer, api: str, stream: bool, mode: str
) -> None:
    spec = structured(tmp_path, simulator, api=api, stream=stream, structured=mode)
    outcome = run(spec)

    assert outcome.exit_code == 0
    results = read_results(spec)
    assert set(results["status"]) == {"ok"}
    for column, dtype in TYPES.items():
        assert results.schema[column] == dtype, column
    assert set(results["sentiment"]) <= {"positive", "negative", "mixed"}
    assert results["confidence"].is_between(0, 1).all()
    assert (results["repairs"] == 0).all()
    for row in results.iter_rows(named=True):
        answer = json.loads(row["answer_json"])
        assert answer["sentiment"] == row["sentiment"]
        assert answer["aspects"] == row["aspects"]
    # the column order a reader sees: id, the kept inputs, the answer, the rest
    assert results.columns[:6] == [
        "id",
        "review",
        "sentiment",
        "aspects",
        "confidence",
        "stars",
    ]

    for logged in simulator.requests:
        body = logged.body
        params = body if api == "openai" else body["parameters"]
        system = text_of(messages_of(body)[0]["content"])
        if mode == "tool":
            tool = params["tools"][0]["function"]
            assert tool["parameters"] == SCHEMA
            # the call is forced: the request does not think
            assert params["tool_choice"] == {
                "type": "function",
                "function": {"name": tool["name"]},
            }
            assert results["tool_calls"].is_not_null().all()
        else:
            assert "tools" not in params
            assert "```json" in system and '"sentiment"' in system


def test_a_thinking_model_is_asked_with_auto_and_keeps_its_reasoning(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """kimi-k2.7-code always thinks; a thinking request may only be given "auto"."""
    spec = structured(tmp_path, simulator, model="kimi-k2.7-code")
    assert run(spec).exit_code == 0
    results = read_results(spec)
    assert set(results["status"]) == {"ok"}
    assert (results["reasoning_content"].str.len_chars() > 0).all()
    assert all(r.body["tool_choice"] == "auto" for r in simulator.requests)


def test_an_invalid_answer_is_repaired_with_the_validators_words_and_paid_once_each(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = REVIEWS[:1]
    simulator.script("kimi-k2.5", [invalid_answer("enum")])
    spec = structured(tmp_path, simulator, rows=rows)
    assert run(spec).exit_code == 0

    first, repair = simulator.requests
    assert first.invalid_kind == "enum"
    conversation = messages_of(repair.body)
    assistant, reply = conversation[-2], conversation[-1]
    assert assistant["role"] == "assistant"
    call = assistant["tool_calls"][0]
    assert reply["role"] == "tool"
    assert reply["tool_call_id"] == call["id"]
    assert "is not one of" in reply["content"]

    row = read_results(spec).row(0, named=True)
    assert row["status"] == "ok"
    assert row["repairs"] == 1
    assert json.loads(row["repair_causes"]) == {"enum": 1}
    assert row["attempts"] == 2
    # every attempt's tokens are on the row, and priced (kimi-k2.5: ¥4 / ¥21)
    assert row["input_tokens"] == first.input_tokens + repair.input_tokens
    assert row["output_tokens"] == first.output_tokens + repair.output_tokens
    expected = (row["input_tokens"] * 4 + row["output_tokens"] * 21) / 1_000_000
    assert row["cost"] == pytest.approx(expected, abs=1e-9)
    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["structured"] == {
        "valid_first_answer": 0,
        "repaired": 1,
        "invalid": 0,
        "repairs": 1,
        "repairs_by_cause": {"enum": 1},
    }


def test_text_instead_of_the_call_is_a_failed_attempt_that_is_repaired(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("kimi-k2.5", [text_answer()])
    spec = structured(tmp_path, simulator, rows=REVIEWS[:1])
    assert run(spec).exit_code == 0
    row = read_results(spec).row(0, named=True)
    assert (row["status"], row["repairs"]) == ("ok", 1)
    assert json.loads(row["repair_causes"]) == {"text": 1}
    reply = messages_of(simulator.requests[-1].body)[-1]
    assert reply["role"] == "user"
    assert "calling the function" in reply["content"]


def test_repairs_that_run_out_leave_the_row_invalid_kept_and_sent_again_only_when_asked(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    kinds = ["missing", "type", "json"]
    simulator.script("kimi-k2.5", [invalid_answer(kind) for kind in kinds])
    rows = [REVIEWS[0], {"id": "later", "review": "asked after the first is done"}]
    spec = structured(tmp_path, simulator, rows=rows, max_repairs=2, concurrency=1)
    outcome = run(spec)
    assert outcome.exit_code == 1  # not every row is ok
    results = read_results(spec)
    bad = results.filter(pl.col("status") == "invalid").row(0, named=True)
    assert bad["error_code"] == "invalid_answer"
    assert bad["repairs"] == 2
    assert json.loads(bad["repair_causes"]) == {"required": 1, "type": 1}
    assert bad["validation_error"].startswith("json:")
    assert bad["sentiment"] is None  # typed columns are null on rows not ok
    assert bad["content"] is not None or bad["tool_calls"] is not None  # kept
    assert bad["input_tokens"] > 0 and bad["cost"] > 0  # every attempt paid
    assert bad["retryable"] is False
    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["by_status"] == {"invalid": 1, "ok": 1}
    assert summary["overall"]["structured"]["invalid"] == 1

    sent = len(simulator.requests)
    again = structured(tmp_path, simulator, rows=rows, max_repairs=2)
    assert run(again).exit_code == 1
    assert len(simulator.requests) == sent  # an invalid row is not sent again …
    rerun = structured(tmp_path, simulator, rows=rows, rerun="invalid")
    assert run(rerun).exit_code == 0  # … unless asked
    assert len(simulator.requests) == sent + 1
    again = read_results(spec)
    assert set(again["status"]) == {"ok"}
    fixed = again.filter(pl.col("id") == bad["id"]).row(0, named=True)
    # the replaced invalid answers were paid for: they stay on the row and the bill
    assert fixed["input_tokens"] > bad["input_tokens"]
    assert fixed["cost"] > bad["cost"]
    assert fixed["repairs"] == 0


def test_the_schema_and_mode_are_part_of_the_request_but_max_repairs_is_not(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = structured(tmp_path, simulator)
    run(spec)
    sent = len(simulator.requests)
    run(structured(tmp_path, simulator, max_repairs=5))
    assert len(simulator.requests) == sent  # resuming sends nothing
    run(structured(tmp_path, simulator, structured="prompt"))
    assert len(simulator.requests) == sent + len(REVIEWS)  # a new way of asking
    narrower = {**SCHEMA, "properties": {**SCHEMA["properties"]}}
    narrower["properties"]["sentiment"] = {"enum": ["positive", "negative"]}
    run(structured(tmp_path, simulator, schema=narrower))
    assert len(simulator.requests) == sent + 2 * len(REVIEWS)


def test_labels_and_multi_labels_are_columns_label_and_labels(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path / "one", simulator, labels="positive,negative")
    assert run(spec).exit_code == 0
    assert set(read_results(spec)["label"]) <= {"positive", "negative"}
    multi = make_spec(tmp_path / "set", simulator, multi_labels=["a", "b", "c"])
    assert run(multi).exit_code == 0
    labels = read_results(multi)["labels"]
    assert labels.dtype == pl.List(pl.String)
    assert all(set(found) <= {"a", "b", "c"} for found in labels)


def test_twenty_percent_invalid_answers_end_ok_with_two_repairs(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": f"r{i}", "review": f"review number {i}"} for i in range(60)]
    simulator.reset(
        seed=7,
        invalid_answer_rates={
            "enum": 0.05,
            "missing": 0.05,
            "type": 0.05,
            "json": 0.05,
        },
    )
    # one at a time: the seeded draws fall on the same attempts every run
    spec = structured(tmp_path, simulator, rows=rows, concurrency=1)
    run(spec)
    results = read_results(spec)
    assert results.filter(pl.col("status") == "ok").height >= 59
    invalid_answers = [r for r in simulator.requests if r.invalid_kind is not None]
    given_up = results.filter(pl.col("status") == "invalid").height
    # every invalid answer was repaired, or ended its row as invalid
    assert int(results["repairs"].sum()) + given_up == len(invalid_answers)
    assert results["cost"].is_not_null().all()


def spawn_structured(
    tmp_path: Path, simulator: SimulatorServer, manifest: Path
) -> subprocess.Popen[str]:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    command = [
        sys.executable,
        "-m",
        "batchkimi",
        "run",
        "-i",
        str(manifest),
        "-o",
        str(tmp_path / "out"),
        "--base-url",
        simulator.url,
        "--model",
        "kimi-k2.5",
        "--prompt",
        "Label: {review}",
        "--schema",
        str(schema),
        "--no-stream",
        *("--rpm", "0", "--tpm", "0"),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_kill_9_between_an_answer_and_its_repair_loses_nothing_paid_for(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The invalid answer is journaled when it arrives; the next run repairs it
    instead of asking the question again, and its tokens stay on the row."""
    manifest = write_manifest(tmp_path / "in", REVIEWS[:1])
    simulator.script("kimi-k2.5", [invalid_answer("enum"), stall(30.0)])
    process = spawn_structured(tmp_path, simulator, manifest)
    try:
        wait_for(
            lambda: (
                any(r.get("validation_error") for r in journal_records(tmp_path))
                and len(simulator.requests) == 2
            ),
            "the invalid answer journaled and its repair sent",
        )
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    first = simulator.requests[0]
    (pending,) = journal_records(tmp_path)
    assert pending["status"] == "invalid" and pending["retryable"] is True
    assert pending["input_tokens"] == first.input_tokens  # paid, and kept

    resumed = spawn_structured(tmp_path, simulator, manifest)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    again = simulator.requests[2]
    assert messages_of(again.body)[-1]["role"] == "tool"  # a repair, not a new ask
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    row = results.row(0, named=True)
    assert (row["status"], row["repairs"]) == ("ok", 1)
    assert row["input_tokens"] == first.input_tokens + again.input_tokens


def test_a_transient_failure_during_repairs_keeps_the_invalid_answer_for_next_time(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script(
        "kimi-k2.5",
        [invalid_answer("enum"), error("InternalError"), error("InternalError")],
    )
    spec = structured(tmp_path, simulator, rows=REVIEWS[:1], max_attempts=2)
    assert run(spec).exit_code == 1
    row = read_results(spec).row(0, named=True)
    assert (row["status"], row["retryable"]) == ("error", True)
    assert row["validation_error"].startswith("enum:")
    paid = row["input_tokens"]
    assert paid > 0
    run(structured(tmp_path, simulator, rows=REVIEWS[:1]))
    row = read_results(spec).row(0, named=True)
    assert (row["status"], row["repairs"]) == ("ok", 1)
    assert row["input_tokens"] > paid  # the first answer's tokens are still counted
    assert messages_of(simulator.requests[-1].body)[-1]["role"] == "tool"
