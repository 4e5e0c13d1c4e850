"""The ``batchkimi`` command: the one place errors become messages and exit codes."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import warnings

import click
from PIL import Image

from batchkimi.cli.console import safe
from batchkimi.cli.models import models_command
from batchkimi.cli.plan import plan_command
from batchkimi.cli.report import report_command
from batchkimi.cli.run import run_command
from batchkimi.cli.simulator import simulator_command
from batchkimi.errors import BatchkimiError
from batchkimi.version import __version__


class _Group(click.Group):
    """Renders batchkimi's own errors as one line on stderr, with their exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BatchkimiError as exc:
            click.echo(f"Error: {safe(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            # the reader went away (`batchkimi report OUT | head`): not an error;
            # stdout now leads nowhere, so the interpreter's last flush is quiet
            _quiet_stdout()
            ctx.exit(0)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EIO):
                raise  # not about the output: a fault of ours, with its traceback
            # stdout or stderr itself cannot be written (`> /dev/full`)
            with contextlib.suppress(OSError):
                click.echo(f"Error: cannot write the output: {exc.strerror}", err=True)
            _quiet_stdout()
            ctx.exit(1)
        except KeyboardInterrupt:
            # Ctrl-C before a run has its own handlers (reading the manifest, a
            # plan, a report): nothing half-done is kept, and a run resumes
            click.echo("Interrupted: re-run the same command to go on.", err=True)
            ctx.exit(3)


def _quiet_stdout() -> None:
    """Point stdout at nothing, so the interpreter's last flush does not fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchkimi")
def cli() -> None:
    """Run batch jobs on Kimi models served by Alibaba Cloud Model Studio.

    A manifest of prompts (CSV, Parquet or JSONL) goes in; results.parquet with every
    row's answer, reasoning, tokens and cost comes out, with summary.json beside it.

    Try it with no key and no network, against the bundled simulator:

    \b
        batchkimi run jobs/label_reviews.toml --simulate

    Then for real, with a key from the Model Studio console:

    \b
        export DASHSCOPE_API_KEY=sk-...
        batchkimi run -i reviews.csv -o out/ -m kimi-k2.6 \\
            --prompt "Sentiment of: {review}. Answer with one of: positive, negative"
    """


cli.add_command(run_command)
cli.add_command(plan_command)
cli.add_command(report_command)
cli.add_command(models_command)
cli.add_command(simulator_command)


def main() -> None:
    # Pillow warns about images over ~89M pixels when it reads their size; the
    # preflight refuses those itself (over 8K), with the row and the file named
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    cli(prog_name="batchkimi")


if __name__ == "__main__":  # pragma: no cover - python -m batchkimi.cli
    main()
