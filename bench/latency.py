"""Throughput when every answer takes 200 ms: does concurrency 256 deliver 256 / 0.2 s?

The simulator (its own process, core 0) answers every request after 200 ms. On core
1, each in a fresh process: a bare aiohttp loop at the same concurrency (the baseline),
then a whole ``batchkimi run``. Steady-state throughput is read from completion times,
leaving out the first and last second, and compared with concurrency / latency.

    .venv/bin/python bench/latency.py [--concurrency 256] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, measure, simulator

LATENCY_S = 0.2
_PROMPT = "Label: {review}. Answer with one of: good, bad"

BARE_LOOP = """
import asyncio, json, sys, time, aiohttp
url, out = sys.argv[1], sys.argv[4]
count, concurrency = int(sys.argv[2]), int(sys.argv[3])
async def main():
    done = []
    headers = {"Authorization": "Bearer sk-bench"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = asyncio.Queue()
        for i in range(count):
            queue.put_nowait({"model": "kimi-k2.6", "stream": True,
                              "messages": [{"role": "user", "content": f"review {i}"}]})
        async def worker():
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                done.append(time.time())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    json.dump(done, open(out, "w"))
asyncio.run(main())
"""


def steady_rate(times: list[float]) -> float:
    times = sorted(times)
    steady = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]
    return (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    ideal = args.concurrency / LATENCY_S
    rows = int(ideal * args.seconds)
    knobs = ("--ttft-ms", str(LATENCY_S * 1000))
    with simulator(*knobs, core=0) as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = bench_env(str(folder / "state"))
        times_path = folder / "bare.json"
        endpoint = f"{url}/compatible-mode/v1/chat/completions"
        bare_loop = [
            sys.executable,
            "-c",
            BARE_LOOP,
            endpoint,
            str(rows),
            str(args.concurrency),
            str(times_path),
        ]
        measure(bare_loop, env=env, core=1)
        bare = steady_rate(json.loads(times_path.read_text()))
        manifest = folder / "m.csv"
        ids = [f"r{i}" for i in range(rows)]
        pl.DataFrame({"id": ids, "review": [f"review {i}" for i in ids]}).write_csv(
            manifest
        )
        run = batchkimi_run(
            manifest,
            folder / "out",
            url,
            *("--concurrency", str(args.concurrency)),
            prompt=_PROMPT,
        )
        measure(run, env=env, core=1)
        finished = pl.read_parquet(folder / "out" / "results.parquet")["finished_at"]
        ours = steady_rate([datetime.fromisoformat(t).timestamp() for t in finished])
    print(
        f"{rows:,} requests, {LATENCY_S * 1000:.0f} ms each, concurrency "
        f"{args.concurrency}: at most {ideal:.0f} req/s"
    )
    print(f"bare aiohttp loop:   {bare:7.0f} req/s  ({bare / ideal:.0%} of the ideal)")
    print(
        f"batchkimi run:       {ours:7.0f} req/s  ({ours / ideal:.0%} of the ideal, "
        f"{ours / bare:.2f} of the bare loop)"
    )


if __name__ == "__main__":
    main()
