"""The journal keeps every answer a model can send, whatever its characters."""

from __future__ import annotations

from pathlib import Path

from batchkimi.records import RowResult, RowStatus
from batchkimi.store.journal import Journal, read_latest
from batchkimi.store.results import JOURNAL_SCHEMA


def test_an_answer_with_a_lone_surrogate_is_journalled_and_read_back(
    tmp_path: Path,
) -> None:
    # JSON lets a model send "\ud800" on its own; Python then holds a str that is not
    # valid UTF-8. The journal must still keep the paid-for answer.
    journal, _ = Journal.open(tmp_path)
    answers = {"a" * 64: "caf\u00e9 \ud800 end", "b" * 64: "plain \u732b"}
    for fingerprint, content in answers.items():
        journal.append(
            RowResult(fingerprint, RowStatus.OK, "kimi-k2.6", "compatible", content),
            row_id=fingerprint[0],
        )
    journal.close()

    latest = read_latest(tmp_path, JOURNAL_SCHEMA)
    kept = dict(zip(latest["fingerprint"], latest["content"], strict=True))
    assert kept["a" * 64] == "caf\u00e9 \ufffd end"  # the one bad code unit replaced
    assert kept["b" * 64] == "plain \u732b"
    raw = (tmp_path / "journal.jsonl").read_bytes()
    raw.decode("utf-8")  # every line stays valid UTF-8
