"""``results.parquet``: one row per manifest row, in manifest order, one schema.

Built from the row register and the journal (the journal is the truth), written to a
temporary file and moved into place with ``os.replace``, so a crash mid-write leaves the
previous version intact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from batchkimi.answers.columns import answer_columns
from batchkimi.errors import BatchkimiError
from batchkimi.records import RowStatus
from batchkimi.store.journal import read_latest

RESULTS_NAME = "results.parquet"

#: DESIGN.md's output columns, in order, plus the audit trail batchkimi adds
#: (fingerprint, response_model, retries). Defined once; tests pin it to DESIGN.md.
RESULTS_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "status": pl.String(),
    "model": pl.String(),
    "api": pl.String(),
    "content": pl.String(),
    "reasoning_content": pl.String(),
    "finish_reason": pl.String(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cached_tokens": pl.Int64(),
    "total_tokens": pl.Int64(),
    "cost": pl.Float64(),
    "currency": pl.String(),
    "attempts": pl.Int64(),
    "latency_ms": pl.Float64(),
    "ttft_ms": pl.Float64(),
    "request_id": pl.String(),
    "error_code": pl.String(),
    "error_message": pl.String(),
    "http_status": pl.Int64(),
    "started_at": pl.String(),
    "finished_at": pl.String(),
    "fingerprint": pl.String(),
    "response_model": pl.String(),
    "retries": pl.String(),  # JSON object: cause -> retried attempts
    "wait_ms": pl.Float64(),  # time paced by rate limits or backing off
    "retryable": pl.Boolean(),  # failed only because attempts ran out: resent next run
    "cache_creation_tokens": pl.Int64(),  # input written to a new explicit cache
    "tool_calls": pl.String(),  # JSON list: the model's function calls
    "answer_json": pl.String(),  # a structured answer, validated (ok rows only)
    "repairs": pl.Int64(),  # re-asks after an invalid structured answer
    "repair_causes": pl.String(),  # JSON object: cause -> repairs
    "validation_error": pl.String(),  # why the last structured answer was invalid
    "raw_response": pl.String(),  # a paid answer batchkimi could not read, kept
}
OUTPUT_COLUMNS = tuple(RESULTS_SCHEMA)
#: what the journal holds of each result (everything but the row's own id)
JOURNAL_SCHEMA = {name: dtype for name, dtype in RESULTS_SCHEMA.items() if name != "id"}


def build_results(
    rows_path: Path,
    state_dir: Path,
    *,
    api: str,
    answer_schema: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Join the register with the journals' newest results, in manifest order; a
    structured job's answers become typed columns after the kept input columns.

    The frame ends with the register's ``_in_scope`` column; drop it before writing.
    """
    rows = pl.read_parquet(rows_path)
    kept = [c for c in rows.columns if not c.startswith("_") and c != "id"]
    journal = read_latest(state_dir, JOURNAL_SCHEMA)
    joined = rows.join(
        journal, left_on="_fingerprint", right_on="fingerprint", how="left"
    )
    problem = pl.col("_problem_code").is_not_null()
    status = (
        pl.when(problem)
        .then(pl.lit(RowStatus.ERROR.value))
        .when(pl.col("status").is_null())
        .then(pl.lit(RowStatus.SKIPPED.value))
        .otherwise(pl.col("status"))
    )
    out = joined.sort("_index").with_columns(
        status.alias("status"),
        pl.coalesce("model", "_model").alias("model"),
        pl.coalesce("api", pl.lit(api)).alias("api"),
        pl.when(problem)
        .then(pl.col("_problem_code"))
        .otherwise(pl.col("error_code"))
        .alias("error_code"),
        pl.when(problem)
        .then(pl.col("_problem_message"))
        .otherwise(pl.col("error_message"))
        .alias("error_message"),
        pl.col("_fingerprint").alias("fingerprint"),
        pl.col("attempts").fill_null(0),
        pl.col("repairs").fill_null(0),
    )
    typed: list[pl.Expr] = []
    if answer_schema is not None:
        typed = answer_columns(answer_schema, taken=[*kept, *OUTPUT_COLUMNS])
    # _in_scope (whether this run's shard owns the row) is for the caller to drop
    ordered = ["id", *kept, *[c for c in OUTPUT_COLUMNS if c != "id"], "_in_scope"]
    columns = [
        pl.col(c).cast(RESULTS_SCHEMA[c]) if c in RESULTS_SCHEMA else pl.col(c)
        for c in ordered
    ]
    return out.select([*columns[: 1 + len(kept)], *typed, *columns[1 + len(kept) :]])


class OutputWriteError(BatchkimiError):
    """results.parquet or summary.json could not be written; the journal is intact."""

    exit_code = 3

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(
            f"cannot write {path}: {exc.strerror or exc}. Every answer received is in "
            "the journal and the previous file is untouched: free disk space (or fix "
            "permissions) and re-run the same command to rebuild it"
        )


def clear_leftovers(path: Path) -> None:
    """Remove the temporary files a killed run left beside ``path``. Call it under
    the lock that guards ``path``: then no other writer can own one."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def write_atomically(frame: pl.DataFrame, path: Path) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename over it.
    Called under the outputs lock, so an older temporary file is a killed run's."""
    clear_leftovers(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.write_parquet(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
