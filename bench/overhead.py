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
import sys
import tempfile
from pathlib import Path

import polars as pl
from harness import bench_env, measure, simulator

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with simulator(core=0) as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reviews = [
            f"Review {i}: it arrived on time and works well." for i in range(args.rows)
        ]
        manifest = folder / "m.csv"
        ids = [f"r{i}" for i in range(args.rows)]
        pl.DataFrame({"id": ids, "review": reviews}).write_csv(manifest)
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
        env = bench_env(str(folder / "state"))
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
        rates = {}
        for name, command in (("bare loop (baseline)", bare), ("batchkimi run", run)):
            done = measure(command, env=env, core=1)
            rates[name] = rate = args.rows / done.wall_s
            per_1k = done.cpu_s / args.rows * 1000
            print(f"{name:28} {rate:8.0f} {per_1k:13.2f} {done.peak_mb:8.0f}")
        ratio = rates["batchkimi run"] / rates["bare loop (baseline)"]
        print(f"ratio (batchkimi / bare loop): {ratio:.2f}")


if __name__ == "__main__":
    main()
