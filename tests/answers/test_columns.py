"""Typed answer columns: each schema type lands as the Arrow type a reader expects,
and polars, DuckDB and pandas read it without casting (issue 11)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchkimi.answers.columns import answer_columns, column_names, column_types

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["a", "b"]},
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "where": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "room": {"type": "string"}},
        },
        "maybe": {"type": ["integer", "null"]},
        "level": {"enum": [1, 2, 3]},
        "either": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "ref": {"$ref": "#/$defs/choice"},
        "status": {"type": "string"},
    },
    "required": ["label"],
    "$defs": {"choice": {"type": "string", "enum": ["x", "y"]}},
}

ANSWERS = [
    '{"label":"a","count":3,"score":0.5,"flag":true,"tags":["t1","t2"],"sizes":[1,2],'
    '"where":{"x":1.5,"room":"hall"},"maybe":null,"level":2,"either":{"k":[1]},'
    '"ref":"x","status":"fine"}',
    '{"label":"b","count":-1,"score":2,"flag":false,"tags":[],"sizes":[],'
    '"where":{"x":0,"room":"attic"},"maybe":7,"level":3,"either":"plain","ref":"y"}',
    None,  # a row that is not ok: every typed column null
]

EXPECTED = {
    "label": pa.string(),
    "count": pa.int64(),
    "score": pa.float64(),
    "flag": pa.bool_(),
    "tags": pa.list_(pa.string()),
    "sizes": pa.list_(pa.int64()),
    "where": pa.struct([("x", pa.float64()), ("room", pa.string())]),
    "maybe": pa.int64(),
    "level": pa.int64(),
    "either": pa.string(),
    "ref": pa.string(),
    "answer_status": pa.string(),  # "status" clashes with an output column
}


def write(tmp_path: Path) -> Path:
    frame = pl.DataFrame({"answer_json": ANSWERS}, schema={"answer_json": pl.String})
    typed = frame.select(answer_columns(SCHEMA, taken=["answer_json", "status"]))
    path = tmp_path / "results.parquet"
    typed.write_parquet(path)
    return path


def plain(kind: pa.DataType) -> pa.DataType:
    """polars writes strings and lists in their large Arrow forms: the same values."""
    if pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_large_list(kind) or pa.types.is_list(kind):
        return pa.list_(plain(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([(f.name, plain(f.type)) for f in kind])
    return kind


def test_each_schema_type_is_written_as_its_arrow_type(tmp_path: Path) -> None:
    schema = pq.read_schema(write(tmp_path))
    assert {field.name: plain(field.type) for field in schema} == EXPECTED
    assert all(field.nullable for field in schema)
    assert list(column_types(SCHEMA)) == list(SCHEMA["properties"])


def test_values_read_back_as_they_were_answered(tmp_path: Path) -> None:
    frame = pl.read_parquet(write(tmp_path))
    first, second, missing = frame.to_dicts()
    assert first["tags"] == ["t1", "t2"]
    assert first["where"] == {"x": 1.5, "room": "hall"}
    assert first["maybe"] is None
    assert first["either"] == '{"k":[1]}'  # several types: the value's JSON text
    assert second["either"] == "plain"
    assert second["score"] == 2.0
    assert second["answer_status"] is None  # absent from the answer: null
    assert all(value is None for value in missing.values())


def test_duckdb_and_pandas_read_the_types_without_casting(tmp_path: Path) -> None:
    path = write(tmp_path)
    con = duckdb.connect()
    described = con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]
    ).fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert types["count"] == "BIGINT"
    assert types["score"] == "DOUBLE"
    assert types["flag"] == "BOOLEAN"
    assert types["tags"] == "VARCHAR[]"
    assert types["where"] == "STRUCT(x DOUBLE, room VARCHAR)"
    total = con.execute(
        "SELECT sum(count) FROM read_parquet(?)", [str(path)]
    ).fetchall()
    assert total == [(2,)]
    frame = pd.read_parquet(path)
    assert str(frame["score"].dtype) == "float64"
    assert str(frame["flag"].dtype) in ("bool", "object", "boolean")
    assert frame["where"][0] == {"x": 1.5, "room": "hall"}
    assert list(frame["tags"][0]) == ["t1", "t2"]


def test_a_property_named_like_an_input_or_output_column_is_prefixed() -> None:
    schema = {"type": "object", "properties": {"id": {}, "review": {}, "mood": {}}}
    names = column_names(schema, taken=["id", "review", "status"])
    assert names == {"id": "answer_id", "review": "answer_review", "mood": "mood"}
