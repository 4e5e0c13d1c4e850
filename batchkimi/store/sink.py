"""A Parquet file written on a thread of its own.

pyarrow encodes and compresses without holding the GIL, so a table handed over here
is written while the caller prepares the next one, on the other core. One table
waits at most, so memory holds two row groups, never the file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: the writer's schema and options, from the first table
Options = Callable[[pa.Table], tuple[pa.Schema, dict[str, Any]]]
#: a column whose first table repeats its values less than this is not worth a
#: dictionary (ids, fingerprints, times, captions): trying one costs pyarrow more
#: than the rest of the writing, for a larger file
_REPEATS = 2


def repeating(table: pa.Table) -> list[str]:
    """The columns of ``table`` that repeat their values: dictionary-encoded."""
    rows = max(table.num_rows, 1)
    return [
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if not pa.types.is_nested(column.type)  # (lists, structs: left plain)
        and pc.count_distinct(column, mode="all").as_py() * _REPEATS <= rows
    ]


def zstd(table: pa.Table) -> tuple[pa.Schema, dict[str, Any]]:
    return table.schema, {"compression": "zstd", "use_dictionary": repeating(table)}


class ParquetSink:
    """Tables appended as row groups to ``path``, by a thread. An error writing is
    raised by the next ``write`` or by ``close``; ``abandon`` drops what is queued
    and raises nothing."""

    def __init__(self, path: Path, options: Options = zstd) -> None:
        self._path = path
        self._options = options
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._abandoned = False
        self._closed = False
        self._schema: pa.Schema | None = None
        # a daemon: a caller that dies without closing leaves a temporary file
        # behind (its next run removes it), never a process that cannot exit
        self._thread = threading.Thread(
            target=self._run, name="parquet-sink", daemon=True
        )
        self._thread.start()

    def write(self, table: pa.Table) -> None:
        self._raise()
        if self._schema is None:
            self._schema = table.schema
        if table.schema != self._schema:
            table = table.cast(self._schema)
        self._queue.put(table)

    def close(self) -> None:
        """Wait for every table to be written, and close the file."""
        self._finish()
        self._raise()

    def abandon(self) -> None:
        """Stop writing; the file is left as it is, for the caller to remove."""
        self._abandoned = True
        self._finish()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        writer: pq.ParquetWriter | None = None
        try:
            while (table := self._queue.get()) is not None:
                if self._abandoned:
                    continue
                if writer is None:
                    schema, options = self._options(table)
                    writer = pq.ParquetWriter(self._path, schema, **options)
                writer.write_table(table)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
            while self._queue.get() is not None:  # let the caller go on to close
                pass
        finally:
            self._close(writer)

    def _close(self, writer: pq.ParquetWriter | None) -> None:
        """Close the file; a failure (a full disk at the footer) is the caller's
        too, or a file without its end would be taken for whole."""
        if writer is None:
            return
        try:
            writer.close()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = self._error or exc

    def _raise(self) -> None:
        if self._error is not None and not self._abandoned:
            raise self._error

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()
