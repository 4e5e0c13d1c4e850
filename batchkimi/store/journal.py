"""The write-ahead journal: every received answer, appended before it counts as done.

One JSON object per line, keyed by the request fingerprint, in this run's stream of
journal files (``segments.py`` lays them out). Each record is handed to the OS with
one ``write`` as soon as it arrives (so a killed process loses nothing the OS has),
and ``fsync`` runs on a short timer (so a power cut loses at most that interval). A
torn last line, from a crash mid-write, is detected on open and dropped with a
warning; every whole line before it is kept.

When the current file reaches ``rotate_bytes`` it is fsynced and sealed, appends go
on in a new generation, and a background thread compacts the sealed one into a
Parquet segment, so no reader ever parses much JSON.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from dataclasses import fields
from pathlib import Path

import polars as pl

from batchkimi import jsoncodec
from batchkimi.errors import BatchkimiError
from batchkimi.records import RowResult, RowStatus
from batchkimi.store.answers import AnsweredSet, answered, answered_hashes, read_latest
from batchkimi.store.files import (
    clear_compaction_leftovers,
    finish_compactions,
    journal_file,
    journal_paths,
    journals,
    segments,
    stream_of,
    torn_tail_bytes,
)
from batchkimi.store.segments import compact

__all__ = [
    "FORMAT_VERSION",
    "Journal",
    "JournalError",
    "answered_fingerprints",
    "answered_set",
    "journal_name",
    "journal_paths",
    "read_latest",
    "resend_condition",
    "torn_tail_bytes",
]

#: the one call that hands journal bytes to the OS (tests inject ENOSPC here)
_write = os.write

_RECORD_FIELDS = tuple(field.name for field in fields(RowResult))
FORMAT_VERSION = 1
#: RowResult fields of cause -> count, journaled as JSON text
_COUNTS = ("retries", "repair_causes")
#: a generation this large is sealed and compacted (about 40,000 short answers)
ROTATE_BYTES = 32 << 20
#: a generation this large is sealed and compacted when its run ends, too: every
#: later run reads it two or three times, and JSON costs ten times a segment's time
SEAL_BYTES = 4 << 20
_SLICE = 65_536


class JournalError(BatchkimiError):
    """The journal cannot be written (a full disk, say): the run stops, resumable."""

    exit_code = 3


def journal_name(shard: str | None) -> str:
    """The first journal file of a shard's stream (or the unsharded run's)."""
    return journal_file(stream_of(shard), 0)


class _Compactor:
    """Compacts sealed generations in order, on one background thread.

    A failure (a full disk, say) leaves the generation as JSONL, where every reader
    still finds it, stops compacting for this run and is kept in ``error``; the
    stream's next writer tries again.
    """

    def __init__(self, state_dir: Path, stream: str) -> None:
        self._state_dir = state_dir
        self._stream = stream
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None

    def submit(self, generation: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"compact-{self._stream}", daemon=True
            )
            self._thread.start()
        self._queue.put(generation)

    def _work(self) -> None:
        while (generation := self._queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                compact(self._state_dir, self._stream, generation)
            except (OSError, pl.exceptions.PolarsError) as exc:
                self.error = exc

    def finish(self) -> None:
        """Wait for every generation submitted so far."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class Journal:
    """Append-only and durable. Open with ``Journal.open(folder)``."""

    def __init__(
        self,
        state_dir: Path,
        stream: str,
        generation: int,
        *,
        fsync_interval_s: float,
        rotate_bytes: int,
    ) -> None:
        self._state_dir = state_dir
        self._stream = stream
        self._generation = generation
        self._fsync_interval_s = fsync_interval_s
        self._rotate_bytes = rotate_bytes
        self.path = state_dir / journal_file(stream, generation)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        # the flusher's thread fsyncs the current file while a rotation may swap it
        self._fd_lock = threading.Lock()
        self._dirty = False
        self._compactor = _Compactor(state_dir, stream)

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        shard: str | None = None,
        fsync_interval_s: float = 0.2,
        rotate_bytes: int | None = None,
    ) -> tuple[Journal, int]:
        """Open this run's stream for appending; return it and the torn bytes found.

        Finishes what a killed run left of its compactions, cuts a torn tail off the
        newest generation (so new records start on a clean line), and seals that
        generation first if it is already full. Only the lock holder for this
        stream may call this.
        """
        folder.mkdir(parents=True, exist_ok=True)
        rotate_bytes = ROTATE_BYTES if rotate_bytes is None else rotate_bytes
        stream = stream_of(shard)
        clear_compaction_leftovers(folder, stream)
        finish_compactions(folder, stream)
        pending = sorted(g for s, g in journals(folder) if s == stream)
        compacted = [g for s, g in segments(folder) if s == stream]
        newest = max([*pending, *compacted], default=0)
        current = newest if newest in pending or not compacted else newest + 1
        path = folder / journal_file(stream, current)
        torn = torn_tail_bytes(path)
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(path.stat().st_size - torn)
                os.fsync(handle.fileno())
        sealed = [g for g in pending if g != current]
        if path.exists() and path.stat().st_size >= rotate_bytes:
            sealed.append(current)
            current += 1
        journal = cls(
            folder,
            stream,
            current,
            fsync_interval_s=fsync_interval_s,
            rotate_bytes=rotate_bytes,
        )
        for generation in sealed:  # a killed run's, or a journal from before segments
            journal._compactor.submit(generation)
        return journal, torn

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
        size = len(data)
        try:
            while data:
                written = _write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            raise self._error(exc) from exc
        self._dirty = True
        self._size += size
        if self._size >= self._rotate_bytes:
            self._rotate()

    def _error(self, exc: OSError) -> JournalError:
        return JournalError(
            f"cannot write the journal {self.path}: {exc.strerror}. Free disk space "
            "or fix permissions, then re-run the same command to resume"
        )

    def _rotate(self) -> None:
        """Seal the current generation (whole on disk), go on in the next, and have
        the sealed one compacted."""
        sealed = self._generation
        path = self._state_dir / journal_file(self._stream, sealed + 1)
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600
            )
            with self._fd_lock:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd, self.path = fd, path
            dir_fd = os.open(self._state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new generation's name outlives a power cut
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise self._error(exc) from exc
        self._generation, self._size, self._dirty = sealed + 1, 0, False
        self._compactor.submit(sealed)

    def _fsync_current(self) -> None:
        with self._fd_lock:
            os.fsync(self._fd)

    def sync(self) -> None:
        if self._dirty:
            self._dirty = False
            self._fsync_current()

    async def run_flusher(self) -> None:
        """Fsync on a timer until cancelled."""
        while True:
            await asyncio.sleep(self._fsync_interval_s)
            if self._dirty:
                self._dirty = False
                await asyncio.to_thread(self._fsync_current)

    @property
    def compaction_error(self) -> Exception | None:
        """Why compacting stopped in this run, if it did; nothing is lost by it."""
        return self._compactor.error

    def close(self, *, seal: bool = True) -> None:
        """Fsync and close; with ``seal``, seal the generation if it is large
        (``SEAL_BYTES``); wait for the compactions under way."""
        try:
            self.sync()
            if seal and self._size >= SEAL_BYTES:  # whole on disk: fsynced just now
                self._compactor.submit(self._generation)
        finally:
            os.close(self._fd)
            self._compactor.finish()


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
    """Fingerprints whose newest result stands (see ``resend_condition``).

    One Python string per answer (about 150 bytes each in a set): a row source that
    builds its fingerprints with polars should use ``answers.AnsweredSet`` instead.
    """
    found: set[str] = set()
    for fingerprints in answered(folder, ~resend_condition(rerun)):
        for start in range(0, fingerprints.len(), _SLICE):  # no list of them all
            found.update(fingerprints.slice(start, _SLICE).to_list())
    return found


def answered_set(folder: Path, rerun: frozenset[str]) -> AnsweredSet:
    """``answered_fingerprints`` as one sorted column, for vectorised lookups."""
    return answered_hashes(folder, ~resend_condition(rerun))
