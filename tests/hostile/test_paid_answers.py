"""A paid answer is journaled before anything that can fail with it (issue 12): when
batchkimi itself breaks after the service answered (reading the body, pricing,
judging, checking), the answer is kept and the next run processes it again here,
never sending the row again. Faults are injected with monkeypatch: nothing honest
makes batchkimi's own code raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchkimi.api.compatible import CompatibleFold, CompatibleProtocol
from batchkimi.schedule import sender
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, make_spec, read_results, run

ROWS = REVIEWS[:2]


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    original = getattr(owner, name)
    calls = [0]

    def broken(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == 1:
            msg = "an injected bug"
            raise RuntimeError(msg)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, broken)


@pytest.mark.parametrize(
    ("owner", "name", "stream"),
    [
        (sender, "judge", True),  # after the answer was read and priced
        (CompatibleProtocol, "parse", False),  # reading a whole body
        (CompatibleFold, "feed", True),  # reading a stream
    ],
)
def test_an_answer_batchkimi_fails_on_is_kept_and_processed_again_not_resent(
    tmp_path: Path,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    stream: bool,
) -> None:
    spec = make_spec(
        tmp_path, simulator, rows=ROWS, stream=stream, model="kimi-k2.5", concurrency=1
    )
    with monkeypatch.context() as patch:
        fail_once(patch, owner, name)
        assert run(spec).exit_code == 1
    first = read_results(spec)
    broken = first.filter(first["status"] == "error").row(0, named=True)
    assert broken["error_code"] == "unprocessed_answer"
    assert "injected bug" in broken["error_message"]
    assert broken["http_status"] == 200
    kept = broken["raw_response"] or broken["content"]
    assert kept  # the answer itself is in the journal
    sent = len(simulator.requests)
    assert sent == len(ROWS)

    assert run(spec).exit_code == 0
    assert len(simulator.requests) == sent  # processed here, not sent again
    again = read_results(spec)
    assert set(again["status"]) == {"ok"}
    assert again["cost"].is_not_null().all()  # priced, once
    row = again.filter(again["id"] == broken["id"]).row(0, named=True)
    assert row["attempts"] == 1
    assert row["input_tokens"] > 0
