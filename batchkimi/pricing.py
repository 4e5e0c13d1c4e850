"""Token prices and the cost of a row. "Unknown" is a value, never a guess.

Pure arithmetic over a table loaded from ``data/prices.toml`` (or the user's file).
Reasoning tokens are part of output tokens, as the service bills them (FACTS §6.3).
Cached input tokens are part of input tokens and cost a share of the input price: an
implicit cache hit 20%, an explicit hit 10%, and writing an explicit cache 125% (the
context-cache page, FACTS §6.3).
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
    implicit_cache_hit: float = 0.2  # shares of the input price
    explicit_cache_hit: float = 0.1
    cache_creation: float = 1.25
    as_of: dt.date | None = None
    source: str = ""

    def cost_of(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.input_tokens)
        created = min(usage.cache_creation_tokens, usage.input_tokens - cached)
        fresh = usage.input_tokens - cached - created
        hit = (
            self.explicit_cache_hit if usage.explicit_cache else self.implicit_cache_hit
        )
        return (
            fresh * self.input
            + cached * self.input * hit
            + created * self.input * self.cache_creation
            + usage.output_tokens * self.output
        ) / _PER


PriceTable = dict[tuple[str, str], Price]


def _parse_table(raw: dict[str, Any], origin: str) -> PriceTable:
    table: PriceTable = {}
    unknown = raw.get("unknown", {})
    if not isinstance(unknown, dict):
        msg = f"{origin}: [unknown] must map model names to notes"
        raise ConfigError(msg)
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


def unknown_notes(override: Path | None = None) -> dict[str, str]:
    """Why a model has no known price, as the packaged table (or the user's) says."""
    notes = dict(tomllib.loads(_packaged())["unknown"])
    if override is not None:
        notes.update(_read(override).get("unknown", {}))
    return {model: str(note) for model, note in notes.items()}


def _packaged() -> str:
    return resources.files("batchkimi").joinpath("data/prices.toml").read_text("utf-8")


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        msg = f"cannot read prices file {path}: {exc}"
        raise ConfigError(msg) from exc


def load_prices(override: Path | None = None) -> PriceTable:
    """The packaged table, with the user's file (if any) taking precedence."""
    table = _parse_table(tomllib.loads(_packaged()), "packaged prices")
    if override is not None:
        table.update(_parse_table(_read(override), str(override)))
    return table


def cost_of(
    table: PriceTable, model: str, region: str, usage: Usage
) -> tuple[float | None, str | None]:
    """(cost, currency), or (None, None) when no price is known for model and region."""
    price = table.get((model, region))
    if price is None:
        return None, None
    return round(price.cost_of(usage), 10), price.currency
