"""Costs against figures worked out by hand from the documented prices (FACTS §6.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchkimi.api.compatible import CompatibleProtocol
from batchkimi.api.native import NativeProtocol
from batchkimi.errors import ConfigError
from batchkimi.pricing import cost_of, load_prices, unknown_notes
from batchkimi.records import Completion, Usage

K25 = ("kimi-k2.5", "cn-beijing")  # CNY 4 in, 21 out per million tokens


def cost(usage: Usage, model: str = K25[0], region: str = K25[1]) -> float | None:
    return cost_of(load_prices(), model, region, usage)[0]


def test_plain_input_and_output() -> None:
    # 1,000 in at 4/M + 500 out at 21/M = 0.004 + 0.0105
    assert cost(Usage(input_tokens=1000, output_tokens=500)) == pytest.approx(0.0145)


def test_thinking_tokens_are_billed_as_output_not_twice() -> None:
    # reasoning is part of output_tokens: 2,000 out (1,500 of them thinking) at 21/M
    usage = Usage(input_tokens=0, output_tokens=2000, reasoning_tokens=1500)
    assert cost(usage) == pytest.approx(0.042)


def test_an_implicit_cache_hit_costs_a_fifth_of_the_input_price() -> None:
    # 1,000 in, 600 of them cached: 400 * 4/M + 600 * 4/M * 0.2 = 0.0016 + 0.00048
    usage = Usage(input_tokens=1000, cached_tokens=600)
    assert cost(usage) == pytest.approx(0.00208)


def test_an_explicit_cache_hit_costs_a_tenth() -> None:
    # 400 * 4/M + 600 * 4/M * 0.1 = 0.0016 + 0.00024
    usage = Usage(input_tokens=1000, cached_tokens=600, explicit_cache=True)
    assert cost(usage) == pytest.approx(0.00184)


def test_writing_an_explicit_cache_costs_a_quarter_more() -> None:
    # 1,000 in, 800 written to a cache: 200 * 4/M + 800 * 4/M * 1.25 = 0.0008 + 0.004
    usage = Usage(input_tokens=1000, cache_creation_tokens=800, explicit_cache=True)
    assert cost(usage) == pytest.approx(0.0048)


def test_no_official_price_is_unknown_and_says_why() -> None:
    assert cost_of(load_prices(), "kimi-k2.6", "cn-beijing", Usage(10, 10)) == (
        None,
        None,
    )
    assert cost(Usage(10, 10), region="us-east-1") is None  # only Beijing is published
    assert "no Model Studio price" in unknown_notes()["kimi-k2.6"]


def test_a_price_file_fills_a_gap_and_overrides_a_figure(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "CNY"\ninput = 6.5\n'
        'output = 27\nsource = "our contract"\n'
        '[prices."kimi-k2.5"."cn-beijing"]\ncurrency = "USD"\ninput = 1\noutput = 2\n'
        "implicit_cache_hit = 0.5\n"
    )
    table = load_prices(prices)
    # 2,000 in at 6.5/M + 1,000 out at 27/M = 0.013 + 0.027
    k26, currency = cost_of(table, "kimi-k2.6", "cn-beijing", Usage(2000, 1000))
    assert k26 == pytest.approx(0.04)
    assert currency == "CNY"
    # 1,000 in, half cached at the file's 50%: 500 * 1/M + 500 * 0.5/M
    k25, currency = cost_of(table, *K25, Usage(1000, 0, cached_tokens=500))
    assert k25 == pytest.approx(0.00075)
    assert currency == "USD"


def test_a_malformed_price_file_is_a_config_error_naming_the_entry(
    tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices."kimi-k2.6"."cn-beijing"]\ninput = 6.5\n')
    with pytest.raises(
        ConfigError, match=r'prices\."kimi-k2\.6"\.cn-beijing\.currency is missing'
    ):
        load_prices(prices)


@pytest.mark.parametrize("protocol", [CompatibleProtocol(), NativeProtocol()])
def test_both_apis_report_cache_writes_and_explicit_hits(
    protocol: CompatibleProtocol | NativeProtocol,
) -> None:
    details = {
        "cached_tokens": 300,
        "cache_creation_input_tokens": 500,
        "cache_type": "ephemeral",
    }
    if isinstance(protocol, CompatibleProtocol):
        body = {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": {
                "prompt_tokens": 1000,
                "completion_tokens": 10,
                "total_tokens": 1010,
                "prompt_tokens_details": details,
            },
        }
    else:
        body = {
            "request_id": "r",
            "output": {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": [{"text": "ok"}]},
                    }
                ]
            },
            "usage": {
                "input_tokens": 1000,
                "output_tokens": 10,
                "total_tokens": 1010,
                "prompt_tokens_details": details,
            },
        }
    result = protocol.parse(200, json.dumps(body).encode(), {})
    assert isinstance(result, Completion) and result.usage is not None
    usage = result.usage
    assert (usage.cached_tokens, usage.cache_creation_tokens) == (300, 500)
    assert usage.explicit_cache
    # 200 fresh * 4 + 300 * 4 * 0.1 + 500 * 4 * 1.25 + 10 * 21, per million
    assert cost(usage) == pytest.approx((800 + 120 + 2500 + 210) / 1e6)
