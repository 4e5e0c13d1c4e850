"""What every benchmark needs: the simulator in its own process, and a command measured
in a fresh process (wall time, CPU time, peak memory), optionally pinned to a core."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_MEASURE = (
    "import os, resource, subprocess, sys, time; core = int(sys.argv[1]); "
    "core >= 0 and os.sched_setaffinity(0, {core}); start = time.monotonic(); "
    "code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL).returncode; wall = time.monotonic() - start; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code)"
)


@contextlib.contextmanager
def simulator(*knobs: str, core: int | None = None) -> Iterator[str]:
    """Serve ``batchkimi simulator`` with ``knobs`` in a process; yield its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchkimi", "simulator", "--port", "0", *knobs],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if core is not None:
            os.sched_setaffinity(process.pid, {core})
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float
    peak_mb: float


def measure(
    command: list[str], *, env: dict[str, str] | None = None, core: int | None = None
) -> Measured:
    """Run ``command`` in a fresh process (pinned to ``core``); fail loudly if it
    fails."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(-1 if core is None else core), *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    wall, cpu, peak_kb, code = done.stdout.split()[-4:]
    if code != "0":
        raise SystemExit(f"{' '.join(command[:5])} … exited {code}")
    return Measured(float(wall), float(cpu), int(peak_kb) / 1024)


def batchkimi_run(
    manifest: str | os.PathLike[str],
    output: str | os.PathLike[str],
    url: str,
    *options: str,
    prompt: str,
    unlimited: bool = True,
) -> list[str]:
    """The command of a quiet ``batchkimi run`` of ``manifest`` against ``url``; with
    ``unlimited``, no rate budgets (the simulator enforces none unless told to)."""
    limits = ("--rpm", "0", "--tpm", "0") if unlimited else ()
    return [
        *(sys.executable, "-m", "batchkimi", "run"),
        *("-i", str(manifest), "-o", str(output), "--prompt", prompt),
        *("--base-url", url, "--quiet", *limits, *options),
    ]


def bench_env(folder: str) -> dict[str, str]:
    """A placeholder key, and rate budgets kept apart from the user's own."""
    return {**os.environ, "DASHSCOPE_API_KEY": "sk-bench", "XDG_STATE_HOME": folder}


def make_archive(folder: Path, videos: int, seconds: float) -> Path:
    """Generate the videos of a captioning bench once (640x360, 25 fps); later runs
    reuse them."""
    from batchkimi.media.samples import make_video  # PyAV: only for video benches

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        path = folder / f"video-{i:04d}.mp4"
        if not path.exists():
            make_video(path, seconds=seconds, fps=25, width=640, height=360)
    return folder
