"""Issue 14: answers compacted into columnar segments read back exactly as the JSONL
they came from, whatever state a kill left the compaction in, and the results built
from them in blocks equal the results of one block in memory."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from batchkimi.records import RowResult, RowStatus
from batchkimi.store import journal as journal_module
from batchkimi.store import segments as segments_module
from batchkimi.store.answers import AnsweredSet, answered, read_latest
from batchkimi.store.files import answer_files, journal_file, segment_file
from batchkimi.store.journal import Journal, answered_fingerprints, answered_set
from batchkimi.store.results import exact_key, write_results
from batchkimi.store.rows import RegisterFiles, RowRegister
from batchkimi.store.schema import JOURNAL_SCHEMA
from batchkimi.store.segments import Span, read_records, read_spans
from batchkimi.store.summary import build_summary
from batchkimi.store.unfinished import answers_in_hand

ROTATE = 3_000  # bytes: a generation every few records


def fp(i: int) -> str:
    return f"{i:064x}"


def result(i: int, **fields: Any) -> RowResult:
    values: dict[str, Any] = {
        "content": f"answer {i}",
        "input_tokens": 10 + i,
        "output_tokens": 2,
        "total_tokens": 12 + i,
        "attempts": 1,
        "latency_ms": 100.0 + i,
        "ttft_ms": 50.0 + i,
        "request_id": f"req-{i}",
        "finished_at": f"2026-12-01T10:00:{i % 60:02d}.000000+00:00",
        **fields,
    }
    return RowResult(
        fp(i), RowStatus(values.pop("status", "ok")), "kimi-k2.6", "openai", **values
    )


def journal(state: Path, results: list[RowResult], **options: Any) -> None:
    """Journal ``results`` as a run would, and close (waiting for compactions)."""
    writer, _ = Journal.open(state, **options)
    for item in results:
        writer.append(item, row_id=f"r{int(item.fingerprint, 16)}")
    writer.close()
    assert writer.compaction_error is None


def register(state: Path, fingerprints: Sequence[str | None]) -> RegisterFiles:
    rows = RowRegister(state, {"review": "review"}, None)
    count = len(fingerprints)
    rows.add(
        pl.DataFrame({"review": [f"review {i}" for i in range(count)]}),
        {
            "_index": list(range(count)),
            "id": [f"r{i}" for i in range(count)],
            "_fingerprint": list(fingerprints),
            "_problem_code": [None if f else "missing_media" for f in fingerprints],
            "_problem_message": [None if f else "gone" for f in fingerprints],
            "_model": ["kimi-k2.6"] * count,
            "_in_scope": [True] * count,
        },
    )
    rows.commit()
    return rows.files()


def build(state: Path, rows: RegisterFiles, **options: Any) -> pl.DataFrame:
    out = state.parent / "results.parquet"
    write_results(rows, state, out, api="openai", **options)
    return pl.read_parquet(out)


def test_compacted_answers_give_the_same_results_as_the_jsonl(tmp_path: Path) -> None:
    answers = [result(i) for i in range(40)] + [result(7, content="again")]
    plain, compacted = tmp_path / "plain" / "s", tmp_path / "compacted" / "s"
    journal(plain, answers, rotate_bytes=1 << 30)
    journal(compacted, answers, rotate_bytes=ROTATE)
    assert list((compacted / "segments").glob("*.parquet"))  # it did compact
    assert len(list(compacted.glob("journal*.jsonl"))) == 1  # only the newest
    fingerprints = [*(fp(i) for i in range(45)), fp(3), None]  # unsent, repeated, bad
    expected = build(plain, register(plain, fingerprints))
    got = build(compacted, register(compacted, fingerprints))
    assert_frame_equal(got, expected)
    assert got.filter(pl.col("fingerprint") == fp(7))["content"].to_list() == ["again"]
    assert got["status"].value_counts().sort("status").rows() == [
        ("error", 1),
        ("ok", 41),
        ("skipped", 5),
    ]
    assert_frame_equal(
        read_latest(compacted, JOURNAL_SCHEMA).sort("fingerprint"),
        read_latest(plain, JOURNAL_SCHEMA).sort("fingerprint"),
    )


def test_segments_grouping_several_chunks_give_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment's row group gathers several compaction chunks (a results build
    loads a row group at a time): records keep their order across the groups,
    whatever block a build loads them for."""
    monkeypatch.setattr(segments_module, "CHUNK_BYTES", 700)  # two records or so
    monkeypatch.setattr(segments_module, "GROUP_ROWS", 5)
    # each request answered twenty times: the last one appended is its answer (and
    # others after them, so that all of them are compacted)
    answers = [result(i % 3, content=f"answer {i}") for i in range(60)]
    answers += [result(i) for i in range(3, 80)]
    plain, compacted = tmp_path / "plain" / "s", tmp_path / "compacted" / "s"
    journal(plain, answers, rotate_bytes=1 << 30)
    journal(compacted, answers, rotate_bytes=4 * ROTATE)
    for path in (compacted / "segments").glob("*.parquet"):
        meta = pq.read_metadata(path)
        groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert len(groups) > 1 and all(rows >= 5 for rows in groups[:-1])
    fingerprints = [fp(i) for i in range(82)]
    expected = build(plain, register(plain, fingerprints))
    assert expected["content"].to_list()[:3] == ["answer 57", "answer 58", "answer 59"]
    for block_rows in (3, 7, 64):
        got = build(compacted, register(compacted, fingerprints), block_rows=block_rows)
        assert_frame_equal(got, expected)


def test_a_large_journal_is_sealed_when_its_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next run reads the answers from a segment, not from JSON, and appends
    its own to a new generation; nothing is lost or counted twice."""
    monkeypatch.setattr(journal_module, "SEAL_BYTES", 2_000)
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(8)])  # one generation, under ROTATE
    assert not list(state.glob("journal*.jsonl"))
    assert len(list((state / "segments").glob("*.parquet"))) == 1
    journal(state, [result(8), result(3, content="again")])  # small: not sealed
    assert [p.name for p in state.glob("journal*.jsonl")] == ["journal.000001.jsonl"]
    rows = register(state, [fp(i) for i in range(10)])
    got = build(state, rows)
    assert got["content"].to_list() == [
        *(f"answer {i}" for i in range(3)),
        "again",
        *(f"answer {i}" for i in range(4, 9)),
        None,
    ]
    assert answered_fingerprints(state, frozenset()) == {fp(i) for i in range(9)}


def test_results_built_in_small_blocks_equal_one_block(tmp_path: Path) -> None:
    """Answers journaled in reverse manifest order (a retry run's, say) wait on
    disk for their block; small blocks force that path."""
    state = tmp_path / "s"
    journal(state, [result(i) for i in reversed(range(30))], rotate_bytes=ROTATE)
    rows = register(state, [fp(i) for i in range(30)] + [fp(5)])
    whole = build(state, rows)
    assert_frame_equal(build(state, rows, block_rows=4), whole)
    assert whole["request_id"].to_list() == [
        *(f"req-{i}" for i in range(30)),
        "req-5",
    ]
    assert not list(state.glob(".results-build*"))  # spill files are gone


def test_colliding_keys_are_caught_and_built_again_whole(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(12)], rotate_bytes=ROTATE)
    rows = register(state, [fp(i) for i in range(14)])
    expected = build(state, rows, key=exact_key)
    every_key_equal = build(state, rows, key=lambda column: pl.lit(1, pl.UInt64()))
    assert_frame_equal(every_key_equal, expected)


def test_the_summary_tallied_in_blocks_equals_the_summary_of_the_whole(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    answers = [
        result(i, retries={"InternalError": i % 3} if i % 3 else {}, cost=0.01)
        for i in range(20)
    ]
    answers.append(result(20, status="error", error_code="DataInspectionFailed"))
    journal(state, answers, rotate_bytes=ROTATE)
    rows = register(state, [*(fp(i) for i in range(22)), fp(4), None])
    out = tmp_path / "results.parquet"
    built = write_results(rows, state, out, api="openai", block_rows=3)
    tallied = built.summary(run={}, elapsed_s=2.0, sent_this_run=21)
    whole = build_summary(pl.read_parquet(out), run={}, elapsed_s=2.0, sent_this_run=21)
    assert tallied == whole
    overall = tallied["overall"]
    assert (overall["rows"], overall["requests"]) == (24, 22)
    assert overall["by_status"] == {"error": 2, "ok": 21, "skipped": 1}
    assert overall["retries_by_cause"] == {"InternalError": 19}
    assert overall["cost"] == 0.2  # the repeated row's request counts once
    assert built.by_status["ok"] == 21 and built.rows == 24


def test_a_kill_after_the_segment_before_the_unlink_counts_each_answer_once(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(10)], rotate_bytes=ROTATE)
    compacted = sorted((state / "segments").glob("*.parquet"))
    # put the first generation's JSONL back beside its segment: a kill between
    # renaming the segment into place and unlinking the JSONL left both
    records = pl.read_parquet(compacted[0])
    (state / journal_file("journal", 0)).write_text(
        "".join(json.dumps(r) + "\n" for r in records.to_dicts())
    )
    files = answer_files(state)
    assert [f.is_segment for f in files].count(False) == 1  # the twin is skipped
    latest = read_latest(state, JOURNAL_SCHEMA)
    assert latest.height == 10 and latest["fingerprint"].n_unique() == 10
    rows = register(state, [fp(i) for i in range(10)])
    assert build(state, rows)["request_id"].to_list() == [f"req-{i}" for i in range(10)]
    Journal.open(state)[0].close()  # the stream's next writer finishes the job
    assert not (state / journal_file("journal", 0)).exists()


def test_a_kill_mid_segment_leaves_the_jsonl_which_is_compacted_again(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(10)], rotate_bytes=ROTATE)
    segment = state / segment_file("journal", 0)
    records = pl.read_parquet(segment)
    segment.rename(state / "segments" / ".journal.000000.99999.tmp")  # half written
    (state / journal_file("journal", 0)).write_text(
        "".join(json.dumps(r) + "\n" for r in records.to_dicts())
    )
    before = read_latest(state, JOURNAL_SCHEMA).sort("fingerprint")
    assert before.height == 10
    Journal.open(state, rotate_bytes=ROTATE)[0].close()
    assert not list((state / "segments").glob(".*.tmp"))
    assert segment.exists() and not (state / journal_file("journal", 0)).exists()
    assert_frame_equal(read_latest(state, JOURNAL_SCHEMA).sort("fingerprint"), before)


def test_a_journal_compacted_after_it_was_listed_is_read_from_its_segment(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    writer, _ = Journal.open(state, rotate_bytes=1 << 30)
    for i in range(5):
        writer.append(result(i), row_id=f"r{i}")
    writer.close()
    listed = answer_files(state)
    Journal.open(state, rotate_bytes=10)[0].close()  # full: sealed and compacted
    assert not listed[0].path.exists()
    frames = list(read_records(listed[0], {"fingerprint": pl.String()}))
    assert pl.concat(frames)["fingerprint"].to_list() == [fp(i) for i in range(5)]


def test_the_newest_answer_is_the_last_appended_within_a_stream_and_the_latest_between(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    late, early = "2026-12-01T10:00:09+00:00", "2026-12-01T10:00:01+00:00"
    # within one stream the order of appends decides, even against the clock
    journal(
        state,
        [result(1, content="first", finished_at=late)]
        + [result(i) for i in range(2, 9)]
        + [result(1, content="second", finished_at=early)],
        rotate_bytes=ROTATE,
    )
    # between streams (two shards' processes) the later finish decides
    journal(
        state, [result(2, content="shard, later", finished_at=late)], shard="1-of-2"
    )
    journal(
        state, [result(3, content="shard, earlier", finished_at=early)], shard="2-of-2"
    )
    latest = dict(
        read_latest(state, JOURNAL_SCHEMA).select("fingerprint", "content").rows()
    )
    assert latest[fp(1)] == "second"
    assert latest[fp(2)] == "shard, later"
    assert latest[fp(3)] == "answer 3"
    rows = register(state, [fp(i) for i in (1, 2, 3)])
    assert build(state, rows)["content"].to_list() == [
        "second",
        "shard, later",
        "answer 3",
    ]


def test_answered_fingerprints_and_unfinished_answers_read_segments(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    journal(
        state,
        [result(i) for i in range(10)]
        + [
            result(
                10,
                status="error",
                error_code="InternalError",
                retryable=True,
                content=None,
                input_tokens=None,  # a 500 is not paid for
                output_tokens=None,
                total_tokens=None,
            ),
            result(11, status="error", error_code="DataInspectionFailed"),
            result(
                12,
                status="invalid",
                retryable=True,
                validation_error="not one of the labels",
                answer_json=None,
                repairs=1,
                repair_causes={"invalid": 1},
            ),
            result(3, status="invalid", retryable=True, validation_error="bad"),
            result(3),  # repaired afterwards: nothing is owed for it
        ],
        rotate_bytes=ROTATE,
    )
    answered = answered_fingerprints(state, frozenset())
    assert answered == {fp(i) for i in [*range(10), 11]}
    assert answered_fingerprints(state, frozenset({"error"})) == {
        fp(i) for i in range(10)
    }
    batch = pl.Series([fp(i) for i in range(14)])
    unanswered = answered_set(state, frozenset()).unanswered(batch)
    assert unanswered.arg_true().to_list() == [10, 12, 13]
    owed = answers_in_hand(state)
    assert list(owed) == [fp(12)]
    assert owed[fp(12)].repair_causes == {"invalid": 1}
    assert owed[fp(12)].validation_error == "not one of the labels"
    # a row paid for and sent again (--rerun) carries what it cost
    carried = answers_in_hand(state, frozenset({"DataInspectionFailed"}))
    assert sorted(carried) == [fp(11), fp(12)]
    assert carried[fp(11)].input_tokens == 21


def test_an_answered_set_looks_fingerprints_up_in_one_call() -> None:
    fingerprints = [fp(i) for i in range(0, 100, 3)]
    answered = AnsweredSet(fingerprints)
    assert len(answered) == 34
    assert fp(3) in answered and fp(4) not in answered and None not in answered
    batch = pl.Series([fp(i) for i in range(10)] + [fp(99), fp(1000)])
    assert answered.unanswered(batch).to_list() == [i % 3 != 0 for i in range(10)] + [
        False,
        True,
    ]
    assert AnsweredSet([]).unanswered(batch).to_list() == [True] * 12


def test_an_answered_set_read_in_parts_agrees_with_a_python_set() -> None:
    """50,000 fingerprints held as hashes, looked up against 100,000: every answer
    exactly as a set of the strings gives it."""
    held = [hashlib.sha256(f"a{i}".encode()).hexdigest() for i in range(50_000)]
    asked = held[::2] + [
        hashlib.sha256(f"b{i}".encode()).hexdigest() for i in range(75_000)
    ]
    parts = [pl.Series(held[i : i + 7_000]) for i in range(0, len(held), 7_000)]
    answered = AnsweredSet.of_parts(parts)
    assert len(answered) == len(held)
    strings = set(held)
    expected = [f not in strings for f in asked]
    assert answered.unanswered(pl.Series(asked)).to_list() == expected


def test_a_failed_compaction_keeps_the_jsonl_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "s"
    real_fsync = segments_module._fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments_module, "_fsync", full_disk)
    writer, _ = Journal.open(state, rotate_bytes=ROTATE)
    for i in range(10):
        writer.append(result(i), row_id=f"r{i}")
    writer.close()
    assert isinstance(writer.compaction_error, OSError)
    assert not list((state / "segments").glob("*"))  # no segment, no leftover
    assert read_latest(state, JOURNAL_SCHEMA).height == 10  # nothing lost
    monkeypatch.setattr(segments_module, "_fsync", real_fsync)
    Journal.open(state, rotate_bytes=ROTATE)[0].close()
    assert list((state / "segments").glob("*.parquet"))
    assert read_latest(state, JOURNAL_SCHEMA).height == 10


def test_a_torn_tail_after_rotation_is_cut_and_reported(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(10)], rotate_bytes=ROTATE)
    newest = max(state.glob("journal*.jsonl"))
    assert newest.name != "journal.jsonl"  # a later generation
    newest.write_bytes(newest.read_bytes() + b'{"fingerprint": "ab')
    assert read_latest(state, JOURNAL_SCHEMA).height == 10  # readers skip it
    writer, torn = Journal.open(state, rotate_bytes=ROTATE)
    writer.append(result(10), row_id="r10")
    writer.close()
    assert torn == len(b'{"fingerprint": "ab')
    assert read_latest(state, JOURNAL_SCHEMA).height == 11


def test_a_journal_from_before_segments_is_compacted_by_its_next_writer(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(20)], rotate_bytes=1 << 30)
    before = read_latest(state, JOURNAL_SCHEMA).sort("fingerprint")
    old = tmp_path / "old"
    shutil.copytree(state, old)
    Journal.open(state, rotate_bytes=ROTATE)[0].close()
    assert not (state / "journal.jsonl").exists()
    assert (state / segment_file("journal", 0)).exists()
    assert_frame_equal(read_latest(state, JOURNAL_SCHEMA).sort("fingerprint"), before)
    rows_new = register(state, [fp(i) for i in range(20)])
    rows_old = register(old, [fp(i) for i in range(20)])
    assert_frame_equal(build(state, rows_new), build(old, rows_old))


def test_typed_answer_columns_come_from_compacted_answers(tmp_path: Path) -> None:
    state = tmp_path / "s"
    answers = [
        result(
            i, answer_json=json.dumps({"label": "good" if i % 2 else "bad", "score": i})
        )
        for i in range(12)
    ]
    journal(state, answers, rotate_bytes=ROTATE)
    rows = register(state, [fp(i) for i in range(13)])
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["good", "bad"]},
            "score": {"type": "integer"},
        },
    }
    got = build(state, rows, answer_schema=schema, block_rows=5)
    assert got.columns[:4] == ["id", "review", "label", "score"]
    assert got.schema["score"] == pl.Int64()
    assert got["label"].to_list() == [
        *("good" if i % 2 else "bad" for i in range(12)),
        None,
    ]


def test_colliding_hashes_do_not_hide_an_answered_fingerprint(tmp_path: Path) -> None:
    state = tmp_path / "s"
    journal(state, [result(i) for i in range(8)] + [result(3)], rotate_bytes=ROTATE)
    stands = pl.col("status") == "ok"
    every_key_equal = pl.lit(7, pl.UInt64())
    found = pl.concat(list(answered(state, stands, key=every_key_equal)))
    assert sorted(found.to_list()) == [fp(i) for i in range(8)]
    assert pl.concat(list(answered(state, stands))).sort().to_list() == [
        fp(i) for i in range(8)
    ]


def test_a_jsonl_journal_is_read_chunk_by_chunk_and_again_from_its_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A results build reads a JSONL journal's chunks as it needs them, even if the
    file is compacted between the two reads."""
    monkeypatch.setattr(segments_module, "READ_CHUNK_BYTES", 2_000)
    state = tmp_path / "s"
    journal(state, [result(i) for i in reversed(range(30))], rotate_bytes=1 << 30)
    rows = register(state, [fp(i) for i in range(30)])
    expected = build(state, rows, block_rows=1_000)
    assert_frame_equal(build(state, rows, block_rows=4), expected)
    listed = answer_files(state)[0]
    spans: list[Span] = []
    first = pl.concat(list(read_records(listed, JOURNAL_SCHEMA, spans=spans)))
    assert len(spans) > 5
    Journal.open(state, rotate_bytes=10)[0].close()  # now compacted
    again = pl.concat(list(read_spans(listed, spans, JOURNAL_SCHEMA)))
    assert_frame_equal(again, first)
