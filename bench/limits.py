"""How close batchkimi runs to Model Studio's limits without tripping them, and what
throttles and state that are not about the rate cost it.

The simulator runs in its own process, enforcing 500 requests and 1,000,000 tokens per
minute per model, per second (as the service may), with 200 ms to the first token.
Three scenarios, each measured from the rows' own finish times:

1. configured: a 3,000-row job told the limits (--rpm 500 --tpm 1000000);
2. adaptive: no limits configured; how soon does it reach 90% of the limit, and hold?
3. shared: two runs at once on one machine, each told the limits, 1,500 rows each.

Then two scenarios of issue 13, against zero-latency simulators with no limit, each
client in a fresh process on core 1, the simulators on core 0, every figure a ratio
to a baseline measured beside it:

4. random throttles: 5% of requests answered Throttling.RateQuota at random, 5,000
   rows, rows per second against the same run with no faults (target: at least
   0.5), with limits off (--rpm 0 --tpm 0: the run's own budgets) and with limits
   configured far above the server's (--rpm 100000000 --tpm 100000000000: the
   shared store), clean and noisy runs alternately, each client's runs on one
   state folder (a run starts on what those before it left);
5. untrusted state: the shared state file a run left, with its times moved a day
   ahead (as a reboot did to the old monotonic times) or its host renamed, and a
   queue in it no run would live to see the end of: rows per second against a run
   on an empty state folder, in turns (target: no slower).

Rows per second are the run's own figure (``rows_per_s`` in summary.json: rows sent
per second of scheduling, start-up left out).

    .venv/bin/python bench/limits.py [--rows 3000] [--adaptive-s 120]
        [--noise-rows 5000] [--repeat 3] [--scenarios 1,2,3,4,5]

Figures are ratios of the limit (requests per minute achieved / 500), or of a
baseline; throttled is the share of attempts the simulator refused with a 429.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from harness import batchkimi_run, bench_env, measure, simulator

RPM, TPM = 500, 1_000_000
ABSURD = ("--rpm", "100000000", "--tpm", "100000000000")
OFF = ("--rpm", "0", "--tpm", "0")
PROMPT = "Label: {review}. Answer with one of: good, bad"


def manifest(folder: Path, name: str, rows: int) -> Path:
    path = folder / f"{name}.csv"
    pl.DataFrame(
        {
            "id": [f"{name}{i:05d}" for i in range(rows)],
            "review": [
                f"{name} review {i}: arrived late, works fine." for i in range(rows)
            ],
        }
    ).write_csv(path)
    return path


def start_run(
    url: str, path: Path, out: Path, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    command = batchkimi_run(
        path,
        out,
        url,
        *("--concurrency", "64", *extra),
        prompt=PROMPT,
        unlimited=False,  # each scenario sets its own limits
    )
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def finished_times(out: Path) -> list[float]:
    results = pl.read_parquet(out / "results.parquet").filter(pl.col("status") == "ok")
    return sorted(datetime.fromisoformat(t).timestamp() for t in results["finished_at"])


def throttled_share(outs: list[Path]) -> float:
    attempts = throttles = 0
    for out in outs:
        overall = json.loads((out / "summary.json").read_text())["overall"]
        attempts += overall["attempts"]
        throttles += sum(
            n
            for cause, n in overall["retries_by_cause"].items()
            if "Throttling" in cause
        )
    return throttles / attempts if attempts else 0.0


def rows_per_s(out: Path) -> float:
    """The run's own figure: rows sent per second of scheduling (summary.json)."""
    return float(
        json.loads((out / "summary.json").read_text())["overall"]["rows_per_s"]
    )


def timed_run(
    url: str, path: Path, out: Path, env: dict[str, str], *limits: str
) -> float:
    """A whole run in a fresh process on core 1; its rows per second."""
    command = batchkimi_run(
        path,
        out,
        url,
        *("--no-stream", "--concurrency", "64", *limits),
        prompt=PROMPT,
        unlimited=False,
    )
    measure(command, env=env, core=1)
    return rows_per_s(out)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def random_throttles(folder: Path, rows: int, repeat: int) -> None:
    """Scenario 4: 5% random Throttling.RateQuota, no real limit, zero latency."""
    path = manifest(folder, "n", rows)
    noisy_knobs = ("--error-rate", "Throttling.RateQuota=0.05")
    print(
        f"4. {rows:,} rows, zero latency, no limit; 5% Throttling.RateQuota at "
        f"random; {repeat} pairs of runs, clean and noisy alternately"
    )
    header = ("client", "clean r/s", "5% r/s", "ratio: median (range)", "throttled")
    print("{:38} {:>9} {:>8} {:>22} {:>10}".format(*header))
    cases = (
        ("limits off (--rpm 0 --tpm 0)", OFF, "off"),
        ("limits 1e8/1e11 (shared store)", ABSURD, "shared"),
    )
    with (
        simulator(core=0) as clean,
        simulator(*noisy_knobs, core=0) as noisy,
    ):
        for name, limits, state in cases:
            # one state folder per client: each noisy run starts on what the runs
            # before it left (a collapsed rate would be inherited here)
            env = bench_env(str(folder / f"state-{state}"))
            bases, rates, ratios, outs = [], [], [], []
            for i in range(repeat):
                base = timed_run(clean, path, folder / f"c-{state}-{i}", env, *limits)
                out = folder / f"n-{state}-{i}"
                rate = timed_run(noisy, path, out, env, *limits)
                bases.append(base)
                rates.append(rate)
                ratios.append(rate / base)
                outs.append(out)
            print(
                f"{name:38} {statistics.median(bases):9.0f} "
                f"{statistics.median(rates):8.0f} {spread(ratios):>22} "
                f"{throttled_share(outs):10.2%}"
            )
            print("   ratios: " + ", ".join(f"{r:.2f}" for r in ratios))
    print("   target: ratio at least 0.5")


def untrusted_state(folder: Path, rows: int, repeat: int) -> None:
    """Scenario 5: a state file from the future, or from another host."""
    path = manifest(folder, "s", rows)
    print(
        f"5. {rows:,} rows, zero latency, limits 1e8/1e11, on a state file...; "
        f"{repeat} rounds"
    )
    print("{:44} {:>8} {:>22}".format("", "rows/s", "ratio: median (range)"))

    def ahead(raw: dict[str, Any]) -> None:
        raw["written_at"] += 86_400
        for budgets in raw["models"].values():
            for budget in budgets.values():
                budget["updated"] += 86_400

    def elsewhere(raw: dict[str, Any]) -> None:
        raw["host"] = "another-machine"

    edits: list[tuple[str, Callable[[dict[str, Any]], None] | None]] = [
        ("none: an empty state folder (baseline)", None),
        ("a day in the future", ahead),
        ("written on another host", elsewhere),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _ in edits}
    with simulator(core=0) as url:
        order = list(enumerate(edits))
        for round_ in range(repeat):
            turn = round_ % len(order)  # each case goes first in turn: no drift bias
            for i, (name, edit) in order[turn:] + order[:turn]:
                tag = f"{round_}-{i}"
                state = folder / f"state-{tag}"
                env = bench_env(str(state))
                if edit is not None:  # the file a real run leaves, then edited
                    prime = manifest(folder, f"p{tag}", 50)
                    timed_run(url, prime, folder / f"p{tag}", env, *ABSURD)
                    (file,) = (state / "batchkimi" / "ratelimits").glob("*.json")
                    raw = json.loads(file.read_text())
                    for budgets in raw["models"].values():
                        budgets["requests"]["level"] = -1e12  # a queue with no end
                    edit(raw)
                    file.write_text(json.dumps(raw))
                out = folder / f"s{tag}"
                rates[name].append(timed_run(url, path, out, env, *ABSURD))
    baseline = rates[edits[0][0]]
    for name, found in rates.items():
        ratios = [rate / base for rate, base in zip(found, baseline, strict=True)]
        print(f"{name:44} {statistics.median(found):8.0f} {spread(ratios):>22}")
    print("   target: no slower than the baseline (ratio about 1)")


def rate_per_minute(times: list[float], skip_s: float = 5.0) -> float:
    """Steady-state rate: rows finished after the first ``skip_s`` seconds."""
    start = times[0] + skip_s
    steady = [t for t in times if t >= start]
    return (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--adaptive-s", type=float, default=120.0)
    parser.add_argument("--noise-rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="of scenarios 4 and 5")
    parser.add_argument("--scenarios", default="1,2,3,4,5")
    args = parser.parse_args()
    scenarios = {int(n) for n in args.scenarios.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        if scenarios & {1, 2, 3}:
            at_the_limit(args, Path(tmp), scenarios)
        if 4 in scenarios:
            random_throttles(Path(tmp), args.noise_rows, args.repeat)
        if 5 in scenarios:
            untrusted_state(Path(tmp), args.noise_rows, args.repeat)


def at_the_limit(args: argparse.Namespace, folder: Path, scenarios: set[int]) -> None:
    """Scenarios 1 to 3, against a simulator enforcing the service's limits."""
    knobs = ("--rpm", str(RPM), "--tpm", str(TPM), "--ttft-ms", "200")
    with simulator(*knobs, "--tokens-per-s", "200") as url:
        env = bench_env(str(folder / "state"))
        limits = ("--rpm", str(RPM), "--tpm", str(TPM))
        print(f"limit: {RPM} requests/min, {TPM:,} tokens/min per model, per second")
        header = ("scenario", "rows", "req/min", "of limit", "throttled")
        print("{:44} {:>6} {:>8} {:>9} {:>10}".format(*header))

        if 1 in scenarios:
            out = folder / "configured"
            run = start_run(url, manifest(folder, "c", args.rows), out, env, *limits)
            run.wait()
            rate = rate_per_minute(finished_times(out))
            print(
                f"{'1. configured limits':44} {args.rows:6} {rate:8.0f} "
                f"{rate / RPM:9.1%} {throttled_share([out]):10.2%}"
            )
            time.sleep(2)  # let the simulator's buckets refill

        if 2 in scenarios:
            out = folder / "adaptive"
            run = start_run(
                url,
                manifest(folder, "a", args.rows * 4),
                out,
                env,
                *OFF,
                *("--max-runtime", str(args.adaptive_s)),
            )
            run.wait()
            times = finished_times(out)
            reached = next(
                (
                    t - times[0]
                    for i, t in enumerate(times)
                    if len([u for u in times[i:] if u - t < 10]) >= 0.9 * RPM / 6
                ),
                None,
            )
            rate = rate_per_minute(times, skip_s=30)
            print(
                f"{'2. adaptive, no limits configured (after 30 s)':44} "
                f"{len(times):6} {rate:8.0f} {rate / RPM:9.1%} "
                f"{throttled_share([out]):10.2%}"
            )
            print(
                "   first 10-second window at 90% of the limit began after "
                f"{reached:.0f} s"
                if reached is not None
                else "   never reached 90%"
            )
            time.sleep(2)

        if 3 in scenarios:
            outs = [folder / "shared-a", folder / "shared-b"]
            runs = [
                start_run(url, manifest(folder, name, args.rows // 2), o, env, *limits)
                for name, o in zip(("x", "y"), outs, strict=True)
            ]
            for r in runs:
                r.wait()
            times = sorted(finished_times(outs[0]) + finished_times(outs[1]))
            rate = rate_per_minute(times)
            print(
                f"{'3. two runs at once, one shared limit':44} {len(times):6} "
                f"{rate:8.0f} {rate / RPM:9.1%} {throttled_share(outs):10.2%}"
            )


if __name__ == "__main__":
    main()
