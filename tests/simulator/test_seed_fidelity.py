"""Issue 16: the simulator against a line-by-line reading of the seed pages (the Kimi
page in English and Japanese, FACTS §1.3, §2.1, §6.5, §7)."""

from __future__ import annotations

import pytest

from batchkimi.simulator import SimulatorServer
from batchkimi.simulator.facts import MODELS, REGIONS
from tests.simulator.wire import events, send


@pytest.mark.parametrize("stream", [False, True])
def test_a_plain_string_question_gets_a_string_answer_on_the_multimodal_path(
    simulator: SimulatorServer, stream: bool
) -> None:
    """The seed's kimi-k2.6 example sends a plain-string user message to
    multimodal-generation and reads ``content`` as a string."""
    question = [{"role": "user", "content": "Who are you?"}]
    listed = [{"role": "user", "content": [{"text": "Who are you?"}]}]
    if not stream:
        answer = send(simulator, "native", question).json()
        content = answer["output"]["choices"][0]["message"]["content"]
        assert isinstance(content, str) and content
        again = send(simulator, "native", listed).json()
        assert again["output"]["choices"][0]["message"]["content"] == [
            {"text": content}
        ]
        return
    chunks = events(
        send(simulator, "native", question, stream=True, enable_thinking=True)
    )
    contents = [c["output"]["choices"][0]["message"]["content"] for c in chunks]
    assert all(isinstance(c, str) for c in contents)
    assert "".join(contents)
    listed_chunks = events(send(simulator, "native", listed, stream=True))
    assert all(
        isinstance(c["output"]["choices"][0]["message"]["content"], list)
        for c in listed_chunks
    )


def test_model_facts_follow_the_seed_tables() -> None:
    # default parameters: only kimi-k2.7-code states a preserve_thinking default
    preserving = {n for n, m in MODELS.items() if m.preserve_thinking_default}
    assert preserving == {"kimi-k2.7-code"}
    assert MODELS["kimi-k2.6"].preserve_thinking_default is None
    thinking = {n: m.enable_thinking_default for n, m in MODELS.items()}
    assert thinking["kimi-k2.7-code"] is True
    assert thinking["kimi-k2.6"] is thinking["kimi-k2.5"] is False
    assert (
        MODELS["kimi-k2.6"].temperature,
        MODELS["kimi-k2.6"].temperature_thinking,
    ) == (
        0.6,
        1.0,
    )
    assert MODELS["Moonshot-Kimi-K2-Instruct"].top_p == 1.0
    # other features: structured output only for the retired kimi-k2-thinking
    assert {n for n, m in MODELS.items() if m.structured_output} == {"kimi-k2-thinking"}
    # the Japanese seed's six regions (FACTS §7: treat all six as Kimi regions)
    assert set(REGIONS) == {
        "cn-beijing",
        "ap-southeast-1",
        "ap-northeast-1",
        "cn-hongkong",
        "eu-central-1",
        "us-east-1",
    }


def test_kimi_k2_7_code_thinks_by_default(simulator: SimulatorServer) -> None:
    answer = send(
        simulator, "native", [{"role": "user", "content": "hi"}], model="kimi-k2.7-code"
    ).json()
    assert answer["output"]["choices"][0]["message"]["reasoning_content"]
    plain = send(simulator, "native", [{"role": "user", "content": "hi"}]).json()
    assert "reasoning_content" not in plain["output"]["choices"][0]["message"]
