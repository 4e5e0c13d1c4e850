"""Token prices and the cost of a row. "Unknown" is a value, never a guess.

Pure arithmetic over a table loaded from ``data/prices.toml`` (or the user's file).
Reasoning tokens are part of output tokens, as the service bills them (FACTS §6.3).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from batchkimi.errors import ConfigError
from batchkimi.records import Usage

_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    currency: str
    input: float  # per 1M input tokens
    output: float  # per 1M output tokens (thinking included)
    cached_input_ratio: float = 1.0
    as_of: dt.date | None = None
    source: str = ""

    def cost_of(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.input_tokens)
        fresh = usage.input_tokens - cached
        return (
            fresh * self.input
            + cached * self.input * self.cached_input_ratio
            + usage.output_tokens * self.output
        ) / _PER


PriceTable = dict[tuple[str, str], Price]


def _parse_table(raw: dict[str, Any], origin: str) -> PriceTable:
    table: PriceTable = {}
    for model, by_region in raw.get("prices", {}).items():
        for region, spec in by_region.items():
            try:
                table[(model, region)] = Price(**spec)
            except TypeError as exc:
                msg = (
                    f"{origin}: prices.{model!r}.{region!r} is not a price: {exc}. "
                    "Each entry needs currency, input and output (per 1M tokens)"
                )
                raise ConfigError(msg) from exc
    return table


def load_prices(override: Path | None = None) -> PriceTable:
    """The packaged table, with the user's file (if any) taking precedence."""
    text = resources.files("batchkimi").joinpath("data/prices.toml").read_text("utf-8")
    table = _parse_table(tomllib.loads(text), "packaged prices")
    if override is not None:
        try:
            raw = tomllib.loads(override.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            msg = f"cannot read prices file {override}: {exc}"
            raise ConfigError(msg) from exc
        table.update(_parse_table(raw, str(override)))
    return table


def cost_of(
    table: PriceTable, model: str, region: str, usage: Usage
) -> tuple[float | None, str | None]:
    """(cost, currency), or (None, None) when no price is known for model and region."""
    price = table.get((model, region))
    if price is None:
        return None, None
    return round(price.cost_of(usage), 10), price.currency
