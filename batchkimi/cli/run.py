"""``batchkimi run``: parse options, build and prepare a Job, run it, report. No
logic here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchkimi.cli.console import JsonLog, ProgressDisplay
from batchkimi.cli.options import build_job, job_options, simulated
from batchkimi.cli.rerun import finished_as_written, read_written_job
from batchkimi.credentials import SIMULATOR_KEY, ApiKey, read_api_key
from batchkimi.jobs import execute


@click.command("run")
@click.argument("job", required=False, type=click.Path(dir_okay=False, path_type=Path))
@job_options
@click.option(
    "--simulate",
    is_flag=True,
    help="Run against the bundled local simulator: no key, no network.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the summary.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one event per line on stderr (start, progress, retry, stop, summary).",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    /,
    job: Path | None,
    simulate: bool,
    quiet: bool,
    log_format: str,
    **options: Any,
) -> None:
    """Run a job: send every manifest row to Kimi and write results.parquet.

    JOB is an optional TOML job spec; every option can be set there too, and the
    command line wins. Re-running the same command on the same output resumes: rows
    already answered are not sent (or paid for) again.

    \b
    Examples:
        batchkimi run jobs/label_reviews.toml --simulate
        batchkimi run -i reviews.csv -o out/ --prompt "Sentiment: {review}"
        batchkimi run jobs/label_reviews.toml --api dashscope --thinking

    \b
    Exit codes:
        0  every row ok
        1  the run finished and some rows failed (all written)
        2  configuration or manifest error: nothing sent
        3  stopped early (--limit, --max-cost, --max-runtime, a signal, a full
           disk, an outage): re-run the same command to resume
        4  another run holds this output folder (or this shard)
        5  the service refused the account (key, billing) or the endpoint:
           fix it, re-run

    A first Ctrl-C (or SIGTERM) stops scheduling and lets requests in flight finish
    (--grace seconds); a second stops at once. Nothing received is lost either way.
    """
    with simulated(simulate) as simulator_url:
        # a simulator's port changes the settings: such a run is never "as written"
        written = None if simulate else read_written_job(job, options)
        display: ProgressDisplay | JsonLog = (
            JsonLog() if log_format == "json" else ProgressDisplay(quiet=quiet)
        )
        try:
            outcome = finished_as_written(written, display.on_info) if written else None
            if outcome is None:  # the typed path: settings checked, then the run
                settings = build_job(
                    job,
                    options,
                    simulator_url=simulator_url,
                    spec=written.spec if written else None,
                )
                key = ApiKey(SIMULATOR_KEY) if simulate else read_api_key()
                outcome = execute(
                    settings,
                    key,
                    observer=display,
                    handle_signals=True,
                    raw_key=written.key if written else None,
                )
        finally:
            display.close()
    display.finish(outcome)
    if outcome.fatal is not None and log_format != "json":
        click.echo(f"Error: {outcome.fatal}", err=True)
    ctx.exit(outcome.exit_code)
