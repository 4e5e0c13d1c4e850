"""The declared answer: a JSON Schema, how it is asked for, and how strictly it is read.

Kimi on Model Studio offers no structured output (``response_format``; FACTS §6.5), so
batchkimi asks through a tool whose ``parameters`` is the schema, or states the schema
in the system message, and checks the answer itself. Everything here is pure: a schema
comes in as a value (the job spec reads files), an ``AnswerSpec`` goes out.

A function's parameters must be an object (FACTS §6.5), and a typed column is made of
each top-level property, so a schema that is not an object (``{"enum": [...]}``) is
wrapped as the one property ``answer`` of an object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from batchkimi import jsoncodec
from batchkimi.errors import ConfigError
from batchkimi.records import Tool

#: how a structured answer is asked for
MODES = ("tool", "prompt")
#: how labels (string enums) are matched: exactly, or folding case and the
#: whitespace around them
LABEL_CASES = ("exact", "insensitive")
TOOL_NAME = "answer"
WRAPPED_PROPERTY = "answer"
DEFAULT_MAX_REPAIRS = 2
_TOOL_DESCRIPTION = (
    "Give your answer by calling this function exactly once: its arguments are the "
    "answer, and they must follow its parameters schema."
)


def labels_schema(labels: Sequence[str]) -> dict[str, Any]:
    """``--labels a,b,c``: the answer is exactly one of them, as ``label``."""
    return _object({"label": {"type": "string", "enum": _unique(labels)}})


def multi_labels_schema(labels: Sequence[str]) -> dict[str, Any]:
    """``--multi-labels a,b,c``: the answer is a set of them, as ``labels``."""
    items = {"type": "string", "enum": _unique(labels)}
    return _object({"labels": {"type": "array", "items": items, "uniqueItems": True}})


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _unique(labels: Sequence[str]) -> list[str]:
    cleaned = [label.strip() for label in labels]
    if not cleaned or any(not label for label in cleaned):
        msg = (
            "labels must be a non-empty list of non-empty names, e.g. --labels "
            "positive,negative,mixed"
        )
        raise ConfigError(msg)
    duplicates = sorted({label for label in cleaned if cleaned.count(label) > 1})
    if duplicates:
        msg = f"labels name {', '.join(map(repr, duplicates))} more than once"
        raise ConfigError(msg)
    return cleaned


def as_object_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema as an object with properties, and whether it had to be wrapped."""
    if schema.get("type") == "object" and isinstance(schema.get("properties"), dict):
        return dict(schema), False
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {
            WRAPPED_PROPERTY: {k: v for k, v in schema.items() if k[0] != "$"}
        },
        "required": [WRAPPED_PROPERTY],
        "additionalProperties": False,
    }
    definitions = {k: v for k, v in schema.items() if k in ("$defs", "definitions")}
    wrapped.update(definitions)  # local $refs keep resolving from the root
    return wrapped, True


def check_schema(schema: Any, origin: str) -> None:
    """Refuse what is not a usable JSON Schema, naming where it came from."""
    if not isinstance(schema, Mapping):
        msg = (
            f"{origin}: the answer schema must be a JSON object (a JSON Schema), "
            f"not {type(schema).__name__}"
        )
        raise ConfigError(msg)
    try:
        jsonschema_rs.meta.validate(dict(schema))
        jsonschema_rs.validator_for(dict(schema))
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        first = str(exc).splitlines()[0]
        msg = f"{origin}: not a valid JSON Schema: {first}. Fix the schema"
        raise ConfigError(msg) from None
    except ValueError as exc:  # an unsupported draft, a bad regex pattern
        msg = f"{origin}: not a usable JSON Schema: {exc}. Fix the schema"
        raise ConfigError(msg) from None
    if not schema:
        msg = f"{origin}: the answer schema is empty: it would accept any answer"
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class AnswerSpec:
    """What a structured job asks for. Build with ``answer_spec``."""

    schema: Mapping[str, Any]  # an object schema (wrapped when it was not)
    mode: str = "tool"
    label_case: str = "exact"
    max_repairs: int = DEFAULT_MAX_REPAIRS
    wrapped: bool = False  # the declared schema was wrapped as property "answer"

    @property
    def tool(self) -> Tool:
        return Tool(TOOL_NAME, _TOOL_DESCRIPTION, self.schema)

    def schema_text(self, *, indent: bool = False) -> str:
        if indent:  # for people (and the model): the order the user wrote
            return json.dumps(self.schema, indent=2, ensure_ascii=False)
        return jsoncodec.dumps(self.schema, sort_keys=True).decode()

    @property
    def fingerprint_part(self) -> str:
        """What changes the request: the schema, the mode and the label matching
        (not ``max_repairs``: more repairs do not make an ok answer stale)."""
        return f"{self.mode}|{self.label_case}|{self.schema_text()}"

    def prompt_instruction(self) -> str:
        """The system-message text of ``--structured prompt``: the schema in a fenced
        ``json`` block, which the model is asked to answer with."""
        return (
            "Answer with one JSON object and nothing else. It must be valid against "
            "this JSON Schema:\n```json\n" + self.schema_text(indent=True) + "\n```"
        )


def answer_spec(
    *,
    schema: Mapping[str, Any] | None,
    labels: Sequence[str] | None,
    multi_labels: Sequence[str] | None,
    mode: str | None,
    label_case: str | None,
    max_repairs: int | None,
    origin: str = "schema",
) -> AnswerSpec | None:
    """The AnswerSpec the job's settings describe, or None for a free-text job."""
    given = [
        name
        for name, value in (
            ("schema", schema),
            ("labels", labels),
            ("multi_labels", multi_labels),
        )
        if value is not None
    ]
    if len(given) > 1:
        msg = (
            f"{' and '.join(given)} are both given: declare the answer once, with "
            "schema, labels or multi_labels"
        )
        raise ConfigError(msg)
    if not given:
        if mode is not None or label_case is not None:
            setting = "structured" if mode is not None else "label_case"
            msg = (
                f"{setting} is set but no answer is declared: add --schema FILE, "
                "--labels a,b,c or --multi-labels a,b,c"
            )
            raise ConfigError(msg)
        return None
    if mode is not None and mode not in MODES:
        msg = f"structured = {mode!r}: use tool or prompt"
        raise ConfigError(msg)
    if label_case is not None and label_case not in LABEL_CASES:
        msg = f"label_case = {label_case!r}: use exact or insensitive"
        raise ConfigError(msg)
    if schema is not None:
        check_schema(schema, origin)
        declared: Mapping[str, Any] = schema
    elif labels is not None:
        declared = labels_schema(labels)
    else:
        declared = multi_labels_schema(multi_labels or ())
    object_schema, wrapped = as_object_schema(declared)
    return AnswerSpec(
        schema=object_schema,
        mode=mode or "tool",
        label_case=label_case or "exact",
        max_repairs=DEFAULT_MAX_REPAIRS if max_repairs is None else max_repairs,
        wrapped=wrapped,
    )
