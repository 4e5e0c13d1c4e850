"""Load what a run left in its output folder, finished or not.

A finished run's ``results.parquet`` is the record. While a run is going (or after one
was killed) the journal (its JSONL files and compacted segments) is newer than the
results, and holds every answer received so far; the report then reads the journal
and says it is partial. ``plan.json``, when
``batchkimi plan`` left one, is the estimate to compare the bill with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from batchkimi.errors import ConfigError
from batchkimi.store.answers import read_latest
from batchkimi.store.files import journals, segments
from batchkimi.store.results import RESULTS_NAME
from batchkimi.store.schema import JOURNAL_SCHEMA

STATE_DIR = ".batchkimi"
PLAN_NAME = "plan.json"


@dataclass(frozen=True, slots=True)
class RunData:
    results: pl.DataFrame  # RESULTS_SCHEMA columns (``id`` from the journal's row_id)
    partial: bool  # read from the journal: the run is going, or was cut short
    plan: dict[str, Any] | None
    source: Path


def load_run(output: Path) -> RunData:
    """Everything a report needs from ``output``; a ConfigError if it holds no run."""
    results_path = output / RESULTS_NAME
    state = output / STATE_DIR
    answers = [*journals(state).values(), *segments(state).values()]
    if not results_path.is_file() and not answers:
        msg = (
            f"{output} holds no batchkimi run (no {RESULTS_NAME}, no journal). Give "
            "the --output folder of a run"
        )
        raise ConfigError(msg)
    newest_journal = max((_mtime(p) for p in answers), default=0.0)
    if results_path.is_file() and results_path.stat().st_mtime >= newest_journal:
        frame = pl.read_parquet(results_path, glob=False)
        partial, source = False, results_path
    else:
        schema = {**JOURNAL_SCHEMA, "row_id": pl.String()}
        frame = read_latest(output / STATE_DIR, schema).rename({"row_id": "id"})
        partial, source = True, output / STATE_DIR
    return RunData(frame, partial, _plan(output), source)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # a journal file compacted since it was listed
        return 0.0


def _plan(output: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads((output / PLAN_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None
