"""Resuming a 1,000,000-row job, and starting at all: time and peak memory.

Sending a million real requests to set this up would take half an hour, so the job is
made directly: a manifest, and one answer per row keyed by the row's real request
fingerprint (computed by batchkimi's own request builder), journaled by batchkimi's
own journal, so rotated and compacted into segments as a run leaves them. A copy of
the folder keeps the same answers as one JSONL journal, as folders written before
segments have them. Then, each in a fresh process, in the same run:

1. baseline: ``python -c pass`` (the interpreter alone);
2. ``batchkimi --help`` and ``batchkimi --version``;
3. the first resume: every row answered, nothing sent, and no register from an
   earlier run, so every row's request is built to find its fingerprint; builds
   results.parquet and summary.json (the full path);
4. the resume of the now-finished job, as a nightly cron entry would run it;
5. one new row appended to the manifest, then a resume: the manifest only grew, so
   the million rows the last run left stand as they are and only the new row is
   read, built and sent (to a simulator); results.parquet and summary.json are
   built again (``store.appended``);
6. the last row edited, then a resume: every row is read again (the full path),
   with the register the last run left, so only the edited row is built and sent;
7. the first resume of the folder from before segments (its journal is compacted on
   the way, once).

With ``--profile``, case 5 again in one process, timed phase by phase, with the
peak memory at the end of each: what the store does (answers read, results built)
and what the row source does (the manifest read into requests), and the size of the
run's set of answered fingerprints (none is read when the rows appended are few).
With ``--profile-full``, case 6 the same way.

    .venv/bin/python bench/resume_million.py [--rows 1000000] [--profile]
        [--folder DIR]   (make the job there and keep it; reuse it when present)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from harness import bench_env, measure, simulator

from batchkimi.manifest.reader import open_manifest
from batchkimi.manifest.requests import RequestBuilder
from batchkimi.records import RowResult, RowStatus
from batchkimi.settings import Source, load_job
from batchkimi.store.journal import Journal

_PROMPT = "Label: {review}. Answer with one of: good, bad"
#: the full path in this process, each phase timed (the row source inside its
#: generator), RSS peaks as they stand when each phase ends
_PROFILE = r"""
import json, resource, sys, time
import batchkimi.runner as runner
import batchkimi.store.results as results

phases, peaks = {}, {}
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def note(name, seconds):
    phases[name] = phases.get(name, 0.0) + seconds
    peaks[name] = peak()
def timed(name, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            note(name, time.perf_counter() - start)
    return wrapper

sizes = {}
def answered(*args, **kwargs):
    found = answered_set(*args, **kwargs)
    sizes["done_rows"] = len(found)
    return found
answered_set = runner.answered_set
runner.answered_set = timed("store: answered fingerprints read", answered)
runner.JournalLookup.unanswered = timed(
    "store: journal asked about new rows (in row source)",
    runner.JournalLookup.unanswered,
)
write_results = runner.write_results
def built_results(*args, **kwargs):
    built = write_results(*args, **kwargs)
    sizes["copied"] = built.copied
    return built
runner.write_results = timed("store: results.parquet built", built_results)
runner.shared_ids = timed("store: shared ids", runner.shared_ids)
results.Built.summary = timed("store: summary", results.Built.summary)
runner.Journal.open = timed("store: journal opened", runner.Journal.open)
runner.Journal.close = timed("store: journal closed", runner.Journal.close)
import batchkimi.manifest.reader as reader
reader.check_rows = timed("manifest: every line checked", reader.check_rows)
runner.RowRegister.commit = timed("register committed", runner.RowRegister.commit)
batches = runner.RowSource.batches
def timed_batches(self):
    rows = batches(self)
    while True:
        start = time.perf_counter()
        try:
            item = next(rows)
        except StopIteration:
            return
        finally:
            note("row source: manifest rows into requests", time.perf_counter() - start)
        sizes["built"] = self.built
        yield item
runner.RowSource.batches = timed_batches
sys.argv = ["batchkimi", *sys.argv[1:]]
from batchkimi.cli import main
start = time.perf_counter()
try:
    main()
except SystemExit:
    pass
total = time.perf_counter() - start
print(json.dumps({"total": total, "peak": peak(), "phases": phases, "peaks": peaks,
                  "sizes": sizes}))
"""


def make_job(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    """The manifest, an output folder as a run with segments leaves it, and the same
    answers as one JSONL journal (an output folder from before segments)."""
    manifest = folder / "manifest.csv"
    output, legacy = folder / "out", folder / "out-before-segments"
    if (output / ".batchkimi").is_dir():
        return manifest, output, legacy
    pl.DataFrame(
        {
            "id": [f"r{i:07d}" for i in range(rows)],
            "review": [
                f"Review {i}: it arrived on time and works well." for i in range(rows)
            ],
        }
    ).write_csv(manifest)
    spec = load_job(
        [Source("bench", {"input": manifest, "output": output, "prompt": _PROMPT})]
    )
    opened = open_manifest(manifest)
    builder = RequestBuilder(spec, opened.columns, str(manifest))
    journal, _ = Journal.open(output / ".batchkimi")
    old, _ = Journal.open(legacy / ".batchkimi", rotate_bytes=1 << 62)
    index = 0
    for batch in opened.iter_batches(20_000):
        for row in batch.iter_rows(named=True):
            request = builder.build(index, row)
            index += 1
            result = RowResult(
                request.fingerprint,
                RowStatus.OK,
                request.model,
                "openai",
                content="good",
                finish_reason="stop",
                input_tokens=31,
                output_tokens=1,
                reasoning_tokens=0,
                cached_tokens=0,
                total_tokens=32,
                attempts=1,
                latency_ms=812.5,
                ttft_ms=640.1,
                request_id=f"{index:032x}",
                response_model=request.model,
                http_status=200,
                started_at="2026-11-24T01:00:00+00:00",
                finished_at="2026-11-24T01:00:01+00:00",
            )
            journal.append(result, row_id=request.row_id)
            old.append(result, row_id=request.row_id)
    journal.close()
    old.close()
    return manifest, output, legacy


def profile(run: list[str], folder: Path, case: str) -> None:
    """A resume once more, phase by phase (imports excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROFILE, *run[3:]],
        capture_output=True,
        text=True,
        check=True,
        env=bench_env(str(folder / "state")),
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{case}, phase by phase (one process, {report['total']:.2f} s):")
    print(f"{'phase':44} {'s':>6} {'peak MB after':>14}")
    for name, seconds in sorted(report["phases"].items(), key=lambda p: -p[1]):
        print(f"{name:44} {seconds:6.2f} {report['peaks'][name]:14.0f}")
    # (a phase "in row source" is part of the row source's time already)
    other = report["total"] - sum(
        seconds
        for name, seconds in report["phases"].items()
        if "(in row source)" not in name
    )
    print(f"{'everything else (imports, scheduler, …)':44} {other:6.2f}")
    sizes = report["sizes"]
    if sizes:
        done = sizes.get("done_rows")
        print(
            f"answered fingerprints read: {'none' if done is None else f'{done:,}'}; "
            f"rows built into requests: {sizes.get('built', 0):,}; results blocks "
            f"copied from the last results.parquet: {sizes.get('copied', 0):,}"
        )


def _forget_outputs(out: Path, *, register: bool = True) -> None:
    """As if the run that journaled the answers was killed before its outputs (and,
    with ``register``, before it had read the whole manifest)."""
    names = ["results.parquet", "summary.json", ".batchkimi/state.json"]
    if register:
        names.append(".batchkimi/rows.parquet")
    for name in names:
        (out / name).unlink(missing_ok=True)


def _append_row(manifest: Path) -> None:
    """One more row at the end of the manifest, as tomorrow's data would add it."""
    rows = pl.scan_csv(manifest).select(pl.len()).collect().item()
    with manifest.open("a", encoding="utf-8") as out:
        out.write(f"n{rows:07d},A new review {rows}: it came today.\n")


def _edit_last_row(manifest: Path) -> None:
    """The last row's text changed in place, as a correction would change it."""
    data = manifest.read_bytes()
    body, last = data[:-1].rsplit(b"\n", 1)
    row_id, text = last.split(b",", 1)
    edited = text + b" (edited)" if not text.endswith(b" (edited)") else text[:-9]
    manifest.write_bytes(body + b"\n" + row_id + b"," + edited + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-full", action="store_true")
    parser.add_argument("--folder", type=Path, help="make the job here and keep it")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, simulator() as url:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        manifest, output, legacy = make_job(folder, args.rows)
        made_s = time.monotonic() - started
        print(f"made a finished {args.rows:,}-row job in {made_s:.0f} s")
        copy = folder / "out-before-segments-copy"
        batchkimi = [sys.executable, "-m", "batchkimi"]

        def run(out: Path) -> list[str]:
            return [
                *batchkimi,
                *("run", "-i", str(manifest), "-o", str(out), "--prompt", _PROMPT),
                *("--base-url", url),
            ]

        def fresh_copy() -> None:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(legacy, copy)
            _forget_outputs(copy)

        def nothing() -> None:
            pass

        cases = [
            ("baseline: python -c pass", [sys.executable, "-c", "pass"], nothing),
            ("batchkimi --help", [*batchkimi, "--help"], nothing),
            ("batchkimi --version", [*batchkimi, "--version"], nothing),
            (
                "first resume: full path, builds results",
                run(output),
                lambda: _forget_outputs(output),
            ),
            ("resume of the finished job", run(output), nothing),
            (
                "one new row appended: the rows before it carried",
                run(output),
                lambda: _append_row(manifest),
            ),
            (
                "last row edited: the full path, the register reused",
                run(output),
                lambda: _edit_last_row(manifest),
            ),
            ("first resume of a folder from before segments", run(copy), fresh_copy),
        ]
        baseline = None
        print(f"{'case':48} {'wall s':>8} {'peak MB':>8} {'vs baseline':>12}")
        for name, command, reset in cases:
            runs = []
            for _ in range(args.repeat):
                reset()
                runs.append(measure(command, env=bench_env(str(folder / "state"))))
            best = min(runs, key=lambda measured: measured.wall_s)
            baseline = baseline or best.wall_s
            ratio = best.wall_s / baseline
            print(f"{name:48} {best.wall_s:8.2f} {best.peak_mb:8.0f} {ratio:11.1f}x")
        rows = (
            pl.scan_parquet(output / "results.parquet")
            .select(pl.len())
            .collect()
            .item()
        )
        print(f"results.parquet rows: {rows:,}")
        if args.profile:  # one new row (case 5)
            _append_row(manifest)
            profile(run(output), folder, "one new row appended")
        if args.profile_full:  # the full path with the register (case 6)
            _edit_last_row(manifest)
            profile(run(output), folder, "last row edited (the full path)")
        shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    main()
