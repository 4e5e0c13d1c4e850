"""batchkimi's own cost per request, against a bare loop with the same HTTP client.

A zero-latency simulator runs pinned to core 0. On core 1, each in a fresh process:
a bare loop (the twenty lines below: the same requests, the same httpx-over-aiohttp
client, the same concurrency, no manifest, no journal, no Parquet), then a whole
``batchkimi run`` of the same rows (manifest in, Parquet out). The script prints both,
with CPU seconds per 1,000 requests, peak memory, and the ratio of their rates.

    .venv/bin/python bench/overhead.py [--rows 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

_PROMPT = "Label: {review}. Answer with one of: good, bad"

BARE_LOOP = """
import asyncio, json, sys, httpx
from httpx_aiohttp import AiohttpTransport
url, bodies, concurrency = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
async def main():
    limits = httpx.Limits(max_connections=concurrency,
                          max_keepalive_connections=concurrency)
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits)) as client:
        queue = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(json.dumps(body).encode())
        async def worker():
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(url, content=body, headers=headers)
                assert response.status_code == 200
                response.json()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
asyncio.run(main())
"""

_MEASURE = (
    "import os, resource, subprocess, sys, time; os.sched_setaffinity(0, {1}); "
    "start = time.monotonic(); "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "wall = time.monotonic() - start; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code)"
)


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS MB) of a command on core 1."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    wall, cpu, peak_kb, code = done.stdout.split()[-4:]
    if code != "0":
        raise SystemExit(f"{command[:4]} failed with {code}: {done.stderr[-500:]}")
    return float(wall), float(cpu), int(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "batchkimi", "simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    os.sched_setaffinity(simulator.pid, {0})
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            reviews = [
                f"Review {i}: it arrived on time and works well."
                for i in range(args.rows)
            ]
            manifest = folder / "m.csv"
            pl.DataFrame(
                {"id": [f"r{i}" for i in range(args.rows)], "review": reviews}
            ).write_csv(manifest)
            bodies = [
                {
                    "model": "kimi-k2.6",
                    "messages": [
                        {"role": "user", "content": _PROMPT.format(review=review)}
                    ],
                }
                for review in reviews
            ]
            (folder / "bodies.json").write_text(json.dumps(bodies))
            env = {
                **os.environ,
                "DASHSCOPE_API_KEY": "sk-bench",
                "XDG_STATE_HOME": str(folder / "state"),
            }
            bare = [
                sys.executable,
                "-c",
                BARE_LOOP,
                f"{url}/compatible-mode/v1/chat/completions",
                str(folder / "bodies.json"),
                str(args.concurrency),
            ]
            run = [
                sys.executable,
                "-m",
                "batchkimi",
                "run",
                "-i",
                str(manifest),
                "-o",
                str(folder / "out"),
                "--prompt",
                _PROMPT,
                "--base-url",
                url,
                "--no-stream",
                "--concurrency",
                str(args.concurrency),
                "--rpm",
                "0",
                "--tpm",
                "0",
                "--quiet",
            ]
            print(
                f"{args.rows:,} requests, concurrency {args.concurrency}, "
                "client on core 1, zero-latency simulator on core 0"
            )
            print(f"{'':28} {'req/s':>8} {'CPU s/1k req':>13} {'peak MB':>8}")
            results = {}
            for name, command in (
                ("bare loop (baseline)", bare),
                ("batchkimi run", run),
            ):
                wall, cpu, peak = measure(command, env)
                results[name] = rate = args.rows / wall
                per_1k = cpu / args.rows * 1000
                print(f"{name:28} {rate:8.0f} {per_1k:13.2f} {peak:8.0f}")
            ratio = results["batchkimi run"] / results["bare loop (baseline)"]
            print(f"ratio (batchkimi / bare loop): {ratio:.2f}")
    finally:
        simulator.terminate()
        simulator.wait()


if __name__ == "__main__":
    main()
