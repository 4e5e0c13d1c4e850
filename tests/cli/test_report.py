"""`batchkimi report`: tables and a self-contained page that tell a run's story, for a
finished run and for one cut short."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from tests.helpers import run_args

PLOTS = ("plot-throughput", "plot-latency", "plot-tokens-cost", "plot-retries")
ROWS = [{"id": f"r{i}", "review": f"review number {i} is fine"} for i in range(40)]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, " ".join(result.output.split())


class _Plots(html.parser.HTMLParser):
    """Counts the drawn shapes inside each plot's figure."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.shapes: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = dict(attrs).get("id") or ""
        if tag == "figure" and name.startswith("plot-"):
            self.current = name
            self.shapes[name] = 0
        elif self.current and tag in ("path", "rect", "use", "text"):
            self.shapes[self.current] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.current = None


def shapes_in(page: str) -> dict[str, int]:
    parser = _Plots()
    parser.feed(page)
    return parser.shapes


@pytest.fixture
def faulty_run(tmp_path: Path, simulator: SimulatorServer) -> Path:
    simulator.reset(
        seed=7,
        error_rates={"InternalError": 0.2, "DataInspectionFailed": 0.1},
    )
    args = run_args(tmp_path, simulator, "-m", "kimi-k2.5", rows=ROWS)
    code, text = invoke("plan", *args[1:])
    assert code == 0, text
    code, text = invoke(*args, "--quiet")
    assert code == 1, text  # the moderated rows failed for good
    return tmp_path / "out"


def test_the_report_tells_the_finished_run_as_its_summary_does(
    faulty_run: Path, tmp_path: Path
) -> None:
    summary = json.loads((faulty_run / "summary.json").read_text())["overall"]
    page = tmp_path / "report.html"
    code, text = invoke("report", str(faulty_run), "--html", str(page))
    assert code == 0, text
    by_status = summary["by_status"]
    assert f"rows: 40 ({by_status['error']:,} error, {by_status['ok']:,} ok)" in text
    assert f"cost: {summary['cost']:,.4f} CNY" in text
    assert "InternalError" in text  # retries by cause
    assert "estimate (batchkimi plan) against the bill" in text
    assert f"40 / {by_status['ok']}" in text  # requests planned / answered

    body = page.read_text()
    # self-contained: nothing to run, nothing fetched from anywhere
    assert "<script" not in body and "<link" not in body
    assert not re.search(r'(src|href)="(https?:)?//', body)
    drawn = shapes_in(body)
    assert set(drawn) == set(PLOTS)
    assert all(count > 10 for count in drawn.values()), drawn


def test_a_run_cut_short_is_reported_from_its_journal(faulty_run: Path) -> None:
    (faulty_run / "results.parquet").unlink()  # killed before its outputs were written
    (faulty_run / "summary.json").unlink()
    code, text = invoke("report", str(faulty_run))
    assert code == 0, text
    assert text.startswith("partial: read from the journal")
    assert "rows: 40" in text


def test_a_folder_without_a_run_is_a_clear_error(tmp_path: Path) -> None:
    code, text = invoke("report", str(tmp_path))
    assert code == 2
    assert "holds no batchkimi run" in text and "--output folder" in text


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (.ci/run installs it)")
def test_the_html_report_renders_every_plot_in_headless_chromium(
    faulty_run: Path, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    page = tmp_path / "report.html"
    assert invoke("report", str(faulty_run), "--html", str(page))[0] == 0
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *HEADLESS, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    drawn = shapes_in(dom)  # as the browser parsed and laid it out
    assert set(drawn) == set(PLOTS)
    assert all(count > 10 for count in drawn.values()), drawn
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *HEADLESS, "--window-size=1100,2400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert _png_size(shot) == (1100, 2400)
    assert shot.stat().st_size > 50_000  # pictures, not a blank page
