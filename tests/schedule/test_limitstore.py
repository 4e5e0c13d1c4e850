"""The shared state file: wall-clock times, and dropped when it cannot be trusted.

Issue 13: the file stored monotonic seconds since boot; one written before a reboot
(or on another machine sharing the home folder) stopped a run at 10 of 60 requests
for 120 s. Each test plants such a file with a queue that would stall any run that
believed it, and checks that the first requests go at once, with one info line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchkimi.schedule.limitstore import FORMAT, SharedLimits, SharedStore
from batchkimi.schedule.ratelimit import HEADROOM, LIVE_S, Report

WALL = 1_800_000_000.0  # wall-clock seconds of the tests' "now"


class BootClock:
    """Monotonic seconds since a boot 100 s ago; the wall clock far from them."""

    def __init__(self, uptime: float = 100.0) -> None:
        self.uptime = uptime

    def monotonic(self) -> float:
        return self.uptime

    def wall(self) -> datetime:
        return datetime.fromtimestamp(WALL + self.uptime - 100.0, UTC)

    async def sleep(self, seconds: float) -> None:
        self.uptime += seconds


def limits_of(model: str) -> tuple[int | None, int | None]:
    return 600, None  # 9.8 a second, a burst of 4.9


def plant(path: Path, edit: Any) -> None:
    """A state file written by batchkimi itself (one request), then edited."""
    clock = BootClock()
    limits = SharedLimits(path, limits_of, clock=clock)
    limits.try_reserve("m", 0, clock.monotonic())
    limits.close()
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def stall(raw: dict[str, Any]) -> None:
    """A queue a million seconds long: whoever believes it waits forever."""
    raw["models"]["m"]["requests"]["level"] = -1e7


def first_waits(path: Path, info: list[str], count: int = 4) -> list[float]:
    clock = BootClock()
    limits = SharedLimits(path, limits_of, clock=clock, on_info=info.append)
    try:
        answers = [limits.try_reserve("m", 0, clock.monotonic()) for _ in range(count)]
    finally:
        limits.close()
    assert all(granted for granted, _ in answers)
    return [wait for _, wait in answers]


def test_the_file_keeps_wall_clock_times_and_names_its_host(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    plant(path, lambda raw: None)
    raw = json.loads(path.read_text())
    assert raw["format"] == FORMAT
    assert raw["host"]
    assert raw["models"]["m"]["requests"]["updated"] == pytest.approx(WALL)
    assert raw["written_at"] == pytest.approx(WALL)


def test_a_state_file_from_the_future_is_dropped_and_does_not_slow_a_run(
    tmp_path: Path,
) -> None:
    """As after a reboot with the old monotonic times, or a clock set back."""
    path = tmp_path / "account.json"

    def from_the_future(raw: dict[str, Any]) -> None:
        stall(raw)
        for budget in raw["models"]["m"].values():
            budget["updated"] += 86_400
        raw["written_at"] += 86_400

    plant(path, from_the_future)
    info: list[str] = []
    assert first_waits(path, info) == [0.0] * 4
    assert len(info) == 1 and "ahead of this clock" in info[0]
    assert "are ignored" in info[0]


def test_a_state_file_from_another_host_is_dropped_and_does_not_slow_a_run(
    tmp_path: Path,
) -> None:
    """A home folder shared between machines: their clocks and locks are not ours."""
    path = tmp_path / "account.json"

    def elsewhere(raw: dict[str, Any]) -> None:
        stall(raw)
        raw["host"] = "another-machine"

    plant(path, elsewhere)
    info: list[str] = []
    assert first_waits(path, info) == [0.0] * 4
    assert len(info) == 1 and "another host (another-machine)" in info[0]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\xff\xfe not even text", "not JSON"),
        (b'{"truncated": ', "not JSON"),
        # the format before issue 13: budgets keyed by model, monotonic seconds
        (b'{"m": {"requests": {"rate": 1, "updated": 5e6}}}', "another format"),
        (
            json.dumps(
                {"format": FORMAT, "host": None, "models": {"m": {"requests": {}}}}
            ).encode(),
            "",
        ),
    ],
)
def test_an_unreadable_state_file_is_dropped(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "account.json"
    path.write_bytes(content)
    info: list[str] = []
    assert first_waits(path, info) == [0.0] * 4
    assert len(info) == 1 and said in info[0]


def test_a_state_file_with_fields_unknown_here_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    plant(path, lambda raw: raw["models"]["m"]["requests"].update(spare=1))
    info: list[str] = []
    assert first_waits(path, info) == [0.0] * 4
    assert len(info) == 1 and "cannot be read" in info[0]


def test_the_info_line_comes_once_however_often_the_file_is_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "account.json"
    info: list[str] = []
    clock = BootClock()
    store = SharedStore(path, limits_of, clock=clock, on_info=info.append)
    try:
        for _ in range(5):
            path.write_text("garbage")
            store.exchange("m", Report(want=1), Report(), clock.monotonic())
    finally:
        store.close()
    assert len(info) == 1


def test_a_live_state_is_shared_but_a_stale_pace_is_nobodys(tmp_path: Path) -> None:
    """A run an hour later does not inherit a rate cut by an earlier run's bad luck
    (issue 13: the next run on the same key started at 1.3 rows/s)."""
    path = tmp_path / "account.json"
    clock = BootClock()
    store = SharedStore(path, limits_of, clock=clock)
    try:
        grant, _ = store.exchange("m", Report(), Report(), clock.monotonic())
        for _ in range(10):  # cut after cut, none of them confirmed
            grant, _ = store.exchange(
                "m", Report(epoch=grant.epoch, action="cut"), Report(), clock.uptime
            )
        collapsed = grant.rate
        assert collapsed is not None and collapsed < 0.01 * 10
        clock.uptime += 1.0  # another run a second later shares the live pace
        grant, _ = store.exchange("m", Report(), Report(), clock.uptime)
        assert grant.rate == pytest.approx(collapsed, rel=0.05)
        clock.uptime += LIVE_S + 1  # the next run, after a minute of nobody
        grant, _ = store.exchange("m", Report(), Report(), clock.uptime)
        assert grant.rate == pytest.approx(600 / 60 * HEADROOM)
    finally:
        store.close()


def test_a_confirmed_limit_outlives_the_run_relaxing_toward_the_ceiling(
    tmp_path: Path,
) -> None:
    path = tmp_path / "account.json"
    clock = BootClock()
    store = SharedStore(path, limits_of, clock=clock)
    try:
        grant, _ = store.exchange("m", Report(), Report(), clock.uptime)
        # the service accepted 6 a second, then a throttle about the rate
        store.exchange("m", Report(sent=6, accepted=6), Report(), clock.uptime)
        clock.uptime += 1.0
        grant, _ = store.exchange(
            "m", Report(epoch=grant.epoch, action="cut"), Report(), clock.uptime
        )
        store.exchange(
            "m", Report(epoch=grant.epoch, confirm=True), Report(), clock.uptime
        )
        clock.uptime += LIVE_S + 1
        grant, _ = store.exchange("m", Report(), Report(), clock.uptime)
        assert grant.rate is not None and 6 <= grant.rate < 600 / 60 * HEADROOM
    finally:
        store.close()


def test_this_runs_configured_limits_are_the_ceilings(tmp_path: Path) -> None:
    """A budget written by a run with no token limit gets one from a run with one."""
    path = tmp_path / "account.json"
    clock = BootClock()
    first = SharedStore(path, lambda model: (600, None), clock=clock)
    _, tokens = first.exchange("m", Report(), Report(), clock.uptime)
    first.close()
    assert tokens.rate is None
    second = SharedStore(path, lambda model: (600, 60_000), clock=clock)
    _, tokens = second.exchange("m", Report(), Report(), clock.uptime)
    second.close()
    assert tokens.rate == pytest.approx(1000 * HEADROOM)
