"""Where a job's settings come from, merged key by key: built-in defaults < the job
spec file < the command line (or Python keywords).

Each value keeps its origin, so a refused value is named where it was written:
``jobs/label.toml: concurrency = 16.5: …`` or ``--param max_tokens=2.5: …``. Relative
paths resolve against the folder of the file that gave them (the working folder for
options and keywords; ``written.resolved_path``); a ``schema`` that names a file is
read here, so the settings themselves hold only values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchkimi.answers.schema import check_schema
from batchkimi.errors import ConfigError
from batchkimi.settings.job import ALIASES, Job, unknown_key
from batchkimi.settings.sections import SECTION_OF
from batchkimi.settings.written import PATH_KEYS, Source, resolved_path

#: tables merged key by key across sources (a file's [parameters] plus --param)
TABLE_KEYS = frozenset({"columns", "parameters"})
_SHOWN = 80  # characters of a refused value shown in a message


def load_job(sources: Iterable[Source]) -> Job:
    """The job the sources describe, later sources winning key by key."""
    merged: dict[str, Any] = {}
    origin: dict[str, Source] = {}
    written: dict[str, str] = {}  # key -> as the user wrote it (``timeout``)
    for source in sources:
        for raw_key, raw_value in source.values.items():
            key = ALIASES.get(raw_key, raw_key)
            written[key] = raw_key
            if key not in SECTION_OF:
                raise unknown_key(raw_key, source.origin)
            if raw_value is None:
                continue
            value = _resolved(key, raw_value, source)
            if key == "tools" and isinstance(value, dict) and "tools" in value:
                if value.get("tool_choice") is not None:  # the file's own choice,
                    merged.setdefault("tool_choice", value["tool_choice"])  # if unset
                    origin.setdefault("tool_choice", source)
                value = value["tools"]
            if key in TABLE_KEYS and isinstance(value, Mapping):
                previous = merged.get(key)
                base = dict(previous) if isinstance(previous, Mapping) else {}
                merged[key] = {**base, **value}
                for name in value:
                    origin[f"{key}.{name}"] = source
            else:
                merged[key] = value
            origin[key] = source
    try:
        return Job.of(merged)
    except ValidationError as exc:
        raise _config_error(exc, origin, written) from None


def _resolved(key: str, value: Any, source: Source) -> Any:
    if key in PATH_KEYS and (path := resolved_path(value, source.base_dir)):
        return path
    if key in ("schema", "tools") and isinstance(value, str | Path):
        if not str(value).strip():
            msg = f"{source.origin}: {key} is empty: give the path of a JSON file"
            raise ConfigError(msg)
        found = _json_file(Path(value).expanduser(), source, key)
        if key == "schema":
            check_schema(found, f"{source.origin}: schema file {value}")
        if key == "tools" and isinstance(found, dict) and "tools" in found:
            return found  # {"tools": [...], "tool_choice": …}: split by load_job
        return found
    return value


def _json_file(path: Path, source: Source, what: str) -> Any:
    """The JSON a ``schema`` or ``tools`` file holds, read now."""
    path = path if path.is_absolute() else source.base_dir / path
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        msg = f"{source.origin}: {what} file {path} does not exist: check the path"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{source.origin}: cannot read {what} file {path}: {exc}"
        raise ConfigError(msg) from None
    except json.JSONDecodeError as exc:
        msg = (
            f"{what} file {path} is not JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}. Fix the file"
        )
        raise ConfigError(msg) from None


def _config_error(
    exc: ValidationError, origin: Mapping[str, Source], written: Mapping[str, str]
) -> ConfigError:
    """pydantic's first complaint, as a sentence naming where the value came from,
    the key (as the user wrote it), the value, what was expected and the fix."""
    error = exc.errors(include_url=False)[0]
    is_name = bool(error["loc"]) and error["loc"][-1] == "[key]"
    key = _flat_key(tuple(p for p in error["loc"] if p != "[key]"))
    head, dot, rest = key.partition(".")
    source = origin.get(key) or origin.get(head)
    key = written.get(head, head) + dot + rest  # as the user wrote it
    where = source.origin if source is not None else "job settings"
    spelled = source.spelled(key) if source is not None else key
    value = error.get("input")
    shown = _shown(value)
    reason = str(error["msg"])
    reason = reason[0].lower() + reason[1:]
    if error["type"] == "missing":
        return ConfigError(
            f"no {spelled} given: set --{key.replace('_', '-')} on the command line "
            f'or `{key} = "…"` in the job spec'
        )
    if error["type"] == "extra_forbidden":
        return ConfigError(f"{where}: {spelled} is not a setting it knows. Remove it")
    if is_name:  # a table's key, such as a column role under [columns]
        return ConfigError(
            f"{where}: {spelled} names {str(value)!r}, which is not allowed there: "
            f"{reason}. Fix {key} in {where}"
        )
    fix = (
        f"Fix the option {spelled}"
        if source is not None and source.option_names
        else f"Fix {key} in {where}"
    )
    return ConfigError(f"{where}: {spelled} = {shown}: {reason}. {fix}")


def _shown(value: Any) -> str:
    """A value as the user wrote it (TOML's words), not as Python prints it."""
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, Path):
        shown = repr(str(value))
    elif isinstance(value, dt.date | dt.time):
        shown = value.isoformat()
    else:
        shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…"


def _flat_key(loc: tuple[int | str, ...]) -> str:
    """("pacing", "concurrency") → "concurrency"; ("asking", "parameters",
    "temperature") → "parameters.temperature"."""
    parts = [str(part) for part in loc[1:]] or [str(part) for part in loc]
    if parts and parts[0] == "answer_schema":
        parts[0] = "schema"
    return ".".join(parts)
