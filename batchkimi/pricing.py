"""Token prices and the cost of a row. "Unknown" is a value, never a guess.

Pure arithmetic over a table loaded from ``data/prices.toml`` (or the user's file),
parsed strictly: a price that is not a number, or is negative, stops the job before
anything is sent, naming the file and the entry.
Reasoning tokens are part of output tokens, as the service bills them (FACTS §6.3).
Cached input tokens are part of input tokens and cost a share of the input price: an
implicit cache hit 20%, an explicit hit 10%, and writing an explicit cache 125% (the
context-cache page, FACTS §6.3).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchkimi.errors import ConfigError
from batchkimi.records import Usage

_PER = 1_000_000
#: no price per million tokens is above this: a larger one is a typo
_MOST = 1_000_000.0


class Price(BaseModel):
    """One model's prices in one region, per 1,000,000 tokens."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False
    )

    currency: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z]{3}$")]
    input: Annotated[float, Field(ge=0, le=_MOST)]  # per 1M input tokens
    output: Annotated[float, Field(ge=0, le=_MOST)]  # per 1M output tokens (thinking)
    implicit_cache_hit: Annotated[float, Field(ge=0, le=10)] = 0.2  # input shares
    explicit_cache_hit: Annotated[float, Field(ge=0, le=10)] = 0.1
    cache_creation: Annotated[float, Field(ge=0, le=10)] = 1.25
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


class _PriceFile(BaseModel):
    """A price file: ``[prices."model"."region"]`` tables and an ``[unknown]`` one."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    prices: dict[str, dict[str, Price]] = Field(default_factory=dict)
    unknown: dict[str, str] = Field(default_factory=dict)


def _parse(raw: dict[str, Any], origin: str) -> _PriceFile:
    try:
        return _PriceFile.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(
            f'"{part}"' if isinstance(part, str) and "." in part else str(part)
            for part in error["loc"]
        )
        reason = str(error["msg"])
        if error["type"] == "missing":
            msg = (
                f"prices file {origin}: {where} is missing. Each entry needs "
                "currency, input and output (per 1M tokens)"
            )
        elif error["type"] == "extra_forbidden":
            msg = (
                f"prices file {origin}: {where} is not a price setting (known: "
                f"{', '.join(Price.model_fields)}; tables: prices, unknown)"
            )
        else:
            msg = (
                f"prices file {origin}: {where} = {error.get('input')!r}: "
                f"{reason[0].lower()}{reason[1:]}. Fix it in the file"
            )
        raise ConfigError(msg) from None


def _parse_table(raw: dict[str, Any], origin: str) -> PriceTable:
    parsed = _parse(raw, origin)
    return {
        (model, region): price
        for model, by_region in parsed.prices.items()
        for region, price in by_region.items()
    }


def unknown_notes(override: Path | None = None) -> dict[str, str]:
    """Why a model has no known price, as the packaged table (or the user's) says."""
    notes = dict(_parse(tomllib.loads(_packaged()), "packaged prices").unknown)
    if override is not None:
        notes.update(_parse(_read(override), str(override)).unknown)
    return notes


def _packaged() -> str:
    return resources.files("batchkimi").joinpath("data/prices.toml").read_text("utf-8")


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"cannot read prices file {path}: {exc}. Give a TOML price file"
        raise ConfigError(msg) from None


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
