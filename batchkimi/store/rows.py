"""The row register: every manifest row's position, key, fingerprint and kept columns.

Written batch by batch while the manifest is read (``.batchkimi/rows.parquet``), so the
final results can be laid out in manifest order without holding the manifest in memory.
Its rows are in manifest order: the results are built in the register's order.
Rows that could not be sent carry their problem here instead of a fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchkimi.store.sink import ParquetSink, repeating

ROWS_NAME = "rows.parquet"
#: rows handled at a time by a run: manifest rows read, register rows held into one
#: row group, results rows assembled into one block (``chunk_rows_for``). Between
#: these: a 100,000-row run holds 4,096 at once (16,384 had cost its peak 10 to 20
#: MB more on polars' default arenas, as the Python API may run; nothing measurable
#: on the command line's one arena), a million-row run 16,384, which spreads each
#: call's fixed cost
CHUNK_ROWS = (4_096, 16_384)
INTERNAL_COLUMNS = {
    "_index": pl.Int64,
    "id": pl.String,
    "_fingerprint": pl.String,
    "_problem_code": pl.String,
    "_problem_message": pl.String,
    "_model": pl.String,
    "_in_scope": pl.Boolean,  # false for rows another shard sends
    # the row's content key (``manifest.rowkeys``), where its request can be reused
    # by the next run on the same settings: null for problems and local media
    "_key_a": pl.UInt64,
    "_key_b": pl.UInt64,
}
#: the Parquet metadata key holding the digest the content keys are valid under
DIGEST_KEY = b"batchkimi.row_keys"


class RowRegister:
    """Appends batches to a temporary Parquet file; ``commit`` makes it current."""

    def __init__(
        self,
        folder: Path,
        kept: dict[str, str],
        shard: str | None,
        digest: str | None = None,
        *,
        group_rows: int = CHUNK_ROWS[1],
    ) -> None:
        """``kept`` maps manifest column → output column name. Each shard keeps its
        own register, since each marks its own rows as in scope. ``digest`` says
        what the rows' content keys are valid under (see ``rowcache``). Batches
        are held into row groups of ``group_rows`` (``chunk_rows_for``)."""
        self.path = register_path(folder, shard)
        self.group_rows = group_rows
        name = self.path.name
        self.digest = digest
        self._tmp = folder / f"{name}.{os.getpid()}.tmp"
        # a run killed mid-way leaves its partial register behind; this run holds
        # the lock for this register, so any other one is such a leftover
        for leftover in folder.glob(f"{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
        self.kept = kept
        self._sink: ParquetSink | None = None
        self.rows = 0

    def add(
        self, batch: pl.DataFrame, internal: Mapping[str, list[Any] | pl.Series]
    ) -> None:
        height = batch.height
        columns = {
            name: internal[name] if name in internal else [None] * height
            for name in INTERNAL_COLUMNS
        }  # (a row without content keys is simply never reused)
        frame = pl.DataFrame(columns, schema=INTERNAL_COLUMNS)
        if self.kept:
            kept = batch.select(
                [pl.col(src).alias(dst) for src, dst in self.kept.items()]
            )
            frame = pl.concat([frame, kept], how="horizontal")
        if self._sink is None:  # batches held into row groups: a million-row
            # register is read (in manifest order, block by block) in a few dozen
            self._sink = ParquetSink(
                self._tmp, self._options, group_rows=self.group_rows
            )
        self._sink.write(frame.to_arrow())
        self.rows += frame.height

    def _options(self, table: pa.Table) -> tuple[pa.Schema, dict[str, Any]]:
        schema = table.schema
        if self.digest is not None:
            schema = schema.with_metadata({DIGEST_KEY: self.digest.encode()})
        # no statistics: rows are read by position, never filtered by value
        return schema, {
            "use_dictionary": repeating(table),
            "compression": "lz4",
            "write_statistics": False,
        }

    def commit(self) -> None:
        """Close the file and atomically make it the register for this output."""
        if self._sink is None:
            empty = pl.DataFrame(schema=INTERNAL_COLUMNS).to_arrow()
            pq.write_table(empty, self._tmp)
        else:
            sink, self._sink = self._sink, None
            sink.close()
        Path(self._tmp).replace(self.path)

    def abandon(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.abandon()
        self._tmp.unlink(missing_ok=True)


def chunk_rows_for(rows: int) -> int:
    """Rows handled at a time by a job of ``rows`` rows: about a 32nd of them,
    rounded down to a power of two within ``CHUNK_ROWS``. Rounded, so that a job
    keeps its chunk size while it grows (until it doubles): a resume copies the
    results blocks that did not change only while their size stays the same."""
    share = max(rows // 32, 1)
    return max(CHUNK_ROWS[0], min(CHUNK_ROWS[1], 1 << (share.bit_length() - 1)))


def register_path(folder: Path, shard: str | None) -> Path:
    """The register of ``shard`` (or of the whole job) in state folder ``folder``."""
    return folder / (f"rows-shard-{shard}.parquet" if shard else ROWS_NAME)
