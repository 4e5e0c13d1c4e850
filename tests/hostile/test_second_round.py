"""What a hostile tester found after the first round (issues 11 and 12), each pinned:
schemas that reach outside themselves or can never be met, prices that switch a
budget off, credentials in a URL, numbers no column can hold, and the rest."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batchkimi.answers.check import AnswerChecker, Invalid
from batchkimi.answers.schema import answer_spec
from batchkimi.records import Completion, ToolCall
from batchkimi.simulator import SimulatorServer
from batchkimi.store import journal as journal_module
from tests.helpers import REVIEWS, make_spec, read_results, run
from tests.hostile.conftest import Job, invoke


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A file server on loopback that counts what it is asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"type": "integer"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def manifest(folder: Path) -> Path:
    path = folder / "m.csv"
    path.write_text("id,text\nr1,hi\nr2,yo\n")
    return path


@pytest.mark.parametrize("ref", ["{url}/x.json", "file:///etc/passwd", "other.json"])
def test_a_schema_never_reaches_outside_itself(
    tmp_path: Path, counting_server: tuple[str, list[str]], ref: str
) -> None:
    url, asked = counting_server
    schema = tmp_path / "s.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"a": {"$ref": ref.format(url=url)}},
                "required": ["a"],
            }
        )
    )
    for command in ("plan", "run"):
        result = invoke(
            command,
            "-i",
            str(manifest(tmp_path)),
            "-o",
            str(tmp_path / "o"),
            "--prompt",
            "{text}",
            "--schema",
            str(schema),
        )
        assert result.exit_code == 2, result.output
        assert "points outside the schema" in result.stderr
        assert str(schema) in result.stderr
    assert asked == []  # nothing was fetched


def test_a_top_level_ref_keeps_its_rules(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    schema = {
        "$ref": "#/$defs/o",
        "$defs": {
            "o": {
                "type": "object",
                "properties": {"k": {"type": "boolean"}},
                "required": ["k"],
            }
        },
    }
    spec = answer_spec(
        schema=schema,
        labels=None,
        multi_labels=None,
        mode=None,
        label_case=None,
        max_repairs=None,
    )
    assert spec is not None and not spec.wrapped
    checker = AnswerChecker(spec)
    wrong = Completion(
        "", "", "tool_calls", None, None, None, (ToolCall("c", "answer", '{"k": "x"}'),)
    )
    assert isinstance(checker.check(wrong), Invalid)
    job = make_spec(tmp_path, simulator, schema=schema)
    assert run(job).exit_code == 0
    results = read_results(job)
    assert str(results.schema["k"]) == "Boolean"
    assert results["k"].is_not_null().all()


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "object", "properties": {"l": {"enum": []}}}, "enum is empty"),
        (
            {"type": "integer", "minimum": 10, "maximum": 1},
            "minimum 10 is above maximum 1",
        ),
        ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "is above"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5"),
        ({"$schema": "http://example.com/my-draft", "type": "string"}, "draft"),
    ],
)
def test_a_schema_no_answer_can_meet_is_refused_up_front(
    tmp_path: Path, schema: dict, words: str
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    result = invoke(
        "plan",
        "-i",
        str(manifest(tmp_path)),
        "--prompt",
        "{text}",
        "--schema",
        str(path),
    )
    assert result.exit_code == 2
    assert words in result.stderr


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("input = inf\noutput = 27.0", "finite number"),
        ("input = nan\noutput = 27.0", "finite number"),
        ("input = 1e300\noutput = 27.0", "less than or equal to 1000000"),
    ],
)
def test_a_price_that_is_no_price_is_refused(
    job: Job, simulator: SimulatorServer, entry: str, words: str
) -> None:
    prices = job.folder / "p.toml"
    prices.write_text(f'[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "CNY"\n{entry}\n')
    for command in ("plan", "run"):
        result = invoke(command, str(job.write(prices=str(prices), max_cost=0.000001)))
        assert result.exit_code == 2
        assert words in result.stderr
    assert simulator.requests == []


def test_a_currency_must_be_a_currency_code(job: Job) -> None:
    prices = job.folder / "p.toml"
    prices.write_text(
        '[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "\\u001b[2J"\ninput = 1.0\noutput = 2.0\n'
    )
    result = invoke("plan", str(job.write(prices=str(prices))))
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr


def test_a_url_with_credentials_is_refused_and_never_written(
    job: Job, simulator: SimulatorServer
) -> None:
    url = simulator.url.replace("http://", "http://user:pass@")
    for command in ("plan", "run"):
        result = invoke(command, str(job.write(base_url=url)))
        assert result.exit_code == 2
        assert "user name or password" in result.stderr
        assert "pass@" not in result.stderr
    assert not (job.output / "summary.json").exists()
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ('{"n": 99999999999999999999999}', "does not fit a 64-bit integer"),
        ('{"n": -9223372036854775809}', "does not fit a 64-bit integer"),
        ('{"n": 1e400}', "not a finite number"),
    ],
)
def test_a_number_no_column_can_hold_is_an_invalid_answer(
    arguments: str, words: str
) -> None:
    spec = answer_spec(
        schema={"type": "object", "properties": {"n": {"type": "number"}}},
        labels=None,
        multi_labels=None,
        mode=None,
        label_case=None,
        max_repairs=None,
    )
    assert spec is not None
    answer = Completion(
        "", "", "tool_calls", None, None, None, (ToolCall("c", "answer", arguments),)
    )
    verdict = AnswerChecker(spec).check(answer)
    assert isinstance(verdict, Invalid)
    assert verdict.cause == "range"
    assert words in verdict.message


def test_a_part_holding_text_and_an_image_fails_its_row(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    cell = [{"role": "user", "content": [{"text": "hi", "image": "/any/path.png"}]}]
    spec = make_spec(
        tmp_path,
        simulator,
        rows=[{"id": "x", "messages": json.dumps(cell)}],
        fmt="jsonl",
        prompt=None,
    )
    run(spec)
    row = read_results(spec).row(0, named=True)
    assert row["error_code"] == "invalid_messages"
    assert "both text and image" in row["error_message"]
    assert simulator.requests == []


@pytest.mark.parametrize(
    "name",
    ["reviews[2024].csv", "what?.csv", "star*.csv", "w[1].jsonl", "p[1].parquet"],
)
def test_a_manifest_named_like_a_pattern_is_a_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text('{"id": "r1", "text": "hi"}\n')
    elif name.endswith(".parquet"):
        pl.DataFrame({"id": ["r1"], "text": ["hi"]}).write_parquet(path)
    else:
        path.write_text("id,text\nr1,hi\n")
    result = invoke("plan", "-i", str(path), "--prompt", "{text}")
    assert result.exit_code == 0, result.stderr
    assert "1 to send" in result.stdout


def test_plan_into_a_file_or_a_full_stdout_is_a_message_not_a_traceback(
    tmp_path: Path,
) -> None:
    taken = tmp_path / "existing.txt"
    taken.write_text("")
    result = invoke(
        "plan", "-i", str(manifest(tmp_path)), "-o", str(taken), "--prompt", "{text}"
    )
    assert result.exit_code == 2
    assert "cannot save the plan" in result.stderr
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "batchkimi", "models"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot write the output" in done.stderr


def test_plan_refuses_a_key_run_would_refuse(tmp_path: Path) -> None:
    args = ("plan", "-i", str(manifest(tmp_path)), "--prompt", "{text}")
    assert invoke(*args, env={"DASHSCOPE_API_KEY": "sk-abc\ndef"}).exit_code == 2
    assert invoke(*args, env={"DASHSCOPE_API_KEY": "sk abc"}).exit_code == 2
    assert invoke(*args, env={"DASHSCOPE_API_KEY": ""}).exit_code == 0  # none: fine


def test_an_empty_job_file_asks_for_the_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = invoke("plan", str(empty))
    assert result.exit_code == 2
    assert "no input given: set --input" in result.stderr


def test_plan_names_the_columns_as_run_writes_them(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    schema = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "text": {"type": "string"}},
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    plan = invoke(
        "plan",
        "-i",
        str(manifest(tmp_path)),
        "--prompt",
        "{text}",
        "--schema",
        str(path),
        "--json",
    )
    columns = json.loads(plan.stdout)["answer"]["columns"]
    assert list(columns) == ["answer_status", "answer_text"]
    spec = make_spec(
        tmp_path / "run",
        simulator,
        input=manifest(tmp_path),
        prompt="{text}",
        schema=schema,
    )
    run(spec)
    assert {"answer_status", "answer_text"} <= set(read_results(spec).columns)


@pytest.mark.parametrize(
    ("labels", "case", "words"),
    [
        ("a,,b", None, "non-empty"),
        ("pos,Pos", "insensitive", "once case is folded"),
    ],
)
def test_labels_that_cannot_be_told_apart_are_refused(
    tmp_path: Path, labels: str, case: str | None, words: str
) -> None:
    args = [
        "plan",
        "-i",
        str(manifest(tmp_path)),
        "--prompt",
        "{text}",
        "--labels",
        labels,
    ]
    if case:
        args += ["--label-case", case]
    result = invoke(*args)
    assert result.exit_code == 2
    assert words in result.stderr


def test_a_frames_folder_outside_the_media_root_says_so(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rows = [{"id": "f", "frames": str(outside)}]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="?")
    run(spec)
    row = read_results(spec).row(0, named=True)
    assert "outside the media root" in row["error_message"]


def test_an_output_folder_named_like_a_pattern_works(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEAL_BYTES", 1)  # segments at every end
    out = tmp_path / "out[1]"
    spec = make_spec(tmp_path, simulator, output=out)
    assert run(spec).exit_code == 0
    assert list((out / ".batchkimi" / "segments").glob("*.parquet"))
    assert run(spec).exit_code == 0  # and resumes
    assert read_results(spec).height == 5
    rows = [*REVIEWS, {"id": "r5", "review": "Came today."}]
    more = make_spec(tmp_path, simulator, output=out, rows=rows)
    assert run(more).exit_code == 0  # a new row: results built from segments again
    assert read_results(more).height == 6
    assert invoke("report", str(out)).exit_code == 0


def test_costs_in_two_currencies_are_never_added(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    prices = tmp_path / "p.toml"
    prices.write_text(
        '[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "USD"\ninput = 1.0\noutput = 2.0\n'
    )
    rows = [
        {"id": "a", "review": "x", "model": "kimi-k2.6"},
        {"id": "b", "review": "y", "model": "kimi-k2.5"},
    ]
    spec = make_spec(tmp_path, simulator, rows=rows, prices=prices)
    run(spec)
    summary = json.loads((spec.output / "summary.json").read_text())["overall"]
    assert summary["cost"] is None
    assert set(summary["cost_by_currency"]) == {"CNY", "USD"}
