"""The context cache from the client's side (issue 16, FACTS §6.3): the shared prefix
marked, its first request sent alone, hits and creations recorded and priced, the
saving planned; a prefix too short for a cache is left unmarked, and said so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run
from tests.hostile.conftest import invoke

#: an instruction of about 1,500 tokens as the simulator counts (4 characters each)
LONG = "You label product reviews with care. " * 165
SHORT = "You label product reviews."
ROWS = [{"id": f"r{i}", "review": f"review number {i}, fine"} for i in range(24)]


def system_of(body: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = body["messages"][0]
    return first


def test_the_shared_prefix_is_marked_and_its_first_request_goes_alone(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(seed=3, implicit_cache_hit_rate=0.0)
    spec = make_spec(
        tmp_path,
        simulator,
        rows=ROWS,
        system=LONG,
        cache="explicit",
        model="kimi-k2.5",
        concurrency=8,
    )
    assert run(spec).exit_code == 0
    content = system_of(simulator.requests[0].body)["content"]
    assert content[-1]["cache_control"] == {"type": "ephemeral"}
    created = [r for r in simulator.requests if r.cache_creation_tokens]
    hits = [r for r in simulator.requests if r.cached_tokens]
    assert len(created) == 1  # one creation: the others waited for it
    assert created[0] is simulator.requests[0]
    assert len(hits) == len(ROWS) - 1

    results = read_results(spec)
    assert (
        int(results["cache_creation_tokens"].sum()) == created[0].cache_creation_tokens
    )
    assert int(results["cached_tokens"].sum()) == sum(r.cached_tokens for r in hits)
    # kimi-k2.5: ¥4 a million input tokens; a hit costs 10%, a creation 125%
    row = results.filter(pl.col("cached_tokens") > 0).row(0, named=True)
    fresh = row["input_tokens"] - row["cached_tokens"]
    expected = (
        fresh * 4 + row["cached_tokens"] * 0.4 + row["output_tokens"] * 21
    ) / 1e6
    assert abs(row["cost"] - expected) < 1e-9


def test_a_prefix_under_1024_tokens_gets_no_marker_and_a_note(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, rows=ROWS[:3], system=SHORT, cache="explicit")
    assert run(spec).exit_code == 0
    for logged in simulator.requests:
        assert "cache_control" not in json.dumps(logged.body)
    plan = invoke(
        "plan",
        "-i",
        str(spec.reading.input),
        "--prompt",
        "{review}",
        "--system",
        SHORT,
        "--cache",
        "explicit",
    )
    assert "3 rows have no shared prefix" in plan.stdout


def test_the_boundary_is_1024_tokens_by_batchkimis_estimate(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """batchkimi estimates three characters a token (it errs high) and four for a
    turn's role, so a system message of 3,057 characters (4 + 1,019 = 1,023
    tokens) is left unmarked, and one of 3,058 (1,024) is marked."""
    for chars, marked in ((3_057, False), (3_058, True)):
        simulator.reset(seed=1)
        folder = tmp_path / str(chars)
        spec = make_spec(
            folder, simulator, rows=ROWS[:1], system="x" * chars, cache="explicit"
        )
        run(spec)
        body = json.dumps(simulator.requests[0].body)
        assert ("cache_control" in body) is marked, chars


def test_plan_estimates_what_the_explicit_cache_saves(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, rows=ROWS, system=LONG, model="kimi-k2.5")
    args = [
        "plan",
        "-i",
        str(spec.reading.input),
        "--prompt",
        "{review}",
        "--system",
        LONG,
        "--model",
        "kimi-k2.5",
        "--json",
    ]
    plain = json.loads(invoke(*args).stdout)["models"]["kimi-k2.5"]
    cached = json.loads(invoke(*args, "--cache", "explicit").stdout)["models"][
        "kimi-k2.5"
    ]
    assert plain["cost_without_cache"] is None
    assert cached["cache_creation_tokens"] > 0
    assert cached["cached_tokens"] == cached["cache_creation_tokens"] * (len(ROWS) - 1)
    assert cached["cost"] < cached["cost_without_cache"] == plain["cost"]
