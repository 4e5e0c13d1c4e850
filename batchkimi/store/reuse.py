"""Blocks of the last ``results.parquet`` a new build copies instead of assembling.

A results block is a function of its register rows, the answer record each row is
given, and a few settings (batchkimi's version, the API, a structured job's answer
schema, the register's columns, the block size). A build records a key per block:
a digest of its register rows' values (two 64-bit hashes a row, taken as the row is
registered) and of each row's answer by where it is for good (stream, generation,
position: journal files only grow, and compaction keeps positions). The next
build, finding a block with the same key in the same place of a results file it
wrote (same size, time and inode), copies that block: a nightly resume that adds a
few rows to a million reads the answers of the new rows only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from batchkimi.store.files import AnswerFile, file_facts
from batchkimi.store.outputs import replace_text
from batchkimi.store.rows import ROW_HASHES, RegisterFiles
from batchkimi.version import __version__

_NONE = 0xFFFF_FFFF  # generation and position of a row without an answer
_READ_BLOCKS = 8  # register blocks hashed at a time


@dataclass(frozen=True, slots=True)
class BlockKeys:
    """What a results file was built from: its settings' digest and a key a block."""

    settings: str
    keys: list[str]


def block_keys(
    register: RegisterFiles,
    placed: pl.DataFrame,
    files: Sequence[AnswerFile],
    block_rows: int,
    settings: Mapping[str, Any],
) -> BlockKeys:
    """The keys of the blocks a build of ``register`` with the answers ``placed``
    (``_r`` → ``_f``, ``_p`` in ``files``) makes."""
    rows = register.scan()
    names = rows.collect_schema()
    where = pl.DataFrame(
        {
            "_f": pl.Series(range(len(files)), dtype=pl.UInt32),
            "s": pl.Series([_number(f.stream) for f in files], dtype=pl.UInt64),
            "g": pl.Series([f.generation for f in files], dtype=pl.UInt32),
        }
    )
    answers = (
        placed.join(where, on="_f", how="left").select("_r", "s", "g", "_p").sort("_r")
    )
    first_hash, second_hash = ROW_HASHES  # the rows' values, hashed as registered
    hashes = [pl.col(first_hash).alias("a"), pl.col(second_hash).alias("b")]
    total = register.row_count()
    step = _READ_BLOCKS * block_rows  # the register is never in memory whole
    keys = []
    for first in range(0, max(total, 1), step):
        hashed = rows.slice(first, step).select(hashes).collect()
        bounds = pl.Series([first, first + hashed.height], dtype=pl.UInt32)
        low, high = answers["_r"].search_sorted(bounds).to_list()
        every = (
            hashed.with_row_index("_r", offset=first)
            .join(
                answers.slice(low, high - low),
                on="_r",
                how="left",
                maintain_order="left",
            )
            .select(
                "a",
                "b",
                pl.col("s").fill_null(_NONE),
                pl.col("g").fill_null(_NONE),
                pl.col("_p").fill_null(_NONE),
            )
        )
        for start in range(0, max(every.height, 1), block_rows):
            digest = hashlib.sha256()
            for column in every.slice(start, block_rows).iter_columns():
                digest.update(column.to_numpy().tobytes())
            keys.append(digest.hexdigest())
    text = json.dumps(
        {
            "batchkimi": __version__,
            "register": [[n, str(t)] for n, t in names.items()],
            "block_rows": block_rows,
            **settings,
        },
        sort_keys=True,
        default=str,
    )
    return BlockKeys(hashlib.sha256(text.encode()).hexdigest(), keys)


def _number(stream: str) -> int:
    """A stream's name as 64 bits (a handful of names: they never collide)."""
    return int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "big")


def record_path(rows_path: Path) -> Path:
    """Where the keys of the results built from ``rows_path`` are kept."""
    return rows_path.with_name(f"{rows_path.stem}.results-blocks.json")


def reusable(results: Path, rows_path: Path, wanted: BlockKeys) -> set[int]:
    """The blocks of ``results`` (as the last build from ``rows_path`` left it)
    that equal the ones ``wanted`` describes."""
    try:
        kept = json.loads(record_path(rows_path).read_text("utf-8"))
        stamp = file_facts(results)
        if stamp is None or kept["stamp"] != list(stamp):
            return set()
        if kept["settings"] != wanted.settings:
            return set()
        groups = pq.read_metadata(results).num_row_groups
        old = kept["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if groups != len(old):  # one row group a block, as this module's builds write
        return set()
    return {
        block
        for block, key in enumerate(wanted.keys)
        if block < len(old) and old[block] == key
    }


def remember(results: Path, rows_path: Path, keys: BlockKeys) -> None:
    """Record ``keys`` for the results file now at ``results``."""
    record = {
        "stamp": list(file_facts(results) or ()),
        "settings": keys.settings,
        "keys": keys.keys,
    }
    replace_text(record_path(rows_path), json.dumps(record))


def forget(rows_path: Path) -> None:
    """No block of the results file may be copied (it is being replaced)."""
    record_path(rows_path).unlink(missing_ok=True)
