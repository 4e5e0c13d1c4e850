"""The Parquet sink writes on a thread of its own: what it writes reads back in
order, and a failure to write reaches the caller instead of a file taken for whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batchkimi.store.sink import ParquetSink


def test_tables_written_by_the_sink_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    with ParquetSink(path) as sink:
        for first in range(0, 50, 10):
            sink.write(pl.DataFrame({"n": range(first, first + 10)}).to_arrow())
    assert pl.read_parquet(path)["n"].to_list() == list(range(50))


def test_a_sink_that_cannot_write_raises_on_close(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "no-such-folder" / "x.parquet")
    sink.write(pl.DataFrame({"n": [1, 2]}).to_arrow())
    with pytest.raises(OSError):
        sink.close()


def test_an_abandoned_sink_raises_nothing(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "no-such-folder" / "x.parquet")
    sink.write(pl.DataFrame({"n": [1, 2]}).to_arrow())
    sink.abandon()  # a run stopping on another error: that one is the news
