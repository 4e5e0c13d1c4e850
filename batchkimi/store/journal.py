"""The write-ahead journal: every received answer, appended before it counts as done.

One JSON object per line in ``<output>/.batchkimi/journal.jsonl``, keyed by the request
fingerprint. Each record is handed to the OS with one ``write`` as soon as it arrives
(so a killed process loses nothing the OS has), and ``fsync`` runs on a short timer (so
a power cut loses at most that interval). A torn last line, from a crash mid-write, is
detected on open and dropped with a warning; every whole line before it is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from batchkimi.errors import BatchkimiError
from batchkimi.records import RowResult, RowStatus

JOURNAL_NAME = "journal.jsonl"
FORMAT_VERSION = 1


class JournalError(BatchkimiError):
    """The journal cannot be written: nothing more can be made durable."""

    exit_code = 2


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All whole records, and how many torn bytes were found at the end (0 if none)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # the last line never got its newline: torn
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not isinstance(record, dict) or "fingerprint" not in record:
            break
        records.append(record)
        good_end += len(line)
    return records, len(data) - good_end


def iter_latest(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The newest record for each fingerprint, in first-seen order."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[record["fingerprint"]] = record
    return iter(latest.values())


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
        cls, folder: Path, *, fsync_interval_s: float = 0.2
    ) -> tuple[Journal, list[dict[str, Any]], int]:
        """Open for appending; return it with the records already there and torn bytes.

        A torn tail is cut off the file, so new records start on a clean line.
        """
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / JOURNAL_NAME
        records, torn = read_records(path)
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(path.stat().st_size - torn)
                os.fsync(handle.fileno())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return cls(path, fd, fsync_interval_s), records, torn

    def append(self, result: RowResult, *, row_id: str) -> None:
        """Hand one result to the OS now; it is fsynced within the interval."""
        record = asdict(result)
        record["row_id"] = row_id
        record["v"] = FORMAT_VERSION
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode()
        try:
            while data:
                written = os.write(self._fd, data)
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


def is_final(record: dict[str, Any], rerun: frozenset[str]) -> bool:
    """Whether a journalled result stands, or its row should be sent again."""
    status = record.get("status")
    if status == RowStatus.OK:
        return True
    return status not in rerun
