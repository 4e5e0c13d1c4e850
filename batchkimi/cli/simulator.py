"""``batchkimi simulator``: serve the local Model Studio until interrupted."""

from __future__ import annotations

import threading
from collections.abc import Collection

import click

from batchkimi.simulator import Behaviour, Limits, SimulatorServer
from batchkimi.simulator.answers import INVALID_KINDS
from batchkimi.simulator.facts import ERRORS


def _rates(
    option: str,
    values: tuple[str, ...],
    known: Collection[str] = tuple(ERRORS),
    key: str = "CODE",
) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in values:
        code, sep, raw = item.partition("=")
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not sep or not 0 <= rate <= 1:
            msg = f"{item!r} is not {key}=RATE with RATE between 0 and 1"
            raise click.BadParameter(msg, param_hint=option)
        if code not in known:
            msg = (
                f"{code!r} is not a simulated {key.lower()}; known: {', '.join(known)}"
            )
            raise click.BadParameter(msg, param_hint=option)
        rates[code] = rate
    return rates


_SHARE = click.FloatRange(0, 1)


@click.command("simulator")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Keep it on loopback.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    help="Seed for every random choice: the same seed, the same behaviour.",
)
@click.option(
    "--ttft-ms",
    default=0.0,
    show_default=True,
    help="Median delay before the first byte of each answer, in ms.",
)
@click.option(
    "--ttft-jitter",
    default=0.0,
    show_default=True,
    help="Spread of that delay: sigma of a log-normal factor (0: fixed).",
)
@click.option(
    "--tokens-per-s",
    default=0.0,
    show_default=True,
    help="Streaming speed in output tokens per second (0: all at once).",
)
@click.option(
    "--error-rate",
    "error_rates",
    multiple=True,
    metavar="CODE=RATE",
    help="Answer this share of requests with an error instead, e.g. "
    "InternalError=0.1, Throttling.RateQuota=0.05, "
    "DataInspectionFailed=0.01, Arrearage=0.001. Repeatable.",
)
@click.option(
    "--midstream-rate",
    "midstream_rates",
    multiple=True,
    metavar="CODE=RATE",
    help="Break this share of streams with an error frame after two "
    "frames, e.g. Throttling.AllocationQuota=0.02. Repeatable.",
)
@click.option(
    "--disconnect-rate",
    default=0.0,
    type=_SHARE,
    show_default=True,
    help="Share of answers whose connection is dropped mid-answer.",
)
@click.option(
    "--stall-rate",
    default=0.0,
    type=_SHARE,
    show_default=True,
    help="Share of answers preceded by keep-alive comments only.",
)
@click.option(
    "--stall-s",
    default=5.0,
    show_default=True,
    help="How long a stall lasts, in seconds.",
)
@click.option(
    "--bad-gateway-rate",
    default=0.0,
    type=_SHARE,
    show_default=True,
    help="Share of requests answered by a proxy's 502 HTML page.",
)
@click.option(
    "--invalid-answer-rate",
    "invalid_answer_rates",
    multiple=True,
    metavar="KIND=RATE",
    help="Spoil this share of structured answers (tool calls, JSON asked for in "
    "the system message): enum (a label outside the enum), missing (a required "
    "property left out), type (e.g. a number as a string), json (cut off). "
    "Repeatable.",
)
@click.option(
    "--text-instead-of-tool-rate",
    default=0.0,
    type=_SHARE,
    show_default=True,
    help="Share of requests with tools answered in prose, with no tool call.",
)
@click.option(
    "--implicit-cache-hit-rate",
    default=0.5,
    type=_SHARE,
    show_default=True,
    help="Chance that a request sharing 256+ tokens of prefix with an earlier "
    "one hits the implicit context cache (the service does not guarantee it).",
)
@click.option(
    "--rpm",
    type=click.IntRange(min=1),
    help="Requests per minute per model; over it: 429 Throttling.RateQuota "
    "(the service's documented limit is 500).",
)
@click.option(
    "--tpm",
    type=click.IntRange(min=1),
    help="Tokens per minute per model; over it: 429 "
    "Throttling.AllocationQuota (documented: 1,000,000).",
)
@click.option(
    "--limit-window-s",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="How much of the per-second allowance may be saved up: 1 enforces "
    "the limits per second, as the service may; 60 per minute.",
)
@click.option(
    "--burst-rps",
    type=click.FloatRange(min=1),
    help="More requests than this in any second: 429 Throttling.BurstRate.",
)
@click.option(
    "--policy-expire-s",
    default=300.0,
    show_default=True,
    help="Lifetime of a temporary-upload policy, in seconds.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accept only this key (repeatable); by default any key is accepted.",
)
def simulator_command(
    *,
    host: str,
    port: int,
    seed: int,
    ttft_ms: float,
    ttft_jitter: float,
    tokens_per_s: float,
    error_rates: tuple[str, ...],
    midstream_rates: tuple[str, ...],
    disconnect_rate: float,
    stall_rate: float,
    stall_s: float,
    bad_gateway_rate: float,
    invalid_answer_rates: tuple[str, ...],
    text_instead_of_tool_rate: float,
    implicit_cache_hit_rate: float,
    rpm: int | None,
    tpm: int | None,
    limit_window_s: float,
    burst_rps: float | None,
    policy_expire_s: float,
    api_keys: tuple[str, ...],
) -> None:
    """Serve a local Model Studio (both APIs) for tests, demos and benchmarks.

    Serves /compatible-mode/v1/chat/completions, the native multimodal- and
    text-generation paths and the temporary-upload pair, with each API's own framing,
    thinking, tool calls, JSON answers to a schema in the system message, the
    context cache, token usage, documented errors and the faults and limits set
    below.

    The first line on stdout is the base URL: point a job at it with --base-url.

    \b
        batchkimi simulator --port 8000 --ttft-ms 400 --tokens-per-s 60
        batchkimi simulator --rpm 500 --tpm 1000000 --error-rate InternalError=0.1
        batchkimi simulator --invalid-answer-rate enum=0.05 --seed 7
    """
    behaviour = Behaviour(
        seed=seed,
        ttft_ms=ttft_ms,
        ttft_jitter=ttft_jitter,
        tokens_per_s=tokens_per_s,
        error_rates=_rates("--error-rate", error_rates),
        midstream_rates=_rates("--midstream-rate", midstream_rates),
        disconnect_rate=disconnect_rate,
        stall_rate=stall_rate,
        stall_s=stall_s,
        bad_gateway_rate=bad_gateway_rate,
        invalid_answer_rates=_rates(
            "--invalid-answer-rate", invalid_answer_rates, INVALID_KINDS, "KIND"
        ),
        text_instead_of_tool_rate=text_instead_of_tool_rate,
        implicit_cache_hit_rate=implicit_cache_hit_rate,
        limits=Limits(rpm=rpm, tpm=tpm, window_s=limit_window_s, burst_rps=burst_rps),
        policy_expire_s=policy_expire_s,
        api_keys=frozenset(api_keys) or None,
    )
    with SimulatorServer.running(host=host, port=port, behaviour=behaviour) as server:
        click.echo(server.url)
        click.echo(
            f"compatible: {server.compatible_base}  native: {server.native_base}",
            err=True,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
