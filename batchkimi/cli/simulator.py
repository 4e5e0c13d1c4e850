"""``batchkimi simulator``: serve the local Model Studio until interrupted."""

from __future__ import annotations

import threading

import click

from batchkimi.simulator import Behaviour, SimulatorServer


def _rates(values: tuple[str, ...]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in values:
        code, sep, raw = item.partition("=")
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not sep or not 0 <= rate <= 1:
            msg = f"{item!r} is not CODE=RATE with RATE between 0 and 1"
            raise click.BadParameter(msg, param_hint="--error-rate")
        rates[code] = rate
    return rates


@click.command("simulator")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (keep it on loopback).",
)
@click.option(
    "--port", default=8000, show_default=True, help="Port; 0 picks a free one."
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed for every random choice."
)
@click.option(
    "--ttft-ms",
    default=0.0,
    show_default=True,
    help="Delay before the first byte of each answer, in ms.",
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
    help="Answer this share of requests with an error code, e.g. "
    "InternalError=0.1 or Throttling.RateQuota=0.05.",
)
@click.option(
    "--disconnect-rate",
    default=0.0,
    show_default=True,
    help="Share of streams cut off after the first frame.",
)
def simulator_command(
    host: str,
    port: int,
    seed: int,
    ttft_ms: float,
    tokens_per_s: float,
    error_rates: tuple[str, ...],
    disconnect_rate: float,
) -> None:
    """Serve a local Model Studio (both APIs) for tests, demos and benchmarks.

    The first line on stdout is the base URL; point a job at it with --base-url.
    """
    behaviour = Behaviour(
        seed=seed,
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        error_rates=_rates(error_rates),
        disconnect_rate=disconnect_rate,
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
