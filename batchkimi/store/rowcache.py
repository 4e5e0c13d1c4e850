"""What each manifest row built into last run, found again by the row's content key.

The register a run leaves (``rows.parquet``) holds every row's content key, id, model
and request fingerprint. When the next run's settings have the same digest, a row
with the same key builds into the same request, so its fingerprint can be read back
instead of rebuilt: a full-path resume of a million answered rows then does no
per-row Python (issue 14). Only rows whose request could not change without their
values changing carry a key; the others are rebuilt every time.

Lookups go in manifest order, and memory stays flat. While the manifest holds the
rows it held, in the same places, each batch is compared with the same rows of the
old register, read forward row group by row group. Rows that do not line up (added,
removed or edited above) are looked up in an index of the old register's keys
(24 bytes a row, loaded on the first such row), and their values read from the row
groups that hold them.
"""

from __future__ import annotations

import bisect

import polars as pl

from batchkimi.store.rows import RegisterFiles

KEYS = ["_key_a", "_key_b"]
VALUES_SCHEMA = {"id": pl.String(), "_fingerprint": pl.String(), "_model": pl.String()}
VALUES = list(VALUES_SCHEMA)
#: lookups of moved rows that stream the register's keys before they are held
_STREAMED = 2
_SCHEMA = {"_key_a": pl.UInt64(), "_key_b": pl.UInt64(), **VALUES_SCHEMA}


class RowCache:
    """The last register's keyed rows, looked up batch by batch in manifest order."""

    def __init__(self, register: RegisterFiles) -> None:
        self.register = register
        self._scan = register.scan()
        sizes = register.group_rows()
        self._starts = [sum(sizes[:g]) for g in range(len(sizes) + 1)]
        self._next_group = 0  # the next row group the forward reading takes
        self._buffer = pl.DataFrame(schema=_SCHEMA)
        self._buffer_start = 0  # the register row the buffer starts at
        self._index: pl.DataFrame | None = None
        self._streamed = 0  # lookups that streamed the register's keys
        self._groups: dict[int, pl.DataFrame] = {}  # the last groups read by place
        self.hits = 0

    @classmethod
    def load(cls, register: RegisterFiles | None, digest: str) -> RowCache | None:
        """``register`` as a cache, if it was written under ``digest`` (and has
        content keys at all); otherwise None."""
        if register is None or not register.keyed_under(digest):
            return None
        return cls(register)

    def close(self) -> None:
        self._buffer, self._index, self._groups = self._buffer.clear(), None, {}

    def lookup(self, start: int, keys: pl.DataFrame) -> pl.DataFrame:
        """``id``, ``_fingerprint`` and ``_model`` for the rows ``keys`` describes
        (manifest rows ``start`` onwards): last run's, where a row with that key
        was registered with a request; nulls where not."""
        height = keys.height
        aligned = self._slice(start, height)
        same = (
            (aligned["_key_a"] == keys["_key_a"].head(aligned.height))
            & (aligned["_key_b"] == keys["_key_b"].head(aligned.height))
        ).fill_null(False)
        if aligned.height == height and same.all():
            self.hits += height
            return aligned.select(VALUES)
        same = same.extend(pl.repeat(False, height - aligned.height, eager=True))
        found = pl.concat(
            [
                aligned.select(VALUES),
                pl.DataFrame(schema=VALUES_SCHEMA).clear(height - aligned.height),
            ]
        ).select(pl.when(same).then(pl.col(c)).alias(c) for c in VALUES)
        rest = same.not_().arg_true()
        moved = self._moved(keys[rest])
        if moved.height:
            at = rest.gather(moved["_at"])
            found = found.with_columns(
                found[c].scatter(at, moved[c]).alias(c) for c in VALUES
            )
        self.hits += height - found["_fingerprint"].null_count()
        return found

    def _slice(self, start: int, count: int) -> pl.DataFrame:
        """Register rows ``start`` to ``start + count``, read forward group by
        group (lookups only move forward; rows behind ``start`` are dropped)."""
        if start < self._buffer_start:
            return self._buffer.clear()
        read_to = self._buffer_start + self._buffer.height
        if start >= read_to:  # groups wholly before ``start`` are never read
            holding = bisect.bisect_right(self._starts, start) - 1
            if holding > self._next_group:
                self._next_group = holding
                self._buffer = self._buffer.clear()
                self._buffer_start = read_to = self._starts[holding]
        while read_to < start + count and self._next_group < len(self._starts) - 1:
            group = self._read(self._next_group, [*KEYS, *VALUES])
            self._next_group += 1
            self._buffer = pl.concat([self._buffer, group], rechunk=False)
            read_to += group.height
        self._buffer = self._buffer.slice(start - self._buffer_start)
        self._buffer_start = start
        return self._buffer.slice(0, count)

    def _moved(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``keys`` found elsewhere in the register: ``_at`` (their place
        in ``keys``) and their values. The first few lookups stream the register's
        keys past them (rows appended at the end ask once: a few megabytes); after
        that the keys are held as an index (24 bytes a row), for a manifest whose
        rows all moved."""
        asked = keys.with_row_index("_at")
        if self._index is None and self._streamed < _STREAMED:
            self._streamed += 1
            index = self.register.scan().select(KEYS)
            matched = (
                index.with_row_index("_row")
                .join(asked.lazy(), on=KEYS, how="inner")
                .collect(engine="streaming")
            )
        else:
            if self._index is None:
                self._index = (
                    self.register.scan()
                    .select(KEYS)
                    .collect()
                    .with_row_index("_row")
                    .drop_nulls(KEYS)
                )
            matched = asked.join(self._index, on=KEYS, how="inner")
        # a key registered twice (identical rows): its first row's values
        matched = matched.group_by("_at").agg(pl.col("_row").min())
        parts = [pl.DataFrame(schema={"_at": pl.UInt32(), **VALUES_SCHEMA})]
        bounds = pl.Series(self._starts[1:], dtype=pl.UInt32)
        matched = matched.with_columns(
            _group=bounds.search_sorted(matched["_row"], side="right")
        )
        for (group,), rows in matched.group_by(["_group"]):
            assert isinstance(group, int)  # noqa: S101 (for the type checker)
            values = self._group(group)[rows["_row"] - self._starts[group]]
            parts.append(pl.concat([rows.select("_at"), values], how="horizontal"))
        return pl.concat(parts)

    def _group(self, group: int) -> pl.DataFrame:
        """Row group ``group``'s values; the last two read are kept, since moved
        rows of one batch sit in one or two groups."""
        found = self._groups.get(group)
        if found is None:
            found = self._read(group, VALUES)
            self._groups = {**dict(list(self._groups.items())[-1:]), group: found}
        return found

    def _read(self, group: int, columns: list[str]) -> pl.DataFrame:
        """Row group ``group``'s ``columns``, read by polars (three times faster
        than pyarrow's reader here)."""
        start, end = self._starts[group], self._starts[group + 1]
        frame = self._scan.slice(start, end - start).select(columns).collect()
        return frame.cast({c: _SCHEMA[c] for c in columns})
