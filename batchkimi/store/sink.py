"""A Parquet file written on a thread of its own.

pyarrow encodes and compresses without holding the GIL, so a table handed over here
is written while the caller prepares the next one, on the other core. Tables are
held until they make a row group of ``group_rows`` (a reader loads a row group at a
time: groups of a few thousand rows read several times faster than small ones); one
group waits at most, so memory holds two row groups, never the file.
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
    """Tables appended to ``path`` by a thread, as row groups of at least
    ``group_rows`` rows (the last one fewer; by default one a table). An error
    writing is raised by the next ``write`` or by ``close``; ``abandon`` drops what
    is held and raises nothing."""

    def __init__(
        self, path: Path, options: Options = zstd, *, group_rows: int = 1
    ) -> None:
        self._path = path
        self._options = options
        self._group_rows = group_rows
        self._held: list[pa.Table] = []
        self._held_rows = 0
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
        self._held.append(table)
        self._held_rows += table.num_rows
        if self._held_rows >= self._group_rows:
            self._hand_over()

    def _hand_over(self) -> None:
        """The tables held, to the thread as one row group."""
        if self._held:
            self._queue.put(pa.concat_tables(self._held))
        self._held, self._held_rows = [], 0

    def close(self) -> None:
        """Write what is held, wait for every row group to be written, and close
        the file."""
        if self._error is None:
            self._hand_over()
        self._finish()
        self._raise()

    def abandon(self) -> None:
        """Stop writing; the file is left as it is, for the caller to remove."""
        self._abandoned = True
        self._held, self._held_rows = [], 0
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
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
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
