"""``batchkimi plan``: everything a run would check, and what it would cost, with
nothing sent.

It reads the whole manifest in the run's own batches, builds every row's request with
the run's own builder (so every preflight check a run makes is made here, and a row
the plan passes is a row the run sends), skips what the output folder already holds,
and estimates tokens, cost and duration per model. The estimate is saved beside the
results as ``plan.json``, so ``batchkimi report`` can set it against the actual bill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchkimi.answers.columns import column_types
from batchkimi.catalogue import get_model
from batchkimi.estimate import (
    input_limit,
    input_tokens,
    request_input_tokens,
    worst_output_tokens,
)
from batchkimi.jobspec import JobSpec
from batchkimi.manifest.keys import shard_of
from batchkimi.manifest.reader import open_manifest
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.media.limits import FRAMES_MIN
from batchkimi.media.preflight import (
    MediaProblem,
    MediaSettings,
    describe_problems,
    inspect,
    media_settings,
    needs_preparing,
)
from batchkimi.pricing import PriceTable, load_prices, unknown_notes
from batchkimi.records import RowRequest, Usage
from batchkimi.schedule.ratelimit import HEADROOM
from batchkimi.store.journal import answered_fingerprints
from batchkimi.urlcheck import UrlChecker

PLAN_NAME = "plan.json"
STATE_DIR = ".batchkimi"
#: what a request without max_tokens is assumed to answer (FACTS gives no typical
#: length): a short answer, and a modest chain of thought when the request thinks
EXPECTED_ANSWER_TOKENS = 256
EXPECTED_REASONING_TOKENS = 1_024
PROBLEMS_KEPT = 1_000  # problem rows listed in full; the rest are counted
#: a repair turn's reply: the validator's message and the request to answer again
REPAIR_REPLY_TOKENS = 80


@dataclass(slots=True)
class ModelPlan:
    """One model's share of the job."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0  # expected, thinking included
    #: if every request used its whole output budget, and (structured) every
    #: answer was invalid and repaired as often as allowed
    worst_input_tokens: int = 0
    worst_output_tokens: int = 0
    cost: float | None = None
    worst_cost: float | None = None
    currency: str | None = None
    price_note: str | None = None  # why there is no cost, when there is none
    rpm: int | None = None
    tpm: int | None = None
    seconds_at_limits: float | None = None  # None: no limit bounds it


@dataclass(slots=True)
class Plan:
    rows: int = 0
    in_scope: int = 0  # rows of this shard (all rows without --shard)
    problems: list[dict[str, Any]] = field(default_factory=list)
    problem_count: int = 0
    #: rows sent all the same that the service may refuse: the estimated input is
    #: over the model's limit (an estimate, so not a problem row)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    warning_count: int = 0
    already_done: int = 0
    duplicates: int = 0
    to_send: int = 0
    models: dict[str, ModelPlan] = field(default_factory=dict)
    seconds_at_limits: float | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)
    #: a structured job's answer: mode, schema, repairs and the typed columns
    answer: dict[str, Any] | None = None
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _expected_output(request: RowRequest, spec: JobSpec, worst: int) -> int:
    if spec.expected_output_tokens is not None:
        guess = spec.expected_output_tokens
    else:
        info = get_model(request.model)
        thinks = (
            request.enable_thinking
            if request.enable_thinking is not None
            else info.thinking_by_default()
        )
        guess = EXPECTED_ANSWER_TOKENS + (EXPECTED_REASONING_TOKENS if thinks else 0)
    return min(guess, worst)


def _problem(problem: RowProblem) -> dict[str, Any]:
    return {
        "row": problem.index + 1,
        "id": problem.row_id,
        "column": problem.column,
        "code": problem.code,
        "message": problem.message,
    }


def _media_problem(
    request: RowRequest, problems: list[MediaProblem], settings: MediaSettings
) -> dict[str, Any]:
    return {
        "row": request.index + 1,
        "id": request.row_id,
        "column": settings.column(problems[0].role),
        "code": "invalid_media",
        "message": describe_problems(request, problems, settings),
    }


def _price(plan: ModelPlan, model: str, spec: JobSpec, prices: PriceTable) -> None:
    price = prices.get((model, spec.region))
    if price is None:
        note = unknown_notes(spec.prices).get(model)
        plan.price_note = note or f"no price known for {model} in {spec.region}"
        return
    plan.currency = price.currency
    plan.cost = round(price.cost_of(Usage(plan.input_tokens, plan.output_tokens)), 6)
    worst = Usage(plan.worst_input_tokens, plan.worst_output_tokens)
    plan.worst_cost = round(price.cost_of(worst), 6)


def _duration(plan: ModelPlan) -> float | None:
    """Seconds the budgets need at the pace a run keeps (98% of each limit)."""
    bounds = []
    if plan.rpm:
        bounds.append(plan.requests / (plan.rpm * HEADROOM / 60))
    if plan.tpm:
        tokens = plan.input_tokens + plan.output_tokens
        bounds.append(tokens / (plan.tpm * HEADROOM / 60))
    return max(bounds) if bounds else None


def make_plan(spec: JobSpec) -> Plan:
    """Read the manifest and the output folder; send nothing to the service. With
    ``check_urls``, media URLs are looked at (HEAD) as a run would before sending."""
    with asyncio.Runner() as loop:
        urls = UrlChecker(concurrency=spec.concurrency) if spec.check_urls else None
        try:
            return _make_plan(spec, loop, urls)
        finally:
            if urls is not None:
                loop.run(urls.aclose())


def _make_plan(spec: JobSpec, loop: asyncio.Runner, urls: UrlChecker | None) -> Plan:
    manifest = open_manifest(spec.input)
    builder = RequestBuilder(spec, manifest.columns, str(spec.input))
    state = spec.output / STATE_DIR
    done = answered_fingerprints(state, spec.rerun_set) if state.is_dir() else set()
    shard = spec.shard_parts
    plan = Plan(created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    seen: set[str] = set()
    settings = media_settings(spec)
    index = 0
    for batch in manifest.iter_batches(spec.batch_rows):
        ready: list[RowRequest] = []  # rows that pass every check made here
        for row in batch.iter_rows(named=True):
            built = builder.build(index, row)
            index += 1
            if shard is not None and shard_of(built.row_id, shard[1]) != shard[0]:
                continue
            plan.in_scope += 1
            if isinstance(built, RowProblem):
                _add_problem(plan, _problem(built))
                continue
            if built.fingerprint in done:
                plan.already_done += 1
                continue
            if built.fingerprint in seen:
                plan.duplicates += 1
                continue
            seen.add(built.fingerprint)
            if needs_preparing(built):  # the checks the sender makes before sending
                built, _, media_problems = inspect(built, settings)
                if media_problems:
                    _add_problem(plan, _media_problem(built, media_problems, settings))
                    continue
            ready.append(built)
        remote = loop.run(_remote_problems(urls, ready)) if urls else [[]] * len(ready)
        for request, problems in zip(ready, remote, strict=True):
            if problems:
                _add_problem(plan, _media_problem(request, problems, settings))
            else:
                _count(plan, request, spec)
    plan.problems.sort(key=lambda problem: int(problem["row"]))
    plan.rows = index
    prices = load_prices(spec.prices)
    for model, share in plan.models.items():
        share.rpm, share.tpm = spec.limits_of(model)
        share.seconds_at_limits = _duration(share)
        _price(share, model, spec, prices)
    durations = [m.seconds_at_limits for m in plan.models.values()]
    if durations and all(d is not None for d in durations):
        plan.seconds_at_limits = max(d for d in durations if d is not None)
    plan.answer = _answer_plan(spec)
    plan.assumptions = {
        "expected_output_tokens": spec.expected_output_tokens
        or f"{EXPECTED_ANSWER_TOKENS}, plus {EXPECTED_REASONING_TOKENS} when thinking",
        "input_tokens": "about 3 characters a token; images and frames at flat rates",
        "region": spec.region,
    }
    return plan


def _add_problem(plan: Plan, problem: dict[str, Any]) -> None:
    plan.problem_count += 1
    if len(plan.problems) < PROBLEMS_KEPT:
        plan.problems.append(problem)


async def _remote_problems(
    urls: UrlChecker, requests: list[RowRequest]
) -> list[list[MediaProblem]]:
    return list(await asyncio.gather(*(urls.problems(r) for r in requests)))


def _answer_plan(spec: JobSpec) -> dict[str, Any] | None:
    answer = spec.answer
    if answer is None:
        return None
    return {
        "mode": answer.mode,
        "label_case": answer.label_case,
        "max_repairs": answer.max_repairs,
        "schema": dict(answer.schema),
        "columns": {
            name: str(dtype) for name, dtype in column_types(answer.schema).items()
        },
    }


def _count(plan: Plan, request: RowRequest, spec: JobSpec) -> None:
    share = plan.models.setdefault(request.model, ModelPlan())
    info = get_model(request.model)
    worst = worst_output_tokens(request, info)
    estimated = request_input_tokens(request)
    limit, what = input_limit(request, info)
    if estimated > limit:  # only then can what is known for sure be over it too
        _warn_if_over(plan, request, limit, what)
    share.requests += 1
    share.input_tokens += estimated
    share.output_tokens += _expected_output(request, spec, worst)
    # at worst every answer is invalid and repaired: each repair turn resends the
    # conversation, grown by the answer and the validator's reply
    repairs = spec.answer.max_repairs if spec.answer is not None else 0
    share.worst_input_tokens += sum(
        estimated + turn * (worst + REPAIR_REPLY_TOKENS) for turn in range(repairs + 1)
    )
    share.worst_output_tokens += worst * (repairs + 1)
    plan.to_send += 1


def _warn_if_over(plan: Plan, request: RowRequest, limit: int, what: str) -> None:
    """Warn about a row whose input is over the model's limit. A video URL of unknown
    length counts at its fewest frames here: warn only about what is known."""
    known = input_tokens(request.messages, unknown_video_frames=FRAMES_MIN)
    if known <= limit:
        return
    plan.warning_count += 1
    if len(plan.warnings) < PROBLEMS_KEPT:
        where = f'row {request.index + 1:,} (id "{request.row_id}")'
        plan.warnings.append(
            {
                "row": request.index + 1,
                "id": request.row_id,
                "input_tokens": known,
                "limit": limit,
                "message": f"{where}: about {known:,} input tokens by batchkimi's "
                f"estimate, over {what} of {limit:,}; the service may refuse it. "
                "Send fewer frames (fps, max_frames), fewer images or less text",
            }
        )


def save_plan(plan: Plan, output: Path) -> Path:
    """Write ``plan.json`` into the output folder (atomically); return its path."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / PLAN_NAME
    tmp = path.with_name(f".{PLAN_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plan.to_json(), indent=2) + "\n", "utf-8")
    tmp.replace(path)
    return path
