"""The columns of results.parquet and of the journal's records, defined once.

``RESULTS_SCHEMA`` is DESIGN.md's output columns in order, plus the audit trail
batchkimi adds; tests pin it to DESIGN.md. A journal record is a result without the
row's own id, plus the row id it was sent for and the record format's version. Pure.
"""

from __future__ import annotations

import polars as pl

#: DESIGN.md's output columns, in order, plus the audit trail batchkimi adds
#: (fingerprint, response_model, retries, …).
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
#: a journal record as a segment stores it: the result, the row it was sent for,
#: and the record format's version
RECORD_SCHEMA: dict[str, pl.DataType] = {
    **JOURNAL_SCHEMA,
    "row_id": pl.String(),
    "v": pl.Int64(),
}
