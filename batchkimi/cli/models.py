"""``batchkimi models``: the model catalogue as a table, or JSON on stdout."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from batchkimi.catalogue import ModelInfo, load_catalogue
from batchkimi.pricing import load_prices


def _record(info: ModelInfo) -> dict[str, Any]:
    record = dataclasses.asdict(info)
    record["retired_on"] = info.retired_on.isoformat() if info.retired_on else None
    return record


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def models_command(as_json: bool) -> None:
    """List the Kimi models: inputs, thinking, defaults, limits, prices, retirement."""
    catalogue = load_catalogue()
    prices = load_prices()
    if as_json:
        out = []
        for info in catalogue.values():
            record = _record(info)
            record["prices"] = {
                region: dataclasses.asdict(price) | {"as_of": str(price.as_of)}
                for (model, region), price in prices.items()
                if model == info.name
            }
            out.append(record)
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title="Kimi on Model Studio")
    for column in (
        "model",
        "inputs",
        "thinking",
        "defaults",
        "context",
        "RPM/TPM",
        "price (cn-beijing, per 1M in/out)",
        "status",
    ):
        table.add_column(column)
    for info in catalogue.values():
        price = prices.get((info.name, "cn-beijing"))
        price_text = (
            f"{price.input:g} / {price.output:g} {price.currency}"
            if price
            else "unknown"
        )
        defaults = [f"temperature {info.temperature}"] if info.temperature else []
        if info.temperature_thinking:
            defaults.append(f"({info.temperature_thinking} thinking)")
        if info.top_p:
            defaults.append(f"top_p {info.top_p}")
        status = (
            f"retired {info.retired_on} → {', '.join(info.replacements)}"
            if info.is_retired
            else "active"
        )
        table.add_row(
            info.name,
            ", ".join(info.inputs),
            info.thinking,
            " ".join(defaults),
            f"{info.context_tokens:,}" if info.context_tokens else "unknown",
            f"{info.rpm} / {info.tpm:,}" if info.rpm and info.tpm else "unknown",
            price_text,
            status,
        )
    Console().print(table)
