"""The context cache at its documented boundaries (FACTS §6.3), as the usage object
reports it in both APIs (§2.1, §4.2); time comes from an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchkimi.simulator import SimulatorServer, stall
from tests.simulator.wire import AUTH, request, send

APIS = ["compat", "native"]
EPHEMERAL = {"type": "ephemeral"}


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(simulator: SimulatorServer) -> Iterator[Clock]:
    fake = Clock()
    simulator.reset(seed=1234, clock=fake, implicit_cache_hit_rate=1.0)
    yield fake


def text_for(tokens: int) -> str:
    """Text that makes a one-part message exactly ``tokens`` long (4 for the
    message, then about four characters a token)."""
    return "word " * ((tokens - 4) * 4 // 5) + "x" * ((tokens - 4) * 4 % 5)


def marked(api: str, tokens: int, question: str = "Which label?", markers: int = 1):
    """A system block of ``tokens`` with a cache marker, then a user question."""
    if api == "compat":
        block: dict[str, Any] = {"type": "text", "text": text_for(tokens)}
        extra = [{"type": "text", "text": f"rule {i}"} for i in range(markers - 1)]
    else:
        block = {"text": text_for(tokens)}
        extra = [{"text": f"rule {i}"} for i in range(markers - 1)]
    parts = [{**block, "cache_control": EPHEMERAL}]
    parts += [{**p, "cache_control": EPHEMERAL} for p in extra]
    return [
        {"role": "system", "content": parts},
        {"role": "user", "content": question},
    ]


def plain(tokens: int, question: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": text_for(tokens)},
        {"role": "user", "content": question},
    ]


def details(api: str, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    result: dict[str, Any] = usage["prompt_tokens_details"]
    return result


@pytest.mark.parametrize("api", APIS)
def test_an_explicit_block_of_1024_tokens_is_created_then_hit(
    simulator: SimulatorServer, clock: Clock, api: str
) -> None:
    created = details(api, send(simulator, api, marked(api, 1024)))
    assert created == {
        "cached_tokens": 0,
        "cache_creation_input_tokens": 1024,
        "cache_creation": {"ephemeral_5m_input_tokens": 1024},
        "cache_type": "ephemeral",
    }
    hit = details(api, send(simulator, api, marked(api, 1024, "Another row?")))
    assert hit == {"cached_tokens": 1024, "cache_type": "ephemeral"}
    logged = simulator.requests[-1]
    assert (logged.cached_tokens, logged.cache_creation_tokens) == (1024, 0)


@pytest.mark.parametrize("api", APIS)
def test_an_explicit_block_of_1023_tokens_is_neither_cached_nor_refused(
    simulator: SimulatorServer, clock: Clock, api: str
) -> None:
    for _ in range(2):
        assert details(api, send(simulator, api, marked(api, 1023))) == {
            "cached_tokens": 0
        }


def test_a_request_arriving_while_the_block_is_being_created_misses(
    simulator: SimulatorServer, clock: Clock
) -> None:
    """The cache is created after the response: a request that wants the hit must
    come after the creating one has finished (FACTS §6.3)."""
    simulator.script("*", [stall(0.3)])
    path, body, headers = request("compat", marked("compat", 2000), stream=True)
    body["stream_options"] = {"include_usage": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", simulator.url + path, json=body, headers={**AUTH, **headers}
        ) as creating,
    ):
        meanwhile = details("compat", send(simulator, "compat", marked("compat", 2000)))
        assert meanwhile["cached_tokens"] == 0
        assert meanwhile["cache_creation_input_tokens"] == 2000
        assert "cache_creation_input_tokens" in creating.read().decode()
    after = details("compat", send(simulator, "compat", marked("compat", 2000)))
    assert after == {"cached_tokens": 2000, "cache_type": "ephemeral"}


def test_a_block_lives_five_minutes_from_its_last_hit(
    simulator: SimulatorServer, clock: Clock
) -> None:
    def cached() -> int:
        return int(
            details("native", send(simulator, "native", marked("native", 1500)))[
                "cached_tokens"
            ]
        )

    assert cached() == 0  # created at t
    clock.now += 299.9
    assert cached() == 1500  # a hit, which resets the 5 minutes
    clock.now += 299.9
    assert cached() == 1500  # 599.8 s after creation, 299.9 s after the last hit
    clock.now += 300.0
    assert cached() == 0  # expired: created again
    clock.now += 300.0
    assert cached() == 0


@pytest.mark.parametrize("api", APIS)
def test_at_most_four_markers_are_allowed(
    simulator: SimulatorServer, clock: Clock, api: str
) -> None:
    assert send(simulator, api, marked(api, 1100, markers=4)).status_code == 200
    five = send(simulator, api, marked(api, 1100, markers=5))
    assert five.status_code == 400
    assert "At most 4 cache_control markers" in five.text
    wrong = marked(api, 1100)
    wrong[0]["content"][0]["cache_control"] = {"type": "persistent"}
    assert send(simulator, api, wrong).status_code == 400


def test_a_marker_hits_a_block_cached_up_to_20_blocks_before_it(
    simulator: SimulatorServer, clock: Clock
) -> None:
    send(simulator, "compat", marked("compat", 1200))
    turns: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": text_for(1200)}]}
    ]
    turns += [
        {"role": "user", "content": [{"type": "text", "text": f"t{i}"}]}
        for i in range(19)
    ]
    turns[-1]["content"][0]["cache_control"] = EPHEMERAL
    assert details("compat", send(simulator, "compat", turns))["cached_tokens"] == 1200
    turns[-1]["content"][0].pop("cache_control")
    turns.append(
        {
            "role": "user",
            "content": [{"type": "text", "text": "t19", "cache_control": EPHEMERAL}],
        }
    )
    beyond = details("compat", send(simulator, "compat", turns))
    assert beyond["cached_tokens"] == 0  # 21 blocks back: too far; created instead
    assert beyond["cache_creation_input_tokens"] > 1200


@pytest.mark.parametrize("api", APIS)
def test_256_shared_tokens_hit_the_implicit_cache_and_255_do_not(
    simulator: SimulatorServer, clock: Clock, api: str
) -> None:
    for tokens, cached in ((255, 0), (256, 256)):
        assert details(api, send(simulator, api, plain(tokens, "first"))) == {
            "cached_tokens": 0
        }
        second = details(api, send(simulator, api, plain(tokens, "second")))
        assert second == {"cached_tokens": cached}  # no cache_type: implicit
    other_model = send(simulator, api, plain(256, "third"), model="kimi-k2.5")
    assert details(api, other_model)["cached_tokens"] == 0  # per model


def test_explicit_and_implicit_caches_are_exclusive(
    simulator: SimulatorServer, clock: Clock
) -> None:
    send(simulator, "compat", plain(2000, "first"))  # remembered implicitly
    explicit = details("compat", send(simulator, "compat", marked("compat", 2000)))
    assert explicit["cached_tokens"] == 0  # markers: the implicit cache is not used
    assert explicit["cache_creation_input_tokens"] == 2000
    unmarked = details("compat", send(simulator, "compat", plain(2000, "second")))
    assert unmarked == {"cached_tokens": 2000}  # implicit, from the first request


def test_implicit_hits_are_a_seeded_share_that_repeats(
    simulator: SimulatorServer, clock: Clock
) -> None:
    def hits(seed: int) -> list[int]:
        simulator.reset(seed=seed, clock=clock, implicit_cache_hit_rate=0.5)
        return [
            details("compat", send(simulator, "compat", plain(600, f"row {i}")))[
                "cached_tokens"
            ]
            for i in range(16)
        ]

    first = hits(3)
    assert first == hits(3)
    assert first[0] == 0 and set(first[1:]) == {0, 600}
