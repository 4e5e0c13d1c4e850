"""The command line as a user meets it: help, exit codes, messages, and the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer, error
from batchkimi.store.results import RESULTS_SCHEMA
from tests.helpers import run_args

ROOT = Path(__file__).resolve().parents[2]

# DESIGN.md, "Output": the columns every results.parquet has, in this order
DESIGN_COLUMNS = [
    *("id", "status", "model", "api", "content", "reasoning_content", "finish_reason"),
    *("input_tokens", "output_tokens", "reasoning_tokens", "cached_tokens"),
    *("total_tokens", "cost", "currency", "attempts", "latency_ms", "ttft_ms"),
    *("request_id", "error_code", "error_message", "http_status", "started_at"),
    "finished_at",
]
# DESIGN.md, "Commands": the options a user will look for on `run` (built so far)
RUN_OPTIONS = [
    *("--input", "--output", "--model", "--prompt", "--system", "--api", "--region"),
    *("--workspace-id", "--base-url", "--thinking", "--no-thinking", "--stream"),
    *("--no-stream", "--concurrency", "--max-attempts", "--timeout", "--limit"),
    *("--retry-errors", "--quiet"),
]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_help_explains_every_option_and_the_exit_codes() -> None:
    code, out, _ = invoke("run", "--help")
    assert code == 0
    for option in RUN_OPTIONS:
        assert re.search(rf"{option}\b", out), option
    assert "Exit codes" in out and "--simulate" in out


def test_results_schema_keeps_design_columns_in_order() -> None:
    assert list(RESULTS_SCHEMA)[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS


def test_models_lists_the_catalogue_with_retirement_and_prices() -> None:
    code, out, _ = invoke("models", "--json")
    assert code == 0
    models = {m["name"]: m for m in json.loads(out)}
    assert models["kimi-k2-thinking"]["status"] == "retired"
    assert models["kimi-k2-thinking"]["retired_on"] == "2026-07-09"
    assert models["kimi-k2.7-code"]["thinking"] == "always"
    assert models["kimi-k2.5"]["prices"]["cn-beijing"]["input"] == 4.0
    assert models["kimi-k2.6"]["prices"] == {}  # no official price: none is made up
    code, table, _ = invoke("models")
    assert code == 0 and "kimi-k2.6" in table and "retired" in table


def test_a_retired_model_exits_2_before_anything_is_sent(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    code, _, err = invoke(*run_args(tmp_path, simulator, "-m", "kimi-k2-thinking"))
    assert code == 2
    assert "retired on 2026-07-09" in err and "qwen3" in err
    assert simulator.requests == []
    assert not (tmp_path / "out").exists()


def test_thinking_off_for_kimi_k27_code_exits_2(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    code, _, err = invoke(
        *run_args(tmp_path, simulator, "-m", "kimi-k2.7-code", "--no-thinking")
    )
    assert code == 2 and "always thinks" in err
    assert simulator.requests == []


def test_a_template_column_the_manifest_lacks_exits_2_naming_it(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    code, _, err = invoke(*run_args(tmp_path, simulator, prompt="Label: {text}"))
    assert code == 2
    assert 'row 1, column "text"' in err and "id, review" in err
    assert simulator.requests == []


def test_rows_sharing_an_id_are_all_kept_and_the_user_is_told(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [
        {"id": "a", "review": "good"},
        {"id": "a", "review": "bad"},
        {"id": "b", "review": "fine"},
    ]
    code, _, err = invoke(*run_args(tmp_path, simulator, rows=rows))
    assert code == 0
    assert "2 rows share their id with another row (such as 'a')" in err
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["id"].to_list() == ["a", "a", "b"]
    assert results["review"].to_list() == ["good", "bad", "fine"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["rows_with_shared_id"] == 2


def test_identical_rows_without_ids_raise_no_shared_id_note(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"review": "good"}, {"review": "good"}, {"review": "bad"}]
    code, _, err = invoke(*run_args(tmp_path, simulator, rows=rows))
    assert code == 0
    assert "share their id" not in err
    assert "1 row asked exactly what an earlier row asked" in err


def test_no_key_exits_2_and_says_how_to_get_going(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    code, _, err = invoke(*run_args(tmp_path, simulator))
    assert code == 2 and "DASHSCOPE_API_KEY" in err and "--simulate" in err


def test_the_key_appears_in_no_output_log_or_error(
    tmp_path: Path, simulator: SimulatorServer, canary_key: str
) -> None:
    code, out, err = invoke(*run_args(tmp_path, simulator))
    assert code == 0
    simulator.script("*", [error("InvalidApiKey")])
    fatal_code, fatal_out, fatal_err = invoke(*run_args(tmp_path / "2", simulator))
    assert fatal_code == 5 and "DASHSCOPE_API_KEY" in fatal_err
    assert all(
        r.headers["authorization"] == f"Bearer {canary_key}" for r in simulator.requests
    )
    texts = [out, err, fatal_out, fatal_err]
    texts += [
        path.read_bytes().decode("utf-8", "replace")
        for path in tmp_path.rglob("*")
        if path.is_file()
    ]
    assert len(texts) > 6
    assert not any(canary_key in text for text in texts)
    assert not any(canary_key[-12:] in text for text in texts)


def test_readme_quick_start_runs_the_sample_job_end_to_end(tmp_path: Path) -> None:
    """The README's first command, as a real process on the bundled simulator."""
    out = tmp_path / "labels"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchkimi",
            "run",
            str(ROOT / "jobs/label_reviews.toml"),
            "--simulate",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    manifest = pl.read_csv(ROOT / "sample_data/reviews.csv")
    results = pl.read_parquet(out / "results.parquet")
    assert results["id"].to_list() == manifest["review_id"].to_list()
    assert set(results["status"]) == {"ok"}
    assert set(results["content"]) <= {"positive", "negative", "mixed"}
    assert "rows: 300 ok" in done.stderr and "cost:" in done.stderr
    assert done.stdout == ""  # stdout is kept clean for what users pipe
