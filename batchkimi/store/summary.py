"""``summary.json``: per model and overall: rows by status, tokens, cost, speed,
retries.

A ``Tally`` adds the figures up block by block while results.parquet is built, so a
million rows cost their percentiles' inputs (16 bytes a request) and little else:
sums per (model, status), and the distinct texts of the cause counts.
``build_summary`` tallies a frame held in memory; ``billed`` and
``structured_answers`` serve the report. The file is replaced atomically like
results.parquet.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from batchkimi.store.answers import repeats
from batchkimi.store.outputs import OutputWriteError, clear_leftovers, replace_text
from batchkimi.store.schema import RESULTS_SCHEMA

SUMMARY_NAME = "summary.json"
_TOKENS = (
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "total_tokens",
)
_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
_BILLED = pl.col("_billed")  # the first row of each request: it counts once
_PRICED = _BILLED & pl.col("cost").is_not_null()
_ANSWER = pl.col("answer_json").is_not_null()
_CAUSES = ("retries", "repair_causes")
#: one row per (model, status): every figure a group needs, bar the percentiles
_PARTS = [
    pl.len().alias("rows"),
    _BILLED.sum().alias("requests"),
    *(pl.col(n).filter(_BILLED).fill_null(0).sum().alias(n) for n in _TOKENS),
    pl.col("cost").filter(_PRICED).sum().alias("cost"),
    _PRICED.sum().alias("priced"),
    pl.col("currency").filter(_PRICED).drop_nulls().unique().alias("currencies"),
    pl.col("input_tokens").is_not_null().sum().alias("answered_rows"),
    pl.col("cost").is_not_null().sum().alias("priced_rows"),
    pl.col("attempts").filter(_BILLED).sum().alias("attempts"),
    pl.col("wait_ms").filter(_BILLED).fill_null(0).sum().alias("wait_ms"),
    pl.col("repairs").filter(_BILLED).fill_null(0).sum().alias("repairs"),
    (_ANSWER & (pl.col("repairs").fill_null(0) == 0)).sum().alias("first"),
    (_ANSWER & (pl.col("repairs").fill_null(0) > 0)).sum().alias("repaired"),
]
_TIMINGS = {"model": pl.String(), "latency_ms": pl.Float64(), "ttft_ms": pl.Float64()}


def _percentiles(series: pl.Series) -> dict[str, float | None]:
    values = series.drop_nulls()
    if values.is_empty():
        return {"p50": None, "p90": None, "p99": None}
    return {
        name: round(float(values.quantile(q, interpolation="linear") or 0.0), 1)
        for name, q in _QUANTILES
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


def first_rows(keys: pl.Series, exact: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """True on the first row of each distinct value, told from 8-byte ``keys`` (the
    values hashed; null where there is no value). Only rows whose key repeats are
    told apart by their values, which ``exact`` gives from their row numbers."""
    present = keys.is_not_null()
    repeated = repeats(keys) & present  # by sorting: a third of a hash table's time
    first = present & ~repeated
    if repeated.any():
        at = repeated.arg_true()
        first = first.scatter(at, exact(at).is_first_distinct())
    return first


def billed_mask(rows: pl.DataFrame) -> pl.Series:
    """True on each row that is the first of its request: ``billed`` as a mask."""
    fingerprints = rows["fingerprint"]
    keys = pl.select(
        pl.when(fingerprints.is_not_null()).then(fingerprints.hash())
    ).to_series()
    return first_rows(keys, fingerprints.gather).alias("_billed")


def tally_columns() -> list[str]:
    """The results columns a ``Tally`` reads (``_billed`` aside)."""
    names = {"model", "status", *_CAUSES, *_TIMINGS}
    for expression in _PARTS:
        names.update(expression.meta.root_names())
    return sorted(names - {"_billed"})


class Tally:
    """summary.json's figures, added up block by block.

    Each block (results columns, plus ``_billed``: true on the first row of each
    request) leaves its sums per (model, status), the distinct texts of its cause
    counts, and the latency and time to first token of its billed rows.
    """

    def __init__(self) -> None:
        self._parts: list[pl.DataFrame] = []
        self._causes: dict[str, list[pl.DataFrame]] = {c: [] for c in _CAUSES}
        self._timings: list[pl.DataFrame] = []

    def add(self, rows: pl.DataFrame) -> None:
        self._parts.append(rows.group_by("model", "status").agg(_PARTS))
        for column, found in self._causes.items():
            if rows[column].null_count() < rows.height:  # most blocks have none
                texts = rows.filter(_BILLED & pl.col(column).is_not_null())
                found.append(texts.group_by("model", column).len())
        self._timings.append(rows.filter(_BILLED).select(list(_TIMINGS)))

    def summary(
        self, *, run: dict[str, Any], elapsed_s: float, sent_this_run: int
    ) -> dict[str, Any]:
        if not self._parts:
            self.add(pl.DataFrame(schema={**RESULTS_SCHEMA, "_billed": pl.Boolean()}))
        parts = pl.concat(self._parts)
        timings = pl.concat(self._timings)
        retries, repairs = (_cause_counts(self._causes[c], c) for c in _CAUSES)
        overall = _group(parts, sum(retries.values(), Counter()), timings)
        overall["rows_sent_this_run"] = sent_this_run
        overall["elapsed_s"] = round(elapsed_s, 3)
        overall["rows_per_s"] = (
            round(sent_this_run / elapsed_s, 2)
            if elapsed_s > 0 and sent_this_run
            else None
        )
        answers = _structured(parts, sum(repairs.values(), Counter()))
        if answers is not None:
            overall["structured"] = answers
        models = {}
        for model in sorted(parts["model"].drop_nulls().unique().to_list()):
            mine = parts.filter(pl.col("model") == model)
            models[model] = _group(
                mine,
                retries.get(model, Counter()),
                timings.filter(pl.col("model") == model),
            )
            if answers is not None:
                models[model]["structured"] = _structured(
                    mine, repairs.get(model, Counter())
                )
        return {"run": run, "overall": overall, "by_model": models}


def _cause_counts(
    found: list[pl.DataFrame], column: str
) -> dict[str | None, Counter[str]]:
    """Model -> a JSON cause -> count column summed; each distinct text (with how
    many billed rows had it) is decoded once."""
    by_model: dict[str | None, Counter[str]] = {}
    for texts in found:
        for model, raw, times in texts.select("model", column, "len").iter_rows():
            counter = by_model.setdefault(model, Counter())
            for cause, count in json.loads(raw).items():
                counter[cause] += count * times
    return by_model


def _group(
    parts: pl.DataFrame, retries: Counter[str], timings: pl.DataFrame
) -> dict[str, Any]:
    """One group's figures from its (model, status) parts."""
    statuses = (
        parts.group_by("status")
        .agg(pl.col("rows").sum(), pl.col("cost").sum(), pl.col("priced").sum())
        .sort("status")
    )
    currencies = sorted({c for cs in parts["currencies"] for c in cs})
    priced = statuses.filter(pl.col("priced") > 0)
    by_currency: dict[str, float] = {}
    for cost, found in parts.select("cost", "currencies").rows():
        if len(found) == 1:  # a model's prices are in one currency
            by_currency[found[0]] = by_currency.get(found[0], 0.0) + float(cost)
    one = len(currencies) <= 1  # (rows priced with no currency named: one too)
    return {
        "rows": int(parts["rows"].sum()),
        "requests": int(parts["requests"].sum()),
        "by_status": {
            str(s): int(n) for s, n in statuses.select("status", "rows").rows()
        },
        "tokens": {name: int(parts[name].sum()) for name in _TOKENS},
        # a sum only in one currency: CNY and USD do not add up
        "cost": round(float(parts["cost"].sum()), 6) if priced.height and one else None,
        "currency": currencies[0] if len(currencies) == 1 else (currencies or None),
        "cost_by_currency": {c: round(v, 6) for c, v in sorted(by_currency.items())},
        "cost_by_status": {
            str(s): round(float(c), 6)
            for s, c in priced.select("status", "cost").rows()
        },
        "rows_without_price": int(parts["answered_rows"].sum())
        - int(parts["priced_rows"].sum()),
        "attempts": int(parts["attempts"].sum()),
        "wait_s": round(float(parts["wait_ms"].sum()) / 1000, 3),
        "retries_by_cause": dict(sorted(retries.items())),
        "latency_ms": _percentiles(timings["latency_ms"]),
        "ttft_ms": _percentiles(timings["ttft_ms"]),
    }


def _structured(parts: pl.DataFrame, causes: Counter[str]) -> dict[str, Any] | None:
    """``structured_answers`` from a group's parts."""
    first, repaired = int(parts["first"].sum()), int(parts["repaired"].sum())
    invalid = int(parts.filter(pl.col("status") == "invalid")["rows"].sum())
    repairs = int(parts["repairs"].sum())
    if not (first or repaired or invalid or repairs):
        return None
    return {
        "valid_first_answer": first,
        "repaired": repaired,
        "invalid": invalid,
        "repairs": repairs,
        "repairs_by_cause": dict(sorted(causes.items())),
    }


def build_summary(
    results: pl.DataFrame | pl.LazyFrame,
    *,
    run: dict[str, Any],
    elapsed_s: float,
    sent_this_run: int,
) -> dict[str, Any]:
    """The summary of ``results`` as one block in memory (``write_results`` tallies
    as it builds instead, which a million rows need)."""
    frame = results.lazy().collect()
    rows = frame.select(
        pl.col(c) if c in frame.columns else pl.lit(None, t).alias(c)
        for c, t in RESULTS_SCHEMA.items()
    )
    tally = Tally()
    tally.add(rows.with_columns(billed_mask(rows)))
    return tally.summary(run=run, elapsed_s=elapsed_s, sent_this_run=sent_this_run)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    clear_leftovers(path)  # under the outputs lock, as results.parquet
    try:
        replace_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc
