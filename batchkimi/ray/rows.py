"""Rows on their way to the workers and results on their way back, as Arrow tables.

A request travels pickled (the driver built it with the runner's own builder, and
its workers unpickle it with the same code, which Ray ships them); a result travels
as readable columns, the journal's (``retries`` and ``repair_causes`` as JSON text),
so the dataset ``batchkimi.ray.process`` returns is a table anyone can use.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

import pyarrow as pa

from batchkimi.records import RowRequest, RowResult, RowStatus

REQUEST = "_request"
_FIELDS = dataclasses.fields(RowResult)
_COUNTS = ("retries", "repair_causes")  # cause -> count, as JSON text
_ARROW = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
#: a result's columns: the row's id, then every RowResult field, then ``sent``
#: (the request went out from this run: False for an answer read from the journal)
RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        *(
            (f.name, _ARROW.get(str(f.type).split(" ")[0], pa.string()))
            for f in _FIELDS
        ),
        ("sent", pa.bool_()),
    ]
)
_NAMES = tuple(f.name for f in _FIELDS)


def requests_table(requests: list[RowRequest]) -> pa.Table:
    """Requests for the workers: id, fingerprint, and the request itself."""
    return pa.table(
        {
            "id": [r.row_id for r in requests],
            "fingerprint": [r.fingerprint for r in requests],
            REQUEST: [
                pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in requests
            ],
        },
        schema=pa.schema(
            [("id", pa.string()), ("fingerprint", pa.string()), (REQUEST, pa.binary())]
        ),
    )


def requests_of(table: pa.Table) -> list[RowRequest]:
    # S301: these bytes were written by this run's driver (requests_table), for its
    # own workers, through the cluster's object store: nothing from outside
    return [pickle.loads(raw) for raw in table.column(REQUEST).to_pylist()]  # noqa: S301


def results_table(rows: list[tuple[str, RowResult, bool]]) -> pa.Table:
    """(row id, result, sent) as the result columns."""
    columns: dict[str, list[Any]] = {name: [] for name in RESULT_SCHEMA.names}
    for row_id, result, sent in rows:
        columns["id"].append(row_id)
        columns["sent"].append(sent)
        for name in _NAMES:
            value = getattr(result, name)
            if name in _COUNTS:
                value = json.dumps(value, sort_keys=True) if value else None
            elif name == "status":
                value = str(value)
            columns[name].append(value)
    return pa.table(columns, schema=RESULT_SCHEMA)


def results_of(table: pa.Table) -> list[tuple[str, RowResult, bool]]:
    """The rows of ``results_table``, back as (row id, result, sent)."""
    found = []
    for record in table.to_pylist():
        values = {name: record[name] for name in _NAMES if record[name] is not None}
        for name in _COUNTS:
            values[name] = json.loads(values[name]) if name in values else {}
        values["status"] = RowStatus(values["status"])
        found.append((record["id"], RowResult(**values), bool(record["sent"])))
    return found
