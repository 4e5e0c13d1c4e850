"""The simulator's own ceiling: requests per second on one core.

The server runs pinned to core 0 and an aiohttp load generator to core 1, so each has
a core of its own. On this 2-core machine one Python load generator saturates before
the server does, so besides the measured rate the script reports the server's CPU time
per request and the ceiling it implies (1000 / ms: requests per second on one core).
The baseline is a minimal ASGI app answering a fixed JSON body under the same uvicorn
configuration, measured in the same run; the ratio is what the simulator's fidelity
(parsing, answer composition, framing) costs against the bare server stack.

    .venv/bin/python bench/simulator_ceiling.py [--requests 6000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

_BARE_APP = """
import socket, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
sock = socket.socket(); sock.bind(("127.0.0.1", 0))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the simulator does
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False,
               lifespan="off", http="httptools", loop="asyncio")).run(sockets=[sock])
"""

_BODY = {
    "model": "kimi-k2.6",
    "messages": [
        {"role": "system", "content": "Answer with the label only."},
        {
            "role": "user",
            "content": "Review: great kettle. Answer with one of: good, bad",
        },
    ],
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    os.sched_setaffinity(process.pid, {0})
    url = first if first.startswith("http") else f"http://127.0.0.1:{first}"
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while True:  # the port is printed before the server listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return process, url


async def load(url: str, body: dict, requests: int, concurrency: int) -> float:
    payload = json.dumps(body).encode()
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def measure(
    command: list[str], path: str, body: dict, args: argparse.Namespace
) -> tuple[float, float]:
    process, url = start(command)
    try:
        asyncio.run(load(url + path, body, 300, args.concurrency))  # warm up
        cpu_before = cpu_seconds(process.pid)
        elapsed = asyncio.run(load(url + path, body, args.requests, args.concurrency))
        cpu = cpu_seconds(process.pid) - cpu_before
    finally:
        process.terminate()
        process.wait()
    return args.requests / elapsed, cpu / args.requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    simulator = [sys.executable, "-m", "batchkimi", "simulator", "--port", "0"]
    compat = "/compatible-mode/v1/chat/completions"
    cases = [
        ("bare ASGI app (baseline)", [sys.executable, "-c", _BARE_APP], "/", _BODY),
        ("simulator, non-streaming", simulator, compat, _BODY),
        (
            "simulator, streaming",
            simulator,
            compat,
            {**_BODY, "stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            "simulator, streaming + thinking",
            simulator,
            compat,
            {**_BODY, "stream": True, "enable_thinking": True},
        ),
    ]
    print(
        f"{args.requests} requests, concurrency {args.concurrency}, server on one core"
    )
    print(
        f"{'case':34} {'measured req/s':>14} {'server ms/req':>13} "
        f"{'ceiling req/s':>13} {'vs baseline':>11}"
    )
    baseline = None
    for name, command, path, body in cases:
        rate, cpu_ms = measure(command, path, body, args)
        ceiling = 1000 / cpu_ms
        baseline = baseline or ceiling
        print(
            f"{name:34} {rate:14.0f} {cpu_ms:13.3f} {ceiling:13.0f} "
            f"{ceiling / baseline:11.2f}"
        )
    socket.socket().close()


if __name__ == "__main__":
    main()
