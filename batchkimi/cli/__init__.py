"""The ``batchkimi`` command: the one place errors become messages and exit codes.

A command's module is imported only when that command runs, so ``--help`` and
``--version`` load click and nothing more. Each command's one-line help is kept here
for the command list; a test holds it equal to the command's own.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
import warnings
from collections.abc import MutableMapping

import click

from batchkimi.errors import BatchkimiError
from batchkimi.printable import printable
from batchkimi.version import __version__

#: name -> (module, attribute, the first paragraph of the command's help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "batchkimi.cli.run",
        "run_command",
        "Run a job: send every manifest row to Kimi and write results.parquet.",
    ),
    "plan": (
        "batchkimi.cli.plan",
        "plan_command",
        "Check every row as a run would and estimate tokens, cost and time; send "
        "nothing.",
    ),
    "report": (
        "batchkimi.cli.report",
        "report_command",
        "Summarise the run in OUTPUT (finished, going, or cut short).",
    ),
    "models": (
        "batchkimi.cli.models",
        "models_command",
        "List the Kimi models: inputs, thinking, defaults, limits, prices, retirement.",
    ),
    "simulator": (
        "batchkimi.cli.simulator",
        "simulator_command",
        "Serve a local Model Studio (both APIs) for tests, demos and benchmarks.",
    ),
}


class _Group(click.Group):
    """Loads a command when it is called; renders batchkimi's own errors as one line
    on stderr, with their exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            msg = f"{module}.{attribute} is not a click command"
            raise TypeError(msg)
        return command

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        """The command list from the help kept above, importing no command."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # a bare Command shortens the help exactly as the real one would
        names = self.list_commands(ctx)
        stand_ins = [click.Command(n, help=COMMANDS[n][2]) for n in names]
        rows = [(c.name or "", c.get_short_help_str(limit)) for c in stand_ins]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BatchkimiError as exc:
            click.echo(f"Error: {printable(str(exc))}", err=True)
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


#: how the allocators of polars (jemalloc) and pyarrow (mimalloc) are set for a
#: command, where the environment does not set them: one arena for the process,
#: and pyarrow on the system's malloc. Left as they come, each thread's arena
#: keeps the memory it freed: a 100,000-row run's peak was 1.32 to 1.40 times a
#: 1,000-row run's, and is 1.21 to 1.23 with these (issue 14,
#: ``bench/memory_flat.py``). Read when the libraries load, so set before either
#: is imported (``set_allocators``).
ALLOCATORS = {"_RJEM_MALLOC_CONF": "narenas:1", "ARROW_DEFAULT_MEMORY_POOL": "system"}
#: settings that are lists of ``option:value``: an option is added unless given
_OPTION_LISTS = {"_RJEM_MALLOC_CONF"}


def set_allocators(environ: MutableMapping[str, str]) -> None:
    """Each allocator setting of ``ALLOCATORS`` that ``environ`` does not make.

    Importing polars writes its own jemalloc options (decay times) into the
    environment of its process, and a command started from such a process (a
    pipeline's Python, a benchmark) inherits them: options are added to a list
    that does not name them, so that command still runs on one arena."""
    for name, value in ALLOCATORS.items():
        given = environ.get(name, "")
        if not given:
            environ[name] = value
        elif name in _OPTION_LISTS:
            named = {part.split(":", 1)[0] for part in given.split(",")}
            added = [o for o in value.split(",") if o.split(":", 1)[0] not in named]
            environ[name] = ",".join([given, *added])


def main() -> None:
    set_allocators(os.environ)
    # Pillow warns about images over ~89M pixels when it reads their size; the
    # preflight says what it makes of them itself, with the row and the file named.
    # Matched by message, so Pillow is imported only where images are read.
    warnings.filterwarnings(
        "ignore", message=r"Image size \(\d+ pixels\) exceeds limit"
    )
    cli(prog_name="batchkimi")


if __name__ == "__main__":  # pragma: no cover - python -m batchkimi.cli
    main()
