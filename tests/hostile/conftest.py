"""Helpers for the hostile-input suite: a job spec written as a user would, and the
command line run in-process against the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from tests.helpers import REVIEWS, write_manifest


def toml_value(value: Any) -> str:
    """A value as TOML writes it (the subset a job spec uses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    raise TypeError(value)


class Job:
    """A job spec file on disk, over a small manifest, sending to the simulator."""

    def __init__(self, folder: Path, simulator: SimulatorServer) -> None:
        self.folder = folder
        self.simulator = simulator
        self.manifest = write_manifest(folder / "in", REVIEWS)
        self.output = folder / "out"
        self.path = folder / "job.toml"

    def write(self, **settings: Any) -> Path:
        values: dict[str, Any] = {
            "input": str(self.manifest),
            "output": str(self.output),
            "prompt": "Label: {review}",
            "base_url": self.simulator.url,
            "rpm": 0,
            "tpm": 0,
        }
        values.update(settings)
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines = [f"{k} = {toml_value(v)}" for k, v in scalars.items()]
        for name, table in tables.items():
            lines.append(f"[{name}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
        self.path.write_text("\n".join(lines) + "\n")
        return self.path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def job(tmp_path: Path, simulator: SimulatorServer) -> Job:
    return Job(tmp_path, simulator)
