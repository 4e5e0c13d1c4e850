"""The sender a job's rows go through, built the same way wherever they leave from.

This process (``runner``) and a worker on a Ray cluster (``batchkimi.ray``) both send
through a ``RowSender`` made here from the job: the same client, codec, retries,
media preparation (frames extracted where the row is sent), answer checks and rate
budgets. What differs between them (where the budgets live, where answers are
journaled, who hears of retries) is given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from batchkimi.answers.check import AnswerChecker
from batchkimi.api import protocol_for
from batchkimi.client import ModelStudioClient
from batchkimi.clock import Clock
from batchkimi.credentials import ApiKey
from batchkimi.media.preflight import MediaSettings
from batchkimi.pricing import PriceTable
from batchkimi.records import RowRequest, RowResult
from batchkimi.schedule.limitstore import LimitStore
from batchkimi.schedule.media import MediaPreparer
from batchkimi.schedule.sender import RowSender, SendSettings
from batchkimi.settings import Job
from batchkimi.uploads import TemporaryUploader
from batchkimi.urlcheck import UrlChecker


@dataclass(slots=True)
class Sending:
    """A sender and the connections it holds (closed with ``aclose``)."""

    sender: RowSender
    client: ModelStudioClient
    uploader: TemporaryUploader | None
    urls: UrlChecker | None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.uploader is not None:
            await self.uploader.aclose()
        if self.urls is not None:
            await self.urls.aclose()


def open_sender(
    job: Job,
    prices: PriceTable,
    media: MediaSettings,
    key: ApiKey,
    *,
    clock: Clock,
    limits: LimitStore,
    on_answer: Callable[[RowRequest, RowResult], None],
    on_retry: Callable[[str, str, int], None] | None = None,
    on_advice: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    resume: Mapping[str, RowResult] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Sending:
    """A sender for ``job``'s rows. ``on_answer`` journals a paid answer that is
    asked again (a structured repair); ``on_retry`` hears (row id, code, attempt);
    ``resume`` holds rows an earlier run left with a paid answer in hand."""
    connection = job.connection
    client = ModelStudioClient(
        key,
        concurrency=job.pacing.concurrency,
        timeout_s=connection.timeout_s,
        idle_timeout_s=connection.idle_timeout_s,
        clock=clock,
        workspace_id=connection.workspace_id if connection.base_url is None else None,
        transport=transport,
    )
    uploader = (
        TemporaryUploader(
            key, connection.resolved_base_url, clock=clock, transport=transport
        )
        if connection.api == "dashscope"
        else None
    )
    urls = (
        UrlChecker(concurrency=job.pacing.concurrency) if job.media.check_urls else None
    )
    answer = job.asking.answer
    sender = RowSender(
        client,
        protocol_for(connection.api, job.catalogue),
        SendSettings(
            base_url=connection.resolved_base_url,
            stream=connection.stream,
            max_attempts=job.pacing.max_attempts,
            region=connection.region,
            prices=prices,
            max_throttle_wait_s=job.pacing.max_throttle_wait_s,
            catalogue=job.catalogue,
        ),
        clock,
        on_retry=(
            None
            if on_retry is None
            else lambda request, exc, attempt: on_retry(
                request.row_id, exc.code, attempt
            )
        ),
        limits=limits,
        media=MediaPreparer(
            media, uploader, urls, on_advice=on_advice, on_note=on_note
        ),
        answers=AnswerChecker(answer) if answer is not None else None,
        on_answer=on_answer,
        resume=resume,
    )
    return Sending(sender, client, uploader, urls)
