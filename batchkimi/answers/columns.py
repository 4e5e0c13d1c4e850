"""Typed columns of ``results.parquet`` from the answer schema: one per top-level
property, so a reader gets labels, numbers and lists without casting.

string and enum → String, integer → Int64, number → Float64, boolean → Boolean, an
array → List of its items' type, an object with properties → Struct. A property whose
values may take several types (``anyOf`` of a string and an object, say) is a String
column holding each value's JSON text (a string value as itself). Every column is
nullable: it is null where the property is absent and on rows that are not ok.

The columns are decoded from ``answer_json`` by polars in one vectorised pass (no
Python per row), when the results are built. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from batchkimi.answers.schema import resolve_ref

_SCALARS: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
}
#: a column of JSON text: values of more than one type
JSON_TEXT = pl.String()
_MAX_DEPTH = 16


def column_types(schema: Mapping[str, Any]) -> dict[str, pl.DataType]:
    """Property name → the column's type, in the schema's order."""
    return {
        name: JSON_TEXT if dtype is None else dtype
        for name, dtype in _exact_types(schema).items()
    }


def _exact_types(schema: Mapping[str, Any]) -> dict[str, pl.DataType | None]:
    """Property name → its type, or None where its values are JSON text. A name
    ``required`` lists without declaring it is a column too (of JSON text)."""
    properties = schema.get("properties") or {}
    types = {
        name: _dtype(node, schema, 0)
        for name, node in properties.items()
        if isinstance(name, str)
    }
    for name in schema.get("required") or ():
        if isinstance(name, str):
            types.setdefault(name, None)
    return types


def _dtype(node: Any, root: Mapping[str, Any], depth: int) -> pl.DataType | None:
    """The type of a node's values, or None when they may be of several types."""
    node = resolve_ref(node, root)
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        return None
    if "const" in node or "enum" in node:
        values = [node["const"]] if "const" in node else list(node["enum"] or [])
        return _of_values(values)
    branches = [b for key in ("anyOf", "oneOf") for b in node.get(key) or ()]
    if branches:
        kinds = {
            _dtype(b, root, depth + 1)
            for b in branches
            if not _is_null(resolve_ref(b, root))
        }
        return kinds.pop() if len(kinds) == 1 else None
    kind = node.get("type")
    if isinstance(kind, list):
        named = [k for k in kind if k != "null"]
        if set(named) == {"integer", "number"}:
            return pl.Float64()
        kind = named[0] if len(named) == 1 else None
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array" or (kind is None and "items" in node):
        items = node.get("items")
        inner = _dtype(items, root, depth + 1) if items else None
        return pl.List(inner) if inner is not None else None
    if kind == "object" or (kind is None and "properties" in node):
        fields: dict[str, pl.DataType] = {}
        for name, child in (node.get("properties") or {}).items():
            dtype = _dtype(child, root, depth + 1)
            if dtype is None:
                return None
            fields[str(name)] = dtype
        return pl.Struct(fields) if fields else None
    return None


def _is_null(node: Any) -> bool:
    return isinstance(node, Mapping) and node.get("type") == "null"


def _of_values(values: list[Any]) -> pl.DataType | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if all(isinstance(v, str) for v in values):
        return pl.String()
    if all(isinstance(v, bool) for v in values):
        return pl.Boolean()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pl.Int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return pl.Float64()
    return None


def column_names(schema: Mapping[str, Any], taken: Iterable[str]) -> dict[str, str]:
    """Property → column name: the property's own, or ``answer_<name>`` where that
    clashes with a column the results already have (an input or output column)."""
    used = set(taken)
    names: dict[str, str] = {}
    for prop in column_types(schema):
        name = prop
        while name in used or name.startswith("_") or not name:
            name = f"answer_{name}"
        used.add(name)
        names[prop] = name
    return names


def answer_columns(
    schema: Mapping[str, Any], taken: Iterable[str], source: str = "answer_json"
) -> list[pl.Expr]:
    """Expressions that decode ``source`` into the typed columns, in schema order."""
    types = _exact_types(schema)
    names = column_names(schema, taken)
    struct = pl.Struct({p: t for p, t in types.items() if t is not None})
    decoded = pl.col(source).str.json_decode(struct) if struct.fields else None
    exprs: list[pl.Expr] = []
    for prop, dtype in types.items():
        if dtype is not None and decoded is not None:
            exprs.append(decoded.struct.field(prop).alias(names[prop]))
        else:  # values of several types: each one's JSON text
            path = "$['" + prop.replace("\\", "\\\\").replace("'", "\\'") + "']"
            exprs.append(pl.col(source).str.json_path_match(path).alias(names[prop]))
    return exprs
