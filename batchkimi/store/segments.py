"""Compaction of a sealed journal generation into a Parquet segment, and reading
records back from either.

Compaction (only a stream's writer does it, holding that stream's lock) is
crash-safe because every step leaves the records readable:

1. write the segment to a temporary file, fsync it;
2. rename it to its final name and fsync the folder: the segment's name is the
   durable record that this generation is compacted, and whole;
3. unlink the JSONL generation and fsync the folder.

A kill between 2 and 3 leaves the generation twice: readers take the segment and
skip the JSONL, and the stream's next writer unlinks it (``finish_compactions``). A
kill before 2 leaves a temporary file, which the stream's next writer removes, and
the JSONL, which it compacts again. Segments are never rewritten or removed.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from batchkimi import jsoncodec
from batchkimi.store.files import (
    SEGMENTS_DIR,
    AnswerFile,
    fsync_dir,
    journal_file,
    segment_file,
    tmp_prefix,
)
from batchkimi.store.schema import RECORD_SCHEMA
from batchkimi.store.sink import ParquetSink

#: JSON parsed at a time by compaction: memory stays flat however large a file is
CHUNK_BYTES = 512 << 10
#: records per row group of a segment: the unit a results build loads on its own.
#: Groups of a few thousand records read about three times faster than groups of one
#: chunk's (about 650), and cost compaction a few megabytes held
GROUP_ROWS = 8_192
#: JSON parsed at a time by readers (a results build loads a JSONL file a chunk at
#: a time too)
READ_CHUNK_BYTES = 2 << 20
#: records read from a segment at a time, when all of them are read
_BATCH_ROWS = 65_536
#: the call that makes a segment durable (tests inject ENOSPC here)
_fsync = os.fsync


def read_records(
    file: AnswerFile,
    schema: Mapping[str, pl.DataType],
    *,
    chunk_bytes: int | None = None,
    spans: list[Span] | None = None,
) -> Iterator[pl.DataFrame]:
    """The records of ``file`` in order, as frames of ``schema``'s columns (which
    must include fingerprint), a few megabytes of JSON (or a segment) at a time.

    A column a segment lacks (written before the column existed) is null. Records
    without a fingerprint (only a damaged disk makes one) are skipped, the same way
    by every reader and by compaction, so positions agree between them. For a JSONL
    file, ``spans`` is given each chunk's bytes and records, to read it again
    (``read_spans``).
    """
    if not file.is_segment:
        try:
            handle = file.path.open("rb")
        except FileNotFoundError:  # compacted since it was listed
            segment = file.path.parent / segment_file(file.stream, file.generation)
            file = AnswerFile(file.stream, file.generation, segment, True)
        else:
            with handle:
                chunk = READ_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
                yield from _read_journal(handle, file.end, schema, chunk, spans)
            return
    yield from _read_segment(file.path, schema)


def read_spans(
    file: AnswerFile, spans: list[Span], schema: Mapping[str, pl.DataType]
) -> Iterator[pl.DataFrame]:
    """Chunks of a JSONL file again, as a first ``read_records`` found them: each
    parsed on its own, so the same lines are kept. If the file was compacted since,
    the same records are read from its segment."""
    try:
        handle = file.path.open("rb")
    except FileNotFoundError:
        segment = _open(file.path.parent / segment_file(file.stream, file.generation))
        for span in spans:
            yield segment.read(schema, span.first, span.records)
        return
    with handle:
        for span in spans:
            handle.seek(span.start)
            yield parse_lines(handle.read(span.end - span.start), schema)


def unit_bounds(file: AnswerFile) -> list[int]:
    """Where each part of ``file`` a reader can load on its own begins, as record
    positions, and then where the last one ends: a segment's row groups (one
    compaction chunk each). A JSONL file is one part, read whole: ``[0]``."""
    return [*_open(file.path).starts, _open(file.path).rows] if file.is_segment else [0]


def read_span(
    file: AnswerFile, start: int, end: int, schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """Records ``start`` to ``end`` of a segment (best on row-group bounds)."""
    return _open(file.path).read(schema, start, end - start)


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk of a JSONL file as read: its bytes, and its records' positions."""

    start: int
    end: int
    first: int
    records: int


@dataclass(frozen=True, slots=True)
class _Segment:
    """A segment opened once: its columns, and where its row groups start."""

    path: Path
    columns: dict[str, pl.DataType]
    starts: list[int]
    rows: int

    def read(
        self, schema: Mapping[str, pl.DataType], start: int, length: int
    ) -> pl.DataFrame:
        """Records ``start`` to ``start + length`` as a frame of exactly ``schema``:
        a column the segment lacks (written before it existed) is null."""
        present = [c for c in schema if c in self.columns]
        frame = (
            pl.scan_parquet(self.path, glob=False).slice(start, length).select(present)
        )
        if any(self.columns.get(c) != t for c, t in schema.items()):
            frame = frame.select(
                pl.col(c).cast(t) if c in self.columns else pl.lit(None, t).alias(c)
                for c, t in schema.items()
            )
        return frame.collect()


@functools.lru_cache(maxsize=256)
def _open_cached(path: Path, mtime_ns: int, size: int) -> _Segment:
    del mtime_ns, size  # the cache key: a segment is never rewritten, but be sure
    metadata = pq.read_metadata(path)
    starts, at = [], 0
    for group in range(metadata.num_row_groups):
        starts.append(at)
        at += metadata.row_group(group).num_rows
    columns = dict(pl.scan_parquet(path, glob=False).collect_schema())
    return _Segment(path, columns, starts, at)


def _open(path: Path) -> _Segment:
    facts = path.stat()
    return _open_cached(path, facts.st_mtime_ns, facts.st_size)


def _read_segment(
    path: Path, schema: Mapping[str, pl.DataType]
) -> Iterator[pl.DataFrame]:
    """A segment's records, ``_BATCH_ROWS`` at a time."""
    segment = _open(path)
    for start in range(0, max(segment.rows, 1), _BATCH_ROWS):
        yield segment.read(schema, start, _BATCH_ROWS)


def _read_journal(
    handle: io.BufferedReader,
    end: int,
    schema: Mapping[str, pl.DataType],
    chunk_bytes: int,
    spans: list[Span] | None,
) -> Iterator[pl.DataFrame]:
    carry = b""
    at = first = 0  # the carry's offset in the file; records so far
    remaining = end
    while remaining > 0:
        block = handle.read(min(chunk_bytes, remaining))
        if not block:
            break
        remaining -= len(block)
        data = carry + block
        cut = data.rfind(b"\n") + 1 if remaining > 0 else len(data)
        carry = data[cut:]
        if cut:
            frame = parse_lines(data[:cut], schema)
            if spans is not None:
                spans.append(Span(at, at + cut, first, frame.height))
            at, first = at + cut, first + frame.height
            yield frame
    if carry:
        frame = parse_lines(carry, schema)
        if spans is not None:
            spans.append(Span(at, at + len(carry), first, frame.height))
        yield frame


def parse_lines(data: bytes, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Whole JSON lines as a frame of ``schema``. A line polars cannot parse (only a
    damaged disk makes one) sends these lines through the lenient Python reader,
    which skips it. Lines are always parsed as whole records, whatever ``schema``
    asks for, so every reader keeps the same lines, at the same positions."""
    fields = {**RECORD_SCHEMA, **schema}
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=fields)
    except pl.exceptions.PolarsError:
        frame = _parse_leniently(data, fields)
    return frame.filter(pl.col("fingerprint").is_not_null()).select(list(schema))


def _parse_leniently(data: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    rows = []
    for line in data.splitlines():
        try:
            record = jsoncodec.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("fingerprint"), str):
            rows.append({name: record.get(name) for name in schema})
    return pl.DataFrame(rows, schema=schema, strict=False)


def compact(state_dir: Path, stream: str, generation: int) -> Path:
    """Compact a sealed JSONL generation into its segment, then unlink it (see the
    module docstring). Reads a few megabytes at a time. Returns the segment."""
    folder = state_dir / SEGMENTS_DIR
    folder.mkdir(exist_ok=True)
    source = state_dir / journal_file(stream, generation)
    target = state_dir / segment_file(stream, generation)
    tmp = folder / f"{tmp_prefix(stream)}{generation:06d}.{os.getpid()}.tmp"
    arrow_schema = pl.DataFrame(schema=RECORD_SCHEMA).to_arrow().schema
    sealed = AnswerFile(stream, generation, source, False, source.stat().st_size)
    try:
        options = (arrow_schema, {"compression": "zstd"})
        with ParquetSink(tmp, lambda _: options, group_rows=GROUP_ROWS) as sink:
            for frame in read_records(sealed, RECORD_SCHEMA, chunk_bytes=CHUNK_BYTES):
                sink.write(frame.to_arrow().cast(arrow_schema))
        with tmp.open("rb") as handle:
            _fsync(handle.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    source.unlink()
    fsync_dir(state_dir)
    return target
