"""A labelling job end to end over loopback HTTP: both APIs, stream or not, thinking or not.

Each case checks both sides: what crossed the wire (the simulator's request log) and
what the user gets (results.parquet, summary.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, make_spec, read_results, run

MULTIMODAL = "/api/v1/services/aigc/multimodal-generation/generation"


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_every_row_is_labelled_with_its_audit_trail(
    tmp_path: Path, simulator: SimulatorServer, api: str, stream: bool, thinking: bool
) -> None:
    spec = make_spec(tmp_path, simulator, api=api, stream=stream, thinking=thinking)
    outcome = run(spec)

    assert outcome.exit_code == 0
    results = read_results(spec)
    assert results["id"].to_list() == [r["id"] for r in REVIEWS]  # manifest order
    assert results["review"].to_list() == [r["review"] for r in REVIEWS]  # kept column
    assert set(results["status"]) == {"ok"}
    assert set(results["content"]) <= {"positive", "negative"}
    assert set(results["api"]) == {api}
    assert (results["input_tokens"] > 0).all()
    if thinking:
        assert (results["reasoning_content"].str.len_chars() > 0).all()
        assert (results["reasoning_tokens"] > 0).all()
        assert (results["output_tokens"] > results["reasoning_tokens"]).all()
    else:
        assert results["reasoning_content"].is_null().all()
        assert (results["reasoning_tokens"] == 0).all()

    served = {r.request_id: r for r in simulator.requests}
    assert set(results["request_id"]) == set(served)  # every id is the service's own
    for logged in served.values():
        assert logged.status == 200 and logged.stream is stream
        assert logged.headers["authorization"].startswith("Bearer sk-canary-")
        body = logged.body
        if api == "openai":
            assert logged.path == "/compatible-mode/v1/chat/completions"
            assert body["enable_thinking"] is thinking  # FACTS §4.1: top level
            assert ("stream_options" in body) is stream
        else:
            assert logged.path == MULTIMODAL
            assert body["parameters"]["enable_thinking"] is thinking  # FACTS §1.3
            assert body["parameters"]["result_format"] == "message"
            assert (logged.headers.get("x-dashscope-sse") == "enable") is stream
            assert "stream" not in body

    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["by_status"]["ok"] == len(REVIEWS)
    assert summary["by_model"]["kimi-k2.6"]["rows"] == len(REVIEWS)
    if stream:
        assert results["ttft_ms"].is_not_null().all()


def test_kimi_k25_cost_uses_the_documented_price(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """FACTS §6.3: kimi-k2.5 in Beijing is ¥4 in / ¥21 out per 1M tokens."""
    spec = make_spec(tmp_path, simulator, model="kimi-k2.5", thinking=True)
    run(spec)
    results = read_results(spec)
    expected = (results["input_tokens"] * 4 + results["output_tokens"] * 21) / 1_000_000
    assert ((results["cost"] - expected).abs() < 1e-9).all()
    assert set(results["currency"]) == {"CNY"}
    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["cost"] == pytest.approx(float(expected.sum()), abs=1e-6)


def test_a_model_without_an_official_price_reports_cost_unknown(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator, model="kimi-k2.6")
    run(spec)
    results = read_results(spec)
    assert results["cost"].is_null().all()
    summary = json.loads((spec.output / "summary.json").read_text())
    assert summary["overall"]["cost"] is None
    assert summary["overall"]["rows_without_price"] == len(REVIEWS)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_every_manifest_format_labels_end_to_end(
    tmp_path: Path, simulator: SimulatorServer, fmt: str
) -> None:
    rows = [
        {"id": i, "review": r["review"], "stars": i % 5 + 1}
        for i, r in enumerate(REVIEWS)
    ]
    spec = make_spec(
        tmp_path, simulator, rows=rows, fmt=fmt, prompt="{review} ({stars} stars)"
    )
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 0
    assert results["id"].to_list() == [str(i) for i in range(len(REVIEWS))]
    assert results["stars"].cast(int).to_list() == [r["stars"] for r in rows]
    sent = [r.body["messages"][-1]["content"] for r in simulator.requests]
    assert sorted(sent) == sorted(f"{r['review']} ({r['stars']} stars)" for r in rows)


def test_a_jsonl_row_missing_a_template_key_fails_alone(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": "a", "review": "good"}, {"id": "b"}, {"id": "c", "review": "bad"}]
    spec = make_spec(tmp_path, simulator, rows=rows, fmt="jsonl", prompt="{review}")
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 1
    assert results["status"].to_list() == ["ok", "error", "ok"]
    assert results["error_message"][1].startswith('row 2 (id "b"), column "review"')
    assert len(simulator.requests) == 2
