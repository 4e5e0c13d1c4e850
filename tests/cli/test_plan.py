"""`batchkimi plan`: the run's own checks and an estimate that holds, with nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, write_manifest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_JOB = str(ROOT / "jobs" / "label_reviews.toml")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_the_plan_of_the_sample_job_holds_against_its_run(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    code, text = invoke("plan", SAMPLE_JOB, "-o", out, "--json")
    assert code == 0, text
    plan = json.loads(text)
    assert (plan["rows"], plan["to_send"], plan["problem_count"]) == (300, 250, 0)
    k25 = plan["models"]["kimi-k2.5"]
    # kimi-k2.5 in Beijing: CNY 4 in, 21 out per million; max_tokens = 16, no thinking
    assert k25["output_tokens"] == k25["worst_output_tokens"] == 250 * 16
    expected = (k25["input_tokens"] * 4 + k25["output_tokens"] * 21) / 1e6
    assert k25["cost"] == pytest.approx(expected, abs=1e-6)
    assert k25["currency"] == "CNY"
    # 250 requests at 98% of 500 RPM
    assert plan["seconds_at_limits"] == pytest.approx(250 / (500 * 0.98 / 60))
    assert (tmp_path / "out" / "plan.json").is_file()

    code, text = invoke("run", SAMPLE_JOB, "-o", out, "--simulate", "--quiet")
    assert code == 0, text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    actual = summary["overall"]
    assert actual["rows_sent_this_run"] == plan["to_send"]
    # 50 rows repeat an earlier row's request: they share its answer, and its bill
    assert (actual["rows"], actual["requests"]) == (300, 250)
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    once = results.unique(subset="fingerprint")
    assert actual["cost"] == pytest.approx(once["cost"].sum(), abs=1e-6)
    assert actual["cost"] < results["cost"].sum()
    assert actual["cost"] <= k25["worst_cost"]
    # the estimate errs high, but not wildly: within a factor of two of the bill
    assert actual["tokens"]["input_tokens"] <= k25["input_tokens"]
    assert actual["tokens"]["input_tokens"] >= k25["input_tokens"] / 2

    code, text = invoke("plan", SAMPLE_JOB, "-o", out, "--json")
    again = json.loads(text)
    assert (again["to_send"], again["already_done"]) == (0, 300)  # duplicates too


def test_problem_rows_are_listed_with_row_and_column_and_nothing_is_sent(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{**row, "temperature": "0.2"} for row in REVIEWS]
    rows[1]["temperature"] = "hot"
    rows[3]["review"] = ""
    manifest = write_manifest(tmp_path / "in", rows)
    code, text = invoke(
        *("plan", "-i", str(manifest), "-o", str(tmp_path / "out")),
        *("--prompt", "Label: {review}", "--base-url", simulator.url),
    )
    assert code == 1, text
    text = " ".join(text.split())  # as wrapped for an 80-column terminal
    assert 'row 2 (id "r1")' in text and "temperature" in text
    assert "3 to send" in text and "2 with problems" in text
    assert simulator.requests == []  # a plan sends nothing


def test_unknown_prices_are_said_and_a_price_file_fills_them(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    args = ("plan", "-i", str(manifest), "-o", str(tmp_path / "out"), "-m", "kimi-k2.6")
    code, text = invoke(*args, "--prompt", "{review}")
    assert code == 0
    text = " ".join(text.split())
    assert "kimi-k2.6: cost unknown: no Model Studio price published" in text
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "CNY"\ninput = 6.5\noutput = 27\n'
    )
    code, text = invoke(
        *args, "--prompt", "{review}", "--prices", str(prices), "--json", "--thinking"
    )
    k26 = json.loads(text)["models"]["kimi-k2.6"]
    # thinking: 256 + 1,024 expected output tokens a request
    assert k26["output_tokens"] == 5 * (256 + 1024)
    assert k26["cost"] == pytest.approx(
        (k26["input_tokens"] * 6.5 + k26["output_tokens"] * 27) / 1e6, abs=1e-6
    )


def test_rows_over_the_models_input_limit_are_warned_about_but_planned(
    tmp_path: Path,
) -> None:
    """1,100 frames at the planned rate per frame are more than any Kimi context
    holds: the plan warns (it is an estimate, so the row still counts as sendable);
    a short frame list and a video URL of unknown length raise no warning."""
    frames = [f"https://frames.example/{i}.jpg" for i in range(1100)]
    rows = [
        {"id": "long", "frames": json.dumps(frames)},
        {"id": "short", "frames": json.dumps(frames[:8])},
        {"id": "url", "video": "https://videos.example/archive.mp4"},
    ]
    for row in rows:
        row.setdefault("frames", "")
        row.setdefault("video", "")
    manifest = write_manifest(tmp_path / "in", rows)
    args = ("plan", "-i", str(manifest), "-o", str(tmp_path / "out"), "--prompt", "?")
    code, text = invoke(*args, "-m", "kimi-k2.5", "--json")
    assert code == 0, text
    plan = json.loads(text)
    assert (plan["to_send"], plan["problem_count"], plan["warning_count"]) == (3, 0, 1)
    (warning,) = plan["warnings"]
    assert (warning["row"], warning["id"], warning["limit"]) == (1, "long", 260_096)
    assert "kimi-k2.5's maximum input of 260,096" in warning["message"]
    code, text = invoke(*args, "-m", "kimi-k2.5")
    assert 'warning row 1 (id "long")' in " ".join(text.split())
