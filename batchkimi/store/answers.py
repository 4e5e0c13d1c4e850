"""The newest answer per request, read from the journal's files and segments.

A request (its fingerprint) may have several records: a structured row's invalid
answer and then its final one, a failure sent again with --retry-errors, one request
answered by two shards. Every reader decides the newest the same way. Within one
stream the record appended last wins (generation, then line): the order of appends
is the truth there, whatever the clock did. Between streams, which are separate
processes, the later ``finished_at`` wins, then the later stream name.

Readers hold columns, never Python objects per record, and only the columns they ask
for: a million answers' fingerprints and statuses are tens of megabytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import polars as pl

from batchkimi.store.files import AnswerFile, answer_files
from batchkimi.store.segments import Span, read_records

#: a fingerprint in 8 bytes (a collision is told apart where it matters)
HASHED = pl.col("fingerprint").hash()
#: where each record is: the file (its number in a listing), the record's position
#: in it, and the stream's rank among the listing's streams
POSITION = {"_f": pl.UInt32(), "_p": pl.UInt32(), "_s": pl.UInt16()}


def positions(
    files: list[AnswerFile],
    columns: Mapping[str, pl.DataType],
    *,
    key: pl.Expr | None = None,
    where: pl.Expr | None = None,
    spans: dict[int, list[Span]] | None = None,
    derive: Mapping[str, pl.Expr] | None = None,
) -> pl.DataFrame:
    """Every record of ``files``: its position, ``columns`` and, with ``key``, a
    ``_k`` column computed from the fingerprint (which is then dropped). ``where``
    keeps only some records, as they are read; positions count them all. ``spans``
    is given the chunks of each JSONL file, by file number. With ``derive``, its
    expressions (over ``columns``) are kept instead of ``columns``."""
    ranks = {name: rank for rank, name in enumerate(sorted({f.stream for f in files}))}
    wanted = {"fingerprint": pl.String(), **columns}
    if len(ranks) > 1:  # the order between streams needs it
        wanted.setdefault("finished_at", pl.String())
    derived = dict(derive or {})
    keep = [
        c
        for c in wanted
        if (key is None or c != "fingerprint") and (not derived or c not in columns)
    ]
    keep += [*derived, *(["_k"] if key is not None else []), *POSITION]

    def place(frame: pl.DataFrame, number: int, start: int, rank: int) -> pl.DataFrame:
        placed = frame.with_columns(
            pl.lit(number, pl.UInt32()).alias("_f"),
            pl.int_range(start, start + frame.height, dtype=pl.UInt32()).alias("_p"),
            pl.lit(rank, pl.UInt16()).alias("_s"),
        )
        if where is not None:
            placed = placed.filter(where)
        if key is not None:
            placed = placed.with_columns(key.alias("_k"))
        if derived:
            placed = placed.with_columns(e.alias(n) for n, e in derived.items())
        return placed.select(keep)

    frames = [place(pl.DataFrame(schema=wanted), 0, 0, 0)]  # the shape when empty
    for number, file in enumerate(files):
        start = 0
        chunks = None if spans is None else spans.setdefault(number, [])
        for frame in read_records(file, wanted, spans=chunks):
            frames.append(place(frame, number, start, ranks[file.stream]))
            start += frame.height
    return pl.concat(frames, rechunk=False)  # no second copy of them all


def repeats(keys: pl.Series) -> pl.Series:
    """True where a value of ``keys`` occurs more than once (nulls never repeat).

    By sorting: ``is_duplicated`` groups, and a million distinct keys cost it about
    100 MB where a sort costs a few."""
    ordered = keys.drop_nulls().sort()
    twice = ordered.filter(ordered == ordered.shift(1)).unique()
    return keys.is_in(twice.implode()).fill_null(False)


def newest(records: pl.DataFrame, key: str = "fingerprint") -> pl.DataFrame:
    """The newest of ``records`` (from ``positions``, in their order) per ``key``;
    see the module docstring for the rule."""
    return records.filter(newest_mask(records, key))


def newest_mask(records: pl.DataFrame, key: str = "fingerprint") -> pl.Series:
    """True on the newest of ``records`` per ``key`` (see ``newest``)."""
    last = pl.col(key).is_last_distinct()  # appended last: records are in order
    if records["_s"].n_unique() <= 1:
        return records.select(last).to_series()
    per_stream = records.select(last.over("_s")).to_series().arg_true()
    candidates = records.select(key, "finished_at", "_s")[per_stream]
    latest = (
        candidates.with_columns(per_stream.alias("_i"))
        .sort(["finished_at", "_s"], nulls_last=False)
        .filter(last)["_i"]
    )
    mask = pl.repeat(False, records.height, eager=True)
    return mask.scatter(latest, True)


def answered(
    folder: Path, stands: pl.Expr, *, key: pl.Expr = HASHED
) -> Iterator[pl.Series]:
    """The fingerprints whose newest record satisfies ``stands`` (an expression over
    status, error_code and retryable), a journal file's worth at a time.

    The newest records are found from fingerprints hashed to 8 bytes; only the
    fingerprints of those that stand are then read, so memory holds about 20 bytes
    a record. Fingerprints whose hash repeats are compared whole: on a collision
    between two different fingerprints, it all runs again on the fingerprints
    themselves.
    """
    files = answer_files(folder)
    columns = {
        "status": pl.String(),
        "error_code": pl.String(),
        "retryable": pl.Boolean(),
    }
    # whether each record stands, not its status and error code: a byte a record
    records = positions(files, columns, key=key, derive={"_stands": stands})
    repeated = records.filter(repeats(records["_k"]))
    if repeated.height:
        fingerprints = _fingerprints_at(files, repeated)
        if fingerprints.n_unique() != repeated["_k"].n_unique():  # a collision
            exact = newest(positions(files, columns)).filter(stands)
            yield exact["fingerprint"]
            return
    newest_ones = pl.lit(newest_mask(records, "_k")) & pl.col("_stands")
    standing = records.select(pl.col("_f", "_p").filter(newest_ones))
    for (number,), part in standing.partition_by("_f", as_dict=True).items():
        yield _fingerprints_at([files[int(number)]], part.with_columns(_f=0))


def _fingerprints_at(files: list[AnswerFile], at: pl.DataFrame) -> pl.Series:
    """The fingerprints at positions ``at`` (``_f``, ``_p``) of ``files``."""
    found = []
    for (number,), part in at.partition_by("_f", as_dict=True).items():
        file, start = files[int(number)], 0
        for frame in read_records(file, {"fingerprint": pl.String()}):
            end = start + frame.height
            here = part.filter(pl.col("_p").is_between(start, end - 1))["_p"]
            found.append(frame["fingerprint"].gather(here - start))
            start = end
    return pl.concat([pl.Series("fingerprint", [], pl.String()), *found])


class AnsweredSet:
    """Fingerprints, held as two polars columns instead of a Python set.

    The fingerprints sorted by their 8-byte hash, and the hashes: about 70 bytes a
    fingerprint where a ``set[str]`` of them takes about 140. A batch is looked up
    in one vectorised call (``unanswered``): a binary search on the hashes, then
    the fingerprints found compared whole, so a collision never passes for an
    answer. This is how a row source that builds its fingerprints with polars
    should ask; ``in`` works too, one at a time, but costs about a millisecond.
    """

    def __init__(self, fingerprints: Iterable[str] | pl.Series) -> None:
        series = pl.Series("fingerprint", fingerprints, dtype=pl.String())
        frame = pl.DataFrame({"fingerprint": series.drop_nulls()})
        frame = frame.with_columns(pl.col("fingerprint").hash().alias("h")).sort("h")
        self._hashes, self._fingerprints = frame["h"], frame["fingerprint"]

    def __len__(self) -> int:
        return self._hashes.len()

    def __contains__(self, fingerprint: object) -> bool:
        if not isinstance(fingerprint, str):
            return False
        return not self.unanswered(pl.Series([fingerprint]))[0]

    def unanswered(self, fingerprints: pl.Series) -> pl.Series:
        """A mask over ``fingerprints``: true where one is not in this set."""
        size = self._hashes.len()
        wanted = fingerprints.cast(pl.String())
        found = pl.repeat(False, wanted.len(), eager=True)
        if not size:
            return (~found).alias("unanswered")
        hashes = wanted.hash()
        at = self._hashes.search_sorted(hashes, side="left")
        pending = pl.int_range(0, wanted.len(), eager=True, dtype=pl.UInt32)
        while pending.len():  # each pass tries the next fingerprint with that hash
            here = at.gather(pending)
            inside = here < size
            pending, here = pending.filter(inside), here.filter(inside)
            same_hash = self._hashes.gather(here) == hashes.gather(pending)
            pending, here = pending.filter(same_hash), here.filter(same_hash)
            equal = self._fingerprints.gather(here) == wanted.gather(pending)
            found = found.scatter(pending.filter(equal), True)
            pending = pending.filter(~equal)
            at = at.scatter(pending, here.filter(~equal) + 1)
        return (~found).alias("unanswered")


def read_latest(folder: Path, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The newest record per fingerprint with ``schema``'s columns, every one held
    in memory: for a report, not for a million rows' results (see results.py)."""
    columns = {name: dtype for name, dtype in schema.items() if name != "fingerprint"}
    records = positions(answer_files(folder), columns)
    latest = newest(records).sort(["_s", "_f", "_p"])
    return latest.select(["fingerprint", *columns]).select(list(schema))


def gather(
    folder: Path, fingerprints: pl.Series, schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """The newest record of each of a few ``fingerprints``, with ``schema``'s
    columns; reads only those fingerprints' records into memory."""
    if fingerprints.is_empty():
        return pl.DataFrame(schema=dict(schema))
    columns = {name: dtype for name, dtype in schema.items() if name != "fingerprint"}
    wanted = pl.col("fingerprint").is_in(fingerprints.implode())
    records = positions(answer_files(folder), columns, where=wanted)
    return newest(records).select(list(schema))
