"""What a run comes to (``RunOutcome``, which the CLI renders and tests inspect), and
who hears of it as it goes (``RunObserver``).

Its own module, with nothing heavy imported, so that a finished job's re-run can be
answered without loading what a run needs (``store.state.finished_outcome``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from batchkimi.errors import FatalApiError

if TYPE_CHECKING:
    from batchkimi.records import RowResult


class RunObserver(Protocol):
    """What the CLI's progress display and JSON log listen to."""

    def on_start(self, *, total_rows: int | None, already_done: int) -> None: ...

    def on_result(self, result: RowResult) -> None: ...

    def on_retry(self, row_id: str, code: str, attempt: int) -> None: ...

    def on_warning(self, message: str) -> None: ...

    def on_info(self, message: str) -> None: ...

    def on_stop(self, reason: str, detail: str) -> None: ...


class SilentObserver:
    """Hears everything, says nothing (the Python API's default)."""

    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        pass

    def on_result(self, result: RowResult) -> None:
        pass

    def on_retry(self, row_id: str, code: str, attempt: int) -> None:
        pass

    def on_warning(self, message: str) -> None:
        pass

    def on_info(self, message: str) -> None:
        pass

    def on_stop(self, reason: str, detail: str) -> None:
        pass


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
