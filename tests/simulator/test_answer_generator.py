"""The simulator's schema-driven answers: valid by a real validator for every keyword
it claims, varied across requests, and broken exactly as asked when asked."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from batchkimi.simulator.answers import (
    INVALID_KINDS,
    SchemaError,
    break_value,
    generate,
)

LABEL = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "label": LABEL,
    "scalars": {
        "type": "object",
        "properties": {
            "maybe": {"type": ["string", "null"]},
            "between": {
                "type": "integer",
                "exclusiveMinimum": 3,
                "exclusiveMaximum": 5,
            },
            "picks": {
                "type": "array",
                "items": {"enum": ["x", "y", "z"]},
                "minItems": 2,
                "maxItems": 3,
                "uniqueItems": True,
            },
            "fixed": {"const": 7},
            "word": {"type": "string", "minLength": 5, "maxLength": 6},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
            "step": {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 2},
            "when": {"type": "string", "format": "date"},
        },
        "required": [
            "maybe",
            "between",
            "picks",
            "fixed",
            "word",
            "flag",
            "nothing",
            "step",
        ],
    },
    "refs": {
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                },
                "required": ["name", "qty"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/Item"},
                "minItems": 1,
            },
            "kind": {"anyOf": [{"enum": ["a", "b"]}, {"type": "integer"}]},
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {
                            "x": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "exclusiveMaximum": 0.5,
                            }
                        },
                        "required": ["x"],
                        "additionalProperties": False,
                    },
                    {"type": "boolean"},
                ]
            },
        },
        "required": ["items", "kind", "shape"],
    },
    "recursive": {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["value", "next"],
            }
        },
        "$ref": "#/$defs/Node",
    },
    "all_of": {
        "allOf": [
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
            },
            {
                "properties": {"b": {"type": "integer", "multipleOf": 5}},
                "required": ["b"],
            },
        ]
    },
    "bare_enum": {"type": "string", "enum": ["positive", "negative"]},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_generated_values_satisfy_their_schema(name: str) -> None:
    schema = SCHEMAS[name]
    validator = jsonschema.Draft202012Validator(schema)
    for seed in range(200):
        value = generate(schema, random.Random(seed))
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (seed, value, errors)


def test_answers_vary_over_enum_values_types_and_optional_properties() -> None:
    labels = {generate(LABEL, random.Random(s))["label"] for s in range(40)}
    assert labels == {"positive", "negative", "neutral"}
    maybe = SCHEMAS["scalars"]["properties"]["maybe"]
    types = {type(generate(maybe, random.Random(s))) for s in range(40)}
    assert types == {str, type(None)}
    optional = {"type": "object", "properties": {"a": {"type": "integer"}}}
    shapes = {tuple(generate(optional, random.Random(s))) for s in range(40)}
    assert shapes == {(), ("a",)}


@pytest.mark.parametrize("name", ["label", "scalars", "refs", "all_of", "bare_enum"])
@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_broken_values_fail_validation_in_the_kind_asked(name: str, kind: str) -> None:
    schema = SCHEMAS[name]
    validator = jsonschema.Draft202012Validator(schema)
    for seed in range(60):
        _, text, applied = break_value(schema, random.Random(seed), kind)
        if applied == "json":
            with pytest.raises(ValueError):
                json.loads(text)
            continue
        errors = list(validator.iter_errors(json.loads(text)))
        assert errors, (seed, kind, text)
        expected = {
            "enum": {"enum", "const"},
            "missing": {"required"},
            "type": {"type"},
        }
        # under anyOf/oneOf a validator reports the union, not the branch
        assert errors[0].validator in expected[applied] | {"anyOf", "oneOf"}


def test_each_kind_breaks_the_label_schema_as_a_model_would() -> None:
    rng = random.Random(3)
    _, enum_text, _ = break_value(LABEL, rng, "enum")
    label = json.loads(enum_text)["label"]
    assert label.rstrip(".!").lower() in {"positive", "negative", "neutral"}
    assert label not in {"positive", "negative", "neutral"}
    _, missing_text, _ = break_value(LABEL, random.Random(3), "missing")
    assert len(json.loads(missing_text)) == 1
    _, type_text, applied = break_value(LABEL, random.Random(3), "type")
    value = json.loads(type_text)
    assert applied == "type" and any(isinstance(v, str) for v in value.values())
    assert isinstance(value["label"], list) or isinstance(value["confidence"], str)


def test_a_kind_with_no_place_falls_back_to_one_that_has() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    _, text, applied = break_value(schema, random.Random(0), "enum")
    assert applied == "type" and isinstance(json.loads(text)["n"], str)
    anything: dict[str, Any] = {"properties": {"n": {}}}  # no enum, type, required
    _, text, applied = break_value(anything, random.Random(0), "missing")
    assert applied == "json" and text.startswith("{")


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/Missing"},
        {"$ref": "https://example.com/schema.json"},
        {"type": "string", "enum": []},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"type": "array", "items": {"enum": ["a"]}, "minItems": 2, "uniqueItems": True},
    ],
)
def test_unsatisfiable_schemas_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        generate(schema, random.Random(0))
