"""``batchkimi models``: the model catalogue as a table, or JSON on stdout."""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.table import Table

from batchkimi.catalogue import ModelInfo, load_catalogue
from batchkimi.cli.console import stdout_console
from batchkimi.pricing import load_prices

_SHORT = {"image": "img"}


def _record(info: ModelInfo) -> dict[str, Any]:
    record = info.model_dump()
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
                region: price.model_dump() | {"as_of": str(price.as_of)}
                for (model, region), price in prices.items()
                if model == info.name
            }
            out.append(record)
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(
        title="Kimi on Model Studio",
        caption="price: CNY per 1M tokens in / out, China (Beijing). "
        "Defaults, limits and sources: --json",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("model", "inputs", "thinking", "context", "price", "status"):
        table.add_column(column, no_wrap=True)
    advice = []
    for info in catalogue.values():
        price = prices.get((info.name, "cn-beijing"))
        table.add_row(
            info.name,
            "+".join(_SHORT.get(kind, kind) for kind in info.inputs),
            info.thinking,
            f"{info.context_tokens // 1024}K" if info.context_tokens else "?",
            f"{price.input:g} / {price.output:g}" if price else "unknown",
            "retired" if info.is_retired else "active",
        )
        if info.is_retired:
            advice.append(f"{info.name}: {info.retirement_advice()}")
    console = stdout_console()
    console.print(table)
    for line in advice:
        console.print(line)
