"""One self-contained HTML page for a run: numbers, tables and inline SVG plots.

No scripts, no stylesheets or fonts from elsewhere: the file can be mailed, archived
beside the results, or opened on a machine with no network. Every value from the run
is escaped, since ids and error messages come from users' manifests and the service.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from batchkimi.printable import printable
from batchkimi.report import analysis, figures
from batchkimi.report.data import RunData

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #212121; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
.muted { color: #757575; } .partial { color: #c62828; font-weight: 600; }
table { border-collapse: collapse; margin: .5rem 0;
        font-variant-numeric: tabular-nums; }
th, td { padding: .2rem .7rem; border-bottom: 1px solid #e0e0e0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #e0e0e0; border-radius: 6px; padding: .6rem 1rem; }
.card b { display: block; font-size: 1.3rem; }
"""


def _e(value: Any) -> str:
    return html.escape(printable("" if value is None else str(value)))


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str, svg: str, caption: str) -> str:
    return (
        f'<figure id="plot-{name}" class="plot">{svg}'
        f'<figcaption class="muted">{_e(caption)}</figcaption></figure>'
    )


def _cards(overview: analysis.Overview) -> str:
    elapsed = overview.elapsed_s
    cost = (
        ", ".join(f"{v:,.4f} {c}" for c, v in overview.cost.items())
        if overview.cost
        else "unknown"
    )
    cards = [
        ("rows", f"{overview.rows:,}"),
        ("ok", f"{overview.by_status.get('ok', 0):,}"),
        ("not ok", f"{overview.rows - overview.by_status.get('ok', 0):,}"),
        ("attempts", f"{overview.attempts:,}"),
        ("cost", cost),
        ("wall time", f"{elapsed:,.1f} s" if elapsed is not None else "—"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{_e(value)}</b>'
            f'<span class="muted">{_e(label)}</span></div>'
            for label, value in cards
        )
        + "</div>"
    )


def _plan_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return (
            '<p class="muted">No plan.json in this folder: run <code>batchkimi plan'
            "</code> before a run to compare its estimate with the bill.</p>"
        )
    return _table(
        (
            "model",
            "requests planned / answered",
            "input tokens planned / actual",
            "output tokens planned / actual",
            "cost planned (worst) / actual",
        ),
        (
            (
                _e(r["model"]),
                f"{_number(r['requests_planned'])} / {_number(r['requests_answered'])}",
                f"{_number(r['input_planned'])} / {_number(r['input_actual'])}",
                f"{_number(r['output_planned'])} / {_number(r['output_actual'])}",
                f"{_number(r['cost_planned'], 4)} ({_number(r['cost_worst'], 4)})"
                f" / {_number(r['cost_actual'], 4)} {_e(r['currency'] or '')}",
            )
            for r in rows
        ),
    )


def _frame_table(frame: pl.DataFrame, digits: dict[str, int]) -> str:
    return _table(
        frame.columns,
        (
            [_number(row[c], digits.get(c, 0)) for c in frame.columns]
            for row in frame.iter_rows(named=True)
        ),
    )


def _answers_section(answers: dict[str, Any] | None) -> str:
    """A structured job's answers: how many were valid at once, repaired, invalid."""
    if answers is None:
        return ""
    counts = _table(
        ("valid at first answer", "repaired", "invalid", "repairs"),
        [
            [
                _number(answers[key])
                for key in ("valid_first_answer", "repaired", "invalid", "repairs")
            ]
        ],
    )
    causes = answers["repairs_by_cause"]
    by_cause = (
        _table(("cause", "repairs"), [[_e(c), _number(n)] for c, n in causes.items()])
        if causes
        else ""
    )
    return f"<h2>Structured answers</h2>\n{counts}\n{by_cause}"


def render_page(run: RunData, *, title: str) -> str:
    """The whole page, as a string."""
    frame = run.results
    billed = analysis.billed_requests(frame)
    overview = analysis.overview(frame)
    groups = analysis.by_model_and_status(billed)
    causes = analysis.retries_by_cause(billed)
    state = (
        '<p class="partial">Partial: read from the journal of a run that is going '
        "or was cut short.</p>"
        if run.partial
        else ""
    )
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">from {_e(run.source)} · made {made}</p>',
        state,
        _cards(overview),
        "<h2>Estimate and bill</h2>",
        _plan_section(analysis.plan_against_actual(billed, run.plan)),
        "<h2>Over time</h2>",
        _figure(
            "throughput",
            figures.throughput(analysis.timeline(frame)),
            "Rows finished per second; red: rows that ended in an error or cut off.",
        ),
        "<h2>Latency</h2>",
        _figure(
            "latency",
            figures.latency(billed),
            "Whole-answer latency and time to the first streamed token, per request.",
        ),
        "<h2>Tokens and cost</h2>",
        _figure(
            "tokens-cost",
            figures.tokens_and_cost(groups),
            "Each request counted once (rows repeating a request share its answer).",
        ),
        _answers_section(analysis.answers(frame)),
        "<h2>Retries</h2>",
        _figure("retries", figures.retries(causes), "Retried attempts by cause."),
        "<h2>Slowest requests</h2>",
        _frame_table(analysis.slowest(billed), {"latency_ms": 0, "ttft_ms": 0}),
        "<h2>Most expensive requests</h2>",
        _frame_table(analysis.most_expensive(billed), {"cost": 6}),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
