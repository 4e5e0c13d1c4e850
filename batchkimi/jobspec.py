"""A job: what to read, what to ask, where to write, how hard to push.

Precedence is mechanical: built-in defaults < job TOML < command line. A TOML key, a
CLI option (``--max-attempts``) and a ``JobSpec`` field (``max_attempts``) are one name.
Relative paths in a TOML file resolve against the file's folder, so a job spec can be
run from anywhere. Validation messages name the key and say how to fix it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from batchkimi.answers.schema import AnswerSpec, answer_spec, check_schema
from batchkimi.catalogue import (
    check_output_limits,
    check_thinking,
    check_usable,
    get_model,
)
from batchkimi.errors import ConfigError
from batchkimi.regions import APIS, api_base, base_url_for, resolve_region

#: manifest columns a job may map to its own names (DESIGN.md, "Manifest")
COLUMN_ROLES = (
    "id",
    "prompt",
    "system",
    "messages",
    "image",
    "images",
    "video",
    "frames",
    "fps",
    "max_frames",
    "model",
    "enable_thinking",
    "temperature",
    "top_p",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "seed",
)

#: request parameters a job (or a row) may set; sent only when set
PARAMETERS: dict[str, tuple[type, ...]] = {
    "temperature": (float, int),
    "top_p": (float, int),
    "presence_penalty": (float, int),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "seed": (int,),
    "stop": (str, list),
    "preserve_thinking": (bool,),
    "thinking_budget": (int,),
}
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "max_tokens": (1, 1_000_000),
    "max_completion_tokens": (1, 1_000_000),
    "seed": (0, 2**31 - 1),
    "thinking_budget": (1, 1_000_000),
}


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything a run needs, resolved and validated. Build with ``build_spec``."""

    input: Path
    output: Path
    model: str = "kimi-k2.6"
    prompt: str | None = None
    system: str | None = None
    api: str = "openai"
    region: str = "cn-beijing"
    workspace_id: str | None = None
    base_url: str | None = None
    thinking: bool | None = None
    stream: bool = True
    concurrency: int = 16
    #: per-model limits; None: the catalogue's (500 RPM, 1M TPM); 0: no limit, adapt
    rpm: int | None = None
    tpm: int | None = None
    max_attempts: int = 5
    timeout_s: float = 900.0
    idle_timeout_s: float | None = (
        None  # a stream with no data this long; None: timeout_s
    )
    max_throttle_wait_s: float = 600.0
    limit: int | None = None
    max_cost: float | None = None  # this run's budget, in the price table's currency
    max_runtime_s: float | None = None
    grace_s: float = 30.0  # how long requests in flight may finish after a stop
    shard: str | None = None  # "I/N": send only the rows of shard I of N
    retry_errors: bool = False
    rerun: tuple[str, ...] = ()  # statuses or error codes to send again
    batch_rows: int = 2_000
    columns: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    keep_columns: tuple[str, ...] | None = None  # None: keep every input column
    prices: Path | None = None
    #: what `plan` assumes a request answers when it sets no max_tokens (thinking
    #: included); None: 256 tokens, plus 1,024 when the request thinks
    expected_output_tokens: int | None = None
    #: local media paths resolve here (default: the manifest's folder, or the folder
    #: a glob starts from); a path that leads outside it is refused unless allowed
    media_root: Path | None = None
    allow_outside_media_root: bool = False
    #: local videos as frames extracted here: auto (when a video cannot be sent as
    #: it is), always, or never (refuse such a video)
    video_frames: str = "auto"
    frame_max_side: int = 768  # px, for frames extracted here
    fix_images: bool = False  # shrink or re-encode an image the service would refuse
    #: look at image and video URLs (HEAD) before asking the service to fetch them
    check_urls: bool = False
    #: the declared answer: a JSON Schema (from a file or an inline table), or
    #: labels (exactly one of them) or multi_labels (a set of them); None: free text
    schema: Mapping[str, Any] | None = None
    labels: tuple[str, ...] | None = None
    multi_labels: tuple[str, ...] | None = None
    structured: str | None = None  # tool (the default with a schema) | prompt
    label_case: str | None = None  # exact (the default) | insensitive
    max_repairs: int | None = None  # re-asks after an invalid answer (default 2)

    @cached_property
    def answer(self) -> AnswerSpec | None:
        """The structured answer the job asks for, or None for free text."""
        return answer_spec(
            schema=self.schema,
            labels=self.labels,
            multi_labels=self.multi_labels,
            mode=self.structured,
            label_case=self.label_case,
            max_repairs=self.max_repairs,
        )

    @property
    def resolved_base_url(self) -> str:
        """The SDK-style base URL (``…/compatible-mode/v1`` or ``…/api/v1``)."""
        if self.base_url:
            return api_base(self.api, self.base_url)
        return base_url_for(self.api, self.region, self.workspace_id)

    def column(self, role: str) -> str:
        """The manifest column that plays ``role`` (its own name unless mapped)."""
        return self.columns.get(role, role)

    def limits_of(self, model: str) -> tuple[int | None, int | None]:
        """(RPM, TPM) to keep ``model`` under: the job's, else the catalogue's."""
        info = get_model(model)
        rpm = info.rpm if self.rpm is None else (self.rpm or None)
        tpm = info.tpm if self.tpm is None else (self.tpm or None)
        return rpm, tpm

    @property
    def media_base(self) -> Path:
        """Where local media paths resolve: ``media_root``, else the manifest's
        folder (a folder manifest itself; for a glob, the folder it starts from)."""
        if self.media_root is not None:
            return self.media_root
        if is_glob(self.input):
            return glob_base(self.input)
        return self.input if self.input.is_dir() else self.input.parent

    @property
    def shard_parts(self) -> tuple[int, int] | None:
        """(I, N) of ``--shard I/N``, validated."""
        if self.shard is None:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    @property
    def shard_label(self) -> str | None:
        """``2-of-4``: the shard's name in file names and messages."""
        parts = self.shard_parts
        return f"{parts[0]}-of-{parts[1]}" if parts else None

    @property
    def rerun_set(self) -> frozenset[str]:
        """What to send again: ``--rerun``, plus errors and incomplete answers for
        ``--retry-errors``."""
        extra = {"error", "incomplete", "invalid"} if self.retry_errors else set()
        return frozenset(self.rerun) | extra


_FIELDS = {f.name: f for f in dataclasses.fields(JobSpec)}
_PATH_FIELDS = ("input", "output", "prices", "media_root")
_ALIASES = {
    "timeout": "timeout_s",
    "idle_timeout": "idle_timeout_s",
    "max_runtime": "max_runtime_s",
    "grace": "grace_s",
    "max_throttle_wait": "max_throttle_wait_s",
}
VIDEO_FRAME_MODES = ("auto", "always", "never")


def is_glob(path: Path) -> bool:
    return any(ch in part for part in path.parts for ch in "*?[")


def glob_base(pattern: Path) -> Path:
    """The folder a glob pattern starts from: its parts before the first wildcard."""
    fixed: list[str] = []
    for part in pattern.parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


_SHARD = re.compile(r"^(\d+)/(\d+)$")


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r} is not {expected}: fix it in the job spec")


def _coerce(key: str, value: Any, base_dir: Path) -> Any:
    if key in _PATH_FIELDS:
        if not isinstance(value, str | Path):
            raise _type_error(key, value, "a path")
        path = Path(value).expanduser()
        return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))
    if key == "rerun":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(
            isinstance(v, str) for v in items
        ):
            raise _type_error(key, value, "a list of statuses or error codes")
        return tuple(v.strip() for v in items if v.strip())
    if key == "schema":
        return _schema_value(value, base_dir)
    if key in ("labels", "multi_labels"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(
            isinstance(v, str) for v in items
        ):
            raise _type_error(key, value, "a list of labels")
        return tuple(v.strip() for v in items)
    if key == "keep_columns":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _type_error(key, value, "a list of column names")
        return tuple(value)
    if key in ("columns", "parameters"):
        if not isinstance(value, Mapping):
            raise _type_error(key, value, "a table")
        return dict(value)
    return value


def _schema_value(value: Any, base_dir: Path) -> dict[str, Any]:
    """An inline schema table as it is; a path: the JSON file it names, read now."""
    if isinstance(value, Mapping):
        check_schema(value, "[schema] in the job spec")
        return dict(value)
    if not isinstance(value, str | Path):
        error = _type_error("schema", value, "a JSON Schema file or an inline table")
        raise error
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        schema = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        msg = f"schema file {path} does not exist: check the path"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read schema file {path}: {exc}"
        raise ConfigError(msg) from None
    except json.JSONDecodeError as exc:
        msg = (
            f"schema file {path} is not JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}. Fix the file"
        )
        raise ConfigError(msg) from None
    check_schema(schema, f"schema file {path}")
    return dict(schema)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a job spec file into field values, paths resolved against its folder."""
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        msg = f"job spec {path} does not exist: check the path"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"job spec {path} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    except OSError as exc:
        msg = f"cannot read job spec {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    return normalise(raw, base_dir=path.resolve().parent, origin=str(path))


def normalise(raw: Mapping[str, Any], *, base_dir: Path, origin: str) -> dict[str, Any]:
    """Check key names and coerce values; paths resolve against ``base_dir``."""
    values: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = _ALIASES.get(raw_key, raw_key)
        if key not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            msg = f"{origin}: unknown key {raw_key!r}. Known keys: {known}"
            raise ConfigError(msg)
        if value is not None:
            values[key] = _coerce(key, value, base_dir)
    return values


def build_spec(
    file_values: Mapping[str, Any], cli_values: Mapping[str, Any]
) -> JobSpec:
    """Merge defaults < file < CLI, then validate the whole spec."""
    merged: dict[str, Any] = {}
    for source in (file_values, cli_values):
        for key, value in source.items():
            if value is None:
                continue
            if key in ("columns", "parameters"):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    for required in ("input", "output"):
        if required not in merged:
            msg = (
                f"no {required} given: set --{required} on the command line or "
                f'`{required} = "…"` in the job spec'
            )
            raise ConfigError(msg)
    spec = JobSpec(**merged)
    validate(spec)
    return spec


def _check_number(key: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(key, value, "a number")
    if not lo <= value <= hi:
        msg = f"{key} = {value!r} is out of range: it must be between {lo} and {hi}"
        raise ConfigError(msg)


def check_parameter(key: str, value: Any) -> str | None:
    """Why a request parameter is invalid, or None (for job and row values alike)."""
    kinds = PARAMETERS.get(key)
    if kinds is None:
        return f"{key!r} is not a request parameter (known: {', '.join(PARAMETERS)})"
    if isinstance(value, bool) and bool not in kinds:
        return f"{key} must be a number, not {value!r}"
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        return f"{key} must be {names}, not {value!r}"
    if key in _RANGES and isinstance(value, int | float):
        lo, hi = _RANGES[key]
        if not lo <= value <= hi:
            return f"{key} = {value!r} is out of range [{lo:g}, {hi:g}]"
    return None


def validate(spec: JobSpec) -> None:
    """Cross-field checks; every message names the setting and the fix."""
    if spec.api not in APIS:
        msg = (
            f"api = {spec.api!r}: choose openai (OpenAI-compatible mode) or dashscope "
            "(DashScope native)"
        )
        raise ConfigError(msg)
    resolve_region(spec.region)
    _ = spec.resolved_base_url  # raises when a workspace id is required and missing
    info = check_usable(spec.model)
    problem = check_thinking(info, spec.thinking)
    if problem:
        raise ConfigError(problem)
    too_much = check_output_limits(info, dict(spec.parameters))
    if too_much is not None:
        msg = f"{too_much[1]}. Lower {too_much[0]} under [parameters]"
        raise ConfigError(msg)
    _check_number("concurrency", spec.concurrency, 1, 4096)
    _check_number("max_attempts", spec.max_attempts, 1, 100)
    _check_number("timeout_s", spec.timeout_s, 1, 86_400)
    _check_number("batch_rows", spec.batch_rows, 1, 1_000_000)
    if spec.limit is not None:
        _check_number("limit", spec.limit, 0, 10**12)
    if spec.max_cost is not None:
        _check_number("max_cost", spec.max_cost, 0, 10**12)
    if spec.max_runtime_s is not None:
        _check_number("max_runtime_s", spec.max_runtime_s, 1, 10**9)
    _check_number("grace_s", spec.grace_s, 0, 86_400)
    _check_number("max_throttle_wait_s", spec.max_throttle_wait_s, 1, 86_400 * 7)
    if spec.idle_timeout_s is not None:
        _check_number("idle_timeout_s", spec.idle_timeout_s, 1, 86_400)
    if spec.video_frames not in VIDEO_FRAME_MODES:
        msg = (
            f"video_frames = {spec.video_frames!r}: use one of "
            f"{', '.join(VIDEO_FRAME_MODES)}"
        )
        raise ConfigError(msg)
    _check_number("frame_max_side", spec.frame_max_side, 64, 8192)
    if spec.expected_output_tokens is not None:
        _check_number("expected_output_tokens", spec.expected_output_tokens, 1, 10**7)
    for name in ("rpm", "tpm"):
        value = getattr(spec, name)
        if value is not None:
            _check_number(name, value, 0, 10**12)
    if spec.shard is not None:
        match = _SHARD.match(spec.shard)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            msg = (
                f"shard = {spec.shard!r} is not I/N with 1 <= I <= N: use e.g. "
                "--shard 2/4 for the second of four shards"
            )
            raise ConfigError(msg)
    for key, value in spec.parameters.items():
        problem = check_parameter(key, value)
        if problem:
            msg = f"parameters: {problem}. Fix [parameters] in the job spec"
            raise ConfigError(msg)
    for role in spec.columns:
        if role not in COLUMN_ROLES:
            msg = (
                f"columns: {role!r} is not a manifest column role. "
                f"Roles: {', '.join(COLUMN_ROLES)}"
            )
            raise ConfigError(msg)
    if spec.max_repairs is not None:
        _check_number("max_repairs", spec.max_repairs, 0, 10)
        if not isinstance(spec.max_repairs, int):
            error = _type_error("max_repairs", spec.max_repairs, "a whole number")
            raise error
    _ = spec.answer  # the declared answer: one of schema, labels, multi_labels
    if spec.input.resolve() == spec.output.resolve():
        msg = "output must be a folder of its own, not the input file"
        raise ConfigError(msg)
