"""What a person or a log collector sees of a run, on stderr (stdout stays clean).

Three shapes: a rich progress bar on a terminal; plain periodic lines otherwise (cron,
CI, pipes); or, with ``--log-format json``, one JSON event per line (start, progress,
retry, warning, stop, summary) for a log collector.

rich is imported only when a bar or a table is drawn: a finished job's re-run prints
a few plain lines, and loading rich would cost more than the rest of it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from batchkimi.printable import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, TaskID

    from batchkimi.outcome import RunOutcome
    from batchkimi.records import RowResult


def safe(text: str) -> str:
    """Text from files and answers, fit for a terminal (``printable``)."""
    return printable(text)


def stdout_console() -> Console:
    """The console for what a user reads or pipes: a terminal's width, or 100
    columns into a file or a pipe."""
    from rich.console import Console

    class _StdoutConsole(Console):
        """Tables on stdout. A reader that goes away (``| head``) is not an error."""

        def on_broken_pipe(self) -> None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(0)

    console = _StdoutConsole()
    if not console.is_terminal:
        console.width = 100
    return console


_RESUME_HINT = {
    "signal": "stopped by a signal",
    "max_runtime": "stopped at --max-runtime",
    "max_cost": "stopped before --max-cost would be exceeded",
    "limit": "stopped at --limit",
    "throttle": "stopped after --max-throttle-wait without an answer",
}


class Tally:
    """Running totals of the results this run received."""

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.retries = 0
        self.tokens = 0
        self.costs: dict[str, float] = {}  # currency -> cost so far
        self.start = time.monotonic()

    def add(self, result: RowResult) -> None:
        self.done += 1
        if result.status != "ok":  # RowStatus.OK (records: not loaded to print)
            self.failed += 1
        self.tokens += result.total_tokens or 0
        if result.cost is not None and result.currency is not None:
            self.costs[result.currency] = self.costs.get(result.currency, 0.0) + (
                result.cost
            )

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def currency(self) -> str | None:
        """The one currency of the costs so far (None: none, or several)."""
        return next(iter(self.costs)) if len(self.costs) == 1 else None

    @property
    def cost(self) -> float:
        return sum(self.costs.values())

    def cost_text(self) -> str:
        if not self.costs:
            return "cost unknown"
        return " + ".join(f"{v:.4f} {c}" for c, v in sorted(self.costs.items()))

    def line(self) -> str:
        return (
            f"failed {self.failed:,} · {self.rate():.1f} rows/s · {self.tokens:,} "
            f"tokens · {self.cost_text()}"
        )


class ProgressDisplay:
    """For people: a live bar on a terminal, a line every ``interval_s`` elsewhere."""

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
        self.tally = Tally()
        self._own_stream = stream is None
        self._console: Console | None = None  # made (rich loaded) at the start
        self._live: bool | None = None  # a terminal: a live bar; decided then too
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = time.monotonic()
        self._stats_width = 0

    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        if self.quiet:
            return
        if already_done:
            self._print(f"resuming: {already_done:,} answers already received are kept")
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, stderr=self._own_stream)
        if self._live is None:
            self._live = self._console.is_terminal
        if not self._live:
            total = f"{total_rows:,}" if total_rows is not None else "?"
            self._print(f"started: {total} rows in the manifest")
            return
        from rich.progress import Progress

        self._progress = Progress(
            *self._columns(self._console.width, total_rows),
            console=self._console,
            transient=True,  # gone when the run ends: the summary says it all
        )
        self._progress.start()
        to_send = None if total_rows is None else max(total_rows - already_done, 0)
        self._task = self._progress.add_task("run", total=to_send, stats="")

    def _columns(self, width: int, total: int | None) -> list[ProgressColumn]:
        """What fits: the count and the time left always; the bar where there is
        room; the running totals last, cut to the room left (``_stats``)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        count = len(f"{total or 0:,}") * 2 + 1
        essentials = 10 + count + 1 + 8 + 8  # label, count, elapsed, left
        bar = min(40, width - essentials - 30)  # 30: the totals' fair share
        bar = bar if bar >= 8 else 0
        self._stats_width = max(0, width - essentials - (bar + 1 if bar else 0))
        columns: list[ProgressColumn] = [TextColumn("[bold]batchkimi")]
        if bar:
            columns.append(BarColumn(bar_width=bar))
        columns += [
            MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=count)),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
        ]
        return columns

    def _stats(self) -> str:
        """The running totals, cut to what the line has room for (rich would
        otherwise squeeze the count and the time left out of the line)."""
        line = self.tally.line()
        return line if len(line) <= self._stats_width else line[: self._stats_width]

    def on_result(self, result: RowResult) -> None:
        self.tally.add(result)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, stats=self._stats())
        elif not self.quiet and time.monotonic() - self._last_line >= self.interval_s:
            self._last_line = time.monotonic()
            self._print(f"progress: {self.tally.done:,} sent, {self.tally.line()}")

    def on_retry(self, row_id: str, code: str, attempt: int) -> None:
        self.tally.retries += 1

    def on_warning(self, message: str) -> None:
        self._print(f"warning: {message}")

    def on_info(self, message: str) -> None:
        if not self.quiet:
            self._print(message)

    def on_stop(self, reason: str, detail: str) -> None:
        if reason != "fatal":
            self._print(f"stopping: {detail or reason}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, outcome: RunOutcome) -> None:
        self.close()
        for line in summary_lines(outcome):
            self._print(line)

    def _print(self, line: str) -> None:
        line = safe(line)
        if self._progress is not None:
            self._progress.console.print(
                f"batchkimi: {line}", highlight=False, markup=False
            )
            return
        self.stream.write(f"batchkimi: {line}\n")
        self.stream.flush()


class JsonLog:
    """For log collectors: one JSON object per line, each with an ``event`` name."""

    def __init__(
        self, *, stream: TextIO | None = None, interval_s: float = 10.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.tally = Tally()
        self._last = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
        }
        self.stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()

    def _progress(self) -> None:
        t = self.tally
        cost = round(t.cost, 6) if t.currency else None
        self.emit(
            "progress",
            sent=t.done,
            failed=t.failed,
            retries=t.retries,
            rows_per_s=round(t.rate(), 2),
            tokens=t.tokens,
            cost=cost,
            currency=t.currency,
        )

    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        self.emit("start", total_rows=total_rows, already_done=already_done)

    def on_result(self, result: RowResult) -> None:
        self.tally.add(result)
        if time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            self._progress()

    def on_retry(self, row_id: str, code: str, attempt: int) -> None:
        self.tally.retries += 1
        self.emit("retry", row_id=row_id, cause=code, attempt=attempt)

    def on_warning(self, message: str) -> None:
        self.emit("warning", message=message)

    def on_info(self, message: str) -> None:
        self.emit("info", message=message)

    def on_stop(self, reason: str, detail: str) -> None:
        self.emit("stop", reason=reason, detail=detail)

    def close(self) -> None:
        pass

    def finish(self, outcome: RunOutcome) -> None:
        self._progress()
        overall = outcome.summary.get("overall", {})
        self.emit(
            "summary",
            exit_code=outcome.exit_code,
            by_status=outcome.by_status,
            sent=outcome.sent,
            stop_reason=outcome.stop_reason,
            tokens=overall.get("tokens"),
            cost=overall.get("cost"),
            currency=overall.get("currency"),
            cost_by_currency=overall.get("cost_by_currency"),
            results=str(outcome.output / "results.parquet")
            if outcome.results_written
            else None,
            error=str(outcome.fatal) if outcome.fatal else None,
            message="; ".join(summary_lines(outcome)),
        )


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def summary_lines(outcome: RunOutcome) -> list[str]:
    """The closing lines: counts, tokens, cost, where the files are, what to do next."""
    lines: list[str] = []
    if outcome.results_written:
        overall = outcome.summary["overall"]
        counts = ", ".join(f"{n:,} {s}" for s, n in outcome.by_status.items() if n)
        cost, currency = overall["cost"], overall["currency"]
        tokens = overall["tokens"]
        by_currency = overall.get("cost_by_currency") or {}
        if len(by_currency) > 1:
            cost_text = " + ".join(f"{v:.4f} {c}" for c, v in by_currency.items())
        elif cost is not None:
            cost_text = f"{cost:.4f} {currency}"
        elif not tokens["input_tokens"]:
            cost_text = "nothing (no answer was received)"
        else:
            cost_text = "unknown (no price)"
        rate = (
            f" at {overall['rows_per_s']} rows/s"
            if outcome.sent and overall["rows_per_s"]
            else ""
        )
        lines += [
            f"rows: {counts or 'none'}",
            f"sent this run: {outcome.sent:,} requests{rate}",
            f"tokens: {tokens['input_tokens']:,} in, {tokens['output_tokens']:,} out "
            f"({tokens['reasoning_tokens']:,} reasoning)",
            f"cost: {cost_text}",
            f"results: {outcome.output / 'results.parquet'}",
            f"summary: {outcome.output / 'summary.json'}",
        ]
        duplicates = outcome.summary["run"].get("duplicate_rows_this_run") or 0
        if duplicates and outcome.sent:
            lines.append(
                f"note: {_rows(duplicates)} asked exactly what an earlier row asked; "
                "each such request was sent (and paid for) once"
            )
        shared = outcome.summary["run"].get("rows_with_shared_id") or 0
        if shared:
            first = outcome.summary["run"]["first_shared_id"]
            lines.append(
                f"note: {_rows(shared)} share their id with another row (such as "
                f"{first!r}); results.parquet keeps every row, in manifest order, but "
                "an id no longer names one row. Map [columns] id to a unique column"
            )
        if overall["rows_without_price"]:
            lines.append(
                f"note: {_rows(overall['rows_without_price'])} without a known price; "
                "supply one with --prices FILE"
            )
    else:
        lines.append(
            f"stopped at once: {outcome.sent:,} answers received this run are in the "
            "journal; results.parquet is rebuilt by the next run"
        )
    if outcome.stop_reason in _RESUME_HINT:
        lines.append(
            f"{_RESUME_HINT[outcome.stop_reason]}: re-run the same command to resume"
        )
    return lines
