"""Rows an earlier run left between a paid answer and its repair.

A structured row journals each invalid answer before asking again. When a run stops
there (a kill, a stop, an outage), the row's newest journal record is that answer,
marked retryable. The next run reads those records back, so it can carry on from the
answer it already paid for instead of starting the row over.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import polars as pl

from batchkimi.records import RowResult, RowStatus
from batchkimi.store.answers import gather, positions
from batchkimi.store.files import answer_files
from batchkimi.store.schema import JOURNAL_SCHEMA

_FIELDS = {f.name for f in fields(RowResult)}
_COUNTS = ("retries", "repair_causes")


def unfinished_answers(folder: Path) -> dict[str, RowResult]:
    """Fingerprint → the journaled invalid answer a repair is still owed for.

    Reads a few columns of every record, then the whole records of only those
    fingerprints that ever had such an answer (usually none)."""
    owed = (
        pl.col("validation_error").is_not_null()
        & pl.col("retryable").fill_null(False)
        & (pl.col("status") != RowStatus.OK.value)
    )
    flags = {
        "validation_error": pl.String(),
        "retryable": pl.Boolean(),
        "status": pl.String(),
    }
    ever = positions(answer_files(folder), flags, where=owed)["fingerprint"].unique()
    pending = gather(folder, ever, JOURNAL_SCHEMA).filter(owed)
    found: dict[str, RowResult] = {}
    for record in pending.iter_rows(named=True):
        values = {k: v for k, v in record.items() if k in _FIELDS and v is not None}
        for name in _COUNTS:
            values[name] = json.loads(values[name]) if name in values else {}
        values["status"] = RowStatus(values["status"])
        result = RowResult(**values)
        found[result.fingerprint] = result
    return found
