"""Manifests are read lazily in any format; templates, keys and row problems behave."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchkimi.errors import ConfigError, ManifestError
from batchkimi.manifest.keys import derive_row_key
from batchkimi.manifest.reader import Manifest, check_rows, open_manifest
from batchkimi.manifest.requests import RequestBuilder, RowProblem
from batchkimi.manifest.template import parse_template
from batchkimi.records import ImagePart, RowRequest, TextPart, VideoPart
from tests.helpers import job_of, write_manifest


def builder(
    tmp_path: Path, rows: list[dict[str, Any]], fmt: str = "csv", **spec: object
) -> tuple[Manifest, RequestBuilder]:
    path = write_manifest(tmp_path, rows, fmt)
    values = {"input": path, "output": tmp_path / "out", **spec}
    manifest = open_manifest(path)
    built = RequestBuilder(job_of(values), manifest.columns, str(path))
    return manifest, built


def build_all(
    manifest: Manifest, built: RequestBuilder
) -> list[RowRequest | RowProblem]:
    out = []
    index = 0
    for batch in manifest.iter_batches(2):
        for row in batch.iter_rows(named=True):
            out.append(built.build(index, row))
            index += 1
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_every_format_gives_the_same_requests_in_order(
    tmp_path: Path, fmt: str
) -> None:
    rows = [{"id": f"a{i}", "text": f"t{i}", "n": i} for i in range(7)]
    manifest, built = builder(tmp_path, rows, fmt, prompt="Say {text} ({n})")
    requests = build_all(manifest, built)
    assert check_rows(manifest) == 7
    assert [r.row_id for r in requests] == [f"a{i}" for i in range(7)]
    assert all(isinstance(r, RowRequest) for r in requests)
    first = requests[0]
    assert isinstance(first, RowRequest)
    assert first.messages[-1].parts == (TextPart("Say t0 (0)"),)


def test_fingerprints_do_not_depend_on_the_file_format(tmp_path: Path) -> None:
    rows = [{"text": "hello", "n": 3}]
    prints = []
    for fmt in ("csv", "parquet", "jsonl"):
        manifest, built = builder(tmp_path / fmt, rows, fmt, prompt="{text} {n}")
        (request,) = build_all(manifest, built)
        assert isinstance(request, RowRequest)
        prints.append((request.row_id, request.fingerprint))
    assert len(set(prints)) == 1


def test_a_template_column_missing_from_the_file_names_the_column(
    tmp_path: Path,
) -> None:
    with pytest.raises(ManifestError) as caught:
        builder(tmp_path, [{"id": 1, "text": "x"}], prompt="Label: {review}")
    error = caught.value
    assert error.column == "review"
    assert error.row == 1
    assert 'column "review"' in str(error)
    assert "id, text" in str(error)  # what the manifest does have


def test_an_empty_template_value_fails_only_its_row(tmp_path: Path) -> None:
    rows: list[dict[str, str | None]] = [
        {"id": "a", "review": "good"},
        {"id": "b", "review": None},
    ]
    manifest, built = builder(tmp_path, rows, "jsonl", prompt="Label: {review}")
    ok, problem = build_all(manifest, built)
    assert isinstance(ok, RowRequest)
    assert isinstance(problem, RowProblem)
    assert (problem.index, problem.row_id, problem.column) == (1, "b", "review")
    assert problem.message.startswith('row 2 (id "b"), column "review":')


def test_a_manifest_without_prompt_messages_or_template_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ManifestError, match="nothing to send"):
        builder(tmp_path, [{"text": "x"}])


def test_mapped_columns_and_per_row_overrides(tmp_path: Path) -> None:
    rows = [
        {"key": "k1", "body": "hi", "temp": "0.3", "think": "yes", "m": "kimi-k2.5"},
        {"key": "k2", "body": "yo", "temp": "hot", "think": "", "m": ""},
    ]
    manifest, built = builder(
        tmp_path,
        rows,
        columns={
            "id": "key",
            "prompt": "body",
            "temperature": "temp",
            "enable_thinking": "think",
            "model": "m",
        },
    )
    first, second = build_all(manifest, built)
    assert isinstance(first, RowRequest)
    assert (first.row_id, first.model, first.enable_thinking) == (
        "k1",
        "kimi-k2.5",
        True,
    )
    assert dict(first.parameters) == {"temperature": 0.3}
    assert isinstance(second, RowProblem)
    assert (second.column, second.code) == ("temp", "invalid_value")


def test_asking_more_output_than_the_rows_model_gives_is_that_rows_error(
    tmp_path: Path,
) -> None:
    """kimi-k2.5 answers at most 32,768 tokens (FACTS §6.2); the service refuses more.
    The row's own max_tokens is named; a job-wide value meeting a row's model names
    the model column. A model whose limit is not documented is not held to one."""
    rows = [
        {"prompt": "a", "model": "kimi-k2.5", "max_tokens": "40000"},
        {"prompt": "b", "model": "kimi-k2.5", "max_tokens": ""},
        {"prompt": "c", "model": "kimi-k2.6", "max_tokens": ""},
    ]
    manifest, built = builder(tmp_path, rows, parameters={"max_tokens": 33_000})
    own, jobs, undocumented = build_all(manifest, built)
    assert isinstance(own, RowProblem) and own.column == "max_tokens"
    assert "max_tokens = 40,000 is over kimi-k2.5's maximum output" in own.message
    assert isinstance(jobs, RowProblem) and jobs.column == "model"
    assert isinstance(undocumented, RowRequest)


def test_thinking_off_for_a_thinking_only_model_is_a_row_error(tmp_path: Path) -> None:
    rows = [{"prompt": "x", "model": "kimi-k2.7-code", "enable_thinking": "false"}]
    manifest, built = builder(tmp_path, rows)
    (problem,) = build_all(manifest, built)
    assert isinstance(problem, RowProblem) and problem.code == "invalid_thinking"
    assert "always thinks" in problem.message


def test_a_retired_model_in_one_row_is_that_rows_error(tmp_path: Path) -> None:
    rows = [{"prompt": "x", "model": "kimi-k2-thinking"}]
    manifest, built = builder(tmp_path, rows)
    (problem,) = build_all(manifest, built)
    assert (
        isinstance(problem, RowProblem) and "retired on 2026-07-09" in problem.message
    )


def test_messages_column_accepts_openai_and_dashscope_shapes(tmp_path: Path) -> None:
    history = [
        {"role": "system", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/a.jpg"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"text": "And this?"},
                {"video": ["https://f/1.jpg"] * 4, "fps": 1},
            ],
        },
    ]
    manifest, built = builder(tmp_path, [{"messages": json.dumps(history)}])
    (request,) = build_all(manifest, built)
    assert isinstance(request, RowRequest)
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[1].parts[1] == ImagePart("https://x/a.jpg")
    assert request.messages[3].parts[1] == VideoPart(
        frames=("https://f/1.jpg",) * 4, fps=1
    )


def test_broken_messages_json_names_the_problem(tmp_path: Path) -> None:
    manifest, built = builder(tmp_path, [{"messages": '[{"role": "user", "content": '}])
    (problem,) = build_all(manifest, built)
    assert isinstance(problem, RowProblem) and "not valid JSON" in problem.message


def test_a_path_outside_the_media_root_is_that_rows_error(tmp_path: Path) -> None:
    manifest, built = builder(tmp_path, [{"prompt": "x", "image": "/etc/passwd"}])
    (problem,) = build_all(manifest, built)
    assert isinstance(problem, RowProblem) and problem.column == "image"


@pytest.mark.parametrize(
    "template", ["{0}", "{}", "{review!r}", "{review:>10}", "{review.attr}", "{review"]
)
def test_unsupported_template_fields_are_refused_up_front(template: str) -> None:
    with pytest.raises(ConfigError):
        parse_template(template)


def test_double_braces_are_literal() -> None:
    assert parse_template("{{json}} {a}").render({"a": 1}) == "{json} 1"


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.none(), st.integers(), st.text(max_size=20)),
        min_size=1,
        max_size=6,
    ),
    st.randoms(),
)
def test_derived_keys_ignore_column_order(row: dict, rng) -> None:  # type: ignore[no-untyped-def]
    items = list(row.items())
    rng.shuffle(items)
    assert derive_row_key(dict(items)) == derive_row_key(row)


def test_a_truncated_parquet_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pl.DataFrame({"prompt": ["x"] * 100}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ManifestError, match="cannot be read as parquet"):
        open_manifest(path)


def test_an_unknown_suffix_says_which_formats_work(tmp_path: Path) -> None:
    path = tmp_path / "m.xlsx"
    path.write_text("x")
    with pytest.raises(ManifestError, match=r"\.csv, \.tsv, \.parquet or \.jsonl"):
        open_manifest(path)
