"""What the seed pages say, to the letter, on the client's side (issue 16): 8K is a
recommendation, the audio track is ignored, the retired models' advice, the regions
and defaults of the catalogue, and new models written down in a --models file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from batchkimi.catalogue import load_catalogue
from batchkimi.media.samples import make_video
from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run
from tests.hostile.conftest import invoke


def big_photo(path: Path) -> Path:
    """A 45-megapixel camera JPEG: over 8K (7680x4320), a few hundred KB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8256, 5504), (120, 130, 140)).save(path, quality=60)
    return path


def test_an_image_over_8k_is_sent_with_a_warning_and_fix_images_shrinks_it(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    big_photo(tmp_path / "in" / "camera.jpg")
    rows = [{"id": "p", "image": "camera.jpg"}]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="Describe it.")
    plan = invoke(
        "plan", "-i", str(spec.reading.input), "--prompt", "Describe it.", "--json"
    )
    warnings = json.loads(plan.stdout)["warnings"]
    assert plan.exit_code == 0
    assert "above the 8K" in warnings[0]["message"]
    assert run(spec).exit_code == 0
    assert read_results(spec)["status"].item() == "ok"
    sent = simulator.requests[-1].body["messages"][-1]["content"][0]["image_url"]["url"]
    assert sent.startswith("data:image/jpeg")

    fixed = make_spec(
        tmp_path / "fixed",
        simulator,
        rows=rows,
        prompt="Describe it.",
        media_root=tmp_path / "in",
        fix_images=True,
    )
    assert run(fixed).exit_code == 0
    shrunk = simulator.requests[-1].body["messages"][-1]["content"][0]["image_url"][
        "url"
    ]
    assert len(shrunk) < len(sent)  # re-encoded within 4K


def test_a_run_that_sends_videos_says_once_that_their_sound_is_ignored(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    make_video(tmp_path / "in" / "a.mp4", seconds=3)
    make_video(tmp_path / "in" / "b.mp4", seconds=3)
    rows = [{"id": "a", "video": "a.mp4"}, {"id": "b", "video": "b.mp4"}]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="Caption it.")
    manifest = str(spec.reading.input)
    plan = invoke("plan", "-i", manifest, "--prompt", "Caption it.")
    assert plan.stdout.count("audio track is ignored") == 1
    result = invoke(
        "run",
        "-i",
        manifest,
        "-o",
        str(tmp_path / "out"),
        "--prompt",
        "Caption it.",
        "--base-url",
        simulator.url,
        "--rpm",
        "0",
        "--tpm",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("audio track is ignored") == 1


def test_the_retired_models_advice_is_the_seeds() -> None:
    result = invoke(
        "plan", "-i", "x.csv", "--model", "kimi-k2-thinking", "--prompt", "x"
    )
    assert result.exit_code == 2
    for model in ("qwen3.7-plus", "qwen3.7-max", "qwen3.6-flash"):
        assert model in result.stderr


def test_the_catalogue_lists_the_six_regions_and_the_seeds_defaults() -> None:
    catalogue = load_catalogue()
    for name in ("kimi-k2.7-code", "kimi-k2.6", "kimi-k2.5"):
        assert {"ap-southeast-1", "ap-northeast-1"} <= set(catalogue[name].regions)
    assert catalogue["kimi-k2.7-code"].preserve_thinking_default is True
    assert catalogue["kimi-k2.6"].preserve_thinking_default is None


def test_a_new_model_is_used_by_writing_down_its_facts(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[models."kimi-k2.8"]\nnative_path = "multimodal-generation"\n'
        'inputs = ["text"]\nthinking = "hybrid"\nstatus = "active"\n'
        "max_output_tokens = 16\n"
    )
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,review\n1,good\n")
    unknown = invoke(
        "plan", "-i", str(manifest), "--prompt", "{review}", "--model", "kimi-k2.8"
    )
    assert unknown.exit_code == 2
    assert "--models FILE" in unknown.stderr  # the error points to the way out
    known = invoke(
        "plan",
        "-i",
        str(manifest),
        "--prompt",
        "{review}",
        "--model",
        "kimi-k2.8",
        "--models",
        str(models),
    )
    assert known.exit_code == 0, known.stderr
    too_many = invoke(
        "plan",
        "-i",
        str(manifest),
        "--prompt",
        "{review}",
        "--model",
        "kimi-k2.8",
        "--models",
        str(models),
        "--param",
        "max_tokens=64",
    )
    assert too_many.exit_code == 2  # its own facts are checked
    assert "maximum output of 16" in too_many.stderr
    # the native path comes from the file too: the request goes where it says
    spec = make_spec(
        tmp_path / "run", simulator, model="kimi-k2.8", models=models, api="dashscope"
    )
    run(spec)
    assert simulator.requests[0].path.endswith("/multimodal-generation/generation")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[models."x"]\ninputs = ["text"]\n', "native_path"),
        (
            '[models."x"]\nnative_path = "other"\ninputs = []\nthinking = "hybrid"\nstatus = "active"\n',
            "native_path",
        ),
        ("models = 3\n", "must hold"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_broken_models_file_is_exit_2_naming_it(
    tmp_path: Path, content: str, words: str
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(content)
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,review\n1,good\n")
    result = invoke(
        "plan", "-i", str(manifest), "--prompt", "{review}", "--models", str(models)
    )
    assert result.exit_code == 2
    assert str(models) in result.stderr
    assert words in result.stderr
