"""The write-ahead journal: every received answer, appended before it counts as done.

One JSON object per line in ``<output>/.batchkimi/journal.jsonl``, keyed by the request
fingerprint. Each record is handed to the OS with one ``write`` as soon as it arrives
(so a killed process loses nothing the OS has), and ``fsync`` runs on a short timer (so
a power cut loses at most that interval). A torn last line, from a crash mid-write, is
detected on open and dropped with a warning; every whole line before it is kept.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import polars as pl

from batchkimi import jsoncodec
from batchkimi.errors import BatchkimiError
from batchkimi.records import RowResult, RowStatus

#: the one call that hands journal bytes to the OS (tests inject ENOSPC here)
_write = os.write

JOURNAL_NAME = "journal.jsonl"
_RECORD_FIELDS = tuple(field.name for field in fields(RowResult))
FORMAT_VERSION = 1
#: RowResult fields of cause -> count, journaled as JSON text
_COUNTS = ("retries", "repair_causes")
_BLOCK = 1 << 16


class JournalError(BatchkimiError):
    """The journal cannot be written (a full disk, say): the run stops, resumable."""

    exit_code = 3


def torn_tail_bytes(path: Path) -> int:
    """How many bytes follow the last newline: a record whose write never finished.

    Reads backwards from the end in blocks, so a large journal is not read whole.
    """
    if not path.exists():
        return 0
    size = path.stat().st_size
    with path.open("rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - _BLOCK)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline != -1:
                return size - (start + newline + 1)
            end = start
    return size


def journal_name(shard: str | None) -> str:
    """Each shard appends to its own journal; every run reads them all."""
    return f"journal-shard-{shard}.jsonl" if shard else JOURNAL_NAME


def journal_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("journal*.jsonl"))


def read_latest(folder: Path, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The newest record per fingerprint across every journal in ``folder``.

    ``schema`` must include fingerprint and finished_at. A journal another run is still
    writing may end mid-line: only its complete lines are read. A line polars cannot
    parse (only a damaged disk makes one) is skipped by the Python reader instead.
    """
    fields = dict(schema)
    frames = [_read_one(path, fields) for path in journal_paths(folder)]
    frames = [frame for frame in frames if frame.height]
    if not frames:
        return pl.DataFrame(schema=fields)
    frame = pl.concat(frames) if len(frames) > 1 else frames[0]
    if len(frames) > 1:
        frame = frame.sort("finished_at", maintain_order=True, nulls_last=False)
    return frame.unique(subset="fingerprint", keep="last", maintain_order=True)


def _read_one(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    torn = torn_tail_bytes(path)
    size = path.stat().st_size
    if size - torn == 0:
        return pl.DataFrame(schema=schema)
    try:
        if not torn:
            return pl.scan_ndjson(path, schema=schema).collect()
        with path.open("rb") as handle:
            whole_lines = handle.read(size - torn)
        return pl.read_ndjson(io.BytesIO(whole_lines), schema=schema)
    except pl.exceptions.PolarsError:
        return _read_leniently(path, schema)


def _read_leniently(path: Path, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    rows = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = jsoncodec.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("fingerprint"), str):
                rows.append({name: record.get(name) for name in schema})
    return pl.DataFrame(rows, schema=dict(schema), strict=False)


class Journal:
    """Append-only and durable. Open with ``Journal.open(folder)``."""

    def __init__(self, path: Path, fd: int, fsync_interval_s: float) -> None:
        self.path = path
        self._fd = fd
        self._fsync_interval_s = fsync_interval_s
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls, folder: Path, *, shard: str | None = None, fsync_interval_s: float = 0.2
    ) -> tuple[Journal, int]:
        """Open this run's journal for appending; return it and the torn bytes found.

        A torn tail is cut off the file, so new records start on a clean line. Only the
        lock holder for this journal may call this.
        """
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / journal_name(shard)
        torn = torn_tail_bytes(path)
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(path.stat().st_size - torn)
                os.fsync(handle.fileno())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return cls(path, fd, fsync_interval_s), torn

    def append(self, result: RowResult, *, row_id: str) -> None:
        """Hand one result to the OS now; it is fsynced within the interval."""
        # a shallow read of the fields: dataclasses.asdict deep-copies, a cost per row
        record = {name: getattr(result, name) for name in _RECORD_FIELDS}
        for name in _COUNTS:  # cause -> count, as a JSON object column
            counts = record[name]
            record[name] = (
                jsoncodec.dumps(counts, sort_keys=True).decode() if counts else None
            )
        record["row_id"] = row_id
        record["v"] = FORMAT_VERSION
        data = jsoncodec.dumps(record) + b"\n"
        try:
            while data:
                written = _write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            msg = (
                f"cannot write the journal {self.path}: {exc.strerror}. Free disk "
                "space "
                "or fix permissions, then re-run the same command to resume"
            )
            raise JournalError(msg) from exc
        self._dirty = True

    def sync(self) -> None:
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    async def run_flusher(self) -> None:
        """Fsync on a timer until cancelled."""
        while True:
            await asyncio.sleep(self._fsync_interval_s)
            if self._dirty:
                self._dirty = False
                await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self._fd)


def resend_condition(rerun: frozenset[str]) -> pl.Expr:
    """Which results a run sends again, over status, error_code and retryable.

    An ``ok`` answer always stands. A failure stands unless it was only attempts
    running out on transient failures (a 5xx storm, a night without network): those
    are sent again. ``rerun`` names more to send again: statuses (error, incomplete,
    skipped) or error codes (length, content_filter, DataInspectionFailed, …).
    """
    again = list(rerun)
    return (pl.col("status") != RowStatus.OK.value) & (
        pl.col("status").is_in(again)
        | pl.col("error_code").is_in(again)
        | pl.col("retryable").fill_null(False)
    )


def answered_fingerprints(folder: Path, rerun: frozenset[str]) -> set[str]:
    """Fingerprints whose newest result stands (see ``resend_condition``)."""
    schema = {
        "fingerprint": pl.String(),
        "status": pl.String(),
        "error_code": pl.String(),
        "finished_at": pl.String(),
        "retryable": pl.Boolean(),
    }
    latest = read_latest(folder, schema)
    return set(latest.filter(~resend_condition(rerun))["fingerprint"].to_list())
