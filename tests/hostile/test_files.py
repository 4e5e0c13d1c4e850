"""Files a user hands batchkimi, hostile or broken: manifests, media paths in any
column, price files, keys and output folders (issue 12). Each ends in exit 2 naming
the file and the fix, or in that row's error; never a traceback, never a file from
outside the media root on the wire, never a paid answer lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run
from tests.hostile.conftest import Job, invoke


def picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), "red").save(path)
    return path


def wire_text(simulator: SimulatorServer) -> str:
    return json.dumps([r.body for r in simulator.requests])


@pytest.mark.parametrize("form", ["file_url", "bare_path", "image_url_part"])
def test_a_messages_cell_cannot_send_a_file_from_outside_the_media_root(
    tmp_path: Path, simulator: SimulatorServer, form: str
) -> None:
    secret = picture(tmp_path / "outside" / "secret.jpg")
    inside = picture(tmp_path / "in" / "ok.jpg")
    reference = {"file_url": f"file://{secret}", "bare_path": "../outside/secret.jpg"}
    if form == "image_url_part":
        part = {"type": "image_url", "image_url": {"url": str(secret)}}
    else:
        part = {"image": reference[form]}
    rows = [
        {
            "id": "bad",
            "messages": json.dumps(
                [{"role": "user", "content": [part, {"text": "what?"}]}]
            ),
        },
        {
            "id": "good",
            "messages": json.dumps(
                [
                    {
                        "role": "user",
                        "content": [{"image": inside.name}, {"text": "what?"}],
                    }
                ]
            ),
        },
    ]
    spec = make_spec(
        tmp_path, simulator, rows=rows, fmt="jsonl", prompt=None, api="dashscope"
    )
    run(spec)
    results = read_results(spec)
    bad = results.filter(pl.col("id") == "bad").row(0, named=True)
    assert bad["status"] == "error"
    assert bad["error_code"] == "invalid_media"
    assert "outside the media root" in bad["error_message"]
    assert 'column "messages"' in bad["error_message"]
    assert results.filter(pl.col("id") == "good")["status"].item() == "ok"
    assert len(simulator.requests) == 1  # only the good row went out …
    assert "secret" not in wire_text(simulator)  # … and nothing of the secret


def test_a_messages_cell_gets_the_fps_and_frame_checks_of_the_video_columns(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    frames = [f"https://example.com/f{i}.jpg" for i in range(3)]  # under 4 frames
    rows = [
        {
            "id": "fps",
            "messages": json.dumps(
                [
                    {
                        "role": "user",
                        "content": [
                            {"video": "https://example.com/v.mp4", "fps": 50},
                            {"text": "?"},
                        ],
                    }
                ]
            ),
        },
        {
            "id": "type",
            "messages": json.dumps(
                [
                    {
                        "role": "user",
                        "content": [
                            {"video": "https://example.com/v.mp4", "fps": "2"},
                            {"text": "?"},
                        ],
                    }
                ]
            ),
        },
        {
            "id": "frames",
            "messages": json.dumps(
                [{"role": "user", "content": [{"video": frames}, {"text": "?"}]}]
            ),
        },
    ]
    spec = make_spec(
        tmp_path, simulator, rows=rows, fmt="jsonl", prompt=None, api="dashscope"
    )
    run(spec)
    results = read_results(spec)
    assert set(results["error_code"]) == {"invalid_media"}
    messages = dict(zip(results["id"], results["error_message"], strict=True))
    assert "fps" in messages["fps"]
    assert "'2' is not a number" in messages["type"]
    assert "between 4 and 2,000" in messages["frames"] or "4" in messages["frames"]
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://dashscope-us.aliyuncs.com", False),
        ("http://10.0.0.7:8000", False),
        ("http://127.0.0.1:9", True),
        ("http://localhost:9", True),
        ("http://[::1]:9", True),
        ("https://dashscope-us.aliyuncs.com", True),
    ],
)
def test_the_key_never_travels_in_clear_to_another_host(
    job: Job, url: str, allowed: bool
) -> None:
    result = invoke("plan", str(job.write(base_url=url)))
    assert (result.exit_code == 0) is allowed, result.stderr
    if not allowed:
        assert "plain http" in result.stderr
        assert "--allow-insecure-http" in result.stderr
        trusted = invoke("plan", str(job.path), "--allow-insecure-http")
        assert trusted.exit_code == 0, trusted.stderr


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-abcdé", "sk-a\x07b"])
def test_a_key_a_header_cannot_carry_is_refused_up_front_without_showing_it(
    job: Job, simulator: SimulatorServer, key: str
) -> None:
    result = invoke("run", str(job.write()), env={"DASHSCOPE_API_KEY": key})
    assert result.exit_code == 2
    assert "DASHSCOPE_API_KEY holds" in result.stderr
    assert key.strip() not in result.output
    assert "sk-abc" not in result.stderr
    assert simulator.requests == []


def test_an_input_inside_the_output_folder_is_refused(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, simulator)
    run(spec)
    results = spec.output / "results.parquet"
    before = results.read_bytes()
    for args in (
        ["-i", str(results), "-o", str(spec.output)],
        ["-i", str(results), "-o", str(spec.output.parent)],
    ):
        result = invoke(
            "run", *args, "--prompt", "{content}", "--base-url", simulator.url
        )
        assert result.exit_code == 2
        assert "inside the output folder" in result.stderr
    assert results.read_bytes() == before  # the user's file is untouched


def test_a_price_file_with_a_wrong_value_stops_before_anything_is_paid(
    job: Job, simulator: SimulatorServer
) -> None:
    prices = job.folder / "prices.toml"
    for entry, words in (
        ('input = 1.0\noutput = "x"', "output = 'x'"),
        ("input = -1.0\noutput = 2.0", "greater than or equal to 0"),
        ("input = 1.0\noutput = 2.0\ncurency = 'CNY'", "curency"),
    ):
        prices.write_text(
            f'[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "CNY"\n{entry}\n'
        )
        for command in ("run", "plan"):
            result = invoke(command, str(job.write(prices=str(prices))))
            assert result.exit_code == 2, result.output
            assert str(prices) in result.stderr
            assert words in result.stderr
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"id,r\xe9view\n1,good\n", "line 1 (the header) is not UTF-8 (byte 0xe9"),
        (b"\x7fELF\x02\x01\x00\x00" * 200, "binary file"),
        (b"id,review\n", "has no rows"),
    ],
)
def test_a_broken_manifest_is_named_in_one_short_line(
    tmp_path: Path, simulator: SimulatorServer, content: bytes, words: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    for command in ("run", "plan"):
        result = invoke(
            command,
            "-i",
            str(manifest),
            "-o",
            str(tmp_path / "out"),
            "--prompt",
            "{review}",
            "--base-url",
            simulator.url,
        )
        assert result.exit_code == 2
        assert words in result.stderr
        assert len(result.stderr) < 400  # never a kilobyte of raw bytes
        assert "\x00" not in result.stderr
    assert simulator.requests == []


def test_an_escape_sequence_from_a_file_never_reaches_the_terminal(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text('id,"\x1b[2Jevil\x1b]0;owned\x07"\n1,x\n')
    result = invoke("plan", "-i", str(manifest), "--prompt", "{review}")
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b[2Jevil" in result.stderr  # shown, not acted on


def test_a_copied_results_file_used_as_a_manifest_keeps_its_columns_once(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A results file from elsewhere is a manifest like any other: its output
    columns come back as input_* once, not again on every re-run."""
    spec = make_spec(tmp_path / "first", simulator)
    run(spec)
    copy = tmp_path / "copy.parquet"
    shutil.copy(spec.output / "results.parquet", copy)
    again = make_spec(tmp_path / "second", simulator, input=copy, prompt="{review}")
    run(again)
    first = read_results(again).columns
    run(again)
    assert read_results(again).columns == first  # a re-run adds no columns
    assert "input_status" in first
    assert first.count("status") == 1
