"""``batchkimi plan``: the run's checks and a token, cost and time estimate, sent
nowhere. Rendering only; the plan itself is ``batchkimi.planner``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from batchkimi.cli.console import safe, stdout_console
from batchkimi.cli.options import build_job, job_options, simulated
from batchkimi.credentials import check_key_if_set
from batchkimi.planner import Plan, make_plan, save_plan
from batchkimi.prepare import prepare_job

_SHOWN_PROBLEMS = 20


def _money(value: float | None) -> str:
    return f"{value:,.4f}" if value is not None else "unknown"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "no limit set"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def render(plan: Plan, console: Console) -> None:
    """The plan as a person reads it: totals, one line per model, problem rows."""
    console.print(
        f"rows: {plan.rows:,} in the manifest, {plan.in_scope:,} in scope; "
        f"{plan.to_send:,} to send, {plan.already_done:,} already answered, "
        f"{plan.duplicates:,} duplicates (sent once), {plan.problem_count:,} "
        "with problems",
        highlight=False,
    )
    if plan.beyond_limit:
        console.print(
            f"--limit: {plan.beyond_limit:,} more rows are ready and wait for later "
            "runs",
            highlight=False,
        )
    if plan.beyond_budget:
        console.print(
            f"--max-cost: {plan.beyond_budget:,} more rows would not fit the budget "
            "(each request counted at its expected cost, those in flight at their "
            "worst); the run stops before them, resumable",
            highlight=False,
        )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="estimate, by model")
    table.add_column("model", no_wrap=True)
    for column in ("requests", "tokens in", "tokens out", "cost", "at most"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)  # currency
    table.add_column("time", justify="right", no_wrap=True)
    for model, share in sorted(plan.models.items()):
        table.add_row(
            model,
            f"{share.requests:,}",
            f"{share.input_tokens:,}",
            f"{share.output_tokens:,}",
            _money(share.cost),
            _money(share.worst_cost),
            Text(safe(share.currency or "")),
            _duration(share.seconds_at_limits),
        )
    console.print(table)
    for model, share in sorted(plan.models.items()):
        if share.cost_without_cache and share.cost is not None:
            saved = 1 - share.cost / share.cost_without_cache
            console.print(
                f"{model}: explicit cache: {share.cache_creation_tokens:,} input "
                f"tokens to create, {share.cached_tokens:,} to hit; cost "
                f"{_money(share.cost)} instead of {_money(share.cost_without_cache)} "
                f"({saved:.0%} less)",
                highlight=False,
            )
        if share.price_note:
            console.print(
                safe(
                    f"{model}: cost unknown: {share.price_note}. Give a price with "
                    "--prices FILE"
                ),
                markup=False,
                highlight=False,
            )
    console.print(
        "tokens out: expected (max_tokens or --expected-output-tokens); at most: "
        "every request using its whole output budget; time: what the configured "
        f"rate limits need, {_duration(plan.seconds_at_limits)} in all",
        highlight=False,
    )
    if plan.answer is not None:
        _render_answer(plan.answer, console)
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    for problem in plan.problems[:_SHOWN_PROBLEMS]:
        console.print(Text.assemble(("problem ", "red"), safe(problem["message"])))
    hidden = plan.problem_count - min(len(plan.problems), _SHOWN_PROBLEMS)
    if hidden > 0:
        console.print(f"… and {hidden:,} more problem rows (listed in plan.json)")
    for warning in plan.warnings[:_SHOWN_PROBLEMS]:
        console.print(Text.assemble(("warning ", "yellow"), safe(warning["message"])))
    hidden = plan.warning_count - min(len(plan.warnings), _SHOWN_PROBLEMS)
    if hidden > 0:
        console.print(f"… and {hidden:,} more warnings (listed in plan.json)")


def _render_answer(answer: dict[str, Any], console: Console) -> None:
    """The schema the run will use, how it asks, and the columns it will write."""
    how = (
        "a call of the function `answer` (forced unless the request thinks)"
        if answer["mode"] == "tool"
        else "JSON in the answer, the schema stated in the system message"
    )
    console.print(
        f"answer: {how}; labels matched {answer['label_case']}ly; up to "
        f"{answer['max_repairs']} repairs a row (at most: every one used). Schema:",
        highlight=False,
    )
    schema = json.dumps(answer["schema"], indent=2, ensure_ascii=False)
    console.print(safe(schema), markup=False, highlight=False)
    columns = ", ".join(
        f"{name} ({dtype})" for name, dtype in answer["columns"].items()
    )
    console.print(safe(f"typed columns: {columns}"), markup=False, highlight=False)


@click.command("plan")
@click.argument("job", required=False, type=click.Path(dir_okay=False, path_type=Path))
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--simulate",
    is_flag=True,
    help="Plan the run `run --simulate` would make (the bundled simulator, no rate "
    "limits unless set).",
)
@click.pass_context
def plan_command(
    ctx: click.Context,
    /,
    job: Path | None,
    as_json: bool,
    simulate: bool,
    **options: Any,
) -> None:
    """Check every row as a run would and estimate tokens, cost and time; send nothing.

    Reads the whole manifest, runs every check a run makes before sending, skips rows
    the output folder already holds, and estimates each model's tokens (input from the
    text and media, output from max_tokens or --expected-output-tokens), cost (from
    the price table; unknown where no price is known) and the time the configured
    rate limits need. The plan is saved as OUTPUT/plan.json, which `batchkimi report`
    compares with the actual bill.

    \b
    Exit codes: 0 every row can be sent · 1 some rows have problems (listed) ·
    2 configuration or manifest error.
    """
    if not simulate:
        check_key_if_set()  # the key a run would use must be usable too
    with simulated(simulate) as simulator_url:
        settings = build_job(job, options, simulator_url=simulator_url)
        plan = make_plan(prepare_job(settings))
    output = settings.writing.output
    path = save_plan(plan, output) if output is not None else None
    if as_json:
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        console = stdout_console()
        render(plan, console)
        if path is not None:
            console.print(f"plan saved: {path}", highlight=False)
        else:
            console.print(
                "no --output: every row is planned as new, and the plan is not saved",
                highlight=False,
            )
    ctx.exit(1 if plan.problem_count else 0)
