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
#: two independent hash states: a fingerprint is held as 128 bits (``AnsweredSet``)
_SEEDS = (0x616E7377, 0x65726564)
_HASHES = {
    "_a": pl.col("fingerprint").hash(seed=_SEEDS[0]),
    "_b": pl.col("fingerprint").hash(seed=_SEEDS[1]),
}
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
        return _last_of_each(records[key])
    per_stream = records.select(last.over("_s")).to_series().arg_true()
    candidates = records.select(key, "finished_at", "_s")[per_stream]
    latest = (
        candidates.with_columns(per_stream.alias("_i"))
        .sort(["finished_at", "_s"], nulls_last=False)
        .filter(last)["_i"]
    )
    mask = pl.repeat(False, records.height, eager=True)
    return mask.scatter(latest, True)


def _last_of_each(keys: pl.Series) -> pl.Series:
    """True on the last of equal ``keys``: most keys occur once, so the repeated
    ones are found by sorting (``repeats``) and only those are told apart, in a
    third of the time ``is_last_distinct`` takes over a million keys."""
    if keys.null_count():
        return keys.is_last_distinct()
    repeated = repeats(keys)
    at = repeated.arg_true()
    return (~repeated).scatter(at, keys.gather(at).is_last_distinct())


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


def answered_hashes(
    folder: Path, stands: pl.Expr, *, key: pl.Expr | None = None
) -> AnsweredSet:
    """``answered`` as an ``AnsweredSet``, in one read of the journal: each record's
    two hashes are taken as it is read, so no fingerprint is read twice or held.

    Records are grouped by ``key`` (the first hash; a test makes it collide): where
    a key repeats, its records must share both hashes, else two fingerprints
    collided and the set is made again from the fingerprints themselves."""
    files = answer_files(folder)
    columns = {
        "status": pl.String(),
        "error_code": pl.String(),
        "retryable": pl.Boolean(),
    }
    derive = {"_stands": stands, **_HASHES}
    records = positions(files, columns, key=key or _HASHES["_a"], derive=derive)
    repeated = records.filter(repeats(records["_k"]))
    if (
        repeated.height
        and (repeated.group_by("_k").agg(pl.struct("_a", "_b").n_unique() > 1))[
            "_a"
        ].any()
    ):  # a collision: the exact way
        exact = newest(positions(files, columns)).filter(stands)
        return AnsweredSet(exact["fingerprint"])
    standing = pl.lit(newest_mask(records, "_k")) & pl.col("_stands")
    return AnsweredSet.of_hashes(records.select(pl.col("_a", "_b").filter(standing)))


def _fingerprints_at(files: list[AnswerFile], at: pl.DataFrame) -> pl.Series:
    """The fingerprints at positions ``at`` (``_f``, ``_p``) of ``files``."""
    return records_at(files, at, {"fingerprint": pl.String()})["fingerprint"]


def records_at(
    files: list[AnswerFile], at: pl.DataFrame, schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """The records at positions ``at`` (``_f``, ``_p``) of ``files``, with
    ``schema``'s columns (fingerprint among them), file by file: only the files
    holding one are read."""
    found = [pl.DataFrame(schema=dict(schema))]
    for (number,), part in at.partition_by("_f", as_dict=True).items():
        file, start = files[int(number)], 0
        for frame in read_records(file, schema):
            end = start + frame.height
            here = part.filter(pl.col("_p").is_between(start, end - 1))["_p"]
            found.append(frame.gather(here - start))
            start = end
    return pl.concat(found)


class AnsweredSet:
    """Fingerprints, held as two 64-bit hashes each instead of a Python set.

    Sixteen bytes a fingerprint, where a ``set[str]`` of them takes about 140 and
    the strings alone 80: a million answers hold 16 MB, and are read a journal file
    at a time (``of_parts``), so the strings of all of them are never in memory at
    once (issue 14). A batch is looked up in one vectorised call (``unanswered``): a
    binary search on the first hash, then the second compared. Two fingerprints
    sharing both hashes (so an unanswered row taken for answered) is a chance of
    about one in 10^26 at a million rows each side: far below a disk's own rate of
    undetected errors. ``in`` works too, one at a time, at about a millisecond.
    """

    def __init__(self, fingerprints: Iterable[str] | pl.Series) -> None:
        self._set(_hashed(pl.Series("fingerprint", fingerprints, dtype=pl.String())))

    @classmethod
    def of_parts(cls, parts: Iterable[pl.Series]) -> AnsweredSet:
        """The set of the fingerprints of every part, each hashed as it comes."""
        found = cls([])
        empty = _hashed(pl.Series([], dtype=pl.String()))
        found._set(pl.concat([empty, *(_hashed(part) for part in parts)]))
        return found

    @classmethod
    def of_hashes(cls, hashes: pl.DataFrame) -> AnsweredSet:
        """The set of fingerprints whose two hashes are ``hashes``' ``_a``, ``_b``."""
        found = cls([])
        found._set(hashes.select(a="_a", b="_b"))
        return found

    def union(self, other: AnsweredSet) -> AnsweredSet:
        """A set of the fingerprints of both."""
        both = AnsweredSet([])
        both._set(
            pl.DataFrame(
                {
                    "a": pl.concat([self._first, other._first]),
                    "b": pl.concat([self._second, other._second]),
                }
            )
        )
        return both

    def _set(self, hashed: pl.DataFrame) -> None:
        ordered = hashed.sort("a")
        self._first, self._second = ordered["a"], ordered["b"]

    def __len__(self) -> int:
        return self._first.len()

    def __contains__(self, fingerprint: object) -> bool:
        if not isinstance(fingerprint, str):
            return False
        return not self.unanswered(pl.Series([fingerprint]))[0]

    def unanswered(self, fingerprints: pl.Series) -> pl.Series:
        """A mask over ``fingerprints``: true where one is not in this set."""
        size = self._first.len()
        found = pl.repeat(False, fingerprints.len(), eager=True)
        if not size:
            return (~found).alias("unanswered")
        wanted = _hashed(fingerprints.cast(pl.String()), drop_nulls=False)
        # asked in the order of their first hash: the searches then walk the set
        # forward: 62 batches of 16,384 asked of a million took 0.34 s, sort
        # included, where the rows' order took 0.51 s
        order = wanted["a"].arg_sort()
        first, second = wanted["a"].gather(order), wanted["b"].gather(order)
        at = self._first.search_sorted(first, side="left")
        pending = pl.int_range(0, first.len(), eager=True, dtype=pl.UInt32)
        while pending.len():  # each pass tries the next entry with that first hash
            here = at.gather(pending)
            inside = here < size
            pending, here = pending.filter(inside), here.filter(inside)
            same_first = self._first.gather(here) == first.gather(pending)
            pending, here = pending.filter(same_first), here.filter(same_first)
            equal = self._second.gather(here) == second.gather(pending)
            found = found.scatter(order.gather(pending.filter(equal)), True)
            pending = pending.filter(~equal)
            at = at.scatter(pending, here.filter(~equal) + 1)
        return (~found).alias("unanswered")


def _hashed(fingerprints: pl.Series, *, drop_nulls: bool = True) -> pl.DataFrame:
    """Each fingerprint's two hashes, ``a`` and ``b``."""
    if drop_nulls:
        fingerprints = fingerprints.drop_nulls()
    hashed = fingerprints.to_frame("fingerprint").select(**_HASHES)
    return hashed.select(a="_a", b="_b")


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
    files = answer_files(folder)
    wanted = pl.col("fingerprint").is_in(fingerprints.implode())
    # where the newest records are, from fingerprints alone; then those records
    # (reading every column of every record took 0.5 s at a million answers)
    found = newest(positions(files, {}, where=wanted)).sort("_f", "_p")
    return records_at(files, found.select("_f", "_p"), schema).select(list(schema))
