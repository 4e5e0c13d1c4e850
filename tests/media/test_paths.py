"""Local paths stay inside the media root; folders and globs are manifests."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.media.samples import make_image, make_video
from tests.helpers import write_manifest


def plan(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = CliRunner().invoke(cli, ["plan", *args, "--json"])
    return result.exit_code, json.loads(result.output) if result.output.startswith(
        "{"
    ) else {"output": result.output}


def test_paths_that_leave_the_media_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "job"
    make_image(root / "pics" / "ok.png")
    outside = make_image(tmp_path / "elsewhere" / "secret.png")
    (root / "pics" / "link.png").symlink_to(outside)
    rows = [
        {"id": "inside", "image": "pics/ok.png"},
        {"id": "dotdot", "image": "../elsewhere/secret.png"},
        {"id": "absolute", "image": str(outside)},
        {"id": "passwd", "image": "/etc/passwd"},
        {"id": "symlink", "image": "pics/link.png"},
        {"id": "missing", "image": "pics/nope.png"},
    ]
    manifest = write_manifest(root, rows)
    code, found = plan(
        "-i", str(manifest), "-o", str(tmp_path / "out"), "--prompt", "?"
    )
    assert code == 1
    problems = {p["id"]: p["message"] for p in found["problems"]}
    assert set(problems) == {"dotdot", "absolute", "passwd", "symlink", "missing"}
    for key in ("dotdot", "absolute", "passwd", "symlink"):
        message = problems[key]
        assert "outside the media root" in message and 'column "image"' in message
        assert "allow_outside_media_root" in message
    assert "does not exist" in problems["missing"]

    code, found = plan(
        *("-i", str(manifest), "-o", str(tmp_path / "out2"), "--prompt", "?"),
        "--allow-outside-media-root",
    )
    problems = {p["id"]: p["message"] for p in found["problems"]}
    # /etc/passwd exists, but is not an image the service accepts
    assert set(problems) == {"passwd", "missing"}
    assert "not a format the service accepts" in problems["passwd"]


def test_media_root_moves_where_relative_paths_resolve(tmp_path: Path) -> None:
    make_image(tmp_path / "library" / "a.png")
    manifest = write_manifest(tmp_path / "manifests", [{"id": "a", "image": "a.png"}])
    out = str(tmp_path / "out")
    code, _ = plan("-i", str(manifest), "-o", out, "--prompt", "?")
    assert code == 1
    code, found = plan(
        "-i",
        str(manifest),
        "-o",
        out,
        "--prompt",
        "?",
        "--media-root",
        str(tmp_path / "library"),
    )
    assert code == 0 and found["to_send"] == 1


def test_a_glob_is_a_manifest_of_files_keyed_by_their_paths(tmp_path: Path) -> None:
    for name in ("2024/a.mp4", "2024/b.mp4", "2025/c.mp4"):
        make_video(tmp_path / "archive" / name, seconds=2.5)
    (tmp_path / "archive" / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    code, found = plan(
        "-i",
        str(tmp_path / "archive" / "**" / "*.mp4"),
        "-o",
        str(out),
        "--prompt",
        "Caption this.",
    )
    assert code == 0, found
    assert (found["rows"], found["to_send"]) == (3, 3)
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "-i",
            str(tmp_path / "archive"),
            "-o",
            str(out),
            "--prompt",
            "Caption.",
            "--simulate",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    import polars as pl

    results = pl.read_parquet(out / "results.parquet")
    assert results["id"].to_list() == ["2024/a.mp4", "2024/b.mp4", "2025/c.mp4"]
    assert results["status"].to_list() == ["ok"] * 3


def test_an_empty_glob_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            "-i",
            str(tmp_path / "*.mp4"),
            "-o",
            str(tmp_path / "o"),
            "--prompt",
            "?",
        ],
    )
    assert result.exit_code == 2
    assert "matches no image or video file" in result.output
