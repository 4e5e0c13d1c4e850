"""Issue 14: a results build copies the blocks of the last results file whose rows
and answers did not change, and only those: whatever changed since (an answer, a
row, the settings, the file itself), the results equal a build from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal

from batchkimi.store.results import Built, write_results
from batchkimi.store.reuse import forget
from batchkimi.store.rows import RegisterFiles, RowRegister
from tests.store.test_segments import ROTATE, fp, journal, result

BLOCK = 8


def register(state: Path, count: int, *, edited: int | None = None) -> RegisterFiles:
    rows = RowRegister(state, {"review": "review"}, None)
    reviews = [
        f"review {i}" + (" (edited)" if i == edited else "") for i in range(count)
    ]
    rows.add(
        pl.DataFrame({"review": reviews}),
        {
            "_index": list(range(count)),
            "id": [f"r{i}" for i in range(count)],
            "_fingerprint": [fp(i) for i in range(count)],
            "_model": ["kimi-k2.6"] * count,
            "_in_scope": [True] * count,
        },
    )
    rows.commit()
    return rows.files()


def build(
    state: Path, rows: RegisterFiles, **options: Any
) -> tuple[Built, pl.DataFrame]:
    out = state.parent / "results.parquet"
    built = write_results(rows, state, out, api="openai", block_rows=BLOCK, **options)
    return built, pl.read_parquet(out)


def from_scratch(state: Path, rows: RegisterFiles, **options: Any) -> pl.DataFrame:
    return scratch(state, rows, **options)[1]


def scratch(
    state: Path, rows: RegisterFiles, **options: Any
) -> tuple[Built, pl.DataFrame]:
    forget(rows.base)
    built, results = build(state, rows, **options)
    assert built.copied == 0
    return built, results


def summary(built: Built) -> dict[str, Any]:
    return built.summary(run={}, elapsed_s=1.0, sent_this_run=0)


def test_a_resume_after_new_rows_copies_the_blocks_before_them(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(40)], rotate_bytes=ROTATE)
    first, _ = build(state, register(state, 40))
    assert first.copied == 0
    journal(state, [result(i) for i in range(40, 44)], rotate_bytes=ROTATE)
    rows = register(state, 44)
    built, results = build(state, rows)
    assert built.copied == 5  # blocks 0-4; block 5 has new rows
    assert built.by_status["ok"] == 44
    whole, expected = scratch(state, rows)
    assert_frame_equal(results, expected)
    assert summary(built) == summary(whole)  # the copied blocks counted too


def test_a_new_answer_or_an_edited_row_builds_its_block_again(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(40)], rotate_bytes=ROTATE)
    build(state, register(state, 40))
    journal(state, [result(3, content="again")], rotate_bytes=ROTATE)  # block 0
    rows = register(state, 40, edited=20)  # block 2
    built, results = build(state, rows)
    assert built.copied == 3
    assert results["content"][3] == "again"
    assert results["review"][20] == "review 20 (edited)"
    assert_frame_equal(results, from_scratch(state, rows))


def test_blocks_before_and_after_an_edited_one_are_copied(tmp_path: Path) -> None:
    """Blocks before the first change are copied in one stream, later unchanged
    ones one by one; the file reads as a build from scratch."""
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(40)], rotate_bytes=ROTATE)
    build(state, register(state, 40))
    rows = register(state, 40, edited=20)  # block 2 of 0-4
    built, results = build(state, rows)
    assert built.copied == 4
    assert built.by_status["ok"] == 40 and built.rows == 40
    assert results["review"][20] == "review 20 (edited)"
    assert_frame_equal(results, from_scratch(state, rows))
    again, _ = build(state, rows)  # the file written so is copied from in turn
    assert again.copied == 5


def test_an_edited_results_file_is_never_copied_from(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(24)], rotate_bytes=ROTATE)
    rows = register(state, 24)
    _, expected = build(state, rows)
    out = state.parent / "results.parquet"
    edited = expected.with_columns(content=pl.lit("edited by hand"))
    pq.write_table(edited.to_arrow(), out, row_group_size=BLOCK)  # same blocks
    built, results = build(state, rows)
    assert built.copied == 0
    assert_frame_equal(results, expected)


def test_other_settings_build_every_block_again(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(24)], rotate_bytes=ROTATE)
    rows = register(state, 24)
    build(state, rows)
    again, _ = build(state, rows)
    assert again.copied == 3
    built, results = build(state, rows, answer_schema={"type": "object"})
    assert built.copied == 0
    assert_frame_equal(
        results, from_scratch(state, rows, answer_schema={"type": "object"})
    )
