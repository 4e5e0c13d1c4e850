"""Local media onto the wire, just before a row is sent.

A row's request names local files as ``file://`` URLs; here, moments before its first
attempt, they are checked once more (``media.preflight``) and turned into what the
service takes: base64 data URLs, temporary uploads (native API, up to 100 MB) or
frames extracted here. File reading, encoding and frame extraction run in a worker
thread, so the event loop keeps serving other rows; and only rows about to be sent
hold their media, so memory follows the concurrency, not the archive's size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable

from batchkimi.media.encode import data_url, file_data_url, shrink_image
from batchkimi.media.frames import extract_frames
from batchkimi.media.limits import FPS_MAX, FPS_MIN, IMAGE_TYPES, VIDEO_TYPES
from batchkimi.media.paths import local_path
from batchkimi.media.preflight import (
    AUDIO_NOTE,
    MediaProblem,
    MediaSettings,
    Route,
    describe_problems,
    has_video_file,
    inspect,
    is_local,
    needs_preparing,
    remote_media,
    sampling,
)
from batchkimi.media.probe import ProbeError
from batchkimi.records import Failure, ImagePart, Message, Part, RowRequest, VideoPart
from batchkimi.uploads import UPLOAD_FAILED, TemporaryUploader, UploadError
from batchkimi.urlcheck import UrlChecker


class MediaPreparer:
    """Makes a request's local media sendable, or says why it cannot be sent."""

    def __init__(
        self,
        settings: MediaSettings,
        uploader: TemporaryUploader | None,
        urls: UrlChecker | None = None,
        on_advice: Callable[[str], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        """``on_advice`` hears of media the service takes but advises against (an
        image over 8K), one sentence each; ``on_note``, once, that videos are
        seen without their sound."""
        self.settings = settings
        self.uploader = uploader
        self.urls = urls  # --check-urls: media URLs are looked at first
        self.on_advice = on_advice
        self.on_note = on_note

    async def prepare(self, request: RowRequest) -> RowRequest | Failure:
        if self.on_note is not None and has_video_file(request):
            self.on_note(f"note: {AUDIO_NOTE}")
            self.on_note = None  # once a run
        if self.urls is not None and remote_media(request):
            problems = await self.urls.problems(request)
            if problems:
                described = describe_problems(request, problems, self.settings)
                return Failure("row", "invalid_media", described, None)
        if not needs_preparing(request):
            return request
        advice: list[MediaProblem] = []
        checked, routes, problems = await asyncio.to_thread(
            inspect, request, self.settings, advice
        )
        if advice and self.on_advice is not None:
            self.on_advice(describe_problems(request, advice, self.settings))
        if problems:
            described = describe_problems(request, problems, self.settings)
            return Failure("row", "invalid_media", described, None)
        messages: list[Message] = []
        try:
            for message in checked.messages:
                parts = [
                    await self._part(part, routes[id(part)], request.model)
                    for part in message.parts
                ]
                messages.append(dataclasses.replace(message, parts=tuple(parts)))
        except UploadError as exc:
            return exc.failure
        except (ProbeError, OSError) as exc:
            return Failure("row", "invalid_media", f"{exc}", None)
        return dataclasses.replace(checked, messages=tuple(messages))

    async def _part(self, part: Part, route: Route, model: str) -> Part:
        if route is Route.AS_IS:
            return part
        if isinstance(part, ImagePart):
            return ImagePart(await self._image(part.url, route, model))
        if not isinstance(part, VideoPart):
            return part
        if part.url is None:  # a local frame list
            frames = [
                await asyncio.to_thread(_image_data_url, f) if is_local(f) else f
                for f in part.frames
            ]
            return dataclasses.replace(part, frames=tuple(frames), stamp="")
        path = local_path(part.url)
        mime = VIDEO_TYPES[path.suffix.lower()]
        if route is Route.DATA_URL:
            return dataclasses.replace(
                part, url=await asyncio.to_thread(file_data_url, path, mime), stamp=""
            )
        if route is Route.UPLOAD:
            return dataclasses.replace(
                part, url=await self._upload(model, part.url, mime), stamp=""
            )
        fps, max_frames = sampling(part)
        stop = threading.Event()
        try:
            jpegs = await asyncio.to_thread(
                extract_frames,
                path,
                fps=fps,
                max_frames=max_frames,
                max_side=self.settings.frame_max_side,
                stop=stop,
                threads=self.settings.decode_threads,
            )
        except asyncio.CancelledError:
            stop.set()  # the thread ends at its next frame; the run need not wait
            raise
        duration = part.duration_s or len(jpegs) / fps
        # the rate the frames were taken at, as the service expects with a frame list
        taken_at = min(FPS_MAX, max(FPS_MIN, round(len(jpegs) / duration, 2)))
        return VideoPart(
            frames=tuple(data_url(j, "image/jpeg") for j in jpegs),
            fps=taken_at,
            duration_s=duration,
        )

    async def _image(self, url: str, route: Route, model: str) -> str:
        path = local_path(url)
        if route is Route.SHRINK:
            return data_url(await asyncio.to_thread(shrink_image, path), "image/jpeg")
        mime = IMAGE_TYPES[path.suffix.lower()]
        if route is Route.UPLOAD:
            return await self._upload(model, url, mime)
        return await asyncio.to_thread(file_data_url, path, mime)

    async def _upload(self, model: str, url: str, mime: str) -> str:
        if self.uploader is None:  # preflight routes uploads to the native API only
            msg = "the temporary upload needs the native API (--api dashscope)"
            raise UploadError(Failure("row", UPLOAD_FAILED, msg, None))
        return await self.uploader.upload(model, local_path(url), mime)


def _image_data_url(url: str) -> str:
    path = local_path(url)
    return file_data_url(path, IMAGE_TYPES[path.suffix.lower()])
