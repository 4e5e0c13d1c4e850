"""Sends ``HttpCall``s to Model Studio and times them. The only module with sockets.

httpx's API over aiohttp's connection pool (``httpx-aiohttp``): plain httpx's pool slows
down as concurrency grows into the hundreds; aiohttp's does not. Requests go straight to
the transport: a batch runner needs none of ``httpx.AsyncClient``'s per-request work
(base-URL merging, cookies, auth flows, redirects), and skipping it makes a request
cheaper than a bare ``client.post`` loop. The key is revealed here, into the
Authorization header, and nowhere else; no error carries headers.
Streams get an idle timeout that only ``data:`` events reset, because the service may
send keep-alive comments for many minutes (FACTS §2.2).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from batchkimi.api.base import HttpCall, StreamFold, WireProtocol, unreadable
from batchkimi.api.failures import classify_failure
from batchkimi.api.sse import SseDecoder, SseEvent, looks_like_sse
from batchkimi.clock import Clock
from batchkimi.credentials import ApiKey
from batchkimi.records import Completion, Failure
from batchkimi.version import USER_AGENT

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One attempt's outcome and timings."""

    result: Completion | Failure
    latency_ms: float
    ttft_ms: float | None


class ModelStudioClient:
    """An HTTP client sized for ``concurrency`` requests in flight."""

    def __init__(
        self,
        key: ApiKey,
        *,
        concurrency: int,
        timeout_s: float,
        clock: Clock,
        idle_timeout_s: float | None = None,
        connect_timeout_s: float = 10.0,
        workspace_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s or timeout_s
        self.clock = clock
        limits = httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency
        )
        headers = {
            "Authorization": f"Bearer {key.reveal()}",
            "User-Agent": USER_AGENT,
        }
        if workspace_id:
            headers["X-DashScope-WorkSpace"] = workspace_id
        self._headers = headers
        self._transport = transport or AiohttpTransport(limits=limits, trust_env=False)
        # pool: no wait (the pool is as large as the concurrency); read: our own
        timeout = httpx.Timeout(
            connect=connect_timeout_s, read=None, write=60.0, pool=None
        )
        self._extensions = {"timeout": timeout.as_dict()}
        self._urls: dict[str, httpx.URL] = {}
        self._merged: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _request(self, call: HttpCall) -> httpx.Request:
        """An httpx request for ``call``; URLs and header sets are parsed once each."""
        url = self._urls.get(call.url)
        if url is None:
            url = self._urls[call.url] = httpx.URL(call.url)
        extra = tuple(call.headers.items())
        headers = self._merged.get(extra)
        if headers is None:
            headers = self._merged[extra] = httpx.Headers(
                {**self._headers, **dict(extra)}
            )
        return httpx.Request(
            "POST", url, headers=headers, content=call.body, extensions=self._extensions
        )

    async def send(self, call: HttpCall, protocol: WireProtocol) -> Exchange:
        """Send one call; transport faults come back as transient Failures."""
        start = self.clock.monotonic()
        ttft: list[float] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._exchange(call, protocol, start, ttft)
        except TimeoutError:
            result = classify_failure(
                None, "timeout", f"no complete answer within {self.timeout_s:g} s"
            )
        except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            result = classify_failure(
                None, "connection_error", f"{type(exc).__name__}: {exc}".rstrip(": ")
            )
        latency_ms = (self.clock.monotonic() - start) * 1000
        return Exchange(result, latency_ms, ttft[0] if ttft else None)

    async def _exchange(
        self, call: HttpCall, protocol: WireProtocol, start: float, ttft: list[float]
    ) -> Completion | Failure:
        response = await self._transport.handle_async_request(self._request(call))
        try:
            headers = response.headers  # case-insensitive: no copy per response
            if response.status_code != 200:
                return protocol.parse(
                    response.status_code, await response.aread(), headers
                )
            if "text/event-stream" in headers.get("content-type", ""):
                chunks = response.aiter_bytes()  # decoded, should a server compress
                return await self._fold_stream(chunks, protocol, headers, start, ttft)
            body = await response.aread()
            if looks_like_sse(body):  # FACTS §3.1: a gateway may label SSE as JSON
                return await self._fold_stream(
                    _once(body), protocol, headers, start, ttft
                )
            try:
                return protocol.parse(200, body, headers)
            except Exception as exc:  # noqa: BLE001 - a paid answer is kept whole
                return unreadable(body, exc)
        finally:
            await response.aclose()

    async def _fold_stream(
        self,
        body: AsyncIterator[bytes],
        protocol: WireProtocol,
        headers: Mapping[str, str],
        start: float,
        ttft: list[float],
    ) -> Completion | Failure:
        decoder = SseDecoder()
        fold = protocol.new_fold(headers)
        chunks = aiter(body)
        kept: list[bytes] = []  # the raw stream, should reading it fail
        try:
            return await self._fold_events(
                chunks, decoder, fold, kept, headers, start, ttft
            )
        except _UnreadableError as exc:  # a paid answer is kept whole: read it all
            with contextlib.suppress(
                TimeoutError, httpx.TransportError, aiohttp.ClientError, OSError
            ):
                async with asyncio.timeout(self.idle_timeout_s):
                    async for chunk in chunks:
                        # one by one: a stall must not lose what already came
                        kept.append(chunk)  # noqa: PERF401
            return unreadable(b"".join(kept), exc.cause)

    async def _fold_events(
        self,
        chunks: AsyncIterator[bytes],
        decoder: SseDecoder,
        fold: StreamFold,
        kept: list[bytes],
        headers: Mapping[str, str],
        start: float,
        ttft: list[float],
    ) -> Completion | Failure:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    events: list[SseEvent] = []
                    # keep reading until a data event arrives: comments are not progress
                    while not events:
                        chunk = await anext(chunks, None)
                        if chunk is None:
                            events = _reading(decoder.close)
                            break
                        kept.append(chunk)
                        events = _reading(decoder.feed, chunk)
            except TimeoutError:
                return classify_failure(
                    None,
                    "timeout",
                    f"the stream sent no data for {self.idle_timeout_s:g} s",
                    request_id=headers.get("x-request-id"),
                )
            if not ttft and events:
                ttft.append((self.clock.monotonic() - start) * 1000)
            for event in events:
                failure = _reading(fold.feed, event)
                if failure is not None:
                    return failure
            if chunk is None:
                return _reading(fold.finish)


class _UnreadableError(Exception):
    """Reading a received stream failed (a codec bug), not the transport."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _reading(step: Callable[..., T], *args: Any) -> T:
    """Run one step of reading an answer; a fault in it is the codec's, and the
    answer (already received) must be kept, not retried as a transport error."""
    try:
        return step(*args)
    except Exception as exc:  # whatever broke, the answer is kept
        raise _UnreadableError(exc) from exc


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
