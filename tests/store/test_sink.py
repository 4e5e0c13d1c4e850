"""The Parquet sink writes on a thread of its own: what it writes reads back in
order, and a failure to write reaches the caller instead of a file taken for whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from batchkimi.store.sink import ParquetSink


def test_tables_written_by_the_sink_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    with ParquetSink(path) as sink:
        for first in range(0, 50, 10):
            sink.write(pl.DataFrame({"n": range(first, first + 10)}).to_arrow())
    assert pl.read_parquet(path)["n"].to_list() == list(range(50))


def test_tables_are_held_into_row_groups_of_at_least_group_rows(
    tmp_path: Path,
) -> None:
    """A reader loads a row group at a time: small batches become larger groups,
    and each table is one group by default (``group_rows=1``)."""
    held, single = tmp_path / "held.parquet", tmp_path / "single.parquet"
    for path, group_rows in ((held, 25), (single, 1)):
        with ParquetSink(path, group_rows=group_rows) as sink:
            for first in range(0, 50, 10):
                sink.write(pl.DataFrame({"n": range(first, first + 10)}).to_arrow())
    assert _groups(held) == [30, 20]
    assert _groups(single) == [10] * 5
    assert pl.read_parquet(held)["n"].to_list() == list(range(50))


def _groups(path: Path) -> list[int]:
    meta = pq.read_metadata(path)
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def test_a_sink_that_cannot_write_raises_on_close(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "no-such-folder" / "x.parquet")
    sink.write(pl.DataFrame({"n": [1, 2]}).to_arrow())
    with pytest.raises(OSError):
        sink.close()


def test_an_abandoned_sink_raises_nothing(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "no-such-folder" / "x.parquet")
    sink.write(pl.DataFrame({"n": [1, 2]}).to_arrow())
    sink.abandon()  # a run stopping on another error: that one is the news
