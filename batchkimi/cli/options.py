"""The options that describe a job, shared by ``run`` and ``plan``, and the Job they
build (defaults < job file < command line). Options carry no ranges of their own: the
settings check every value, with the same words wherever it was written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from batchkimi.jobs import simulated as simulated  # used by run and plan
from batchkimi.regions import REGIONS
from batchkimi.settings.written import COLUMN_ROLES, Source, read_job_file

if TYPE_CHECKING:  # typed settings load pydantic: only when a job is built
    from batchkimi.settings import Job

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(option: str, values: tuple[str, ...], *, as_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            msg = f"{item!r} is not NAME=VALUE"
            raise click.BadParameter(msg, param_hint=option)
        value: Any = raw
        if as_json:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[name.strip()] = value
    return out


def job_options(command: F) -> F:
    """Decorate ``command`` with every job option, in the order ``--help`` shows."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def build_job(
    job: Path | None,
    options: dict[str, Any],
    *,
    simulator_url: str | None = None,
    spec: Source | None = None,
) -> Job:
    """The Job that ``job`` (a TOML file; ``spec`` when it was read already) and the
    command line describe; with a simulator, it is the endpoint and no rate limits
    apply unless set."""
    from batchkimi.settings import load_job

    options = dict(options)
    options["columns"] = _pairs("--column", options["columns"], as_json=False) or None
    options["parameters"] = (
        _pairs("--param", options["parameters"], as_json=True) or None
    )
    if spec is None and job is not None:
        spec = read_job_file(job)
    sources = [spec] if spec is not None else []
    given = {k: v for k, v in options.items() if v is not None}
    sources.append(Source("the command line", given, option_names=True))
    if simulator_url is not None:
        simulated: dict[str, Any] = {"base_url": simulator_url}
        for name in ("rpm", "tpm"):  # the simulator enforces no limits by default
            if not any(name in source.values for source in sources):
                simulated[name] = 0
        sources.append(Source("--simulate", simulated, option_names=True))
    return load_job(sources)


_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "-i",
        "--input",
        "input",
        type=click.Path(path_type=Path),
        help="Manifest: .csv, .tsv, .parquet or .jsonl; or a folder or a quoted "
        "glob ('archive/**/*.mp4') of images or videos, one row per file.",
    ),
    click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path),
        help="Output folder (results.parquet, summary.json, journal).",
    ),
    click.option(
        "-m", "--model", help="Model, e.g. kimi-k2.6 (see `batchkimi models`)."
    ),
    click.option(
        "--models",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML file of model facts that adds to or overrides the packaged "
        "catalogue (a model the service offers before batchkimi lists it).",
    ),
    click.option(
        "--prompt", help='Template over manifest columns, e.g. "Label: {review}".'
    ),
    click.option("--system", help="System message for every row."),
    click.option(
        "--api",
        type=click.Choice(["openai", "dashscope"]),
        help="openai: OpenAI-compatible mode; dashscope: DashScope native.",
    ),
    click.option(
        "--region", type=click.Choice(sorted(REGIONS)), help="Model Studio region."
    ),
    click.option(
        "--workspace-id", help="Workspace id (needed outside Beijing and Virginia)."
    ),
    click.option(
        "--base-url", help="Send to this URL instead of the region's endpoint."
    ),
    click.option(
        "--allow-insecure-http",
        is_flag=True,
        default=None,
        help="Let --base-url be plain http:// to another host: the key then travels "
        "unencrypted (a trusted proxy on your own network only).",
    ),
    click.option(
        "--thinking/--no-thinking",
        default=None,
        help="Turn thinking mode on or off (default: the model's own).",
    ),
    click.option(
        "--stream/--no-stream", default=None, help="Stream answers (default: on)."
    ),
    click.option(
        "--concurrency",
        type=int,
        help="Requests in flight at once.  [default: 16]",
    ),
    click.option(
        "--rpm",
        type=int,
        help="Requests per minute per model to stay under; 0: none, adapt to throttles "
        "(default: the catalogue's, 500; none with --simulate).",
    ),
    click.option(
        "--tpm",
        type=int,
        help="Tokens per minute per model to stay under; 0: none (default: the "
        "catalogue's, 1,000,000; none with --simulate).",
    ),
    click.option(
        "--max-attempts",
        type=int,
        help="Attempts per row, retries included.  [default: 5]",
    ),
    click.option(
        "--timeout",
        "--timeout-s",
        "timeout_s",
        type=float,
        help="Seconds one attempt may take; also the idle limit of a stream.  "
        "[default: 900]",
    ),
    click.option(
        "--idle-timeout",
        "--idle-timeout-s",
        "idle_timeout_s",
        type=float,
        help="Seconds a stream may send no data (keep-alives do not count).  "
        "[default: --timeout]",
    ),
    click.option(
        "--max-throttle-wait",
        "--max-throttle-wait-s",
        "max_throttle_wait_s",
        type=float,
        help="Stop (exit 3, resumable) when every request has been throttled, or has "
        "failed to reach an answer (an outage), for this long.  [default: 600]",
    ),
    click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        help="Send from this process (local), or from workers on a Ray cluster "
        "(ray; pip install 'batchkimi[ray]').  [default: local]",
    ),
    click.option(
        "--ray-address",
        metavar="ADDR",
        help="The Ray cluster to run on (HOST:PORT or ray://HOST:PORT); default: "
        "the one RAY_ADDRESS names, else a local one.",
    ),
    click.option(
        "--ray-workers",
        type=int,
        help="Worker actors on the Ray cluster, one CPU each; --concurrency is "
        "per worker.  [default: one per CPU of the cluster]",
    ),
    click.option(
        "--limit",
        type=int,
        help="Send at most this many rows this run (exit 3 if rows remain).",
    ),
    click.option(
        "--max-cost",
        type=float,
        help="Stop before this run could spend more (in the price table's currency); "
        "requests in flight count at their worst case.",
    ),
    click.option(
        "--max-runtime",
        "--max-runtime-s",
        "max_runtime_s",
        type=float,
        help="Stop scheduling after this many seconds.",
    ),
    click.option(
        "--grace",
        "--grace-s",
        "grace_s",
        type=float,
        help="Seconds requests in flight may finish after a stop.  [default: 30]",
    ),
    click.option(
        "--shard",
        metavar="I/N",
        help="Send only shard I of N (rows split by key): N cron entries or machines "
        "can share one job without overlap.",
    ),
    click.option(
        "--retry-errors",
        is_flag=True,
        default=None,
        help="Send rows that failed or were cut off in an earlier run again.",
    ),
    click.option(
        "--rerun",
        metavar="WHAT,…",
        help="Send again rows whose status or error code is listed, e.g. "
        "error,length,content_filter.",
    ),
    click.option(
        "-c",
        "--column",
        "columns",
        multiple=True,
        metavar="ROLE=NAME",
        help=f"Map a manifest column to a role ({', '.join(COLUMN_ROLES[:5])}, …).",
    ),
    click.option(
        "-p",
        "--param",
        "parameters",
        multiple=True,
        metavar="NAME=VALUE",
        help="Request parameter, e.g. temperature=0.2 or max_tokens=64.",
    ),
    click.option(
        "--keep-columns",
        help="Comma-separated input columns to keep in results (default: all).",
    ),
    click.option(
        "--media-root",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder local media paths resolve against, and must stay inside "
        "(default: the manifest's folder).",
    ),
    click.option(
        "--allow-outside-media-root",
        is_flag=True,
        default=None,
        help="Let the manifest name files outside the media root (trusted "
        "manifests only).",
    ),
    click.option(
        "--video-frames",
        type=click.Choice(["auto", "always", "never"]),
        help="Extract frames from local videos here: auto (when a video is too large "
        "to send as it is), always, or never.  [default: auto]",
    ),
    click.option(
        "--frame-max-side",
        type=int,
        help="Longest side of extracted frames, in pixels.  [default: 768]",
    ),
    click.option(
        "--fix-images",
        is_flag=True,
        default=None,
        help="Shrink or re-encode a local image the service would refuse for its size "
        "or format.",
    ),
    click.option(
        "--check-urls",
        is_flag=True,
        default=None,
        help="Look at every image and video URL (a HEAD request) before the service "
        "is asked to fetch it: a dead link or a file over the limit fails its row.",
    ),
    click.option(
        "--expected-output-tokens",
        type=int,
        help="Output a request is assumed to give when it sets no max_tokens, for "
        "`plan` (default: 256, plus 1,024 when thinking).",
    ),
    click.option(
        "--schema",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSON Schema file of the answer: each answer is checked against it, "
        "re-asked when invalid, and written as typed columns.",
    ),
    click.option(
        "--labels",
        metavar="A,B,…",
        help="The answer is exactly one of these labels (a column `label`).",
    ),
    click.option(
        "--multi-labels",
        metavar="A,B,…",
        help="The answer is a set of these labels (a list column `labels`).",
    ),
    click.option(
        "--tools",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSON file of functions the model may call (the OpenAI shape), or "
        '{"tools": [...], "tool_choice": …}; calls land in the tool_calls column.',
    ),
    click.option(
        "--tool-choice",
        metavar="auto|none|NAME",
        help="Which tool the model calls: auto, none, or one function's name.",
    ),
    click.option(
        "--cache",
        type=click.Choice(["implicit", "explicit"]),
        help="explicit: mark the rows' shared prefix (system message, earlier turns, "
        "tools) for the context cache; its first request goes alone.  "
        "[default: implicit]",
    ),
    click.option(
        "--structured",
        type=click.Choice(["tool", "prompt"]),
        help="Ask for the answer through a function call (tool) or with the schema "
        "in the system message (prompt).  [default: tool]",
    ),
    click.option(
        "--label-case",
        type=click.Choice(["exact", "insensitive"]),
        help="insensitive: a label that differs only in case or surrounding "
        "whitespace counts as that label.  [default: exact]",
    ),
    click.option(
        "--max-repairs",
        type=int,
        help="Times an invalid answer is asked again, with the validator's message "
        "(each one is paid for).  [default: 2]",
    ),
    click.option(
        "--prices",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML file of prices that override the packaged ones.",
    ),
]
