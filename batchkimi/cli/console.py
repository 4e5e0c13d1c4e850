"""What a person watching a run sees: a rich progress bar on a terminal, plain periodic
log lines otherwise (cron, CI, pipes). Everything goes to stderr; stdout stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from batchkimi.records import RowResult, RowStatus


class _Tally:
    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.tokens = 0
        self.cost = 0.0
        self.currency: str | None = None
        self.start = time.monotonic()

    def add(self, result: RowResult) -> None:
        self.done += 1
        if result.status != RowStatus.OK:
            self.failed += 1
        self.tokens += result.total_tokens or 0
        if result.cost is not None:
            self.cost += result.cost
            self.currency = result.currency

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def cost_text(self) -> str:
        return f"{self.cost:.4f} {self.currency}" if self.currency else "cost unknown"


class ProgressDisplay:
    """A RunObserver for people: a live bar on a terminal, log lines elsewhere."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interval_s = interval_s
        self.tally = _Tally()
        self.total: int | None = None
        self.already_done = 0
        self._console = Console(file=self.stream, stderr=stream is None)
        self._live = self._console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = time.monotonic()

    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        self.total = total_rows
        self.already_done = already_done
        if self.quiet:
            return
        if already_done:
            self._print(
                f"resuming: {already_done:,} requests already answered are kept"
            )
        if self._live:
            self._progress = Progress(
                TextColumn("[bold]batchkimi"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
            to_send = None if total_rows is None else max(total_rows - already_done, 0)
            self._task = self._progress.add_task("run", total=to_send, stats="")
        else:
            total = f"{total_rows:,}" if total_rows is not None else "?"
            self._print(f"started: {total} rows in the manifest")

    def on_result(self, result: RowResult) -> None:
        self.tally.add(result)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, stats=self._stats())
        elif not self.quiet and time.monotonic() - self._last_line >= self.interval_s:
            self._last_line = time.monotonic()
            self._print(f"progress: {self.tally.done:,} sent, {self._stats()}")

    def on_warning(self, message: str) -> None:
        self._print(f"warning: {message}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _stats(self) -> str:
        t = self.tally
        return (
            f"failed {t.failed:,} · {t.rate():.1f} rows/s · {t.tokens:,} tokens · "
            f"{t.cost_text()}"
        )

    def _print(self, line: str) -> None:
        self.stream.write(f"batchkimi: {line}\n")
        self.stream.flush()


def render_summary(outcome: Any, stream: TextIO) -> None:
    """The closing lines: counts, tokens, cost, where the files are."""
    overall = outcome.summary["overall"]
    counts = ", ".join(f"{n:,} {s}" for s, n in outcome.by_status.items() if n)
    cost = overall["cost"]
    currency = overall["currency"]
    cost_text = f"{cost:.4f} {currency}" if cost is not None else "unknown (no price)"
    tokens = overall["tokens"]
    lines = [
        f"rows: {counts or 'none'}",
        f"sent this run: {outcome.sent:,} requests"
        + (f" at {overall['rows_per_s']} rows/s" if overall["rows_per_s"] else ""),
        f"tokens: {tokens['input_tokens']:,} in, {tokens['output_tokens']:,} out "
        f"({tokens['reasoning_tokens']:,} reasoning)",
        f"cost: {cost_text}",
        f"results: {outcome.output / 'results.parquet'}",
        f"summary: {outcome.output / 'summary.json'}",
    ]
    duplicates = outcome.summary["run"].get("duplicate_rows_this_run") or 0
    if duplicates:
        lines.append(
            f"note: {duplicates:,} rows asked exactly what an earlier row asked; "
            "each such request was sent (and paid for) once"
        )
    if overall["rows_without_price"]:
        lines.append(
            f"note: {overall['rows_without_price']:,} rows have no known price; "
            "supply one with --prices FILE"
        )
    for line in lines:
        stream.write(f"batchkimi: {line}\n")
    stream.flush()
