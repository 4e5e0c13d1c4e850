"""The manifest read into requests, batch by batch: every row registered, only the
rows that need building built.

Building a request is Python work (about 20 µs a row: the template, the checks, the
fingerprint), so building every row of a million-row manifest on every resume costs
twenty seconds before anything is sent. Instead each batch is keyed by polars
(``manifest.rowkeys``), the keys are looked up in the last run's register
(``store.rowcache``), and the answered set is asked in one call per batch. A row is
built only when its key is new (a new or edited row, a first run) or when it has to
be sent; everything else stays in columns (issue 14).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from batchkimi.manifest.keys import shard_of
from batchkimi.manifest.reader import Manifest
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.manifest.rowkeys import KEY_COLUMNS, row_keys
from batchkimi.records import RowRequest
from batchkimi.settings import Job
from batchkimi.store.answers import AnsweredSet
from batchkimi.store.rowcache import VALUES_SCHEMA, RowCache
from batchkimi.store.rows import CHUNK_ROWS, RowRegister
from batchkimi.version import __version__

#: manifest rows read at a time, at most: as many as the register holds into a row
#: group (``chunk_rows_for``), so the per-batch cost of the polars calls is spread
#: thin. Rows are still built and handed over ``batch_rows`` at a time.
READ_ROWS = CHUNK_ROWS[1]
#: reading settings that choose which rows go, not what a row's request is
_NOT_REQUEST = {"shard", "limit", "batch_rows", "keep_columns"}


def cache_digest(job: Job, schema: pl.Schema) -> str | None:
    """What, besides a row's values, shapes the request it builds into: the asking,
    reading and media settings, the model catalogue, the manifest's column names
    and types, and the versions of batchkimi and polars (whose hashes are the row
    keys). None when requests are not reusable across runs at all (explicit cache
    markers depend on the rows around them)."""
    if job.asking.cache == "explicit":
        return None
    reading = job.reading.model_dump(mode="json", by_alias=True)
    parts: dict[str, Any] = {
        "reading": {k: v for k, v in reading.items() if k not in _NOT_REQUEST},
        "asking": job.asking.model_dump(mode="json", by_alias=True),
        "media": job.media.model_dump(mode="json", by_alias=True),
        "media_base": str(job.media_base),
        "catalogue": {
            name: info.model_dump(mode="json")
            for name, info in sorted(job.catalogue.models.items())
        },
        "columns": [[name, str(dtype)] for name, dtype in schema.items()],
        "batchkimi": __version__,
        "polars": pl.__version__,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Answered(Protocol):
    """What the row source asks of the answers in the journal (``AnsweredSet``,
    or ``JournalLookup`` for a few rows)."""

    def unanswered(self, fingerprints: pl.Series) -> pl.Series: ...


class RowSource:
    """Reads the manifest batch by batch, registers every row, yields what to send."""

    def __init__(
        self,
        manifest: Manifest,
        builder: RequestBuilder,
        register: RowRegister,
        answered: Answered,
        job: Job,
        cache: RowCache | None = None,
        *,
        skip: int = 0,
        settled: bool = False,
    ) -> None:
        """``skip``: the first rows, which the register has from the last run
        (``store.appended``); reading starts after them. ``settled``: the last
        run's rows all stand answered (``state.settled``), so only rows
        built now are asked about."""
        self.manifest = manifest
        self.builder = builder
        self.register = register
        self.answered: Answered = answered
        self.job = job
        self.cache = cache
        self.skip = skip
        self.settled = settled
        self.sent = _Sent()  # fingerprints sent this run
        self.duplicates = 0  # rows whose request equals an earlier row's: sent once
        self.local_media = False  # some row built this run names a local file
        self.built = 0  # rows built this run (the others were found in the cache)

    def batches(self) -> Iterator[list[RowRequest]]:
        step = self.job.reading.batch_rows
        start = self.skip
        try:
            read = min(READ_ROWS, self.register.group_rows)
            for batch in self.manifest.iter_batches(max(step, read), start=start):
                yield from self._read(start, batch, step)
                start += batch.height
        finally:
            if self.cache is not None:
                self.cache.close()

    def close(self) -> None:
        """Forget the run's sets before the results are built (memory)."""
        self.sent = _Sent()
        self.answered = AnsweredSet([])

    def _read(
        self, start: int, batch: pl.DataFrame, step: int
    ) -> Iterator[list[RowRequest]]:
        """What to send of ``batch`` (manifest rows ``start`` onwards), then the
        batch registered. A batch found whole in the cache is asked about in one
        go; one with rows to build, ``step`` rows at a time, so that sending starts
        with the first rows built and only ``step`` requests wait at once."""
        keys = row_keys(batch)
        if self.cache is not None:
            known = self.cache.lookup(start, keys)
        else:
            known = pl.DataFrame(schema=VALUES_SCHEMA).clear(batch.height)
        missing = known["_fingerprint"].is_null()
        records: dict[int, _Record] = {}
        scopes: list[pl.Series] = []  # each piece's rows in scope (shards)
        height = batch.height
        size = step if missing.any() else height
        for first in range(0, height, size):
            end = min(first + size, height)
            yield self._piece(batch, start, first, end, known, missing, records, scopes)
        internal = self._internal(start, batch, known, keys, records)
        internal["_in_scope"] = pl.concat(scopes)
        self.register.add(batch, internal)

    def _piece(
        self,
        batch: pl.DataFrame,
        start: int,
        first: int,
        end: int,
        known: pl.DataFrame,
        missing: pl.Series,
        records: dict[int, _Record],
        scopes: list[pl.Series],
    ) -> list[RowRequest]:
        """Rows ``first`` to ``end`` of the batch: those not in the cache built,
        the unanswered ones to send."""
        width = end - first
        positions = (missing.slice(first, width).arg_true() + first).to_list()
        fresh = self._build(batch, start, positions)
        made = {p: self._record(r) for p, r in fresh.items()}
        records.update(made)
        here = {p - first: r for p, r in made.items()}
        fingerprints = _with(known["_fingerprint"].slice(first, width), here, "fp")
        scopes.append(
            self._in_scope(_with(known["id"].slice(first, width), here, "row_id"))
        )
        wanted = (
            self._unanswered(fingerprints, missing.slice(first, width))
            & fingerprints.is_not_null()
            & scopes[-1]
        )
        # identical requests are sent once: the first of them, not again
        chosen = wanted.arg_true()
        candidates = fingerprints.gather(chosen)
        new = self.sent.fresh(candidates)
        self.duplicates += candidates.len() - int(new.sum())
        self.sent.add(candidates.filter(new))
        going = (chosen.filter(new) + first).to_list()
        # rows found in the cache that are to be sent all the same: built now
        rebuilt = self._build(batch, start, [p for p in going if p not in fresh])
        records.update({p: self._record(r) for p, r in rebuilt.items()})
        fresh.update(rebuilt)
        return [r for p in going if isinstance(r := fresh[p], RowRequest)]

    def _unanswered(self, fingerprints: pl.Series, built: pl.Series) -> pl.Series:
        """Which ``fingerprints`` have no answer. Of a settled job, only the rows
        ``built`` now are asked about: the others' requests are the last run's,
        which all stand answered."""
        if not self.settled:
            return self.answered.unanswered(fingerprints)
        mask = pl.repeat(False, fingerprints.len(), eager=True)
        if not built.any():
            return mask
        at = built.arg_true()
        return mask.scatter(at, self.answered.unanswered(fingerprints.gather(at)))

    def _build(
        self, batch: pl.DataFrame, start: int, positions: list[int]
    ) -> dict[int, RowRequest | RowProblem]:
        if not positions:
            return {}
        rows = batch[positions] if len(positions) < batch.height else batch
        built: dict[int, RowRequest | RowProblem] = {}
        for position, row in zip(positions, rows.iter_rows(named=True), strict=True):
            built[position] = self.builder.build(start + position, row)
        self.built += len(positions)
        return built

    def _record(self, built: RowRequest | RowProblem) -> _Record:
        if isinstance(built, RowProblem):
            model = self.job.asking.model
            return _Record(built.row_id, None, model, built.code, built.message, False)
        local = _has_local_media(built)
        self.local_media = self.local_media or local
        return _Record(
            built.row_id, built.fingerprint, built.model, None, None, not local
        )

    def _in_scope(self, ids: pl.Series) -> pl.Series:
        shard = self.job.reading.shard_parts
        if shard is None:
            return pl.repeat(True, ids.len(), eager=True)
        index, count = shard
        return pl.Series([shard_of(i, count) == index for i in ids.to_list()])

    def _internal(
        self,
        start: int,
        batch: pl.DataFrame,
        known: pl.DataFrame,
        keys: pl.DataFrame,
        records: dict[int, _Record],
    ) -> dict[str, pl.Series]:
        """The register's columns for this batch (but ``_in_scope``, which the
        pieces found): the cache's, with every row built this run written over
        them."""
        problems = {p: r for p, r in records.items() if r.code is not None}
        # a key is kept for rows whose request depends on nothing but their values
        unkeyed = [p for p, r in records.items() if not r.keyed]
        key_a, key_b = (keys[name] for name in KEY_COLUMNS)
        if unkeyed:
            nulls = pl.Series([None] * len(unkeyed), dtype=pl.UInt64)
            key_a = key_a.clone().scatter(unkeyed, nulls)
            key_b = key_b.clone().scatter(unkeyed, nulls)
        return {
            "_index": pl.int_range(start, start + batch.height, eager=True),
            "id": _with(known["id"], records, "row_id"),
            "_fingerprint": _with(known["_fingerprint"], records, "fp"),
            "_problem_code": _with(_nulls(batch.height), problems, "code"),
            "_problem_message": _with(_nulls(batch.height), problems, "message"),
            "_model": _with(known["_model"], records, "model"),
            "_key_a": key_a,
            "_key_b": key_b,
        }


class _Sent:
    """The fingerprints sent this run, 16 bytes each (a set of strings took 140 at a
    million rows): sorted runs, each at least twice the size of the next, merged as
    they grow, so a lookup asks a handful and each fingerprint is sorted again
    about log2(rows) times."""

    def __init__(self) -> None:
        self._runs: list[AnsweredSet] = []

    def fresh(self, fingerprints: pl.Series) -> pl.Series:
        """A mask: true for the first of equal fingerprints, where none was sent."""
        mask = fingerprints.is_first_distinct()
        for run in self._runs:
            mask = mask & run.unanswered(fingerprints)
        return mask

    def add(self, fingerprints: pl.Series) -> None:
        if not fingerprints.len():
            return
        self._runs.append(AnsweredSet(fingerprints))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = self._runs[-1].union(last)


@dataclass(frozen=True, slots=True)
class _Record:
    """What the register keeps of a row built this run."""

    row_id: str
    fp: str | None
    model: str
    code: str | None
    message: str | None
    keyed: bool  # its request depends on nothing but the row's values


def _nulls(height: int) -> pl.Series:
    return pl.Series([None] * height, dtype=pl.String)


def _with(column: pl.Series, records: dict[int, _Record], field: str) -> pl.Series:
    """``column`` with each record's ``field`` written at the record's place."""
    if not records:
        return column
    positions = list(records)
    values = [getattr(records[p], field) for p in positions]
    return column.clone().scatter(positions, pl.Series(values, dtype=column.dtype))


def _has_local_media(request: RowRequest) -> bool:
    """A local file's request carries its size and time (its stamp): it changes
    when the file does, so it is never taken from the cache."""
    return any(
        getattr(part, "stamp", "")
        for message in request.messages
        for part in message.parts
    )
