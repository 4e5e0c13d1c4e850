"""``batchkimi report OUTPUT_DIR``: a run's numbers as terminal tables, and with
``--html`` one self-contained page with plots. Rendering only; the numbers are
``batchkimi.report.analysis``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from batchkimi.cli.console import safe, stdout_console
from batchkimi.errors import ConfigError
from batchkimi.report import analysis
from batchkimi.report.data import RunData, load_run

_TOP = 5
_SHORT = {
    "rows": "requests",
    "input_tokens": "tokens in",
    "output_tokens": "out",
    "reasoning_tokens": "reasoning",
    "cached_tokens": "cached",
}


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(title: str, headers: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(safe(cell)) for cell in row))
    return table


def _frame(title: str, frame: pl.DataFrame, digits: dict[str, int]) -> Table:
    rows = [
        [_n(row[c], digits.get(c, 0)) for c in frame.columns]
        for row in frame.iter_rows(named=True)
    ]
    return _table(title, frame.columns, rows)


def render(run: RunData, console: Console) -> None:
    frame = run.results
    sent = analysis.billed_requests(frame)
    view = analysis.overview(frame)
    if run.partial:
        console.print(
            "[bold red]partial[/]: read from the journal of a run that is going or "
            "was cut short"
        )
    statuses = ", ".join(f"{n:,} {s}" for s, n in view.by_status.items())
    cost = ", ".join(f"{v:,.4f} {c}" for c, v in view.cost.items()) or "unknown"
    elapsed = f"{view.elapsed_s:,.1f} s" if view.elapsed_s is not None else "—"
    console.print(
        safe(
            f"rows: {view.rows:,} ({statuses}); requests: {sent.height:,}, attempts: "
            f"{view.attempts:,}; cost: {cost}; wall time: {elapsed}"
        ),
        highlight=False,
        markup=False,
    )
    if view.requests_without_price:
        console.print(
            f"{view.requests_without_price:,} requests have no known price "
            "(see `batchkimi models`; give one with --prices FILE)"
        )
    groups = analysis.by_model_and_status(sent)
    console.print(
        _frame(
            "by model and status (each request once)",
            groups.rename(_SHORT),
            {"cost": 4},
        )
    )
    plan_rows = analysis.plan_against_actual(sent, run.plan)
    if plan_rows:
        console.print(
            _table(
                "estimate (batchkimi plan) against the bill",
                ("model", "requests", "tokens in", "tokens out", "cost", "worst"),
                [
                    [
                        r["model"],
                        f"{_n(r['requests_planned'])} / {_n(r['requests_answered'])}",
                        f"{_n(r['input_planned'])} / {_n(r['input_actual'])}",
                        f"{_n(r['output_planned'])} / {_n(r['output_actual'])}",
                        f"{_n(r['cost_planned'], 4)} / {_n(r['cost_actual'], 4)}",
                        _n(r["cost_worst"], 4),
                    ]
                    for r in plan_rows
                ],
            )
        )
    answers = analysis.answers(frame)
    if answers is not None:
        console.print(
            _table(
                "structured answers",
                ("valid at first answer", "repaired", "invalid", "repairs"),
                [
                    [
                        f"{answers['valid_first_answer']:,}",
                        f"{answers['repaired']:,}",
                        f"{answers['invalid']:,}",
                        f"{answers['repairs']:,}",
                    ]
                ],
            )
        )
        if answers["repairs_by_cause"]:
            console.print(
                _table(
                    "repairs by cause",
                    ("cause", "repairs"),
                    [[c, f"{n:,}"] for c, n in answers["repairs_by_cause"].items()],
                )
            )
    causes = analysis.retries_by_cause(sent)
    if causes:
        console.print(
            _table(
                "retries by cause",
                ("cause", "retried attempts"),
                [[cause, f"{n:,}"] for cause, n in causes.items()],
            )
        )
    console.print(
        _frame("slowest", analysis.slowest(sent, _TOP), {"latency_ms": 0, "ttft_ms": 0})
    )
    expensive = analysis.most_expensive(sent, _TOP)
    if not expensive.is_empty():
        console.print(_frame("most expensive", expensive, {"cost": 6}))


@click.command("report")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write one self-contained HTML page with plots here.",
)
def report_command(output: Path, html_path: Path | None) -> None:
    """Summarise the run in OUTPUT (finished, going, or cut short).

    Prints rows by status, tokens and cost by model and status (each request once),
    the estimate from `batchkimi plan` against the bill when a plan.json is there,
    retries by cause, and the slowest and most expensive requests. With --html, also
    a page with plots of throughput and errors over time, latency and time-to-first-
    token distributions, tokens and cost by model and status, and retries by cause.
    """
    run = load_run(output)
    if html_path is not None:
        _check_writable(html_path)
    console = stdout_console()
    render(run, console)
    if html_path is not None:
        from batchkimi.report.page import render_page  # matplotlib: only when asked

        page = render_page(run, title=f"batchkimi report: {output.resolve().name}")
        try:
            html_path.write_text(page, "utf-8")
        except OSError as exc:
            raise _unwritable(html_path, exc) from None
        console.print(f"html report: {html_path}", highlight=False, markup=False)


def _check_writable(path: Path) -> None:
    """Refuse a page that cannot be written before the work of drawing it."""
    folder = path.parent if str(path.parent) else Path()
    if not folder.is_dir():
        msg = (
            f"cannot write the report to {path}: the folder {folder} does not exist. "
            "Create it, or give --html a path in an existing folder"
        )
        raise ConfigError(msg)
    if not os.access(folder, os.W_OK):
        raise _unwritable(path, PermissionError(13, "Permission denied"))


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write the report to {path}: {exc.strerror or exc}. Give --html a "
        "path you can write to"
    )
