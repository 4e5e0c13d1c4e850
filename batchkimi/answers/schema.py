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
from collections.abc import Iterator, Mapping, Sequence
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


def labels_schema(labels: Sequence[str], *, folded: bool = False) -> dict[str, Any]:
    """``--labels a,b,c``: the answer is exactly one of them, as ``label``."""
    return _object(
        {"label": {"type": "string", "enum": _unique(labels, folded=folded)}}
    )


def multi_labels_schema(
    labels: Sequence[str], *, folded: bool = False
) -> dict[str, Any]:
    """``--multi-labels a,b,c``: the answer is a set of them, as ``labels``."""
    items = {"type": "string", "enum": _unique(labels, folded=folded)}
    return _object({"labels": {"type": "array", "items": items, "uniqueItems": True}})


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _unique(labels: Sequence[str], *, folded: bool = False) -> list[str]:
    cleaned = [label.strip() for label in labels]
    if not cleaned or any(not label for label in cleaned):
        msg = (
            "labels must be a non-empty list of non-empty names, e.g. --labels "
            "positive,negative,mixed"
        )
        raise ConfigError(msg)
    keys = [label.casefold() if folded else label for label in cleaned]
    duplicates = sorted(
        {c for c, k in zip(cleaned, keys, strict=True) if keys.count(k) > 1}
    )
    if duplicates:
        how = (
            " (the same once case is folded: --label-case insensitive)"
            if folded
            else ""
        )
        msg = f"labels name {', '.join(map(repr, duplicates))} more than once{how}"
        raise ConfigError(msg)
    return cleaned


_ROOT_ONLY = ("$defs", "definitions", "$schema", "$id")


def as_object_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema as an object with properties, and whether it had to be wrapped.
    A top-level ``$ref`` to a local object schema stands for that schema."""
    target = resolve_ref(schema, schema)
    if target.get("type") == "object" and isinstance(target.get("properties"), dict):
        if target is schema:
            return dict(schema), False
        definitions = {k: v for k, v in schema.items() if k in _ROOT_ONLY}
        return {**definitions, **target}, False
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {
            WRAPPED_PROPERTY: {k: v for k, v in schema.items() if k not in _ROOT_ONLY}
        },
        "required": [WRAPPED_PROPERTY],
        "additionalProperties": False,
    }
    definitions = {k: v for k, v in schema.items() if k in ("$defs", "definitions")}
    wrapped.update(definitions)  # local $refs keep resolving from the root
    return wrapped, True


#: the JSON Schema drafts a schema may name in ``$schema`` (nothing is fetched)
_DRAFTS = (
    "json-schema.org/draft-04/schema",
    "json-schema.org/draft-06/schema",
    "json-schema.org/draft-07/schema",
    "json-schema.org/draft/2019-09/schema",
    "json-schema.org/draft/2020-12/schema",
)
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
_BOUNDS = (
    ("minimum", "maximum"),
    ("exclusiveMinimum", "maximum"),
    ("minimum", "exclusiveMaximum"),
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
)


def check_schema(schema: Any, origin: str) -> None:
    """Refuse what is not a usable JSON Schema, naming where it came from: not a
    schema, a reference to anything outside the schema itself (it would be fetched
    over the network or read from disk), or a rule no answer can satisfy."""
    if not isinstance(schema, Mapping):
        msg = (
            f"{origin}: the answer schema must be a JSON object (a JSON Schema), "
            f"not {type(schema).__name__}"
        )
        raise ConfigError(msg)
    if not schema:
        msg = f"{origin}: the answer schema is empty: it would accept any answer"
        raise ConfigError(msg)
    for path, node in _nodes(schema):
        _check_node(node, f"{origin}, at {path or '/'}")
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


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every subschema of ``node`` (objects only), with its JSON-pointer path."""
    if isinstance(node, Mapping):
        yield path, node
        for key, child in node.items():
            yield from _nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _nodes(child, f"{path}/{index}")


def _check_node(node: Mapping[str, Any], where: str) -> None:
    for key in _REFS:
        ref = node.get(key)
        if isinstance(ref, str) and not ref.startswith("#"):
            msg = (
                f"{where}: {key} {ref!r} points outside the schema; batchkimi fetches "
                "nothing. Put the definition under $defs and refer to it as "
                '"#/$defs/name"'
            )
            raise ConfigError(msg)
    declared = node.get("$schema")
    if isinstance(declared, str) and not declared.rstrip("#/").endswith(_DRAFTS):
        msg = (
            f"{where}: $schema {declared!r} is not a JSON Schema draft batchkimi knows"
        )
        raise ConfigError(msg)
    if isinstance(node.get("enum"), list) and not node["enum"]:
        msg = f"{where}: enum is empty: no answer can satisfy it"
        raise ConfigError(msg)
    for low, high in _BOUNDS:
        lo, hi = _number(node.get(low)), _number(node.get(high))
        if lo is None or hi is None:
            continue
        if lo > hi or (lo == hi and "exclusive" in low + high):
            msg = (
                f"{where}: {low} {lo:g} is above {high} {hi:g}: no answer satisfies it"
            )
            raise ConfigError(msg)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def resolve_ref(schema: Any, root: Mapping[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/$defs/x``); other refs are refused on reading."""
    seen = 0
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if not ref.startswith("#/") or seen > 32:
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        if target is None:
            return schema
        schema, seen = target, seen + 1
    return schema


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
        declared = labels_schema(labels, folded=label_case == "insensitive")
    else:
        declared = multi_labels_schema(
            multi_labels or (), folded=label_case == "insensitive"
        )
    object_schema, wrapped = as_object_schema(declared)
    return AnswerSpec(
        schema=object_schema,
        mode=mode or "tool",
        label_case=label_case or "exact",
        max_repairs=DEFAULT_MAX_REPAIRS if max_repairs is None else max_repairs,
        wrapped=wrapped,
    )
