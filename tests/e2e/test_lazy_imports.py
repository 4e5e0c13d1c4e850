"""Issue 14: a command loads what it uses, so `--help` and `--version` start at once
and a text job never loads PyAV, Pillow or matplotlib. Checked by what a fresh
interpreter has imported, never by timing."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from batchkimi.cli import COMMANDS, cli
from batchkimi.simulator import SimulatorServer
from tests.helpers import run_fresh, write_manifest

HEAVY = ("polars", "pyarrow", "numpy", "httpx", "aiohttp", "matplotlib", "av", "PIL")


def loaded_by(*args: str) -> tuple[int, set[str]]:
    """Run `batchkimi ARGS` in a fresh interpreter; its exit code and the top-level
    packages it imported."""
    code, _, loaded = run_fresh(*args)
    return code, loaded


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"]])
def test_help_and_version_load_no_heavy_dependency(args: list[str]) -> None:
    code, loaded = loaded_by(*args)
    assert code == 0
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_the_command_list_shows_each_commands_own_help() -> None:
    """The group lists commands without importing them, from help kept beside the
    table of commands; this keeps that copy equal to each command's docstring."""
    ctx = click.Context(cli)
    for name, (_, _, first_paragraph) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert (command.help or "").split("\n\n")[0].replace("\n", " ") == (
            first_paragraph
        )


def test_a_text_job_loads_no_media_library_and_its_rerun_loads_nothing_heavy(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    manifest = write_manifest(
        tmp_path / "in", [{"id": "a", "review": "fine"}, {"id": "b", "review": "bad"}]
    )
    out = tmp_path / "out"
    common = ["-i", str(manifest), "-o", str(out), "--prompt", "Label: {review}"]
    code, loaded = loaded_by(
        "run", *common, "--base-url", simulator.url, "--rpm", "0", "--tpm", "0", "-q"
    )
    assert code == 0
    assert loaded.isdisjoint({"av", "PIL", "matplotlib"})
    code, loaded = loaded_by(  # a finished job again: state.json says it is current
        "run", *common, "--base-url", "http://127.0.0.1:9", "--rpm", "0", "--tpm", "0"
    )
    assert code == 0
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    code, loaded = loaded_by("report", str(out))
    assert code == 0
    assert loaded.isdisjoint({"av", "PIL", "matplotlib"})
    code, loaded = loaded_by("report", str(out), "--html", str(tmp_path / "r.html"))
    assert code == 0 and "matplotlib" in loaded
