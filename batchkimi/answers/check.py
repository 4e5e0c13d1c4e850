"""Check one answer against the job's schema: a valid value, or why it is invalid.

Validation is jsonschema-rs's (every draft from 4 to 2020-12; see the README for why
this library). Two things happen before it, and only these: the answer's JSON is found
(a tool call's arguments, or the content, where a fenced block is fine), and with
``label_case = "insensitive"`` a label that differs from one allowed value only in case
or surrounding whitespace is replaced by that value. An integer written as ``3.0``
becomes ``3``, so its column can be an integer one. Pure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from batchkimi import jsoncodec
from batchkimi.answers.schema import TOOL_NAME, AnswerSpec, resolve_ref
from batchkimi.records import Completion, ToolCall

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_MESSAGES_SHOWN = 3  # validator messages kept for the model and the row


@dataclass(frozen=True, slots=True)
class Valid:
    value: Any
    json: str  # the value as compact JSON: results' answer_json


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why an answer is not the declared one. ``cause`` names the first problem:
    a JSON Schema keyword (enum, required, type, …), or json (no JSON found), text
    (text instead of the tool call) or empty (no answer at all)."""

    cause: str
    message: str


class AnswerChecker:
    """Validates answers against one AnswerSpec (the validator is built once)."""

    def __init__(self, spec: AnswerSpec) -> None:
        self.spec = spec
        self._schema = dict(spec.schema)
        self._validator = jsonschema_rs.validator_for(self._schema)

    def check(self, completion: Completion) -> Valid | Invalid:
        found = self.answer_text(completion)
        if isinstance(found, Invalid):
            return found
        return self.check_text(found, from_tool=self.spec.mode == "tool")

    def answer_text(self, completion: Completion) -> str | Invalid:
        """The text the answer is read from, per mode."""
        if self.spec.mode == "prompt":
            if not completion.content.strip():
                return Invalid("empty", "the answer is empty: no JSON was given")
            return completion.content
        call = answer_call(completion.tool_calls)
        if call is not None:
            return call.arguments
        if completion.tool_calls:
            names = ", ".join(sorted({c.name for c in completion.tool_calls}))
            return Invalid(
                "text",
                f"the model called {names} instead of the function {TOOL_NAME}",
            )
        if completion.content.strip():
            return Invalid(
                "text",
                f"the model answered in text instead of calling the function "
                f"{TOOL_NAME}",
            )
        return Invalid("empty", f"the model neither answered nor called {TOOL_NAME}")

    def check_text(self, text: str, *, from_tool: bool) -> Valid | Invalid:
        value = _parse_json(text, strict=from_tool)
        if isinstance(value, Invalid):
            return value
        if (unfit := _unfit_number(value)) is not None:
            return unfit
        value = conform(
            value, self._schema, self._schema, self.spec.label_case == "insensitive"
        )
        errors = list(self._validator.iter_errors(value))
        if not errors:
            return Valid(value, jsoncodec.dumps(value).decode())
        messages = [_describe(error) for error in errors[:_MESSAGES_SHOWN]]
        more = len(errors) - len(messages)
        if more > 0:
            messages.append(f"and {more} more")
        return Invalid(_cause(errors[0]), "; ".join(messages))


def answer_call(calls: tuple[ToolCall, ...]) -> ToolCall | None:
    """The call of the answer function, if the model made one."""
    return next((call for call in calls if call.name == TOOL_NAME), None)


def _parse_json(text: str, *, strict: bool) -> Any:
    """The JSON in ``text``. Tool arguments must be JSON; content may wrap it in a
    fenced block, or in a sentence around one object."""
    stripped = text.strip()
    try:
        return _exact(stripped)
    except ValueError as exc:
        if strict:
            return Invalid("json", f"the arguments are not valid JSON ({exc})")
    candidates = [block.strip() for block in _FENCE.findall(stripped)]
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    for candidate in candidates:
        try:
            return _exact(candidate)
        except ValueError:
            continue
    return Invalid("json", "the answer holds no valid JSON")


def _exact(text: str) -> Any:
    """JSON with integers kept whole (a fast parser would turn a 30-digit one into
    an approximate float) and non-finite numbers (``1e400``, ``NaN``) kept as such
    for ``_unfit_number`` to refuse."""
    return json.loads(text)


_INT64 = (-(2**63), 2**63 - 1)


def _unfit_number(value: Any, path: str = "") -> Invalid | None:
    """A number no column can hold as the model wrote it, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        where = f"at {path}: " if path else ""
        return Invalid("range", f"{where}{value} does not fit a 64-bit integer")
    if isinstance(value, float) and not math.isfinite(value):
        where = f"at {path}: " if path else ""
        return Invalid("range", f"{where}{value} is not a finite number")
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _unfit_number(item, f"{path}/{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _describe(error: jsonschema_rs.ValidationError) -> str:
    path = "/".join(str(part) for part in error.instance_path)
    return f"at {path}: {error.message}" if path else error.message


def _cause(error: jsonschema_rs.ValidationError) -> str:
    """The JSON Schema keyword that failed (enum, required, type, …)."""
    if error.schema_path:
        return str(error.schema_path[-1]).lower()
    return type(error.kind).__name__.lower()


def conform(value: Any, schema: Any, root: Mapping[str, Any], fold_case: bool) -> Any:
    """``value`` with labels folded (when asked) and whole floats made integers where
    the schema wants integers; everything else as it is."""
    schema = resolve_ref(schema, root)
    if not isinstance(schema, Mapping):
        return value
    if fold_case and isinstance(value, str):
        value = _fold_label(value, schema)
    if isinstance(value, float) and value.is_integer() and _wants_integer(schema):
        value = int(value)
    for branch_key in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(branch_key) or ():
            value = conform(value, branch, root, fold_case)
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if isinstance(properties, Mapping) or isinstance(extra, Mapping):
            props = properties if isinstance(properties, Mapping) else {}
            value = {
                key: conform(item, props.get(key, extra), root, fold_case)
                for key, item in value.items()
            }
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        value = [conform(item, schema["items"], root, fold_case) for item in value]
    return value


def _fold_label(value: str, schema: Mapping[str, Any]) -> str:
    allowed = schema.get("enum")
    if "const" in schema:
        allowed = [schema["const"]]
    if not isinstance(allowed, list) or value in allowed:
        return value
    folded = value.strip().casefold()
    matches = [
        item for item in allowed if isinstance(item, str) and item.casefold() == folded
    ]
    return matches[0] if len(matches) == 1 else value


def _wants_integer(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind)
