"""A run's shape as pictures: matplotlib figures rendered to inline SVG.

Figures are built with the object API (``Figure``, never pyplot): no backend, no
display and no global figure state, so a cron job or a CI runner draws them as well.
SVG keeps the HTML page self-contained (no scripts, no files beside it) and sharp at
any zoom. Text stays text (``svg.fonttype = none``), so the page is small and
searchable. Each function takes the frames of ``analysis`` and returns one SVG.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from batchkimi.printable import printable

OK, FAILED, ACCENT, MUTED = "#2e7d32", "#c62828", "#1565c0", "#9e9e9e"
_STYLE: dict[Any, Any] = {  # rc keys are typed as literals; these are all valid
    "svg.fonttype": "none",
    "svg.hashsalt": "batchkimi",  # the same run draws the same bytes
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG


def _empty(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", color=MUTED)
    axes.set_xticks([])
    axes.set_yticks([])


def throughput(timeline: pl.DataFrame) -> str:
    """Rows finished per second over the run, ok stacked under the rest."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8, 2.8))
        axes = figure.subplots()
        if timeline.is_empty():
            _empty(axes, "no row has finished yet")
        else:
            width = (
                float(timeline["t_s"][1] - timeline["t_s"][0])
                if (timeline.height > 1)
                else 1.0
            )
            ok = (timeline["ok"] / width).to_list()
            failed = (timeline["failed"] / width).to_list()
            starts = timeline["t_s"].to_list()
            axes.bar(starts, ok, width=width, align="edge", color=OK, label="ok")
            axes.bar(
                starts,
                failed,
                width=width,
                align="edge",
                bottom=ok,
                color=FAILED,
                label="error, incomplete",
            )
            axes.set_xlabel("seconds since the first row finished")
            axes.set_ylabel("rows per second")
            axes.legend(loc="upper right", frameon=False)
        axes.set_title("Throughput and errors over time", loc="left")
        return _svg(figure)


def latency(frame: pl.DataFrame) -> str:
    """Distributions of whole-answer latency and time to the first token."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8, 2.8))
        left, right = figure.subplots(1, 2)
        for axes, column, title in (
            (left, "latency_ms", "Latency"),
            (right, "ttft_ms", "Time to first token"),
        ):
            values = frame[column].drop_nulls()
            if values.is_empty():
                _empty(axes, "not measured (non-streaming, or no answer yet)")
            else:
                axes.hist(values.to_list(), bins=40, color=ACCENT)
                p50 = float(values.quantile(0.5) or 0.0)
                p99 = float(values.quantile(0.99) or 0.0)
                # marked in a legend, not written over the bars they would hide
                for mark, label, style in ((p50, "p50", "--"), (p99, "p99", ":")):
                    axes.axvline(
                        mark,
                        color=FAILED,
                        linestyle=style,
                        linewidth=1.2,
                        label=f"{label} {mark:,.0f} ms",
                    )
                axes.legend(frameon=False, loc="upper right", fontsize=8)
                axes.set_xlabel("milliseconds")
                axes.set_ylabel("requests")
            axes.set_title(title, loc="left")
        return _svg(figure)


def tokens_and_cost(by_group: pl.DataFrame) -> str:
    """Tokens (input, output) and cost for each model and status."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8, 3))
        left, right = figure.subplots(1, 2)
        labels = [
            printable(f"{model}\n{status}")
            for model, status in zip(by_group["model"], by_group["status"], strict=True)
        ]
        if not labels:
            _empty(left, "no rows")
            _empty(right, "no rows")
        else:
            inputs = by_group["input_tokens"].to_list()
            outputs = by_group["output_tokens"].to_list()
            left.bar(labels, inputs, color=ACCENT, label="input")
            left.bar(labels, outputs, bottom=inputs, color="#ef6c00", label="output")
            left.set_ylabel("tokens")
            left.legend(frameon=False, loc="upper left")
            costs = by_group["cost"].fill_null(0.0).to_list()
            right.bar(labels, costs, color=OK)
            currencies = by_group["currency"].drop_nulls().unique().to_list()
            known = printable(", ".join(currencies)) or "no price known"
            right.set_ylabel(f"cost ({known})")
        left.set_title("Tokens by model and status", loc="left")
        right.set_title("Cost by model and status", loc="left")
        return _svg(figure)


def retries(causes: dict[str, int]) -> str:
    """Retried attempts by cause."""
    with matplotlib.rc_context(_STYLE):
        height = max(1.6, 0.35 * len(causes) + 0.8)
        figure = Figure(figsize=(8, height))
        axes = figure.subplots()
        if not causes:
            _empty(axes, "no attempt was retried")
        else:
            names = list(causes)[::-1]
            axes.barh(
                [printable(name) for name in names],
                [causes[name] for name in names],
                color=FAILED,
            )
            axes.set_xlabel("retried attempts")
        axes.set_title("Retries by cause", loc="left")
        return _svg(figure)
