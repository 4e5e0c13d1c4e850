"""Rows an earlier run left with a paid answer in hand.

Two kinds: a structured row journals each invalid answer before asking again, and a
run that stops there (a kill, a stop, an outage) leaves that answer as the row's
newest record; and an answer batchkimi failed to process (a bug) is journaled as it
came, raw if it could not even be parsed. Both are marked retryable. The next run
reads them back and carries on from the answer it already paid for, instead of
sending the row again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path

import polars as pl

from batchkimi.records import UNPROCESSED, RowResult, RowStatus
from batchkimi.store.answers import gather, positions
from batchkimi.store.files import answer_files
from batchkimi.store.journal import resend_condition
from batchkimi.store.schema import JOURNAL_SCHEMA

_FIELDS = {f.name for f in fields(RowResult)}
_COUNTS = ("retries", "repair_causes")


_IN_HAND = (
    (pl.col("validation_error").is_not_null() | (pl.col("error_code") == UNPROCESSED))
    & pl.col("retryable").fill_null(False)
    & (pl.col("status") != RowStatus.OK.value)
)
_FLAGS = {
    "validation_error": pl.String(),
    "error_code": pl.String(),
    "retryable": pl.Boolean(),
    "status": pl.String(),
    "input_tokens": pl.Int64(),
}


def answers_in_hand(
    folder: Path, rerun: frozenset[str] = frozenset()
) -> dict[str, RowResult]:
    """Fingerprint → the newest record of a row left with a paid answer in hand, or
    paid for and sent again now (``rerun``: its tokens and cost stay on the row).

    Reads a few columns of every record, then the whole records of only those
    fingerprints that ever had such an answer (usually none)."""
    wanted = _in_hand(rerun)
    ever = positions(answer_files(folder), _FLAGS, where=wanted)["fingerprint"]
    pending = gather(folder, ever.unique(), JOURNAL_SCHEMA).filter(wanted)
    return _results(pending)


def recorded_answers(
    folder: Path, fingerprints: Collection[str], rerun: frozenset[str] = frozenset()
) -> tuple[dict[str, RowResult], dict[str, RowResult]]:
    """Of a few ``fingerprints``, those whose newest record stands (an answer a run
    must not pay for again) and those left with a paid answer in hand (see
    ``answers_in_hand``), each as fingerprint → record. For a writer that may be
    sent a row another writer already answered (a batch Ray retried)."""
    if not fingerprints:
        return {}, {}
    newest = gather(folder, pl.Series(list(fingerprints)), JOURNAL_SCHEMA)
    standing = newest.filter(~resend_condition(rerun))
    return _results(standing), _results(newest.filter(_in_hand(rerun)))


def _in_hand(rerun: frozenset[str]) -> pl.Expr:
    return _IN_HAND | (resend_condition(rerun) & pl.col("input_tokens").is_not_null())


def _results(records: pl.DataFrame) -> dict[str, RowResult]:
    found: dict[str, RowResult] = {}
    for record in records.iter_rows(named=True):
        values = {k: v for k, v in record.items() if k in _FIELDS and v is not None}
        for name in _COUNTS:
            values[name] = json.loads(values[name]) if name in values else {}
        values["status"] = RowStatus(values["status"])
        result = RowResult(**values)
        found[result.fingerprint] = result
    return found
