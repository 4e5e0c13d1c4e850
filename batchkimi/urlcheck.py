"""Media URLs checked before the service is asked to fetch them (``--check-urls``).

The service fetches an image or video URL itself and refuses one that is missing or
too large: an image over 10 MB, a video over 2 GB (FACTS §1.4; the Kimi page's file
limitations). Asked to, batchkimi looks first, with a ``HEAD`` request (or a one-byte
ranged ``GET`` where a server refuses ``HEAD``), so ``plan`` can list dead links and
oversized files before anything is paid for, and ``run`` does not send them.

Off by default: it sends traffic to the media hosts, which a user may not expect. A
host that cannot be reached, answers 5xx or gives no length is not held against the
row: the service may fare better, and it is the judge. Frame lists are not checked
(thousands of URLs a row). Results are remembered per URL, so a URL named by many rows
is asked about once.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from batchkimi.media.limits import IMAGE_MAX_BYTES, MB, VIDEO_URL_MAX_BYTES
from batchkimi.media.preflight import MediaProblem, display_name, remote_media
from batchkimi.oncecache import OnceCache
from batchkimi.records import RowRequest
from batchkimi.version import USER_AGENT

#: what the service takes by URL, by kind of media
URL_LIMITS = {"image": IMAGE_MAX_BYTES, "video": VIDEO_URL_MAX_BYTES}
_REMEMBERED = 65_536  # URLs whose verdict is kept: memory stays bounded
_TOTAL = re.compile(r"/(\d+)\s*$")  # Content-Range: bytes 0-0/12345
_FIX = "Fix the URL, or give a local copy (batchkimi sends local files itself)"


def _size(nbytes: int) -> str:
    return (
        f"{nbytes / MB:,.1f} MB" if nbytes < 1024 * MB else f"{nbytes / 2**30:.2f} GB"
    )


class UrlChecker:
    """Looks at media URLs over HTTP; one instance per run or plan."""

    def __init__(
        self,
        *,
        concurrency: int = 16,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
            trust_env=True,  # the proxy a user's network needs, as a browser would
        )
        self._slots = asyncio.Semaphore(concurrency)
        #: (URL, kind) -> why the service would refuse it, or None: each asked once
        self._verdicts: OnceCache[tuple[str, str], str | None] = OnceCache(
            size=_REMEMBERED, now=time.monotonic
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def problems(self, request: RowRequest) -> list[MediaProblem]:
        """The problems of every image and video URL of ``request``."""
        media = remote_media(request)
        verdicts = await asyncio.gather(
            *(self.problem(url, kind) for kind, url in media)
        )
        return [
            MediaProblem(kind, display_name(url), verdict, _FIX)
            for (kind, url), verdict in zip(media, verdicts, strict=True)
            if verdict is not None
        ]

    async def problem(self, url: str, kind: str) -> str | None:
        """Why the service would refuse ``url`` as a ``kind`` (image or video), or
        None when it looks fetchable (or could not be looked at)."""
        return await self._verdicts.get((url, kind), lambda: self._look(url, kind))

    async def _look(self, url: str, kind: str) -> str | None:
        async with self._slots:
            try:
                response = await self._http.head(url)
                if response.status_code in (405, 501):  # no HEAD here: ask for a byte
                    ranged = {"Range": "bytes=0-0"}
                    async with self._http.stream("GET", url, headers=ranged) as got:
                        response = got  # its headers only: the body is never read
            except httpx.HTTPError:
                return None  # unreachable from here: the service may fare better
        status = response.status_code
        if status in (401, 403, 404, 410):
            return (
                f"answers HTTP {status} here, so the service cannot fetch it either "
                "(a URL must be public, or an oss:// URL of the temporary upload)"
            )
        if status >= 400:
            return None  # 5xx, 429…: not the row's fault, and perhaps passing
        length = _length(response)
        limit = URL_LIMITS[kind]
        if length is not None and length > limit:
            article = "an" if kind == "image" else "a"
            return (
                f"is {_size(length)}; {article} {kind} by URL may be at most "
                f"{_size(limit)}"
            )
        return None


def _length(response: httpx.Response) -> int | None:
    """The whole file's size: Content-Range's total for a ranged answer, else
    Content-Length (a HEAD answer's, which describes the body a GET would get)."""
    ranged = _TOTAL.search(response.headers.get("content-range", ""))
    if ranged:
        return int(ranged.group(1))
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None
