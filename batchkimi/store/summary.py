"""``summary.json``: per model and overall: rows by status, tokens, cost, speed,
retries.

Aggregates are computed with polars from the results frame; the file is replaced
atomically like results.parquet.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from batchkimi.store.results import OutputWriteError, clear_leftovers

SUMMARY_NAME = "summary.json"
_TOKENS = (
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "total_tokens",
)


def _percentiles(series: pl.Series) -> dict[str, float | None]:
    values = series.drop_nulls()
    if values.is_empty():
        return {"p50": None, "p90": None, "p99": None}
    return {
        name: round(float(values.quantile(q, interpolation="linear") or 0.0), 1)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    }


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """A JSON cause -> count column, summed (``retries``, ``repair_causes``)."""
    counts: Counter[str] = Counter()
    if column in frame.columns:
        for raw in frame[column].drop_nulls():
            counts.update(json.loads(raw))
    return dict(sorted(counts.items()))


def structured_answers(rows: pl.DataFrame) -> dict[str, Any] | None:
    """How a structured job's answers went: valid at the first answer, valid after
    repairs, invalid when repairs ran out; repairs (each request once) by cause.
    None for a free-text job."""
    if "answer_json" not in rows.columns:
        return None
    ok = rows.filter(pl.col("answer_json").is_not_null())
    invalid = rows.filter(pl.col("status") == "invalid")
    sent = billed(rows)
    repairs = int(sent["repairs"].fill_null(0).sum())
    if ok.is_empty() and invalid.is_empty() and not repairs:
        return None
    return {
        "valid_first_answer": ok.filter(pl.col("repairs").fill_null(0) == 0).height,
        "repaired": ok.filter(pl.col("repairs").fill_null(0) > 0).height,
        "invalid": invalid.height,
        "repairs": repairs,
        "repairs_by_cause": _counts(sent, "repair_causes"),
    }


def billed(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per request sent: rows that repeat an earlier row's request share its
    answer, so its tokens, cost and attempts count once."""
    sent = frame.filter(pl.col("fingerprint").is_not_null())
    return sent.unique(subset="fingerprint", keep="first", maintain_order=True)


def _group(rows: pl.DataFrame) -> dict[str, Any]:
    statuses = rows["status"].value_counts()
    by_status = dict(zip(statuses["status"], statuses["count"], strict=True))
    frame = billed(rows)
    priced = frame.filter(pl.col("cost").is_not_null())
    answered_rows = rows.filter(pl.col("input_tokens").is_not_null())
    priced_rows = rows.filter(pl.col("cost").is_not_null())
    currencies = sorted(priced["currency"].drop_nulls().unique().to_list())
    return {
        "rows": rows.height,
        "requests": frame.height,
        "by_status": {k: int(v) for k, v in sorted(by_status.items())},
        "tokens": {name: int(frame[name].fill_null(0).sum()) for name in _TOKENS},
        "cost": round(float(priced["cost"].sum()), 6) if priced.height else None,
        "currency": currencies[0] if len(currencies) == 1 else (currencies or None),
        "cost_by_status": {
            str(status): round(float(group["cost"].sum()), 6)
            for (status,), group in sorted(priced.group_by("status"))
        },
        "rows_without_price": answered_rows.height - priced_rows.height,
        "attempts": int(frame["attempts"].sum()),
        "wait_s": round(float(frame["wait_ms"].fill_null(0).sum()) / 1000, 3),
        "retries_by_cause": _counts(frame, "retries"),
        "latency_ms": _percentiles(frame["latency_ms"]),
        "ttft_ms": _percentiles(frame["ttft_ms"]),
    }


def build_summary(
    frame: pl.DataFrame, *, run: dict[str, Any], elapsed_s: float, sent_this_run: int
) -> dict[str, Any]:
    overall = _group(frame)
    overall["rows_sent_this_run"] = sent_this_run
    overall["elapsed_s"] = round(elapsed_s, 3)
    overall["rows_per_s"] = (
        round(sent_this_run / elapsed_s, 2) if elapsed_s > 0 and sent_this_run else None
    )
    answers = structured_answers(frame)
    if answers is not None:
        overall["structured"] = answers
    models = {}
    for model in sorted(frame["model"].drop_nulls().unique().to_list()):
        rows = frame.filter(pl.col("model") == model)
        models[model] = _group(rows)
        if answers is not None:
            models[model]["structured"] = structured_answers(rows)
    return {"run": run, "overall": overall, "by_model": models}


def write_summary(summary: dict[str, Any], path: Path) -> None:
    clear_leftovers(path)  # under the outputs lock, as results.parquet
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8"
        )
        tmp.replace(path)
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
