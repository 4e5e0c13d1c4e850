"""The simulator against FACTS.md itself: exact framing, error bodies, limits, knobs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from batchkimi.simulator import Behaviour, Limits, SimulatorServer, error
from batchkimi.simulator.limits import RateLimiter

NATIVE_MM = "/api/v1/services/aigc/multimodal-generation/generation"
NATIVE_TEXT = "/api/v1/services/aigc/text-generation/generation"
COMPAT = "/compatible-mode/v1/chat/completions"
AUTH = {"Authorization": "Bearer sk-test"}


def native_body(model: str = "kimi-k2.6", **parameters: Any) -> dict[str, Any]:
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": [{"text": "hello"}]}]},
        "parameters": {"result_format": "message", **parameters},
    }


def post(
    simulator: SimulatorServer, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return httpx.post(
        simulator.url + path, json=body, headers={**AUTH, **headers}, timeout=10
    )


def test_native_stream_framing_is_byte_exact(simulator: SimulatorServer) -> None:
    """FACTS §2.2: id:N, event:result, :HTTP_STATUS/200, data: with no space, "null"
    finish reasons until the end, cumulative usage, and no [DONE]."""
    response = post(
        simulator,
        NATIVE_MM,
        native_body(incremental_output=True, enable_thinking=True),
        **{"X-DashScope-SSE": "enable"},
    )
    assert response.headers["content-type"] == "text/event-stream;charset=UTF-8"
    assert response.headers["x-request-id"]
    frames = response.text.split("\n\n")
    assert frames[-1] == "" and "[DONE]" not in response.text
    events = [f.split("\n") for f in frames[:-1]]
    outputs = []
    for number, lines in enumerate(events, start=1):
        assert lines[:3] == [f"id:{number}", "event:result", ":HTTP_STATUS/200"]
        assert lines[3].startswith("data:{")
        data = json.loads(lines[3][5:])
        choice = data["output"]["choices"][0]
        assert isinstance(choice["message"]["content"], list)  # multimodal path
        assert data["request_id"] == response.headers["x-request-id"]
        outputs.append((choice["finish_reason"], data["usage"]["output_tokens"]))
    assert [f for f, _ in outputs[:-1]] == ["null"] * (len(outputs) - 1)
    assert outputs[-1][0] == "stop"
    assert [t for _, t in outputs] == sorted(t for _, t in outputs)


def test_compat_stream_framing_ends_with_usage_then_done(
    simulator: SimulatorServer,
) -> None:
    body = {
        "model": "kimi-k2.6",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = post(simulator, COMPAT, body)
    frames = response.text.split("\n\n")
    assert all(f.startswith("data: ") for f in frames[:-1])
    assert frames[-2] == "data: [DONE]"
    usage_chunk = json.loads(frames[-3][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    finish = json.loads(frames[-4][6:])["choices"][0]["finish_reason"]
    assert finish == "stop"


def test_text_path_content_is_a_string_and_multimodal_a_list(
    simulator: SimulatorServer,
) -> None:
    mm = post(simulator, NATIVE_MM, native_body()).json()
    assert isinstance(mm["output"]["choices"][0]["message"]["content"], list)
    assert "code" not in mm and "status_code" not in mm  # FACTS §2.1


def test_a_model_on_the_wrong_native_path_is_a_url_error(
    simulator: SimulatorServer,
) -> None:
    plain = post(simulator, NATIVE_TEXT, native_body())
    assert plain.status_code == 400
    assert plain.json()["code"] == "InvalidParameter"
    assert plain.json()["message"].startswith("url error, please check url")
    streamed = post(
        simulator,
        NATIVE_TEXT,
        native_body(incremental_output=True),
        **{"X-DashScope-SSE": "enable"},
    )
    # FACTS §1.1: on a stream the refusal comes as a 200 carrying an event:error frame
    assert streamed.status_code == 200
    assert streamed.text.startswith("id:1\nevent:error\n:HTTP_STATUS/400\ndata:{")


def test_native_stream_errors_are_sse_framed_and_labelled_so(
    simulator: SimulatorServer,
) -> None:
    simulator.script("*", [error("Throttling.RateQuota")])
    response = post(
        simulator,
        NATIVE_MM,
        native_body(incremental_output=True),
        **{"X-DashScope-SSE": "enable"},
    )
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("id:1\nevent:error\n:HTTP_STATUS/429\ndata:")
    data = json.loads(response.text.split("data:", 1)[1])
    assert set(data) == {"request_id", "code", "message"}


def test_thinking_without_incremental_output_is_refused_natively(
    simulator: SimulatorServer,
) -> None:
    response = post(
        simulator,
        NATIVE_MM,
        native_body(enable_thinking=True),
        **{"X-DashScope-SSE": "enable"},
    )
    assert response.status_code == 400
    assert "incremental_output" in response.text


def test_requests_without_a_key_are_refused(simulator: SimulatorServer) -> None:
    response = httpx.post(simulator.url + NATIVE_MM, json=native_body(), timeout=10)
    assert response.status_code == 401 and response.json()["code"] == "InvalidApiKey"


def test_oss_urls_need_the_resolve_header_and_an_upload(
    simulator: SimulatorServer,
) -> None:
    body = native_body()
    body["input"]["messages"][0]["content"].insert(
        0, {"image": "oss://dashscope-instant/x/y.png"}
    )
    no_header = post(simulator, NATIVE_MM, body)
    unknown = post(
        simulator, NATIVE_MM, body, **{"X-DashScope-OssResourceResolve": "enable"}
    )
    assert no_header.status_code == unknown.status_code == 400
    assert "X-DashScope-OssResourceResolve" in no_header.json()["message"]
    assert "does not exist" in unknown.json()["message"]


# --- limits -----------------------------------------------------------------------


def test_rpm_is_enforced_per_second_with_a_full_minute_of_patience() -> None:
    limiter = RateLimiter(Limits(rpm=120, window_s=1.0))  # 2 per second
    admitted = [limiter.admit("m", 10, now=100.0) for _ in range(3)]
    assert admitted == [None, None, "Throttling.RateQuota"]
    assert limiter.admit("m", 10, now=100.5) is None  # half a second refills one
    assert limiter.admit("other-model", 10, now=100.5) is None  # limits are per model
    minute = [limiter.admit("m", 10, now=101 + i * 0.5) for i in range(120)]
    assert minute.count(None) == 120  # a smooth 120/min is never throttled


def test_tpm_throttles_with_allocation_quota_and_burst_with_burst_rate() -> None:
    tokens = RateLimiter(Limits(tpm=6000, window_s=1.0))  # 100 tokens per second
    assert tokens.admit("m", 80, now=0.0) is None
    assert tokens.admit("m", 80, now=0.1) == "Throttling.AllocationQuota"
    burst = RateLimiter(Limits(burst_rps=3))
    codes = [burst.admit("m", 1, now=5.0 + i * 0.01) for i in range(4)]
    assert codes == [None, None, None, "Throttling.BurstRate"]
    assert burst.admit("m", 1, now=6.1) is None


def test_limits_answer_429_with_the_code_of_the_budget_hit(
    simulator: SimulatorServer,
) -> None:
    simulator.reset(limits=Limits(rpm=60, window_s=1.0))
    statuses = [
        post(
            simulator,
            COMPAT,
            {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]},
        )
        for _ in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 429, 429]
    assert statuses[1].json()["error"]["code"] == "limit_requests"
    assert "retry-after" not in statuses[1].headers  # FACTS §2.1: none is sent


# --- knobs ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_answers_and_faults() -> None:
    def session(seed: int) -> list[tuple[int, str]]:
        behaviour = Behaviour(seed=seed, error_rates={"InternalError": 0.3})
        with SimulatorServer.running(behaviour=behaviour) as server:
            out = []
            for i in range(12):
                body = {
                    "model": "kimi-k2.6",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                }
                response = post(server, COMPAT, body)
                out.append((response.status_code, response.text.split('"created"')[0]))
            return out

    first, again, other = session(7), session(7), session(8)
    assert first == again
    assert first != other
    assert {status for status, _ in first} == {200, 500}


def test_the_simulator_command_prints_its_url_first() -> None:
    command = [
        sys.executable,
        "-m",
        "batchkimi",
        "simulator",
        "--port",
        "0",
        "--rpm",
        "600",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            body = {
                "model": "kimi-k2.5",
                "messages": [{"role": "user", "content": "hi"}],
            }
            response = httpx.post(url + COMPAT, headers=AUTH, timeout=10, json=body)
            assert response.status_code == 200
        finally:
            process.terminate()


@pytest.mark.parametrize(
    "knob", ["--error-rate InternalError=2", "--error-rate Nope=0.1"]
)
def test_bad_knob_values_are_refused(knob: str) -> None:
    from click.testing import CliRunner

    from batchkimi.cli import cli

    result = CliRunner().invoke(cli, ["simulator", *knob.split()])
    assert result.exit_code == 2


def test_more_output_than_the_model_gives_is_refused_with_the_range(
    simulator: SimulatorServer,
) -> None:
    """FACTS §3.2 and §6.2: kimi-k2.5 answers at most 32,768 tokens; asking more is a
    400 InvalidParameter naming the range, in both APIs. kimi-k2.6 has no documented
    limit, so the simulator holds it to none."""
    native = post(simulator, NATIVE_MM, native_body("kimi-k2.5", max_tokens=40_000))
    assert native.status_code == 400
    assert native.json()["code"] == "InvalidParameter"
    assert native.json()["message"] == "Range of max_tokens should be [1, 32768]"
    compat = post(
        simulator,
        COMPAT,
        {
            "model": "kimi-k2.5",
            "max_tokens": 40_000,
            "messages": [{"role": "user", "content": "hello"}],
        },
    )
    assert compat.status_code == 400
    assert compat.json()["error"]["code"] == "invalid_parameter_error"
    assert "Range of max_tokens" in compat.json()["error"]["message"]
    fine = post(simulator, NATIVE_MM, native_body("kimi-k2.6", max_tokens=40_000))
    assert fine.status_code == 200


@pytest.mark.parametrize(("thinking", "limit"), [(False, 260_096), (True, 258_048)])
def test_input_over_the_models_maximum_is_refused_with_the_range(
    simulator: SimulatorServer, thinking: bool, limit: int
) -> None:
    """FACTS §6.2: 'Range of input length should be [1, N]', N the model's maximum
    input, which is smaller when kimi-k2.5 thinks."""
    text = "word " * limit  # five characters a word: a quarter over the limit
    body = native_body("kimi-k2.5", enable_thinking=thinking)
    body["input"]["messages"][0]["content"] = [{"text": text}]
    response = post(simulator, NATIVE_MM, body)
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidParameter"
    assert response.json()["message"] == f"Range of input length should be [1, {limit}]"
    short = post(simulator, NATIVE_MM, native_body("kimi-k2.5"))
    assert short.status_code == 200
