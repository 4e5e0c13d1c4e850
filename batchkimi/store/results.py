"""``results.parquet``: one row per manifest row, in manifest order, one schema.

Built from the row register and the journal's newest answers (the journal is the
truth), in memory that does not grow with the answers:

1. *winners*: the newest record per request, from the journal files' fingerprints
   (hashed to 8 bytes) and positions, nothing else;
2. *placement*: each register row's answer as (file, position), by a join on the
   hashed key, and which row is the first of its request (it is billed);
3. *copies*: blocks whose rows and answers are those the last build wrote are
   copied from its file (``reuse``): those before the first change in one polars
   stream, later ones as they come up;
4. *assembly*: block by block (``chunk_rows_for``), in manifest order, the other
   blocks' register rows are joined with their answers and appended to the Parquet
   file. Answers are loaded a segment row group at a time, when the first row
   needing one comes up; an answer for a row more than a block ahead waits in a
   spill file on disk, so only out-of-order answers (a retry run's, say) are
   written twice.

Memory holds about 30 bytes a row for keys, and a few blocks. A hashed key may
collide: every answer placed is checked against its row's full fingerprint, and a
mismatch builds again with the full fingerprints as keys (the same output, more
memory). The summary's figures and the counts a run reports are tallied on the way.

The file is written to a temporary name, fsynced and moved into place with
``os.replace``, so a crash mid-write leaves the previous version intact.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc

from batchkimi.answers.columns import answer_columns
from batchkimi.records import RowStatus
from batchkimi.store.answers import newest, positions, repeats
from batchkimi.store.files import AnswerFile, answer_files
from batchkimi.store.outputs import OutputWriteError, clear_leftovers, temporary
from batchkimi.store.reuse import BlockKeys, block_keys, forget, remember, reusable
from batchkimi.store.rows import RegisterFiles, chunk_rows_for
from batchkimi.store.schema import JOURNAL_SCHEMA, OUTPUT_COLUMNS, RESULTS_SCHEMA
from batchkimi.store.segments import (
    Span,
    read_records,
    read_span,
    read_spans,
    unit_bounds,
)
from batchkimi.store.sink import ParquetSink
from batchkimi.store.summary import Tally, first_rows, tally_columns

__all__ = [
    "JOURNAL_SCHEMA",
    "OUTPUT_COLUMNS",
    "RESULTS_NAME",
    "RESULTS_SCHEMA",
    "Built",
    "OutputWriteError",
    "SharedIds",
    "clear_leftovers",
    "shared_ids",
    "write_results",
]

RESULTS_NAME = "results.parquet"
_SPILL = ".results-build"

Key = Callable[[str], pl.Expr]
_NO_ANSWERS = pl.DataFrame(schema={**JOURNAL_SCHEMA, "_r": pl.UInt32()})


def hashed_key(column: str) -> pl.Expr:
    """8 bytes per fingerprint; a collision is caught when answers are placed."""
    return pl.col(column).hash()


def exact_key(column: str) -> pl.Expr:
    return pl.col(column)


class _Misplaced(Exception):  # a signal between two methods here, never raised out
    """An answer was placed on a row with another fingerprint: keys collided."""


@dataclass(slots=True)
class Built:
    """What a results build counted on the way: the rows in scope (this shard's, or
    all), their statuses, how many a next run would send, and the summary's tally."""

    rows: int = 0
    by_status: dict[str, int] = field(
        default_factory=lambda: {s.value: 0 for s in RowStatus}
    )
    pending: int = 0
    tally: Tally = field(default_factory=Tally)
    copied: int = 0  # blocks copied from the last results file (``reuse``)

    def summary(
        self, *, run: dict[str, Any], elapsed_s: float, sent_this_run: int
    ) -> dict[str, Any]:
        """summary.json of the results built."""
        return self.tally.summary(
            run=run, elapsed_s=elapsed_s, sent_this_run=sent_this_run
        )


def write_results(
    register: RegisterFiles,
    state_dir: Path,
    path: Path,
    *,
    api: str,
    answer_schema: Mapping[str, Any] | None = None,
    resend: pl.Expr | None = None,
    block_rows: int | None = None,
    key: Key = hashed_key,
) -> Built:
    """Build ``path`` from the register and the journal's newest results, in
    manifest order (see the module docstring); a structured job's answers become
    typed columns after the kept input columns. ``resend`` (over status, error_code
    and retryable) counts the in-scope rows a next run would send. Call it under
    the outputs lock."""
    clear_leftovers(path)
    for leftover in state_dir.glob(f"{_SPILL}.*"):  # a killed build's
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = temporary(path)
    build = _Build(
        register,
        state_dir,
        state_dir / f"{_SPILL}.{os.getpid()}",
        path,
        api,
        answer_schema,
        pl.lit(False) if resend is None else resend,
        # a block a register row group, as a run writes them (a block costs a few
        # kilobytes a row while it is assembled, and some milliseconds whatever
        # its size)
        block_rows or chunk_rows_for(register.row_count()),
    )
    try:
        try:
            built, keys = build.write(tmp, key)
        except _Misplaced:
            built, keys = build.write(tmp, exact_key)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        forget(register.base)  # its blocks are no longer those of the file in place
        tmp.replace(path)
        remember(path, register.base, keys)
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(build.spill_dir, ignore_errors=True)
    return built


@dataclass(frozen=True, slots=True)
class _Load:
    """Records of a journal file to load at once (a run of a segment's row groups,
    or a whole JSONL file), and the rows whose answers are among them."""

    file: AnswerFile
    start: int  # positions in the file
    end: int
    needed: pl.DataFrame  # _p (position in the file), _r (row in the register)
    chunks: list[Span]  # a JSONL file's chunks to read (none: read it whole)


@dataclass(frozen=True, slots=True)
class _Build:
    register: RegisterFiles
    state_dir: Path
    spill_dir: Path
    results: Path  # the last build's, whose blocks may be copied
    api: str
    answer_schema: Mapping[str, Any] | None
    resend: pl.Expr
    block_rows: int

    def write(self, tmp: Path, key: Key) -> tuple[Built, BlockKeys]:
        files = answer_files(self.state_dir)
        spans: dict[int, list[Span]] = {}
        records = positions(files, {}, key=key("fingerprint"), spans=spans)
        winners = newest(records, key="_k")
        del records
        register = self.register.scan().select("_fingerprint")
        keys = register.select(
            pl.when(pl.col("_fingerprint").is_not_null())
            .then(key("_fingerprint"))
            .alias("_k")
        ).collect()["_k"]

        def exact(at: pl.Series) -> pl.Series:
            picked = register.with_row_index("_r").filter(pl.col("_r").is_in(at))
            return picked.collect()["_fingerprint"]

        billed = first_rows(keys, exact)
        placed = _place(keys, winners.select("_k", "_f", "_p"))
        del winners, keys
        settings = {"api": self.api, "answer_schema": self.answer_schema}
        block_keys_ = block_keys(
            self.register, placed, files, self.block_rows, settings
        )
        copied = reusable(self.results, self.register.base, block_keys_)
        if copied:  # their answers are in the file already
            copied_rows = (pl.col("_r") // self.block_rows).is_in(sorted(copied))
            placed = placed.filter(~copied_rows)
        schedule = self._schedule(files, spans, placed)
        del placed
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        self.spill_dir.mkdir()
        blocks = len(block_keys_.keys)
        prefix = next(b for b in range(blocks + 1) if b not in copied)
        if not prefix:
            return self._assemble(tmp, schedule, billed, copied), block_keys_
        return self._copy_first(tmp, prefix, schedule, billed, copied), block_keys_

    def _copy_first(
        self,
        tmp: Path,
        prefix: int,
        schedule: dict[int, list[_Load]],
        billed: pl.Series,
        copied: set[int],
    ) -> Built:
        """The usual resume (rows added at the end, answers for them): the first
        ``prefix`` blocks, unchanged, copied by polars in one stream on every core
        while they are counted; the rest assembled into a file of its own first."""
        # named as the leftovers of a killed build are found (``clear_leftovers``)
        tail = tmp.with_name(tmp.name.removesuffix(".tmp") + ".tail.tmp")
        try:
            built = self._assemble(tail, schedule, billed, copied, start=prefix)
            built.copied += prefix
            # the environment is set before the copy's thread starts, never beside
            # a query: setenv is not safe while another thread reads it
            with (
                _prefetching(1),
                ThreadPoolExecutor(1, thread_name_prefix="results-copy") as pool,
            ):
                joined = pool.submit(self._join, tmp, prefix, tail)
                self._count_copied(built, prefix, billed)
                joined.result()
        finally:
            tail.unlink(missing_ok=True)
        return built

    def _count_copied(self, built: Built, blocks: int, billed: pl.Series) -> None:
        """Count the first ``blocks`` blocks of the last file, from the columns
        the counts read, eight blocks at a time."""
        last = pl.scan_parquet(self.results, glob=False)
        names = last.collect_schema().names()
        wanted = [
            c for c in [*tally_columns(), "error_code", "retryable"] if c in names
        ]
        scope = self.register.scan().select("_in_scope")
        end, step = blocks * self.block_rows, 8 * self.block_rows
        for first in range(0, end, step):
            size = min(step, end - first)
            out = last.slice(first, size).select(wanted).collect()
            rows = scope.slice(first, size).collect()
            self._count(built, out, rows, billed.slice(first, size))

    def _join(self, tmp: Path, blocks: int, tail: Path) -> None:
        """``tmp``: the first ``blocks`` blocks of the last file, then ``tail``."""
        if not tail.exists():  # every block copied: the file as it is
            shutil.copyfile(self.results, tmp)
            return
        parts = [
            pl.scan_parquet(self.results, glob=False).slice(
                0, blocks * self.block_rows
            ),
            pl.scan_parquet(tail, glob=False),
        ]
        pl.concat(parts, how="vertical_relaxed").sink_parquet(
            tmp,
            compression="zstd",
            compression_level=1,  # as fast as lz4 here, and smaller than 3
            row_group_size=self.block_rows,
        )

    def _schedule(
        self,
        files: list[AnswerFile],
        spans: dict[int, list[Span]],
        placed: pl.DataFrame,
    ) -> dict[int, list[_Load]]:
        """Block -> what to load when assembly reaches it: each row group (or JSONL
        chunk) at the block of the first row needing it, neighbouring ones due at
        the same block in one load."""
        schedule: dict[int, list[_Load]] = defaultdict(list)
        by_file = placed.sort("_f", "_p").partition_by("_f", as_dict=True)
        for (number,), part in by_file.items():
            file, chunks = files[int(number)], spans.get(int(number), [])
            bounds = (
                unit_bounds(file)
                if file.is_segment or not chunks
                else [*(c.first for c in chunks), chunks[-1].first + chunks[-1].records]
            )
            units = part.with_columns(
                pl.Series(bounds, dtype=pl.UInt32())
                .search_sorted(part["_p"], side="right")
                .alias("_u")
                - 1
            )
            due = (pl.col("_r").min().over("_u") // self.block_rows).alias("_b")
            units = units.with_columns(due)
            for (block,), needed in units.partition_by("_b", as_dict=True).items():
                # a run of neighbouring units: its number minus its rank is constant
                run = (pl.col("_u") - pl.col("_u").rank("dense")).alias("_run")
                for loaded in needed.with_columns(run).partition_by("_run"):
                    used = loaded["_u"].unique().sort().to_list()
                    start = bounds[used[0]]
                    end = bounds[used[-1] + 1] if len(bounds) > 1 else 0
                    chunked = chunks[used[0] : used[-1] + 1] if chunks else []
                    schedule[block].append(
                        _Load(file, start, end, loaded.select("_p", "_r"), chunked)
                    )
        return schedule

    def _assemble(
        self,
        tmp: Path,
        schedule: dict[int, list[_Load]],
        billed: pl.Series,
        copied: set[int],
        *,
        start: int = 0,
    ) -> Built:
        """Write the results block by block from block ``start``: ``copied`` ones
        from the last file."""
        names = self.register.names()
        kept = [c for c in names if not c.startswith("_") and c != "id"]
        built = Built(copied=len({b for b in copied if b >= start}))
        last = pl.scan_parquet(self.results, glob=False) if copied else None

        def blocks() -> Iterator[pa.Table]:
            waiting = _Waiting(self.spill_dir, self.block_rows)
            for block, rows in _blocks(self.register, self.block_rows, start):
                first = block * self.block_rows
                if last is not None and block in copied:
                    out = last.slice(first, rows.height).collect()
                    self._count(built, out, rows, billed.slice(first, rows.height))
                    yield out.to_arrow()
                    continue
                for load in schedule.pop(block, []):
                    for answers in _load(load):
                        waiting.add(answers, now=block)
                joined = _attach(rows, waiting.take(block), first)
                wrong = pl.col("fingerprint").is_not_null() & (
                    pl.col("fingerprint") != pl.col("_fingerprint")
                ).fill_null(True)
                if joined.select(wrong.any()).item():
                    raise _Misplaced
                out = self._shape(joined, kept)
                self._count(built, out, rows, billed.slice(first, rows.height))
                yield out.to_arrow()

        with ParquetSink(tmp) as sink:  # one block encoded while the next is made
            for table in blocks():
                sink.write(table)
        return built

    def _count(
        self, built: Built, out: pl.DataFrame, rows: pl.DataFrame, billed: pl.Series
    ) -> None:
        built.tally.add(out.with_columns(billed.alias("_billed")))
        scope = out.select("status", "error_code", "retryable").filter(
            rows["_in_scope"].fill_null(True)
        )
        counts = scope.group_by("status").agg(pl.len(), self.resend.sum().alias("p"))
        for status, count, pending in counts.iter_rows():
            built.by_status[status] = built.by_status.get(status, 0) + int(count)
            built.rows += int(count)
            built.pending += int(pending or 0)

    def _shape(self, joined: pl.DataFrame, kept: list[str]) -> pl.DataFrame:
        """Register rows joined with their answers → the results' columns."""
        problem = pl.col("_problem_code").is_not_null()
        status = (
            pl.when(problem)
            .then(pl.lit(RowStatus.ERROR.value))
            .when(pl.col("status").is_null())
            .then(pl.lit(RowStatus.SKIPPED.value))
            .otherwise(pl.col("status"))
        )
        out = joined.with_columns(
            status.alias("status"),
            pl.coalesce("model", "_model").alias("model"),
            pl.coalesce("api", pl.lit(self.api)).alias("api"),
            pl.when(problem)
            .then(pl.col("_problem_code"))
            .otherwise(pl.col("error_code"))
            .alias("error_code"),
            pl.when(problem)
            .then(pl.col("_problem_message"))
            .otherwise(pl.col("error_message"))
            .alias("error_message"),
            pl.col("_fingerprint").alias("fingerprint"),
            pl.col("attempts").fill_null(0),
            pl.col("repairs").fill_null(0),
        )
        typed: list[pl.Expr] = []
        if self.answer_schema is not None:
            typed = answer_columns(self.answer_schema, taken=[*kept, *OUTPUT_COLUMNS])
        columns = [pl.col(c).cast(RESULTS_SCHEMA[c]) for c in OUTPUT_COLUMNS]
        return out.select([columns[0], *kept, *typed, *columns[1:]])


@contextmanager
def _prefetching(row_groups: int) -> Iterator[None]:
    """polars reads this many row groups ahead in the queries within (unless the
    environment says otherwise): by default it reads so far ahead that copying a
    million results took 250 MB more, with one ahead 75 MB, in the same time. An
    environment variable is the only knob polars has for it, read per query; set
    it where no other thread runs a query."""
    name = "POLARS_ROW_GROUP_PREFETCH_SIZE"
    given = os.environ.get(name)
    if given is None:
        os.environ[name] = str(row_groups)
    try:
        yield
    finally:
        if given is None:
            os.environ.pop(name, None)


def _place(keys: pl.Series, winners: pl.DataFrame) -> pl.DataFrame:
    """Each register row (its key) → its answer's file and position (``_r``, ``_f``,
    ``_p``), by a join on the key."""
    rows = keys.to_frame().with_row_index("_r").drop_nulls("_k")
    return rows.join(winners, on="_k", how="inner").select("_r", "_f", "_p")


def _load(load: _Load) -> Iterator[pl.DataFrame]:
    """The answers ``load`` holds for the rows that need them, tagged with ``_r``."""
    if load.file.is_segment:
        records = read_span(load.file, load.start, load.end, JOURNAL_SCHEMA)
        yield _pick(records, load.needed, load.start)
        return
    frames = (
        read_spans(load.file, load.chunks, JOURNAL_SCHEMA)
        if load.chunks
        else read_records(load.file, JOURNAL_SCHEMA)  # compacted as it was listed
    )
    start = load.start
    for records in frames:
        end = start + records.height
        here = load.needed.filter(pl.col("_p").is_between(start, end - 1))
        if here.height:
            yield _pick(records, here, start)
        start = end


def _pick(records: pl.DataFrame, needed: pl.DataFrame, start: int) -> pl.DataFrame:
    """The ``needed`` records (``_p`` from ``start``), tagged with their rows."""
    offsets = needed["_p"] - start
    every_one = needed.height == records.height and bool(
        (offsets == pl.int_range(0, records.height, eager=True)).all()
    )  # the usual case: each record once, in order
    answers = records if every_one else records.gather(offsets)
    return answers.with_columns(needed["_r"])


def _attach(rows: pl.DataFrame, answers: pl.DataFrame, first: int) -> pl.DataFrame:
    """Register ``rows`` (from row ``first``) beside their answers: by position
    when every row has one (each has one at most), else by a join."""
    if answers.height == rows.height:
        if not answers["_r"].is_sorted():
            answers = answers.sort("_r")
        return pl.concat([rows, answers.drop("_r")], how="horizontal")
    return rows.with_row_index("_r", offset=first).join(
        answers, on="_r", how="left", maintain_order="left"
    )


def _blocks(
    files: RegisterFiles, block_rows: int, start: int = 0
) -> Iterator[tuple[int, pl.DataFrame]]:
    """The register in blocks of exactly ``block_rows`` rows (the last one fewer),
    numbered, from block ``start``; at least one block from 0, empty for an empty
    register."""
    total = files.row_count()
    register = files.scan()
    for first in range(start * block_rows, max(total, 1), block_rows):
        yield first // block_rows, register.slice(first, block_rows).collect()


class _Waiting:
    """Answers loaded before their block comes up: in memory for the next block,
    in one Arrow IPC stream per block on disk for any later one."""

    def __init__(self, folder: Path, block_rows: int) -> None:
        self._folder = folder
        self._block_rows = block_rows
        self._held: dict[int, list[pl.DataFrame]] = defaultdict(list)
        self._spilled: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._schema: pa.Schema | None = None

    def add(self, answers: pl.DataFrame, *, now: int) -> None:
        """``answers`` (with ``_r``) loaded while assembling block ``now``."""
        blocks = answers["_r"] // self._block_rows
        low, high = int(blocks.min()), int(blocks.max())  # type: ignore[arg-type]
        if low == high <= now + 1:  # the usual case: a unit's rows are close together
            self._held[low].append(answers)
            return
        for (number,), part in (
            answers.with_columns(blocks.alias("_b"))
            .partition_by("_b", as_dict=True)
            .items()
        ):
            block = int(number)
            part = part.drop("_b")
            if block <= now + 1:
                self._held[block].append(part)
            else:
                self._spill(block, part)

    def _spill(self, block: int, part: pl.DataFrame) -> None:
        table = part.to_arrow()
        if self._schema is None:
            self._schema = table.schema
        writer = self._spilled.get(block)
        if writer is None:
            path = self._folder / f"{block}.arrow"
            writer = pa.ipc.new_stream(str(path), self._schema)
            self._spilled[block] = writer
        writer.write_table(table.cast(self._schema))

    def take(self, block: int) -> pl.DataFrame:
        """Every answer for ``block``, and forget them."""
        frames = [_NO_ANSWERS, *self._held.pop(block, [])]
        writer = self._spilled.pop(block, None)
        if writer is not None:
            writer.close()
            path = self._folder / f"{block}.arrow"
            with pa.memory_map(str(path)) as source:
                frames.append(pl.DataFrame(pa.ipc.open_stream(source).read_all()))
            path.unlink()
        return pl.concat(frames, how="vertical_relaxed")


@dataclass(frozen=True, slots=True)
class SharedIds:
    rows: int  # in-scope rows whose id another in-scope row also has
    first: str | None  # the first of them, in manifest order


def shared_ids(register: RegisterFiles) -> SharedIds:
    """Rows (in scope) whose id is not theirs alone, from the register's ids hashed
    to 8 bytes; ids whose hash repeats are compared whole."""
    ids = register.scan().filter(pl.col("_in_scope").fill_null(True)).select("id")
    keys = ids.select(pl.col("id").hash()).collect()["id"]
    candidates = repeats(keys)
    if not candidates.any():
        return SharedIds(0, None)
    at = candidates.arg_true()
    picked = ids.with_row_index("_i").filter(pl.col("_i").is_in(at)).collect()["id"]
    shared = picked.filter(picked.is_duplicated())
    return SharedIds(shared.len(), shared[0] if shared.len() else None)
