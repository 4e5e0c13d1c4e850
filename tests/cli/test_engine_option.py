"""``--engine ray`` as a user meets it before Ray runs anything (issue 15): a clear
exit 2, with nothing sent, when Ray is missing or a setting cannot apply."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from tests.helpers import run_args


def test_engine_ray_without_ray_installed_says_how_to_install_it(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets then
    result = CliRunner().invoke(cli, run_args(tmp_path, simulator, "--engine", "ray"))
    assert result.exit_code == 2
    assert "pip install 'batchkimi[ray]'" in result.stderr
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--engine", "ray", "--max-cost", "1"), "--max-cost is not available"),
        (("--engine", "cluster"), "'cluster' is not one of"),
        (("--engine", "ray", "--ray-workers", "0"), "Fix the option --ray-workers"),
    ],
)
def test_ray_settings_that_cannot_apply_exit_2_before_anything_is_sent(
    tmp_path: Path, simulator: SimulatorServer, extra: tuple[str, ...], words: str
) -> None:
    result = CliRunner().invoke(cli, run_args(tmp_path, simulator, *extra))
    assert result.exit_code == 2, result.stderr
    assert words in result.stderr
    assert simulator.requests == []


def test_a_job_file_may_choose_the_engine(tmp_path: Path) -> None:
    from batchkimi.jobs import job

    spec = tmp_path / "job.toml"
    spec.write_text(
        'input = "in.csv"\noutput = "out"\nprompt = "{review}"\n'
        'engine = "ray"\nray_address = "10.0.0.1:6379"\nray_workers = 8\n'
    )
    loaded = job(spec)
    assert loaded.pacing.engine == "ray"
    assert loaded.pacing.ray_address == "10.0.0.1:6379"
    assert loaded.pacing.ray_workers == 8
    # tried on one machine first: the cluster's settings are then unused
    assert job(spec, engine="local").pacing.engine == "local"
