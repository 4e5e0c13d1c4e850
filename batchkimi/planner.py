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
import contextlib
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchkimi.answers.columns import column_names, column_types
from batchkimi.errors import ConfigError
from batchkimi.estimate import (
    cached_prefix_tokens,
    input_limit,
    input_tokens,
    request_input_tokens,
    worst_case,
    worst_output_tokens,
)
from batchkimi.manifest.keys import shard_of
from batchkimi.manifest.requests import RowProblem
from batchkimi.media.limits import FRAMES_MIN
from batchkimi.media.preflight import (
    AUDIO_NOTE,
    MediaProblem,
    MediaSettings,
    describe_problems,
    has_video_file,
    inspect,
    needs_preparing,
)
from batchkimi.prepare import PreparedJob, uncached_note
from batchkimi.pricing import PriceTable, unknown_notes
from batchkimi.records import RowRequest, Usage
from batchkimi.schedule.ratelimit import HEADROOM
from batchkimi.settings import Job
from batchkimi.store.journal import answered_fingerprints
from batchkimi.store.results import OUTPUT_COLUMNS
from batchkimi.urlcheck import UrlChecker

PLAN_NAME = "plan.json"
STATE_DIR = ".batchkimi"
#: what a request without max_tokens is assumed to answer (FACTS gives no typical
#: length): a short answer, and a modest chain of thought when the request thinks
EXPECTED_ANSWER_TOKENS = 256
EXPECTED_REASONING_TOKENS = 1_024
PROBLEMS_KEPT = 1_000  # problem rows listed in full; the rest are counted


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
    #: ``--cache explicit``: input expected to hit a cache, and to create one
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_without_cache: float | None = None
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
    #: rows ready to send that this run would not send: past --limit, or past
    #: what --max-cost allows at the expected cost of each request
    beyond_limit: int = 0
    beyond_budget: int = 0
    #: False when the job names no output folder: nothing is skipped as already
    #: answered, and the plan is not saved
    output: str | None = None
    models: dict[str, ModelPlan] = field(default_factory=dict)
    seconds_at_limits: float | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)
    #: a structured job's answer: mode, schema, repairs and the typed columns
    answer: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # things worth knowing, once
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _expected_output(request: RowRequest, job: Job, worst: int) -> int:
    if job.asking.expected_output_tokens is not None:
        guess = job.asking.expected_output_tokens
    else:
        info = job.catalogue.get(request.model)
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


def _price(plan: ModelPlan, model: str, job: Job, prices: PriceTable) -> None:
    price = prices.get((model, job.connection.region))
    if price is None:
        note = unknown_notes(job.writing.prices).get(model)
        plan.price_note = (
            note or f"no price known for {model} in {job.connection.region}"
        )
        return
    plan.currency = price.currency
    expected = Usage(
        plan.input_tokens,
        plan.output_tokens,
        cached_tokens=plan.cached_tokens,
        cache_creation_tokens=plan.cache_creation_tokens,
        explicit_cache=True,
    )
    plan.cost = round(price.cost_of(expected), 6)
    if plan.cached_tokens or plan.cache_creation_tokens:
        without = Usage(plan.input_tokens, plan.output_tokens)
        plan.cost_without_cache = round(price.cost_of(without), 6)
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


def make_plan(prepared: PreparedJob) -> Plan:
    """Read the manifest and the output folder; send nothing to the service. With
    ``check_urls``, media URLs are looked at (HEAD) as a run would before sending."""
    prepared.read_rows()
    job = prepared.job
    with asyncio.Runner() as loop:
        urls = (
            UrlChecker(concurrency=job.pacing.concurrency)
            if job.media.check_urls
            else None
        )
        try:
            return _make_plan(prepared, loop, urls)
        finally:
            if urls is not None:
                loop.run(urls.aclose())


def _make_plan(
    prepared: PreparedJob, loop: asyncio.Runner, urls: UrlChecker | None
) -> Plan:
    job, builder, settings = prepared.job, prepared.builder, prepared.media
    output = job.writing.output
    state = output / STATE_DIR if output is not None else None
    done = (
        answered_fingerprints(state, job.writing.rerun_set)
        if state is not None and state.is_dir()
        else set()
    )
    shard = job.reading.shard_parts
    plan = Plan(created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    plan.output = str(output) if output is not None else None
    budget = _Budget(job, prepared.prices)
    seen: set[str] = set()
    prefixes: set[str] = set()  # explicitly cached prefixes, first seen
    index = 0
    for batch in prepared.manifest.iter_batches(job.reading.batch_rows):
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
            if has_video_file(built) and AUDIO_NOTE not in plan.notes:
                plan.notes.append(AUDIO_NOTE)
            if needs_preparing(built):  # the checks the sender makes before sending
                advice: list[MediaProblem] = []
                built, _, media_problems = inspect(built, settings, advice)
                if media_problems:
                    _add_problem(plan, _media_problem(built, media_problems, settings))
                    continue
                if advice:
                    _add_warning(
                        plan, built, describe_problems(built, advice, settings)
                    )
            ready.append(built)
        remote = loop.run(_remote_problems(urls, ready)) if urls else [[]] * len(ready)
        for request, problems in zip(ready, remote, strict=True):
            if problems:
                _add_problem(plan, _media_problem(request, problems, settings))
            elif job.reading.limit is not None and plan.to_send >= job.reading.limit:
                plan.beyond_limit += 1  # the run stops at --limit
            elif not budget.admits(request):
                plan.beyond_budget += 1  # the run stops before --max-cost
            else:
                _count(plan, request, job, prefixes)
    plan.problems.sort(key=lambda problem: int(problem["row"]))
    plan.rows = index
    if builder.uncached:
        plan.notes.append(uncached_note(builder.uncached))
    for model, share in plan.models.items():
        share.rpm, share.tpm = job.limits_of(model)
        share.seconds_at_limits = _duration(share)
        _price(share, model, job, prepared.prices)
    durations = [m.seconds_at_limits for m in plan.models.values()]
    if durations and all(d is not None for d in durations):
        plan.seconds_at_limits = max(d for d in durations if d is not None)
    plan.answer = _answer_plan(prepared)
    plan.assumptions = {
        "expected_output_tokens": job.asking.expected_output_tokens
        or f"{EXPECTED_ANSWER_TOKENS}, plus {EXPECTED_REASONING_TOKENS} when thinking",
        "input_tokens": "about 3 characters a token; images and frames at flat rates",
        "region": job.connection.region,
    }
    return plan


def _add_warning(plan: Plan, request: RowRequest, message: str) -> None:
    plan.warning_count += 1
    if len(plan.warnings) < PROBLEMS_KEPT:
        plan.warnings.append(
            {"row": request.index + 1, "id": request.row_id, "message": message}
        )


def _add_problem(plan: Plan, problem: dict[str, Any]) -> None:
    plan.problem_count += 1
    if len(plan.problems) < PROBLEMS_KEPT:
        plan.problems.append(problem)


async def _remote_problems(
    urls: UrlChecker, requests: list[RowRequest]
) -> list[list[MediaProblem]]:
    return list(await asyncio.gather(*(urls.problems(r) for r in requests)))


def _answer_plan(prepared: PreparedJob) -> dict[str, Any] | None:
    """The declared answer, and the columns the run will write, as it names them."""
    answer = prepared.job.asking.answer
    if answer is None:
        return None
    names = column_names(answer.schema, [*prepared.kept.values(), *OUTPUT_COLUMNS])
    return {
        "mode": answer.mode,
        "label_case": answer.label_case,
        "max_repairs": answer.max_repairs,
        "schema": dict(answer.schema),
        "columns": {
            names[prop]: str(dtype)
            for prop, dtype in column_types(answer.schema).items()
        },
    }


def _count(
    plan: Plan, request: RowRequest, job: Job, prefixes: set[str] | None = None
) -> None:
    share = plan.models.setdefault(request.model, ModelPlan())
    info = job.catalogue.get(request.model)
    worst = worst_output_tokens(request, info)
    estimated = request_input_tokens(request)
    limit, what = input_limit(request, info)
    if estimated > limit:  # only then can what is known for sure be over it too
        _warn_if_over(plan, request, limit, what)
    share.requests += 1
    share.input_tokens += estimated
    share.output_tokens += _expected_output(request, job, worst)
    if request.cache_key is not None and prefixes is not None:
        prefix = cached_prefix_tokens(request)
        if request.cache_key in prefixes:
            share.cached_tokens += prefix  # a hit, at a tenth of the price
        else:
            prefixes.add(request.cache_key)
            share.cache_creation_tokens += prefix  # the first: creates it
    most = worst_case(request, info, _repairs(job))
    share.worst_input_tokens += most.input_tokens
    share.worst_output_tokens += most.output_tokens
    plan.to_send += 1


def _repairs(job: Job) -> int:
    answer = job.asking.answer
    return answer.max_repairs if answer is not None else 0


class _Budget:
    """``--max-cost`` as the run keeps it: a request is sent only if its worst case
    fits beside what the requests before it cost (at their expected cost here)."""

    def __init__(self, job: Job, prices: PriceTable) -> None:
        self.job = job
        self.prices = prices
        self.limit = job.stopping.max_cost
        self.spent = 0.0

    def admits(self, request: RowRequest) -> bool:
        if self.limit is None:
            return True
        price = self.prices.get((request.model, self.job.connection.region))
        if price is None:
            return False  # the run stops at a request it cannot price
        info = self.job.catalogue.get(request.model)
        worst = price.cost_of(worst_case(request, info, _repairs(self.job)))
        if self.spent + worst > self.limit + 1e-12:
            return False
        expected = _expected_output(
            request, self.job, worst_output_tokens(request, info)
        )
        self.spent += price.cost_of(Usage(request_input_tokens(request), expected))
        return True


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
    path = output / PLAN_NAME
    tmp = path.with_name(f".{PLAN_NAME}.{os.getpid()}.tmp")
    try:
        output.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(plan.to_json(), indent=2) + "\n", "utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        msg = (
            f"cannot save the plan in {output}: {exc.strerror or exc}. --output must "
            "be a folder you can write (run would refuse it too)"
        )
        raise ConfigError(msg) from None
    return path
