"""Make the README's report picture: a real run on the simulator, then a screenshot.

Plans and runs the sample labelling job against the bundled simulator with realistic
latency and faults (5xx, throttles, moderation), writes `batchkimi report --html`, and
has headless Chromium photograph the page. Nothing leaves the machine.

    .venv/bin/python scripts/report_screenshot.py [--out docs/report.png]

Needs `chromium` on the PATH (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from batchkimi.simulator import SimulatorServer
from batchkimi.simulator.behaviour import Behaviour

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def batchkimi(*args: str) -> None:
    """Run a batchkimi command; exit 1 (some rows failed, as the faults intend) is
    expected, anything else is not."""
    env = {**os.environ, "DASHSCOPE_API_KEY": "sk-simulator"}  # any key will do
    done = subprocess.run([sys.executable, "-m", "batchkimi", *args], env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"batchkimi {args[0]} exited {done.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--height", type=int, default=2300)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not on the PATH (apt-get install chromium)")
    behaviour = Behaviour(
        seed=3,
        ttft_ms=250,
        ttft_jitter=0.6,
        tokens_per_s=120,
        error_rates={"InternalError": 0.06, "DataInspectionFailed": 0.02},
        midstream_rates={"Throttling.AllocationQuota": 0.03},
    )
    job = str(ROOT / "jobs" / "label_reviews.toml")
    with (
        SimulatorServer.running(behaviour=behaviour) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = str(Path(tmp) / "out")
        common = ("-o", out, "--base-url", server.url, "--rpm", "0", "--tpm", "0")
        batchkimi("plan", job, *common, "--thinking")
        batchkimi("run", job, *common, "--thinking", "--quiet")
        page = Path(tmp) / "report.html"
        batchkimi("report", out, "--html", str(page))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                chromium,
                *HEADLESS,
                f"--window-size=1100,{args.height}",
                f"--screenshot={args.out.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
