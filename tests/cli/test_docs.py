"""docs/cli.md is the --help of every command, so the docs cannot drift from the code.

Regenerate after changing an option: BATCHKIMI_WRITE_DOCS=1 python -m pytest tests/cli
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from batchkimi.cli import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMANDS = ["", "run", "plan", "report", "models", "simulator"]


def render() -> str:
    parts = [
        "# batchkimi command line\n",
        "Generated from `--help`; a test keeps it in step with the code.\n",
    ]
    for command in COMMANDS:
        args = [command, "--help"] if command else ["--help"]
        result = CliRunner().invoke(cli, args, terminal_width=88, prog_name="batchkimi")
        assert result.exit_code == 0, result.output
        title = f"batchkimi {command}".strip()
        parts.append(f"\n## `{title}`\n\n```\n{result.output.rstrip()}\n```\n")
    return "".join(parts)


def test_docs_cli_md_matches_every_commands_help() -> None:
    expected = render()
    if os.environ.get("BATCHKIMI_WRITE_DOCS"):
        DOCS.write_text(expected, "utf-8")
    assert DOCS.read_text("utf-8") == expected, (
        "docs/cli.md is out of date: BATCHKIMI_WRITE_DOCS=1 python -m pytest tests/cli"
    )
