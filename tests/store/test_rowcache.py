"""The register as a cache: a row with the key it had last run gets last run's id,
fingerprint and model back, wherever it moved; anything else gets nulls (and is
built). Row groups are 16,384 rows, so 40,000 rows span three."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batchkimi.manifest.rowkeys import row_keys
from batchkimi.store.rowcache import RowCache
from batchkimi.store.rows import RegisterFiles, RowRegister

ROWS = 40_000


def manifest(ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"id": ids, "review": [f"text of {i}" for i in ids]})


def register(folder: Path, frame: pl.DataFrame, digest: str = "d1") -> RegisterFiles:
    """A register as a run leaves it: each row's fingerprint is "fp-" and its id."""
    rows = RowRegister(folder, {}, None, digest)
    for start in range(0, frame.height, 5_000):
        batch = frame.slice(start, 5_000)
        keys = row_keys(batch)
        rows.add(
            batch,
            {
                "_index": list(range(start, start + batch.height)),
                "id": batch["id"],
                "_fingerprint": ("fp-" + batch["id"]).alias("fp"),
                "_model": ["kimi-k2.6"] * batch.height,
                "_key_a": keys["_key_a"],
                "_key_b": keys["_key_b"],
            },
        )
    rows.commit()
    return rows.files()


def looked_up(cache: RowCache, frame: pl.DataFrame, batch: int = 2_000) -> pl.Series:
    found = [
        cache.lookup(start, row_keys(frame.slice(start, batch)))["_fingerprint"]
        for start in range(0, frame.height, batch)
    ]
    return pl.concat(found)


@pytest.fixture
def old(tmp_path: Path) -> tuple[RegisterFiles, list[str]]:
    ids = [f"r{i}" for i in range(ROWS)]
    return register(tmp_path, manifest(ids)), ids


def test_the_same_manifest_finds_every_row(
    old: tuple[RegisterFiles, list[str]],
) -> None:
    path, ids = old
    cache = RowCache.load(path, "d1")
    assert cache is not None
    assert looked_up(cache, manifest(ids)).to_list() == [f"fp-{i}" for i in ids]
    assert cache.hits == ROWS


def test_a_row_added_inserted_or_edited_is_not_found_and_the_rest_are(
    old: tuple[RegisterFiles, list[str]],
) -> None:
    path, ids = old
    changed = manifest(["new-top", *ids[:20_000], *ids[20_001:], "new-end"])
    changed = changed.with_columns(
        pl.when(pl.col("id") == "r30000")
        .then(pl.lit("edited text"))
        .otherwise(pl.col("review"))
        .alias("review")
    )
    cache = RowCache.load(path, "d1")
    assert cache is not None
    found = looked_up(cache, changed)
    expected = [
        None if i in {"new-top", "new-end", "r30000"} else f"fp-{i}"
        for i in changed["id"]
    ]
    assert found.to_list() == expected  # r20000 was removed: nothing asks for it


def test_another_digest_or_an_old_register_is_no_cache(
    tmp_path: Path, old: tuple[RegisterFiles, list[str]]
) -> None:
    path, _ = old
    assert RowCache.load(path, "d2") is None
    assert RowCache.load(RegisterFiles((tmp_path / "missing.parquet",)), "d1") is None
    (tmp_path / "plain").mkdir()
    plain = RowRegister(tmp_path / "plain", {}, None)  # written without a digest
    plain.add(manifest(["a"]), {"_index": [0], "id": ["a"]})
    plain.commit()
    assert RowCache.load(plain.files(), "d1") is None


def test_rows_registered_without_a_key_are_never_found(tmp_path: Path) -> None:
    frame = manifest(["a", "b"])
    rows = RowRegister(tmp_path, {}, None, "d1")
    rows.add(frame, {"_index": [0, 1], "id": ["a", "b"], "_fingerprint": ["x", None]})
    rows.commit()
    cache = RowCache.load(rows.files(), "d1")
    assert cache is not None
    assert cache.lookup(0, row_keys(frame))["_fingerprint"].to_list() == [None, None]
