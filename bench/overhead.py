"""batchkimi's own cost per request, against a bare loop with the same HTTP client.

A zero-latency simulator runs pinned to core 0. On core 1, each in a fresh process:
a bare loop (the twenty lines below: the same requests, the same httpx-over-aiohttp
client, the same concurrency, no manifest, no journal, no Parquet), then a whole
``batchkimi run`` of the same rows (manifest in, Parquet out). The script prints both,
with CPU seconds per 1,000 requests, peak memory, and the ratio of their rates.

batchkimi hands its requests straight to the transport, skipping ``AsyncClient``'s
per-request work; so the script also runs a second bare loop that does the same
(``--direct`` in the loop below), the strictest baseline, and prints both ratios.

The run goes twice: with limits off (``--rpm 0 --tpm 0``) and with limits configured
far above what any server allows (``--rpm 100000000 --tpm 100000000000``), which
paces nothing but goes through the whole rate machinery, the budgets shared through
the state file included (issue 13: a raised quota must never be slower than no limit;
targets: 0.9 of the run with limits off, 0.8 of the bare loop). ``--repeat N`` runs
the two alternately N times and reports the median of each.

With ``--curator PYTHON`` (an interpreter with ``bespokelabs-curator`` installed; it
pins dependencies of its own, so give it its own venv), it also runs the same rows
through Curator's OpenAI backend against the same simulator, telemetry off and its
tokenizer read from the copy litellm bundles, so nothing leaves the machine.

    .venv/bin/python bench/overhead.py [--rows 20000] [--concurrency 64]
        [--repeat 1] [--curator /tmp/curator/bin/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, measure, simulator

_PROMPT = "Label: {review}. Answer with one of: good, bad"
#: far above any server's limits: nothing is paced, everything is accounted
ABSURD_LIMITS = ("--rpm", "100000000", "--tpm", "100000000000")
OFF, LIMITED = "batchkimi run", "batchkimi run, limits 1e8/1e11"

BARE_LOOP = """
import asyncio, json, sys, httpx
from httpx_aiohttp import AiohttpTransport
url, bodies, concurrency = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
direct = sys.argv[4:] == ["--direct"]
async def main():
    limits = httpx.Limits(max_connections=concurrency,
                          max_keepalive_connections=concurrency)
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:
        queue = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(json.dumps(body).encode())
        async def post(body):
            if not direct:
                return await client.post(url, content=body, headers=headers)
            request = httpx.Request("POST", url, content=body, headers=headers)
            response = await transport.handle_async_request(request)
            await response.aread()
            return response
        async def worker():
            while not queue.empty():
                response = await post(queue.get_nowait())
                assert response.status_code == 200
                response.json()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
asyncio.run(main())
"""

CURATOR = """
import importlib.util, os, sys
litellm = importlib.util.find_spec("litellm").submodule_search_locations[0]
tokenizers = os.path.join(litellm, "litellm_core_utils", "tokenizers")
os.environ["TIKTOKEN_CACHE_DIR"] = tokenizers
from bespokelabs import curator
url, rows, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Label(curator.LLM):
    def prompt(self, row):
        return f"Label: {row['review']}. Answer with one of: good, bad"
    def parse(self, row, response):
        return {"id": row["id"], "answer": response}
llm = Label(model_name="kimi-k2.6", backend="openai", backend_params={
    "base_url": url, "api_key": "sk-bench", "max_concurrent_requests": concurrency,
    "max_requests_per_minute": 10**8, "max_tokens_per_minute": 10**11})
reviews = [f"Review {i}: it arrived on time and works well." for i in range(rows)]
done = llm([{"id": f"r{i}", "review": review} for i, review in enumerate(reviews)])
assert len(done.dataset) == rows, len(done.dataset)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each batchkimi")
    parser.add_argument("--curator", metavar="PYTHON", help="a Python with Curator")
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

        def run(number: int, *limits: str) -> list[str]:
            """A whole run into a folder of its own (else the next one resumes)."""
            return batchkimi_run(
                manifest,
                folder / f"out-{number}",
                url,
                *("--no-stream", "--concurrency", str(args.concurrency), *limits),
                prompt=_PROMPT,
                unlimited=not limits,
            )

        print(
            f"{args.rows:,} requests, concurrency {args.concurrency}, "
            "client on core 1, zero-latency simulator on core 0"
        )
        print(f"{'':32} {'req/s':>8} {'CPU s/1k req':>13} {'peak MB':>8}")
        runs: list[tuple[str, list[str]]] = [
            ("bare loop (baseline)", bare),
            ("bare loop, transport direct", [*bare, "--direct"]),
        ]
        for _ in range(args.repeat):  # alternately, so drift hits both alike
            for name, limits in ((OFF, ()), (LIMITED, ABSURD_LIMITS)):
                runs.append((name, run(len(runs), *limits)))
        if args.curator:
            curator = [
                args.curator,
                "-c",
                CURATOR,
                f"{url}/compatible-mode/v1",
                str(args.rows),
                str(args.concurrency),
            ]
            runs.append(("Curator", curator))
        curator_env = {
            **env,
            "TELEMETRY_ENABLED": "false",
            "CURATOR_CACHE_DIR": str(folder / "curator"),
        }
        every: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for name, command in runs:
            done = measure(
                command, env=curator_env if name == "Curator" else env, core=1
            )
            rate = args.rows / done.wall_s
            every.setdefault(name, []).append(rate)
            per_1k = done.cpu_s / args.rows * 1000
            cpu.setdefault(name, []).append(per_1k)
            print(f"{name:32} {rate:8.0f} {per_1k:13.2f} {done.peak_mb:8.0f}")
        rates = {name: statistics.median(found) for name, found in every.items()}
        if args.repeat > 1:
            print(f"(batchkimi figures below: medians of {args.repeat} runs each)")
        for baseline in rates:
            if baseline in (OFF, LIMITED):
                continue
            ratio = rates[OFF] / rates[baseline]
            print(f"ratio (batchkimi / {baseline}): {ratio:.2f}")
        print(
            f"ratio (limits configured / limits off): {rates[LIMITED] / rates[OFF]:.2f}"
            " (target 0.9)"
        )
        print(
            "ratio (limits configured / bare loop): "
            f"{rates[LIMITED] / rates['bare loop (baseline)']:.2f} (target 0.8)"
        )
        # CPU time per request is steadier than the rate on a shared machine
        per_request = statistics.median(cpu[LIMITED]) / statistics.median(cpu[OFF])
        print(f"CPU per request (limits configured / limits off): {per_request:.2f}")


if __name__ == "__main__":
    main()
