"""batchkimi against servers that are not its own simulator: the same protocol, written
down differently. Gateways and proxies in front of Model Studio compress, relabel and
reframe; a valid answer must be read however it is dressed.

The server here is a raw asyncio socket server that replays exact bytes, so each test
controls every header and every byte of the body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REVIEWS, make_spec, read_results, run

Reply = Callable[[dict[str, Any]], bytes]  # request body -> whole HTTP response


class ReplayServer:
    """Answers every POST with ``reply(body)``; counts what it served."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.served = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length))
                self.served += 1
                response = self.reply(body)
                writer.write(response)
                await writer.drain()
                if b"connection: close" in response.lower().split(b"\r\n\r\n")[0]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], ReplayServer]]:
    servers: list[ReplayServer] = []

    def start(reply: Reply) -> ReplayServer:
        server = ReplayServer(reply).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def http(
    status: int, headers: dict[str, str], body: bytes, *, close: bool = False
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if close:  # an HTTP/1.0-style body: no length, it ends when the socket closes
        lines.append("Connection: close")
    else:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


USAGE_NATIVE = {"input_tokens": 11, "output_tokens": 2, "total_tokens": 13}
USAGE_COMPAT = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}


def native_events(*, newline: str = "\n", space: str = "") -> bytes:
    """A native stream of two pieces of text, then a final chunk whose content is
    ``[{"text": ""}]`` (FACTS §2.2 leaves ``[]`` or this open)."""

    def chunk(content: list[dict[str, str]], finish: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": content, "reasoning_content": ""}
        return {
            "output": {"choices": [{"message": message, "finish_reason": finish}]},
            "usage": USAGE_NATIVE,
            "request_id": "req-replay",
        }

    chunks = [
        chunk([{"text": "posi"}], "null"),
        chunk([{"text": "tive"}], "null"),
        chunk([{"text": ""}], "stop"),
    ]
    frames = [
        f"id:{space}{i}{newline}event:{space}result{newline}:HTTP_STATUS/200{newline}"
        f"data:{space}{json.dumps(c)}{newline}{newline}"
        for i, c in enumerate(chunks, 1)
    ]
    return "".join(frames).encode()


def compat_events() -> bytes:
    chunks: list[dict[str, Any]] = [
        {
            "choices": [
                {"index": 0, "delta": {"content": "posi"}, "finish_reason": None}
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"content": "tive"}, "finish_reason": "stop"}
            ]
        },
        {"choices": [], "usage": USAGE_COMPAT},
    ]
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return text.encode()


SSE = {"Content-Type": "text/event-stream;charset=UTF-8"}

CASES: dict[str, tuple[str, Reply]] = {
    "native stream, gzip-compressed": (
        "dashscope",
        lambda body: http(
            200, {**SSE, "Content-Encoding": "gzip"}, gzip.compress(native_events())
        ),
    ),
    "compatible stream, gzip-compressed": (
        "openai",
        lambda body: http(
            200, {**SSE, "Content-Encoding": "gzip"}, gzip.compress(compat_events())
        ),
    ),
    "native stream labelled application/json": (
        "dashscope",
        lambda body: http(200, {"Content-Type": "application/json"}, native_events()),
    ),
    "native stream, CRLF lines and spaces after colons": (
        "dashscope",
        lambda body: http(200, SSE, native_events(newline="\r\n", space=" ")),
    ),
    "native stream ending with the connection (no length)": (
        "dashscope",
        lambda body: http(200, SSE, native_events(), close=True),
    ),
    "compatible stream ending with the connection (no length)": (
        "openai",
        lambda body: http(200, SSE, compat_events(), close=True),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_valid_answer_is_read_however_it_is_framed(
    tmp_path: Path,
    serve: Callable[[Reply], ReplayServer],
    case: str,
) -> None:
    api, reply = CASES[case]
    server = serve(reply)
    spec = make_spec(tmp_path, server, api=api, stream=True)
    outcome = run(spec)
    results = read_results(spec)
    assert outcome.exit_code == 0, results["error_message"].to_list()
    assert results["content"].to_list() == ["positive"] * results.height
    assert results["input_tokens"].to_list() == [11] * results.height
    assert results["attempts"].to_list() == [1] * results.height
    assert server.served == results.height


@pytest.mark.parametrize(
    "glitch",
    [b"", b"<html><body>upstream reset</body></html>"],
    ids=["empty", "html"],
)
def test_a_success_status_without_an_answer_is_tried_again(
    tmp_path: Path, serve: Callable[[Reply], ReplayServer], glitch: bytes
) -> None:
    """A proxy that answers 200 with nothing usable: not the row's fault, so it is
    retried like a 5xx, and the next answer is kept."""
    served: list[int] = []

    def reply(body: dict[str, Any]) -> bytes:
        served.append(1)
        if len(served) == 1:
            return http(200, {"Content-Type": "text/html"}, glitch)
        return http(200, SSE, compat_events())

    server = serve(reply)
    spec = make_spec(tmp_path, server, rows=REVIEWS[:1], api="openai", stream=True)
    assert run(spec).exit_code == 0
    results = read_results(spec)
    assert results["content"].to_list() == ["positive"]
    assert results["attempts"].to_list() == [2]
    assert json.loads(results["retries"][0]) == {"bad_response": 1}
