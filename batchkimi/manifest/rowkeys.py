"""Content keys of manifest rows, for a whole batch in one polars call.

A row's key is two 64-bit hashes of all its values (128 bits, so two different rows
sharing a key is not a risk worth a thought at any manifest size). With the digest of
what else shapes a request (``rowsource.cache_digest``), equal keys mean the row builds
into the same request as last run, so the fingerprint the last run computed stands:
a resume reads a million answered rows without building a million requests (issue 14).
Polars promises its hashes are stable only within one version, so that version is
part of the digest.
"""

from __future__ import annotations

import polars as pl

KEY_COLUMNS = ("_key_a", "_key_b")
_SEEDS = (0x6B696D69, 0x62617463)  # two independent hash states: 128 bits a row


def row_keys(batch: pl.DataFrame) -> pl.DataFrame:
    """``_key_a`` and ``_key_b`` (UInt64) for each row of ``batch``, in its order."""
    if batch.width == 0:
        zeros = pl.Series([0] * batch.height, dtype=pl.UInt64)
        return pl.DataFrame(dict.fromkeys(KEY_COLUMNS, zeros))
    row = pl.struct(pl.all())
    return batch.select(
        row.hash(seed=_SEEDS[0]).alias(KEY_COLUMNS[0]),
        row.hash(seed=_SEEDS[1]).alias(KEY_COLUMNS[1]),
    )
