"""``plan`` and ``run`` refuse the same jobs and count the same rows; the smaller
things a user trips on are handled (issue 12)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from batchkimi.cli.console import ProgressDisplay
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, make_spec, run, write_manifest
from tests.hostile.conftest import Job, invoke


def test_plan_and_run_refuse_the_same_jobs(
    job: Job, simulator: SimulatorServer
) -> None:
    for settings, words in (
        ({"model": "kimi-k2.6", "max_cost": 1.0}, "--max-cost needs a price"),
        ({"keep_columns": ["nosuch"]}, "keep_columns names 'nosuch'"),
        ({"rerun": ["bogus"]}, "rerun names 'bogus'"),
        ({"rerun": ["ok"]}, "rerun names 'ok'"),
    ):
        path = job.write(**settings)
        for command in ("plan", "run"):
            result = invoke(command, str(path))
            assert result.exit_code == 2, (command, settings, result.output)
            assert words in result.stderr
    assert simulator.requests == []


def test_rerun_takes_statuses_our_codes_and_the_services_codes(job: Job) -> None:
    path = job.write(rerun=["invalid", "length", "DataInspectionFailed", "http_400"])
    assert invoke("plan", str(path)).exit_code == 0


def test_plan_counts_what_the_run_would_send_under_limit_and_max_cost(
    job: Job, simulator: SimulatorServer
) -> None:
    limited = invoke("plan", str(job.write(limit=2)), "--json")
    plan = json.loads(limited.stdout)
    assert (plan["to_send"], plan["beyond_limit"]) == (2, len(REVIEWS) - 2)
    cheap = job.write(model="kimi-k2.5", max_cost=0.0002, parameters={"max_tokens": 8})
    plan = json.loads(invoke("plan", str(cheap), "--json").stdout)
    assert plan["beyond_budget"] > 0
    assert plan["to_send"] + plan["beyond_budget"] == len(REVIEWS)
    # the run under the same budget sends no more than the plan said
    outcome = invoke("run", str(cheap), "--quiet")
    assert outcome.exit_code == 3
    assert len(simulator.requests) <= plan["to_send"]


def test_plan_without_an_output_plans_every_row_and_saves_nothing(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    result = invoke("plan", "-i", str(manifest), "--prompt", "{review}")
    assert result.exit_code == 0, result.output
    assert f"{len(REVIEWS)} to send" in result.stdout
    assert "not saved" in result.stdout
    assert not (tmp_path / "in" / "plan.json").exists()


def test_plan_simulate_plans_the_simulated_run(job: Job) -> None:
    path = job.write()
    result = invoke("plan", str(path), "--simulate", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["to_send"] == len(REVIEWS)


def test_report_into_a_missing_folder_is_a_message_not_a_traceback(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    result = invoke(
        "report", str(spec.output), "--html", str(tmp_path / "no" / "r.html")
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_report_into_a_closed_pipe_ends_quietly(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    report = subprocess.Popen(
        [sys.executable, "-m", "batchkimi", "report", str(spec.output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert report.stdout is not None
    report.stdout.read(10)
    report.stdout.close()  # as `| head -c 10` does
    _, err = report.communicate(timeout=60)
    assert report.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_the_progress_line_keeps_its_count_and_time_left_on_narrow_terminals() -> None:
    for width in (60, 80, 120):
        screen = io.StringIO()
        display = ProgressDisplay(stream=screen)
        display._console = Console(
            file=screen, width=width, force_terminal=True, color_system=None
        )
        display._live = True
        display.on_start(total_rows=300_000, already_done=0)
        display.tally.failed, display.tally.tokens = 3, 1_234_567
        display.tally.costs = {"CNY": 12.3456}
        assert display._progress is not None and display._task is not None
        display._progress.update(display._task, advance=12_345, stats=display._stats())
        display._progress.refresh()
        last = screen.getvalue().split("\r")[-1]
        assert "12345/300000" in last, (width, last)
        assert "-:--:--" in last  # the time left
        assert len(last.strip().split("\x1b[2K")[-1]) <= width
        display.close()
        assert screen.getvalue().endswith("\x1b[?25h") or "\x1b[2K" in screen.getvalue()


def test_a_run_with_nothing_answered_says_so_instead_of_cost_unknown(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": "a", "review": ""}, {"id": "b", "review": " "}]  # nothing to send
    manifest = write_manifest(tmp_path / "in", rows)
    result = invoke(
        "run",
        "-i",
        str(manifest),
        "-o",
        str(tmp_path / "out"),
        "--prompt",
        "{review}",
        "--model",
        "kimi-k2.5",
        "--base-url",
        simulator.url,
        "--rpm",
        "0",
        "--tpm",
        "0",
    )
    assert result.exit_code == 1
    assert "cost: nothing (no answer was received)" in result.stderr
