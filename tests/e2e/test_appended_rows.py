"""Issue 14: a run whose manifest only grew carries the last run's rows as they are and
reads only the new ones (``store.appended``). A wrong carry would pass a changed row
off as settled, or send an answered one again, so every test compares what was sent
and written with what a run from scratch sends and writes, and the cases that must
take the full path are each tried."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from batchkimi.credentials import ApiKey
from batchkimi.media.samples import make_image
from batchkimi.outcome import RunOutcome, SilentObserver
from batchkimi.prepare import prepare_job
from batchkimi.records import RowResult, RowStatus
from batchkimi.runner import run_job
from batchkimi.settings import Job
from batchkimi.simulator import SimulatorServer
from batchkimi.store.journal import Journal
from batchkimi.store.rows import ROW_HASHES
from batchkimi.store.state import journal_sizes
from tests.helpers import make_spec, read_results, write_manifest

ROWS = [{"id": f"r{i:02d}", "review": f"review number {i}"} for i in range(40)]
NEW = [{"id": f"n{i}", "review": f"a new review {i}"} for i in range(3)]
SAME = ["id", "review", "status", "fingerprint"]  # (the simulator answers at random)
CARRIED = "the manifest only grew"


class Notes(SilentObserver):
    def __init__(self) -> None:
        self.infos: list[str] = []

    def on_info(self, message: str) -> None:
        self.infos.append(message)


def run_noting(job: Job) -> tuple[RunOutcome, bool]:
    """The run's outcome, and whether it carried the last run's rows."""
    notes = Notes()
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
    outcome = asyncio.run(run_job(prepare_job(job), key, observer=notes))
    return outcome, any(CARRIED in info for info in notes.infos)


def append(manifest: Path, rows: list[dict[str, Any]]) -> None:
    """Rows added at the end of a CSV or JSONL file, as an export appends them."""
    with manifest.open("a", encoding="utf-8") as out:
        for row in rows:
            if manifest.suffix == ".jsonl":
                out.write(json.dumps(row) + "\n")
            else:
                out.write(f"{row['id']},{row['review']}\n")


def sent_reviews(simulator: SimulatorServer) -> list[str]:
    prompts = [
        r.body["messages"][-1]["content"]
        for r in simulator.requests
        if r.body and "messages" in r.body
    ]
    return sorted(
        p.removeprefix("Sentiment of: ").split(". Answer")[0] for p in prompts
    )


def as_fresh(tmp_path: Path, simulator: SimulatorServer, job: Job) -> pl.DataFrame:
    """The results a run from scratch writes for the manifest as it is now."""
    rows = read_manifest(job.reading.input)
    fresh = make_spec(
        tmp_path / "fresh",
        simulator,
        rows=rows,
        fmt=job.reading.input.suffix.lstrip("."),
        batch_rows=job.reading.batch_rows,
    )
    assert run_noting(fresh)[0].exit_code in {0, 1}
    return read_results(fresh).select(SAME)


def resume_sends(
    tmp_path: Path, simulator: SimulatorServer, job: Job, *, carried: bool
) -> list[str]:
    """Run ``job`` again: it must carry the last run's rows or not as ``carried``
    says, end with exit 0 and write what a run from scratch writes; the reviews it
    sent."""
    simulator.reset()
    outcome, took = run_noting(job)
    assert took is carried and outcome.exit_code == 0
    sent = sent_reviews(simulator)
    assert read_results(job).select(SAME).equals(as_fresh(tmp_path, simulator, job))
    return sent


def read_manifest(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        lines = path.read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return pl.read_csv(path, infer_schema=False).to_dicts()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_appended_are_the_only_ones_read_and_sent_and_the_results_are_whole(
    tmp_path: Path, simulator: SimulatorServer, fmt: str
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS, fmt=fmt)
    assert run_noting(job)[0].exit_code == 0
    simulator.reset()
    append(job.reading.input, NEW[:2])

    outcome, carried = run_noting(job)
    assert outcome.exit_code == 0 and carried
    assert sent_reviews(simulator) == ["a new review 0", "a new review 1"]
    # and again: the rows the last append added are carried too
    simulator.reset()
    append(job.reading.input, NEW[2:])
    outcome, carried = run_noting(job)
    assert outcome.exit_code == 0 and carried
    assert sent_reviews(simulator) == ["a new review 2"]
    assert outcome.by_status["ok"] == len(ROWS) + len(NEW)
    assert read_results(job).select(SAME).equals(as_fresh(tmp_path, simulator, job))


def test_an_appended_row_asking_what_another_row_asked_is_not_sent_again(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    simulator.reset()
    # the same review as row 5 (its request), and one answered by a row since
    # removed, whose answer stays in the journal
    shorter = ROWS[:-1]
    write_manifest(tmp_path / "in", shorter)
    assert run_noting(job)[0].exit_code == 0
    append(job.reading.input, [{"id": "twin", "review": ROWS[5]["review"]}, ROWS[-1]])
    simulator.reset()

    outcome, carried = run_noting(job)
    assert carried and outcome.exit_code == 0
    assert simulator.requests == []
    results = read_results(job)
    assert results.filter(pl.col("id") == "twin")["status"].to_list() == ["ok"]
    assert results.select(SAME).equals(as_fresh(tmp_path, simulator, job))


def test_many_rows_appended_are_carried_with_the_whole_answered_set(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS, batch_rows=2)
    assert run_noting(job)[0].exit_code == 0
    simulator.reset()
    more = [{"id": f"m{i}", "review": f"more {i}"} for i in range(5)]
    append(job.reading.input, [*more, {"id": "twin", "review": ROWS[0]["review"]}])

    outcome, carried = run_noting(job)
    assert carried and outcome.exit_code == 0
    assert sent_reviews(simulator) == [f"more {i}" for i in range(5)]
    assert read_results(job).select(SAME).equals(as_fresh(tmp_path, simulator, job))


def edit_in_place(job: Job) -> None:
    """Row 7's text changed, the file's size kept, then a row appended."""
    path = job.reading.input
    text = path.read_text("utf-8").replace("review number 7\n", "review NUMBER 7\n")
    path.write_text(text, "utf-8")
    append(path, NEW[:1])


def unfinished(job: Job) -> None:
    """The last run left rows to send: it stopped at --limit."""
    limited = job.model_copy(
        update={"reading": job.reading.model_copy(update={"limit": 5})}
    )
    assert run_noting(limited)[0].exit_code == 3
    append(job.reading.input, NEW[:1])


def unended_line(job: Job) -> None:
    """The file did not end with a newline: what follows joins its last line."""
    path = job.reading.input
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert run_noting(job)[0].exit_code == 0
    with path.open("a", encoding="utf-8") as out:
        out.write(" and more\nn0,a new review 0\n")


def answered_since(job: Job) -> None:
    """An answer journaled after the last build (a run killed before its outputs):
    the row appended asks for it."""
    appended = [{"id": "n0", "review": "a new review 0"}]
    journal, _ = Journal.open(job.output / ".batchkimi")
    fingerprint = _fingerprint_of(job, appended[0])
    journal.append(
        RowResult(fingerprint, RowStatus.OK, "kimi-k2.6", "openai", content="kept"),
        row_id="n0",
    )
    journal.close()
    append(job.reading.input, appended)


def _fingerprint_of(job: Job, row: dict[str, Any]) -> str:
    prepared = prepare_job(job)
    request = prepared.builder.build(0, row)
    assert not isinstance(request, str) and hasattr(request, "fingerprint")
    return str(request.fingerprint)


@pytest.mark.parametrize(
    ("change", "sent"),
    [
        (edit_in_place, ["a new review 0", "review NUMBER 7"]),
        (unfinished, sorted([*(r["review"] for r in ROWS[5:]), "a new review 0"])),
        (unended_line, ["a new review 0", "review number 39 and more"]),
        (answered_since, []),
    ],
)
def test_anything_but_rows_appended_to_a_settled_job_takes_the_full_path(
    tmp_path: Path, simulator: SimulatorServer, change: Any, sent: list[str]
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS)
    if change is not unfinished:
        assert run_noting(job)[0].exit_code == 0
    change(job)
    assert resume_sends(tmp_path, simulator, job, carried=False) == sent
    if change is answered_since:
        kept = read_results(job).filter(pl.col("id") == "n0")["content"]
        assert kept.to_list() == ["kept"]


def test_other_settings_send_every_row_again(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    append(job.reading.input, NEW[:1])
    other = job.model_copy(
        update={
            "asking": job.asking.model_copy(update={"prompt": "Topic of: {review}."})
        }
    )
    simulator.reset()

    outcome, carried = run_noting(other)
    assert not carried and outcome.exit_code == 0
    assert len(simulator.requests) == len(ROWS) + 1


def test_a_row_with_a_problem_is_looked_at_again_when_rows_are_appended(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": f"r{i}", "review": f"review {i}", "image": ""} for i in range(4)]
    rows[2]["image"] = "photo.png"  # not there yet: a problem, not a request
    job = make_spec(tmp_path, simulator, rows=rows)
    assert run_noting(job)[0].by_status["error"] == 1
    make_image(job.reading.input.parent / "photo.png", 40, 40)
    with job.reading.input.open("a", encoding="utf-8") as out:
        out.write("r4,review 4,\n")
    simulator.reset()

    outcome, carried = run_noting(job)
    assert not carried and outcome.exit_code == 0
    assert len(simulator.requests) == 2  # the row now with its image, and the new


def test_a_register_the_state_does_not_describe_is_not_carried(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A crash after the register's tail was written but before the state: the
    next run finds more rows registered than the state says, and reads them all.
    (The row appended asks what row 5 asked: nothing is sent, so the journal does
    not tell the runs apart.)"""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    state = job.output / ".batchkimi" / "state.json"
    before = state.read_bytes()
    append(job.reading.input, [{"id": "twin", "review": ROWS[5]["review"]}])
    simulator.reset()
    assert run_noting(job)[1]
    assert simulator.requests == []
    state.write_bytes(before)  # as if the run had died before saving it
    append(job.reading.input, NEW[1:2])
    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert sent == ["a new review 1"]


def test_a_tail_left_beside_a_base_written_since_is_not_read(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A crash after a full run replaced the register's base, before it removed the
    old tail: the tail names the base it followed, so it is never read as this
    base's."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    append(job.reading.input, NEW[:2])
    assert run_noting(job)[1]
    folder = job.output / ".batchkimi"
    stale = (folder / "rows.tail.parquet").read_bytes()
    edit_in_place(job)  # the full path: a new base, the tail removed
    assert not run_noting(job)[1]
    (folder / "rows.tail.parquet").write_bytes(stale)  # as if never removed
    append(job.reading.input, NEW[2:])
    sent = resume_sends(tmp_path, simulator, job, carried=True)
    assert sent == ["a new review 2"]


def test_a_register_written_with_other_columns_is_not_continued(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A register left by a version that wrote other columns (here: before rows
    were hashed as registered) cannot take a tail: the run reads every row."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    base = job.output / ".batchkimi" / "rows.parquet"
    metadata = pq.read_schema(base).metadata
    older = pl.read_parquet(base).drop(*ROW_HASHES).to_arrow()
    pq.write_table(older.replace_schema_metadata(metadata), base)
    append(job.reading.input, NEW[:1])
    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert sent == ["a new review 0"]


def test_blank_lines_among_the_old_rows_do_not_shift_the_new_ones(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A JSONL file's blank lines are no rows: the rows carried are counted as
    parsed, not as lines (polars' slice counted them, and registered old rows
    again). A column named as the reader's own row index is left alone."""
    rows = [{"_row": i, "id": f"r{i}", "review": f"review {i}"} for i in range(6)]
    job = make_spec(tmp_path, simulator, rows=rows, fmt="jsonl")
    lines = job.reading.input.read_text("utf-8").splitlines(keepends=True)
    job.reading.input.write_text(
        "\n" + "".join(lines[:3]) + "  \n" + "".join(lines[3:])
    )
    assert run_noting(job)[0].exit_code == 0
    append(job.reading.input, [{"_row": 6, "id": "n0", "review": "a new review 0"}])
    simulator.reset()

    outcome, carried = run_noting(job)
    assert carried and outcome.exit_code == 0
    assert sent_reviews(simulator) == ["a new review 0"]
    results = read_results(job)
    assert results["id"].to_list() == [*(r["id"] for r in rows), "n0"]
    assert results.select(SAME).equals(as_fresh(tmp_path, simulator, job))


def test_a_tail_past_a_quarter_of_the_base_is_folded_into_a_new_base(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    job = make_spec(tmp_path, simulator, rows=ROWS[:8])
    assert run_noting(job)[0].exit_code == 0
    append(job.reading.input, NEW)  # 3 rows after 8: a tail
    assert run_noting(job)[1]
    tail = job.output / ".batchkimi" / "rows.tail.parquet"
    assert pq.read_metadata(tail).num_rows == 3
    append(job.reading.input, [ROWS[8]])  # the tail is past a quarter of the base
    outcome, carried = run_noting(job)
    assert not carried and outcome.exit_code == 0
    assert not tail.exists()
    base = job.output / ".batchkimi" / "rows.parquet"
    assert pq.read_metadata(base).num_rows == 12
    assert read_results(job).select(SAME).equals(as_fresh(tmp_path, simulator, job))


class AppendsWhileRunning(SilentObserver):
    """Appends a row to the manifest once the run has stamped and counted it."""

    def __init__(self, manifest: Path) -> None:
        self.manifest = manifest

    def on_start(self, *, total_rows: int | None, already_done: int) -> None:
        append(self.manifest, [{"id": "mid", "review": "written mid-run"}])


def test_a_manifest_appended_to_while_a_run_read_it_is_not_carried_next_time(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The state stamps the manifest as the run began; a row appended while it
    ran, then edited, lies past that stamp: the next run must read it again."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
    observer = AppendsWhileRunning(job.reading.input)
    asyncio.run(run_job(prepare_job(job), key, observer=observer))
    path = job.reading.input
    path.write_text(path.read_text("utf-8").replace("mid-run", "MID-RUN"), "utf-8")
    append(path, NEW[:1])

    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert "written MID-RUN" in sent and "a new review 0" in sent


def test_a_settled_job_with_an_edit_asks_only_about_the_rows_it_builds(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Every row read again (an edit), but rows whose request is the last run's
    are answered: only the built ones are asked about, in the journal; an edit
    that asks what a removed row asked is answered by that row's record."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    write_manifest(tmp_path / "in", ROWS[:-1])  # the last row's answer stays
    assert resume_sends(tmp_path, simulator, job, carried=False) == []
    edited = [dict(r) for r in ROWS[:-1]]
    edited[3]["review"] = ROWS[-1]["review"]
    edited[7]["review"] = "review number 7, edited"
    write_manifest(tmp_path / "in", edited)

    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert sent == ["review number 7, edited"]


def test_a_settled_job_edited_in_many_places_reads_the_whole_answered_set(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """More pieces with built rows than the journal is asked about one by one."""
    job = make_spec(tmp_path, simulator, rows=ROWS, batch_rows=2)
    assert run_noting(job)[0].exit_code == 0
    edited = [dict(r) for r in ROWS]
    for i in (1, 9, 17, 25, 33):
        edited[i]["review"] = f"edited {i}"
    edited[29]["review"] = ROWS[4]["review"]  # asks what row 4 asks: answered
    write_manifest(tmp_path / "in", edited)

    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert sent == sorted(f"edited {i}" for i in (1, 9, 17, 25, 33))


def test_an_answer_journaled_since_the_last_build_is_heeded_for_every_row(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """After the last build, a run journaled a retryable failure for row 5's
    request (it was sent again, and killed before its outputs): the job is not
    settled, so row 5, unchanged, is sent again with the edited row."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    journal, _ = Journal.open(job.output / ".batchkimi")
    failed = RowResult(
        _fingerprint_of(job, ROWS[5]),
        RowStatus.ERROR,
        "kimi-k2.6",
        "openai",
        error_code="InternalError",
        error_message="a 500",
        retryable=True,
    )
    journal.append(failed, row_id=ROWS[5]["id"])
    journal.close()
    edit_in_place(job)

    sent = resume_sends(tmp_path, simulator, job, carried=False)
    assert sent == sorted(["a new review 0", "review NUMBER 7", "review number 5"])


def test_a_register_written_by_a_run_that_died_before_its_state_is_not_settled(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A run registered an edited row but got no answer for it (the account was
    refused) and died before saving its state: the journal is as the last state
    says, yet the register holds the edited row's request. That row was never
    answered, so the next run must send it."""
    job = make_spec(tmp_path, simulator, rows=ROWS)
    assert run_noting(job)[0].exit_code == 0
    folder = job.output / ".batchkimi"
    before, journals = (folder / "state.json").read_bytes(), journal_sizes(folder)
    path = job.reading.input
    path.write_text(path.read_text("utf-8").replace("number 7\n", "NUMBER 7\n"))
    simulator.reset(seed=1, api_keys=frozenset({"sk-some-other-key"}))
    assert run_noting(job)[0].exit_code == 5
    assert journal_sizes(folder) == journals  # nothing was answered
    (folder / "state.json").write_bytes(before)  # as if it had died before this

    assert resume_sends(tmp_path, simulator, job, carried=False) == ["review NUMBER 7"]
