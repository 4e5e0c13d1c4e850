"""What a run comes to: ``RunOutcome``, which the CLI renders and tests inspect.

Its own module, with nothing heavy imported, so that a finished job's re-run can be
answered without loading what a run needs (``store.state.finished_outcome``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchkimi.errors import FatalApiError


@dataclass(slots=True)
class RunOutcome:
    exit_code: int
    output: Path
    by_status: dict[str, int]
    sent: int
    summary: dict[str, Any]
    stop_reason: str | None = None
    stop_detail: str = ""
    fatal: FatalApiError | None = None
    warnings: list[str] = field(default_factory=list)
    results_written: bool = True
    pending: int = 0  # in-scope rows the next run would send
