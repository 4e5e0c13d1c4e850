"""Read a manifest (CSV, Parquet, JSONL) lazily, in bounded batches, with polars.

A million-row manifest never exists as Python objects at once: polars' streaming engine
hands out ``batch_rows`` rows at a time. CSV is read with every column as text, so a
row's key does not depend on what polars would guess a column's type to be.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batchkimi.errors import ManifestError

_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def manifest_format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        msg = (
            f"cannot tell the format from the file name ({path.suffix or 'no suffix'})"
        )
        raise ManifestError(
            msg,
            path=str(path),
            fix="Name the file .csv, .tsv, .parquet or .jsonl (JSON Lines)",
        )
    return fmt


def _scan(path: Path, fmt: str) -> pl.LazyFrame:
    if fmt == "csv":
        return pl.scan_csv(path, infer_schema=False)
    if fmt == "tsv":
        return pl.scan_csv(path, separator="\t", infer_schema=False)
    if fmt == "parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path, infer_schema_length=10_000)


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    format: str
    schema: pl.Schema

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names())

    def iter_batches(self, batch_rows: int) -> Iterator[pl.DataFrame]:
        """Yield the rows in file order, ``batch_rows`` at a time."""
        try:
            for batch in _scan(self.path, self.format).collect_batches(
                chunk_size=batch_rows
            ):
                if batch.height:
                    yield batch
        except pl.exceptions.PolarsError as exc:
            raise ManifestError(
                f"cannot be read as {self.format}: {_first_line(exc)}",
                path=str(self.path),
                fix="Check the file is complete and in the format its name says",
            ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_manifest(path: Path) -> Manifest:
    """Open a manifest and read its columns (not its rows)."""
    fmt = manifest_format(path)
    if not path.is_file():
        raise ManifestError(
            "no such file" if not path.exists() else "not a file",
            path=str(path),
            fix="Check --input (paths in a job spec are relative to the spec's folder)",
        )
    try:
        schema = _scan(path, fmt).collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ManifestError(
            f"cannot be read as {fmt}: {_first_line(exc)}",
            path=str(path),
            fix="Check the file is complete and in the format its name says",
        ) from exc
    if not schema:
        raise ManifestError(
            "has no columns",
            path=str(path),
            fix="A manifest needs a header row (CSV) or named fields (JSONL, Parquet)",
        )
    return Manifest(path=path, format=fmt, schema=schema)


def count_rows(manifest: Manifest) -> int | None:
    """The number of data rows, counted by polars without materialising them."""
    try:
        counted = _scan(manifest.path, manifest.format).select(pl.len()).collect()
    except pl.exceptions.PolarsError:
        return None
    return int(counted.item())
