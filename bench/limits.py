"""How close batchkimi runs to Model Studio's limits without tripping them.

The simulator runs in its own process, enforcing 500 requests and 1,000,000 tokens per
minute per model, per second (as the service may), with 200 ms to the first token.
Three scenarios, each measured from the rows' own finish times:

1. configured: a 3,000-row job told the limits (--rpm 500 --tpm 1000000);
2. adaptive: no limits configured; how soon does it reach 90% of the limit, and hold?
3. shared: two runs at once on one machine, each told the limits, 1,500 rows each.

    .venv/bin/python bench/limits.py [--rows 3000] [--adaptive-s 120]

Figures are ratios of the limit (requests per minute achieved / 500); throttled is the
share of attempts the simulator refused with a 429.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, simulator

RPM, TPM = 500, 1_000_000


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
        prompt="Label: {review}. Answer with one of: good, bad",
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


def rate_per_minute(times: list[float], skip_s: float = 5.0) -> float:
    """Steady-state rate: rows finished after the first ``skip_s`` seconds."""
    start = times[0] + skip_s
    steady = [t for t in times if t >= start]
    return (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--adaptive-s", type=float, default=120.0)
    args = parser.parse_args()
    knobs = (
        "--rpm",
        str(RPM),
        "--tpm",
        str(TPM),
        "--ttft-ms",
        "200",
        "--tokens-per-s",
        "200",
    )
    with simulator(*knobs) as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = bench_env(str(folder / "state"))
        limits = ("--rpm", str(RPM), "--tpm", str(TPM))
        print(f"limit: {RPM} requests/min, {TPM:,} tokens/min per model, per second")
        header = ("scenario", "rows", "req/min", "of limit", "throttled")
        print("{:44} {:>6} {:>8} {:>9} {:>10}".format(*header))

        out = folder / "configured"
        run = start_run(url, manifest(folder, "c", args.rows), out, env, *limits)
        run.wait()
        rate = rate_per_minute(finished_times(out))
        print(
            f"{'1. configured limits':44} {args.rows:6} {rate:8.0f} "
            f"{rate / RPM:9.1%} {throttled_share([out]):10.2%}"
        )

        time.sleep(2)  # let the simulator's buckets refill
        out = folder / "adaptive"
        run = start_run(
            url,
            manifest(folder, "a", args.rows * 4),
            out,
            env,
            "--rpm",
            "0",
            "--tpm",
            "0",
            "--max-runtime",
            str(args.adaptive_s),
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
            f"{'2. adaptive, no limits configured (after 30 s)':44} {len(times):6} "
            f"{rate:8.0f} {rate / RPM:9.1%} {throttled_share([out]):10.2%}"
        )
        print(
            f"   first 10-second window at 90% of the limit began after {reached:.0f} s"
            if reached is not None
            else "   never reached 90%"
        )

        time.sleep(2)
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
