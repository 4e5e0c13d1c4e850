"""The row register: every manifest row's position, key, fingerprint and kept columns.

Written batch by batch while the manifest is read (``.batchkimi/rows.parquet``), so the
final results can be laid out in manifest order without holding the manifest in memory.
Its rows are in manifest order: the results are built in the register's order.
Rows that could not be sent carry their problem here instead of a fingerprint.

A run that only appends rows to the last run's (``store.appended``) leaves the base
file as it is and writes the rows after it to a tail file (``rows.tail.parquet``),
which names the base it follows: copying a million rows to add one cost 0.4 s. The
register is then both files read as one (``RegisterFiles``); a tail whose base was
replaced since is not part of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchkimi.store.files import file_facts
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
#: every other value of a register row, hashed twice as it is registered: a results
#: block's key is made of its rows' (``reuse``), so a build after rows were appended
#: hashes the new rows only (hashing a million rows' values took 0.3 s)
ROW_HASHES = {"_hash_a": 0x726F7773, "_hash_b": 0x68617368}
#: the Parquet metadata key holding the digest the content keys are valid under
DIGEST_KEY = b"batchkimi.row_keys"
#: a tail file's metadata key: the facts of the base file it follows
BASE_KEY = b"batchkimi.base"


@dataclass(frozen=True, slots=True)
class RegisterFiles:
    """A register as it lies on disk: its base file, then its tail if it has one.
    Rows are numbered across them, in that order."""

    parts: tuple[Path, ...]

    @property
    def base(self) -> Path:
        """The base file (its name names the register's companions)."""
        return self.parts[0]

    @property
    def tail(self) -> Path | None:
        return self.parts[1] if len(self.parts) > 1 else None

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(list(self.parts), glob=False)

    def group_rows(self) -> list[int]:
        """The rows of each row group, part after part."""
        sizes = []
        for part in self.parts:
            metadata = pq.read_metadata(part)
            sizes += [
                metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)
            ]
        return sizes

    def row_count(self) -> int:
        return sum(pq.read_metadata(part).num_rows for part in self.parts)

    def facts(self) -> list[list[int]]:
        """Each part's size, time and inode: what a run's state records of the
        register it left (``state.settled``)."""
        return [list(file_facts(part) or ()) for part in self.parts]

    def names(self) -> list[str]:
        return list(pq.read_schema(self.base).names)

    def written_with(self, kept: Mapping[str, str]) -> bool:
        """Whether the base has the columns a register with ``kept`` (manifest
        column → output column) is written with now, in order: a tail must be
        read as one with it."""
        expected = [*INTERNAL_COLUMNS, *kept.values(), *ROW_HASHES]
        return self.names() == expected

    def keyed_under(self, digest: str) -> bool:
        """Whether every part holds content keys valid under ``digest``."""
        for part in self.parts:
            try:
                schema = pq.read_schema(part)
            except (OSError, ValueError):
                return False
            metadata = schema.metadata or {}
            if (
                metadata.get(DIGEST_KEY) != digest.encode()
                or "_key_a" not in schema.names
            ):
                return False
        return True


def register_files(folder: Path, shard: str | None) -> RegisterFiles | None:
    """The register of ``shard`` (or of the whole job) in state folder ``folder``:
    its base, and its tail if that follows this base; None without a base."""
    base = register_path(folder, shard)
    facts = file_facts(base)
    if facts is None:
        return None
    tail = tail_path(base)
    try:
        metadata = pq.read_schema(tail).metadata or {}
    except (OSError, ValueError):
        return RegisterFiles((base,))
    if metadata.get(BASE_KEY) != _facts_text(facts):
        return RegisterFiles((base,))  # left by a run before the base was replaced
    return RegisterFiles((base, tail))


def tail_path(base: Path) -> Path:
    return base.with_name(base.name.removesuffix(".parquet") + ".tail.parquet")


def _facts_text(facts: tuple[int, int, int]) -> bytes:
    return ":".join(map(str, facts)).encode()


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
        after: RegisterFiles | None = None,
    ) -> None:
        """``kept`` maps manifest column → output column name. Each shard keeps its
        own register, since each marks its own rows as in scope. ``digest`` says
        what the rows' content keys are valid under (see ``rowcache``). Batches
        are held into row groups of ``group_rows`` (``chunk_rows_for``).

        With ``after`` (the register the last run left), the rows added follow its
        rows: its base stays, and its tail's rows and the new ones make the tail."""
        base = register_path(folder, shard)
        # the file this run writes: the base, or the tail after ``after``'s base
        self._target = base if after is None else tail_path(base)
        self.group_rows = group_rows
        self.digest = digest
        self._tmp = folder / f"{self._target.name}.{os.getpid()}.tmp"
        # a run killed mid-way leaves its partial register behind; this run holds
        # the lock for this register, so any other one is such a leftover
        for name in (base.name, tail_path(base).name):
            for leftover in folder.glob(f"{name}.*.tmp"):
                leftover.unlink(missing_ok=True)
        self.kept = kept
        self._sink: ParquetSink | None = None
        self._after = after
        self._schema: pa.Schema | None = None
        self.rows = 0
        if after is not None:
            self._schema = pq.read_schema(after.base).remove_metadata()
            self.rows = pq.read_metadata(after.base).num_rows
            if after.tail is not None:  # rows an earlier append left: kept
                for batch in pq.ParquetFile(after.tail).iter_batches(group_rows):
                    self._write(pa.Table.from_batches([batch]))

    def files(self) -> RegisterFiles:
        """The register as ``commit`` leaves it."""
        if self._after is None:
            return RegisterFiles((self._target,))
        if self.rows == pq.read_metadata(self._after.base).num_rows:
            return RegisterFiles((self._after.base,))
        return RegisterFiles((self._after.base, self._target))

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
        values = pl.struct(pl.all())
        frame = frame.with_columns(
            values.hash(seed=seed).alias(name) for name, seed in ROW_HASHES.items()
        )
        self._write(frame.to_arrow())

    def _write(self, table: pa.Table) -> None:
        if self._sink is None:  # batches held into row groups: a million-row
            # register is read (in manifest order, block by block) in a few dozen
            self._sink = ParquetSink(
                self._tmp, self._options, group_rows=self.group_rows
            )
        if self._schema is not None:  # a tail: read as one with its base
            table = table.cast(self._schema)
        self._sink.write(table)
        self.rows += table.num_rows

    def _options(self, table: pa.Table) -> tuple[pa.Schema, dict[str, Any]]:
        metadata = {}
        if self.digest is not None:
            metadata[DIGEST_KEY] = self.digest.encode()
        if self._after is not None:
            facts = file_facts(self._after.base)
            metadata[BASE_KEY] = _facts_text(facts) if facts else b""
        schema = table.schema.with_metadata(metadata) if metadata else table.schema
        # no statistics: rows are read by position, never filtered by value
        return schema, {
            "use_dictionary": repeating(table),
            "compression": "lz4",
            "write_statistics": False,
        }

    def commit(self) -> None:
        """Close the file and atomically make it the register for this output: a
        new base makes any tail stale (it names the base it follows), so the tail
        goes after it."""
        if self._sink is None and self._after is not None:  # nothing after the base
            self._target.unlink(missing_ok=True)
            return
        if self._sink is None:
            hashes = dict.fromkeys(ROW_HASHES, pl.UInt64())
            empty = pl.DataFrame(schema={**INTERNAL_COLUMNS, **hashes}).to_arrow()
            pq.write_table(empty, self._tmp)
        else:
            sink, self._sink = self._sink, None
            sink.close()
        Path(self._tmp).replace(self._target)
        if self._after is None:
            tail_path(self._target).unlink(missing_ok=True)

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
