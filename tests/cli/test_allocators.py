"""Issue 14: the command line runs polars' allocator on one arena, even when it is
started from a Python process that imported polars (a pipeline, a benchmark):
importing polars writes its own allocator options into the environment that such a
process hands to its commands, and those used to stop the command line's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: what the command's polars reads, once the command line has started
_PROBE = """
import os, sys
sys.argv = ["batchkimi", "--version"]
from batchkimi.cli import main
try:
    main()
except SystemExit:
    pass
import polars
print(os.environ["_RJEM_MALLOC_CONF"], os.environ["ARROW_DEFAULT_MEMORY_POOL"])
"""


def allocator_settings(**given: str) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("_RJEM_MALLOC_CONF", "ARROW_DEFAULT_MEMORY_POOL")
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**env, **given},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    conf, pool = done.stdout.split()[-2:]
    return [*conf.split(","), pool]


def test_a_command_from_a_shell_runs_on_one_arena_and_the_system_malloc() -> None:
    settings = allocator_settings()
    assert "narenas:1" in settings
    assert settings[-1] == "system"


def test_a_command_started_from_a_process_that_imported_polars_still_gets_one_arena() -> (
    None
):
    import polars  # noqa: F401  (writes its options into this process's environment)

    inherited = os.environ["_RJEM_MALLOC_CONF"]
    settings = allocator_settings(_RJEM_MALLOC_CONF=inherited)
    assert "narenas:1" in settings
    assert set(inherited.split(",")) <= set(settings)


@pytest.mark.parametrize(
    ("given", "arenas"),
    [("narenas:4", "narenas:4"), ("narenas:2,tcache:false", "narenas:2")],
)
def test_settings_the_user_gives_are_kept(given: str, arenas: str) -> None:
    settings = allocator_settings(
        _RJEM_MALLOC_CONF=given, ARROW_DEFAULT_MEMORY_POOL="mimalloc"
    )
    assert arenas in settings and "narenas:1" not in settings
    assert settings[-1] == "mimalloc"
