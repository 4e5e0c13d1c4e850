"""The numbers a report shows, computed with polars from a run's results. Pure: the
tables and the pictures are both drawn from these frames."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl

from batchkimi.store.summary import billed, structured_answers

TOKENS = ("input_tokens", "output_tokens", "reasoning_tokens", "cached_tokens")
TOP_ROWS = 10
TIMELINE_BINS = 60


@dataclass(frozen=True, slots=True)
class Overview:
    rows: int
    by_status: dict[str, int]
    attempts: int
    started: dt.datetime | None
    finished: dt.datetime | None
    cost: dict[str, float]  # currency -> total
    requests_without_price: int
    tokens: dict[str, int]

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


def _times(frame: pl.DataFrame, column: str) -> pl.Expr:
    return pl.col(column).str.to_datetime(time_zone="UTC", strict=False)


def with_times(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with parsed ``started``/``finished`` datetimes."""
    return frame.with_columns(
        _times(frame, "started_at").alias("started"),
        _times(frame, "finished_at").alias("finished"),
    )


def overview(frame: pl.DataFrame) -> Overview:
    """Rows by status over every row; attempts, tokens and cost once per request."""
    timed = with_times(frame)
    statuses = frame["status"].value_counts()
    sent = billed(frame)
    priced = sent.filter(pl.col("cost").is_not_null())
    cost = {
        str(currency): float(group["cost"].sum())
        for (currency,), group in priced.group_by("currency")
    }
    answered = sent.filter(pl.col("input_tokens").is_not_null())
    return Overview(
        rows=frame.height,
        by_status=dict(sorted(zip(statuses["status"], statuses["count"], strict=True))),
        attempts=int(sent["attempts"].fill_null(0).sum()),
        started=timed["started"].min(),  # type: ignore[arg-type]
        finished=timed["finished"].max(),  # type: ignore[arg-type]
        cost=dict(sorted(cost.items())),
        requests_without_price=answered.height - priced.height,
        tokens={name: int(sent[name].fill_null(0).sum()) for name in TOKENS},
    )


def billed_requests(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per request sent (``summary.billed``): rows repeating an earlier row's
    request share its answer and its bill."""
    return billed(frame)


def by_model_and_status(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows, tokens and cost per (model, status)."""
    return (
        frame.group_by("model", "status")
        .agg(
            pl.len().alias("rows"),
            *(pl.col(name).fill_null(0).sum().alias(name) for name in TOKENS),
            pl.col("cost").sum().alias("cost"),
            pl.col("cost").is_not_null().any().alias("priced"),
            pl.col("currency").drop_nulls().first().alias("currency"),
        )
        .with_columns(
            pl.when(pl.col("priced")).then(pl.col("cost")).otherwise(None).alias("cost")
        )
        .drop("priced")
        .sort("model", "status")
    )


def answers(frame: pl.DataFrame) -> dict[str, Any] | None:
    """A structured job's answers: valid first time, repaired, invalid; repairs by
    cause (None for a free-text job)."""
    return structured_answers(frame)


def retries_by_cause(frame: pl.DataFrame) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for raw in frame["retries"].drop_nulls():
        counts.update(json.loads(raw))
    return dict(counts.most_common())


def slowest(frame: pl.DataFrame, n: int = TOP_ROWS) -> pl.DataFrame:
    return (
        frame.filter(pl.col("latency_ms").is_not_null())
        .sort("latency_ms", descending=True)
        .head(n)
        .select("id", "model", "status", "latency_ms", "ttft_ms", "attempts")
    )


def most_expensive(frame: pl.DataFrame, n: int = TOP_ROWS) -> pl.DataFrame:
    return (
        frame.filter(pl.col("cost").is_not_null())
        .sort("cost", descending=True)
        .head(n)
        .select("id", "model", "status", "input_tokens", "output_tokens", "cost")
    )


def timeline(frame: pl.DataFrame, bins: int = TIMELINE_BINS) -> pl.DataFrame:
    """Rows finished per bin of the run, ok apart from the rest: ``t_s`` (bin start,
    seconds from the first finish), ``ok``, ``failed``, ``rate`` (rows per second)."""
    timed = with_times(frame).filter(pl.col("finished").is_not_null())
    if timed.is_empty():
        return pl.DataFrame(
            schema={"t_s": pl.Float64, "ok": pl.Int64, "failed": pl.Int64}
        )
    first = timed["finished"].min()
    seconds = (pl.col("finished") - pl.lit(first)).dt.total_microseconds() / 1e6
    timed = timed.with_columns(seconds.alias("t"))
    span = max(float(timed["t"].max() or 0.0), 1e-3)  # type: ignore[arg-type]
    width = span / bins
    binned = timed.with_columns(
        (pl.col("t") / width).floor().clip(0, bins - 1).cast(pl.Int64).alias("bin")
    )
    counts = binned.group_by("bin").agg(
        (pl.col("status") == "ok").sum().cast(pl.Int64).alias("ok"),
        (pl.col("status") != "ok").sum().cast(pl.Int64).alias("failed"),
    )
    every = pl.DataFrame({"bin": list(range(bins))})
    return (
        every.join(counts, on="bin", how="left")
        .fill_null(0)
        .with_columns(
            (pl.col("bin") * width).alias("t_s"),
            ((pl.col("ok") + pl.col("failed")) / width).alias("rate"),
        )
        .select("t_s", "ok", "failed", "rate")
    )


def plan_against_actual(
    frame: pl.DataFrame, plan: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per model: what ``batchkimi plan`` estimated, and what the run reported."""
    if not plan:
        return []
    out = []
    for model, estimate in sorted(plan.get("models", {}).items()):
        rows = frame.filter(
            (pl.col("model") == model) & pl.col("input_tokens").is_not_null()
        )
        priced = rows.filter(pl.col("cost").is_not_null())
        out.append(
            {
                "model": model,
                "requests_planned": estimate.get("requests"),
                "requests_answered": rows.height,
                "input_planned": estimate.get("input_tokens"),
                "input_actual": int(rows["input_tokens"].sum()),
                "output_planned": estimate.get("output_tokens"),
                "output_actual": int(rows["output_tokens"].fill_null(0).sum()),
                "cost_planned": estimate.get("cost"),
                "cost_worst": estimate.get("worst_cost"),
                "cost_actual": float(priced["cost"].sum()) if priced.height else None,
                "currency": estimate.get("currency"),
            }
        )
    return out
