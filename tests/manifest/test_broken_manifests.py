"""A manifest that breaks on some line is refused before anything is sent, with the
line named; one that breaks mid-run (it changed under the run) stops scheduling and
keeps every answer received."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchkimi import rowsource
from batchkimi.api import protocol_for
from batchkimi.client import ModelStudioClient
from batchkimi.clock import SystemClock
from batchkimi.credentials import ApiKey
from batchkimi.errors import ManifestError
from batchkimi.manifest.reader import Manifest, open_manifest
from batchkimi.manifest.requests import RequestBuilder
from batchkimi.pricing import load_prices
from batchkimi.records import RowRequest, RowResult
from batchkimi.schedule.scheduler import SchedulerOutcome, run_scheduler
from batchkimi.schedule.sender import RowSender, SendSettings
from batchkimi.schedule.stopper import StopControl
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, job_of, make_spec, read_results, run

GOOD_CSV = "".join(f"r{i},review {i}\n" for i in range(200))
GOOD_JSONL = "".join(f'{{"id": "r{i}", "review": "review {i}"}}\n' for i in range(200))

BROKEN = {
    # name: (file name, bytes, the line a user must fix, words of the message)
    "extra field": (
        "m.csv",
        f"id,review\n{GOOD_CSV}r200,fine, but with a comma\n".encode(),
        202,
        "has 3 fields, and the header has 2",
    ),
    "open quote": (
        "m.csv",
        f'id,review\n{GOOD_CSV}r200,"never closed\nr201,x\n'.encode(),
        202,
        "quoted value that is not closed",
    ),
    "latin-1": (
        "m.csv",
        f"id,review\n{GOOD_CSV}".encode() + "r200,caf\u00e9\n".encode("latin-1"),
        202,
        "is not UTF-8 (byte 0xe9, the line's byte 9)",
    ),
    "extra field after a long cell": (
        "m.csv",
        f"id,review\n{GOOD_CSV}r200,{'x' * 200_000}\nr201,a,b\n".encode(),
        203,
        "has 3 fields",
    ),
    "tab file with a stray tab": (
        "m.tsv",
        f"id\treview\n{GOOD_CSV.replace(',', chr(9))}r200\ta\tb\n".encode(),
        202,
        "has 3 fields",
    ),
    "jsonl garbage": (
        "m.jsonl",
        f"{GOOD_JSONL}not json at all\n".encode(),
        201,
        "is not JSON: it starts 'not json at all'",
    ),
    "jsonl array": (
        "m.jsonl",
        f'{GOOD_JSONL}["r200", "x"]\n'.encode(),
        201,
        "is an array, not a JSON object",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_line_is_named_and_nothing_is_sent(
    tmp_path: Path, simulator: SimulatorServer, case: str
) -> None:
    name, content, line, words = BROKEN[case]
    manifest = tmp_path / name
    manifest.write_bytes(content)
    spec = job_of(
        {
            "input": manifest,
            "output": tmp_path / "out",
            "model": "kimi-k2.6",
            "prompt": "Label: {review}",
            "base_url": simulator.url,
            "batch_rows": 50,  # the broken line is several batches in
            "rpm": 0,
            "tpm": 0,
        }
    )
    with pytest.raises(ManifestError) as caught:
        run(spec)
    message = str(caught.value)
    assert f"line {line} " in message
    assert words in message
    assert str(manifest) in message
    assert caught.value.exit_code == 2
    assert simulator.requests == []  # refused before the first request


def test_a_manifest_that_breaks_mid_run_keeps_what_was_answered(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The file was checked whole before the run, then changed under it: scheduling
    stops at the broken batch, every request already sent is answered and handed to
    the journal's sink, and the rest waits for the next run."""
    spec = make_spec(tmp_path, simulator, api="openai")
    manifest = open_manifest(spec.reading.input)
    builder = RequestBuilder(spec, manifest.columns, str(spec.reading.input))
    first: list[RowRequest] = []
    for index, row in enumerate(REVIEWS):
        built = builder.build(index, row)
        assert isinstance(built, RowRequest)
        first.append(built)

    def source() -> Iterator[list[RowRequest]]:
        yield first
        msg = "line 9 has 3 fields, and the header has 2"
        raise ManifestError(msg, path=str(spec.reading.input), fix="Quote it")

    received: list[RowResult] = []

    async def scheduled() -> SchedulerOutcome:
        clock = SystemClock()
        key = ApiKey(os.environ["DASHSCOPE_API_KEY"])
        client = ModelStudioClient(key, concurrency=3, timeout_s=30, clock=clock)
        settings = SendSettings(
            base_url=spec.connection.resolved_base_url,
            stream=True,
            max_attempts=3,
            region=spec.connection.region,
            prices=load_prices(None),
        )
        sender = RowSender(client, protocol_for("openai"), settings, clock)
        try:
            return await run_scheduler(
                source(),
                sender,
                lambda request, result: received.append(result),
                concurrency=3,
                stop=StopControl(grace_s=30),
            )
        finally:
            await client.aclose()

    outcome = asyncio.run(scheduled())
    assert outcome.manifest_error is not None
    assert "line 9" in str(outcome.manifest_error)
    assert received, "requests in flight when the manifest broke are answered"
    assert len(received) == len(simulator.requests)  # every request sent is kept
    assert {r.fingerprint for r in received} <= {r.fingerprint for r in first}
    assert all(r.status == "ok" for r in received)


def test_a_run_whose_manifest_breaks_midway_resumes_without_resending(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that a reader cannot finish (it changed, or a disk returned garbage)
    after the up-front check: the run says which line and that answers are kept; the
    next run, on a readable file, sends only the rows not yet answered."""
    rows = [{"id": f"r{i}", "review": f"review number {i}"} for i in range(40)]
    spec = make_spec(tmp_path, simulator, rows, batch_rows=10, concurrency=2)
    real = Manifest.iter_batches

    def breaks_after_two_batches(
        self: Manifest, batch_rows: int, *, start: int = 0
    ) -> Iterator[Any]:
        for number, batch in enumerate(real(self, batch_rows, start=start)):
            if number == 2:
                msg = "line 22 is not UTF-8 (byte 0xe9 at character 9)"
                raise ManifestError(msg, path=str(self.path), fix="Save it as UTF-8")
            yield batch

    monkeypatch.setattr(Manifest, "iter_batches", breaks_after_two_batches)
    monkeypatch.setattr(rowsource, "READ_ROWS", 10)  # reads of 10 rows, not 16,384
    with pytest.raises(ManifestError) as caught:
        run(spec)
    assert "line 22" in str(caught.value)
    assert "run again to resume" in str(caught.value)
    first_run = len(simulator.requests)
    assert 0 < first_run <= 20

    monkeypatch.setattr(Manifest, "iter_batches", real)
    outcome = run(spec)
    assert outcome.exit_code == 0
    assert len(simulator.requests) == 40  # nothing answered in the first run again
    assert read_results(spec)["status"].to_list() == ["ok"] * 40
