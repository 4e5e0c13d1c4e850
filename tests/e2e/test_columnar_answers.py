"""Issue 14: journals compacted into segments while real runs go on: killed in the
middle of a compaction, compacted by two shards at once, read by a report while cut
short, and from an output folder written before segments existed. (Typed answer
columns from segments are in tests/store/test_segments.py: the simulator here does
not answer with tool calls yet.)

Each run here rotates its journal every few kilobytes (the default is 32 MB), so a
few dozen rows make several generations and compactions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from batchkimi.store import journal as journal_module
from batchkimi.store.answers import read_latest
from batchkimi.store.files import answer_files, journals, segments
from batchkimi.store.schema import JOURNAL_SCHEMA
from tests.helpers import make_spec, read_results, run, write_manifest

ROTATE = 4_000  # bytes: a generation every five answers or so
TIMEOUT_S = 60
#: a run whose journal rotates every ROTATE bytes, and which SIGKILLs itself at a
#: chosen step of its first compaction
_CHILD = """
import os, signal, sys
from batchkimi.store import journal, segments
journal.ROTATE_BYTES = int(sys.argv[1])

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "mid-segment":  # written, not yet renamed: a temporary file
    segments._fsync = die
elif sys.argv[2] == "segment-in-place":  # renamed; the JSONL not yet unlinked
    segments.fsync_dir = die
sys.argv = ["batchkimi", *sys.argv[3:]]
from batchkimi.cli import main
main()
"""
ROWS = [{"id": f"r{i:03d}", "review": f"review number {i}"} for i in range(60)]


def spawn(
    tmp_path: Path,
    simulator: SimulatorServer,
    *extra: str,
    kill_at: str = "never",
    rows: list[dict[str, str]] = ROWS,
) -> subprocess.Popen[str]:
    manifest = write_manifest(tmp_path / "in", rows)
    command = [
        *(sys.executable, "-c", _CHILD, str(ROTATE), kill_at),
        *("run", "-i", str(manifest), "-o", str(tmp_path / "out")),
        *("--base-url", simulator.url, "--prompt", "Label: {review}"),
        *("--rpm", "0", "--tpm", "0", "--quiet", *extra),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> int:
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode in (0, -signal.SIGKILL), err
    return process.returncode


def served(simulator: SimulatorServer) -> Counter[str]:
    return Counter(
        r.body["messages"][-1]["content"] for r in simulator.requests if r.status == 200
    )


def answers_in(state: Path) -> dict[str, str]:
    """Fingerprint -> request id of the newest journaled answer, whatever the
    files' state."""
    latest = read_latest(state, {**JOURNAL_SCHEMA, "row_id": pl.String()})
    return dict(latest.select("fingerprint", "request_id").rows())


@pytest.mark.parametrize("kill_at", ["mid-segment", "segment-in-place"])
def test_a_kill_in_the_middle_of_a_compaction_loses_and_repeats_nothing(
    tmp_path: Path, simulator: SimulatorServer, kill_at: str
) -> None:
    simulator.reset(ttft_ms=20)
    state = tmp_path / "out" / ".batchkimi"
    killed = spawn(tmp_path, simulator, "--concurrency", "4", kill_at=kill_at)
    assert finish(killed) == -signal.SIGKILL
    if kill_at == "mid-segment":  # a half-written segment, and its JSONL whole
        assert list((state / "segments").glob(".journal.*.tmp"))
        assert not segments(state)
    else:  # the segment in place and its JSONL still there
        assert set(segments(state)) & set(journals(state))
    journaled = answers_in(state)
    assert journaled  # the kill came after answers were journaled

    assert finish(spawn(tmp_path, simulator, "--concurrency", "4")) == 0
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["id"].to_list() == [row["id"] for row in ROWS]
    assert set(results["status"]) == {"ok"}
    answer_of = dict(results.select("fingerprint", "request_id").rows())
    for fingerprint, request_id in journaled.items():  # nothing journaled was lost
        assert answer_of[fingerprint] == request_id
    repeats = sum(n - 1 for n in served(simulator).values())
    assert repeats <= 4  # only what was in flight at the kill was asked again
    assert not list((state / "segments").glob(".*.tmp"))
    assert not set(segments(state)) & set(journals(state))
    assert len(segments(state)) >= 5


def test_shards_compact_their_journals_at_once(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=10)
    shards = [spawn(tmp_path, simulator, "--shard", f"{i}/2") for i in (1, 2)]
    assert [finish(p) for p in shards] == [0, 0]
    state = tmp_path / "out" / ".batchkimi"
    streams = {stream for stream, _ in segments(state)}
    assert streams == {"journal-shard-1-of-2", "journal-shard-2-of-2"}
    assert set(served(simulator).values()) == {1}
    assert sum(served(simulator).values()) == len(ROWS)
    assert finish(spawn(tmp_path, simulator)) == 0
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["status"].to_list() == ["ok"] * len(ROWS)
    assert sum(served(simulator).values()) == len(ROWS)  # the last run sent nothing


def test_a_run_cut_short_is_reported_from_its_segments_and_journal(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(ttft_ms=150)
    state = tmp_path / "out" / ".batchkimi"
    process = spawn(tmp_path, simulator, "--concurrency", "2")
    deadline = time.monotonic() + TIMEOUT_S
    while len(segments(state)) < 2:
        assert time.monotonic() < deadline, "no compaction happened"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert finish(process) == -signal.SIGKILL
    answered = len(answers_in(state))
    assert any(not f.is_segment for f in answer_files(state))  # and a JSONL tail
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "out")])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert text.startswith("partial: read from the journal")
    assert f"rows: {answered} " in text


def test_an_output_folder_from_before_segments_resumes_and_is_compacted(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_spec(tmp_path, simulator, rows=ROWS[:30])
    assert run(old).exit_code == 0  # one journal.jsonl: no generation was full
    state = old.output / ".batchkimi"
    assert [p.name for p in state.glob("journal*")] == ["journal.jsonl"]
    before = read_results(old)
    simulator.reset()
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", ROTATE)
    grown = make_spec(tmp_path, simulator, rows=ROWS[:31])
    outcome = run(grown)
    assert (outcome.exit_code, outcome.sent) == (0, 1)
    assert not (state / "journal.jsonl").exists()
    assert ("journal", 0) in segments(state)
    assert_frame_equal(read_results(grown).head(30), before)
