"""Job specs merge defaults < file < command line; regions resolve to documented URLs;
the catalogue and the simulator agree on the facts they both transcribe."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchkimi.catalogue import load_catalogue
from batchkimi.credentials import ApiKey, read_api_key
from batchkimi.errors import ConfigError
from batchkimi.regions import base_url_for
from batchkimi.settings import Source, load_job, read_job_file
from batchkimi.simulator.facts import MODELS as SIMULATED


def test_command_line_beats_the_file_and_paths_follow_the_file(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "j.toml"
    job.parent.mkdir()
    job.write_text(
        'input = "../data/m.csv"\noutput = "out"\nmodel = "kimi-k2.5"\nconcurrency = 3\n'
        "[parameters]\ntemperature = 0.1\nmax_tokens = 10\n"
    )
    cli = Source(
        "the command line",
        {"concurrency": 9, "parameters": {"max_tokens": 20}},
        base_dir=tmp_path,
        option_names=True,
    )
    spec = load_job([read_job_file(job), cli])
    assert spec.reading.input == tmp_path / "data" / "m.csv"
    assert spec.output == tmp_path / "jobs" / "out"
    assert (spec.asking.model, spec.pacing.concurrency) == ("kimi-k2.5", 9)
    assert dict(spec.asking.parameters.as_items()) == {
        "temperature": 0.1,
        "max_tokens": 20,
    }


def test_a_misspelt_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    job = tmp_path / "j.toml"
    job.write_text('inptu = "m.csv"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'inptu'.*input"):
        load_job([read_job_file(job)])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "Moonshot-Kimi-K2-Instruct"}, "retired on 2026-07-09"),
        ({"model": "kimi-k2.7-code", "thinking": False}, "always thinks"),
        ({"model": "Kimi-K2.6"}, 'Did you mean "kimi-k2.6"'),
        ({"region": "eu-central-1"}, "set --workspace-id"),
        ({"parameters": {"temperature": 5}}, "less than or equal to 2"),
        ({"parameters": {"top_k": 5}}, "parameters.top_k is not a setting it knows"),
        (
            {"columns": {"reveiw": "x"}},
            "names 'reveiw', which is not allowed there: input should be 'id'",
        ),
        ({"api": "anthropic"}, "input should be 'openai' or 'dashscope'"),
        (
            {"model": "kimi-k2.5", "parameters": {"max_tokens": 40_000}},
            "max_tokens = 40,000 is over kimi-k2.5's maximum output of 32,768",
        ),
        (
            {"model": "kimi-k2.5", "parameters": {"thinking_budget": 50_000}},
            "longest chain of thought of 32,768",
        ),
    ],
)
def test_bad_settings_are_config_errors_that_say_the_fix(
    tmp_path: Path, values: dict, message: str
) -> None:
    base = {"input": tmp_path / "m.csv", "output": tmp_path / "out"}
    with pytest.raises(ConfigError, match=message):
        load_job([Source("test", {**base, **values})])


@pytest.mark.parametrize(
    ("api", "region", "workspace", "url"),
    [
        (
            "openai",
            "cn-beijing",
            None,
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
        ),
        ("dashscope", "cn-beijing", None, "https://dashscope.aliyuncs.com/api/v1"),
        ("openai", "us", None, "https://dashscope-us.aliyuncs.com/compatible-mode/v1"),
        (
            "dashscope",
            "eu-central-1",
            "llm-ab12",
            "https://llm-ab12.eu-central-1.maas.aliyuncs.com/api/v1",
        ),
        (
            "openai",
            "cn-hongkong",
            "llm-ab12",
            "https://llm-ab12.cn-hongkong.maas.aliyuncs.com/compatible-mode/v1",
        ),
        (
            "openai",
            "ap-northeast-1",
            "ws1",
            "https://ws1.ap-northeast-1.maas.aliyuncs.com/compatible-mode/v1",
        ),
        (
            "dashscope",
            "cn-beijing",
            "ws1",
            "https://ws1.cn-beijing.maas.aliyuncs.com/api/v1",
        ),
    ],
)
def test_regions_resolve_to_the_documented_base_urls(
    api: str, region: str, workspace: str | None, url: str
) -> None:
    assert base_url_for(api, region, workspace) == url


def test_a_workspace_id_that_is_not_a_host_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid host name label"):
        base_url_for("openai", "cn-beijing", "evil.example.com/x")


def test_the_key_never_prints_itself(canary_key: str) -> None:
    key = read_api_key()
    assert key.reveal() == canary_key
    for text in (repr(key), str(key), f"{key}", key.masked()):
        assert canary_key not in text


def test_a_missing_key_says_how_to_set_it_or_simulate() -> None:
    with pytest.raises(ConfigError, match=r"DASHSCOPE_API_KEY.*--simulate"):
        read_api_key({})
    with pytest.raises(ValueError, match="non-empty"):
        ApiKey("")


def test_catalogue_and_simulator_transcriptions_agree() -> None:
    """Two independent readings of FACTS §1.1, §6.1 and §6.2: a slip in one is caught
    here."""
    catalogue = load_catalogue()
    assert set(catalogue) == set(SIMULATED)
    for name, info in catalogue.items():
        sim = SIMULATED[name]
        assert info.native_path == sim.path, name
        assert info.thinking == sim.thinking, name
        assert info.is_retired == sim.retired, name
        assert (info.rpm, info.tpm) == (sim.rpm, sim.tpm), name
        assert info.max_output_tokens == sim.max_output, name
        assert info.max_input_tokens == sim.max_input, name
        assert info.max_input_tokens_thinking == sim.max_input_thinking, name
