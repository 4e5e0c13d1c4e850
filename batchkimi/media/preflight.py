"""Every documented media limit, checked against a row's files before anything is
sent: by ``batchkimi plan`` for the whole manifest, and again just before each send.

It also decides how each local file will travel (``Route``), since the limits depend
on it: a base64 data URL (both APIs, 10 MB encoded), the temporary upload (native API
only, 100 MB), or frames extracted here (a video too large for either, or when the
job asks). Remote URLs are the service's to fetch and are not checked here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from batchkimi.media.limits import (
    FPS_DEFAULT,
    IMAGE_MAX_BYTES,
    IMAGE_TYPES,
    MAX_FRAMES_DEFAULT,
    VIDEO_LOCAL_MAX_BYTES,
    VIDEO_TYPES,
    check_duration,
    check_encoded,
    check_image,
    data_url_length,
    image_advice,
)
from batchkimi.media.paths import LOCAL_PREFIX, local_path
from batchkimi.media.probe import ProbeError, image_info, split_data_url, video_info
from batchkimi.records import ImagePart, Message, Part, RowRequest, VideoPart
from batchkimi.settings import Job

T = TypeVar("T")


class Route(StrEnum):
    AS_IS = "as_is"  # a remote URL, or a data URL already in the manifest
    DATA_URL = "data_url"
    UPLOAD = "upload"  # the temporary upload: native API only
    SHRINK = "shrink"  # an image re-encoded smaller first (fix_images)
    FRAMES = "frames"  # a video sampled into frames here


@dataclass(frozen=True, slots=True)
class MediaSettings:
    native: bool  # the DashScope API (which alone has the temporary upload)
    video_frames: str = "auto"  # auto | always | never
    fix_images: bool = False
    frame_max_side: int = 768
    #: the manifest column of each media role, where the job maps it elsewhere
    columns: tuple[tuple[str, str], ...] = ()
    #: threads a video is decoded on; 0: FFmpeg's choice (a Ray worker holds its
    #: own CPUs to what the cluster gave it)
    decode_threads: int = 0

    def column(self, role: str) -> str:
        """The manifest column a media role (image, video, frames) is read from."""
        return dict(self.columns).get(role, role)


def media_settings(job: Job) -> MediaSettings:
    return MediaSettings(
        native=job.connection.api == "dashscope",
        video_frames=job.media.video_frames,
        fix_images=job.media.fix_images,
        frame_max_side=job.media.frame_max_side,
        columns=tuple(
            (role, job.reading.column(role)) for role in ("image", "video", "frames")
        ),
    )


@dataclass(frozen=True, slots=True)
class MediaProblem:
    role: str  # image | video | frames: the column it came from
    file: str
    problem: str
    fix: str

    @property
    def message(self) -> str:
        return f"{self.file} {self.problem}. {self.fix}".strip()


def describe_problems(
    request: RowRequest, problems: list[MediaProblem], settings: MediaSettings
) -> str:
    """One sentence for a row's media problems, the same in ``plan`` and ``run``:
    the row, its id, each column, the file, the limit and the fix."""
    where = f'row {request.index + 1:,} (id "{request.row_id}")'
    return f"{where}, " + "; ".join(
        f'column "{settings.column(p.role)}": {p.message}' for p in problems
    )


class _Refused(Exception):
    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def is_local(url: str | None) -> bool:
    return url is not None and url.startswith(LOCAL_PREFIX)


def media_urls(part: Part) -> list[str]:
    if isinstance(part, ImagePart):
        return [part.url]
    if isinstance(part, VideoPart):
        return [part.url] if part.url else list(part.frames)
    return []


def has_video_file(request: RowRequest) -> bool:
    """Whether the request sends a video file (whose sound the model never hears:
    both seed pages say the audio track is ignored), not only frames."""
    return any(
        isinstance(part, VideoPart) and part.url is not None
        for message in request.messages
        for part in message.parts
    )


#: told once per run (and in `plan`) that sends videos
AUDIO_NOTE = (
    "the model sees a video's frames only: its audio track is ignored (Model Studio's "
    "Kimi page); transcribe speech separately if the captions need it"
)


def remote_media(request: RowRequest) -> list[tuple[str, str]]:
    """(role, URL) of every http(s) image and video file the service would fetch;
    frame lists are left out (thousands of URLs a row)."""
    found: list[tuple[str, str]] = []
    for message in request.messages:
        for part in message.parts:
            url = part.url if isinstance(part, ImagePart | VideoPart) else None
            if url is not None and url.startswith(("http://", "https://")):
                found.append(("image" if isinstance(part, ImagePart) else "video", url))
    return found


def needs_preparing(request: RowRequest) -> bool:
    """Whether any part is a local file or a data URL (both are checked here)."""
    return any(
        url.startswith((LOCAL_PREFIX, "data:"))
        for message in request.messages
        for part in message.parts
        for url in media_urls(part)
    )


def image_route(
    url: str, settings: MediaSettings, advice: list[MediaProblem] | None = None
) -> Route:
    """Check one image; how it will travel. Raises _Refused."""
    if url.startswith("data:"):
        mime, data = _data(url, "image/")
        _raise(check_encoded(len(url), "an image"))
        info = _probe(lambda: image_info(data))
        if info.width is not None and info.height is not None:
            _raise(check_image(info.width, info.height, mime, None))
        return Route.AS_IS
    if not is_local(url):
        return Route.AS_IS
    path = local_path(url)
    mime = IMAGE_TYPES[path.suffix.lower()]
    size = path.stat().st_size
    info = _probe(lambda: image_info(path))
    problem = None
    if info.width is not None and info.height is not None:
        problem = check_image(info.width, info.height, mime, size)
        if problem is None and (hint := image_advice(info.width, info.height)):
            if settings.fix_images:
                return Route.SHRINK
            if advice is not None:
                advice.append(MediaProblem("image", display_name(url), hint, ""))
    fixable = problem is not None and not _unfixable(problem)
    if problem and not (fixable and settings.fix_images):
        raise _Refused(problem, "Set fix_images = true to shrink it" if fixable else "")
    if fixable:
        return Route.SHRINK
    if data_url_length(size, mime) <= IMAGE_MAX_BYTES:
        return Route.DATA_URL
    if settings.native:
        return Route.UPLOAD  # within 10 MB as a file, over it as base64
    if settings.fix_images:
        return Route.SHRINK
    raise _Refused(
        check_encoded(data_url_length(size, mime), "an image") or "",
        "Set fix_images = true to re-encode it, or use --api dashscope (which "
        "uploads it)",
    )


def _unfixable(problem: str) -> bool:
    return "px; width and height" in problem or "aspect ratio" in problem


def video_route(part: VideoPart, settings: MediaSettings) -> tuple[Route, float | None]:
    """Check one video file; how it will travel, and its length when local."""
    url = part.url or ""
    if url.startswith("data:"):
        _data(url, "video/")
        _raise(check_encoded(len(url), "a video"))
        return Route.AS_IS, None
    if not is_local(url):
        return Route.AS_IS, None
    path = local_path(url)
    info = _probe(lambda: video_info(path))
    if too_long_or_short := check_duration(info.duration_s):
        fix = (
            "Cut it into clips of at most an hour"
            if info.duration_s > 1
            else "Give it as a frame list (4 or more frames) instead"
        )
        raise _Refused(too_long_or_short, fix)
    size = path.stat().st_size
    mime = VIDEO_TYPES[path.suffix.lower()]
    if settings.video_frames == "always":
        return Route.FRAMES, info.duration_s
    if data_url_length(size, mime) <= IMAGE_MAX_BYTES:
        return Route.DATA_URL, info.duration_s
    if settings.native and size <= VIDEO_LOCAL_MAX_BYTES:
        return Route.UPLOAD, info.duration_s
    if settings.video_frames == "auto":
        return Route.FRAMES, info.duration_s
    limit = "100 MB through the upload" if settings.native else "10 MB as base64"
    raise _Refused(
        f"is {size:,} bytes ({size / 2**20:,.1f} MB), over what can be sent ({limit})",
        "Set video_frames = auto to send frames extracted from it",
    )


def inspect(
    request: RowRequest,
    settings: MediaSettings,
    advice: list[MediaProblem] | None = None,
) -> tuple[RowRequest, dict[int, Route], list[MediaProblem]]:
    """Check every media part of ``request``. Returns the request with local videos'
    lengths filled in, each media part's route (keyed by ``id`` of the part in the
    returned request), and the problems (none when it can be sent). What the
    service advises against but takes goes to ``advice``."""
    problems: list[MediaProblem] = []
    routes: dict[int, Route] = {}
    messages: list[Message] = []
    for message in request.messages:
        parts: list[Part] = []
        for part in message.parts:
            route = Route.AS_IS
            if isinstance(part, ImagePart):
                route = _checked(
                    problems, "image", part.url, image_route, settings, advice
                )
            elif isinstance(part, VideoPart) and part.url is not None:
                url = part.url
                try:
                    route, duration = video_route(part, settings)
                    part = dataclasses.replace(part, duration_s=duration)
                except (_Refused, OSError) as exc:
                    problems.append(_problem("video", url, exc))
            elif isinstance(part, VideoPart):
                for frame in part.frames:
                    _checked(problems, "frames", frame, image_route, settings, advice)
                if any(map(is_local, part.frames)):
                    route = Route.DATA_URL
            parts.append(part)
            routes[id(part)] = route
        messages.append(dataclasses.replace(message, parts=tuple(parts)))
    return dataclasses.replace(request, messages=tuple(messages)), routes, problems


def _checked(
    problems: list[MediaProblem],
    role: str,
    url: str,
    check: Callable[[str, MediaSettings, list[MediaProblem] | None], Route],
    settings: MediaSettings,
    advice: list[MediaProblem] | None,
) -> Route:
    try:
        return check(url, settings, advice)
    except (_Refused, OSError) as exc:
        problems.append(_problem(role, url, exc))
        return Route.AS_IS


def _problem(role: str, url: str, exc: Exception) -> MediaProblem:
    if isinstance(exc, _Refused):
        return MediaProblem(role, display_name(url), exc.problem, exc.fix)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return MediaProblem(role, display_name(url), f"cannot be read: {reason}", "")


def display_name(url: str) -> str:
    """A file's path, or a URL short enough for a message."""
    if is_local(url):
        return str(local_path(url))
    return url if len(url) <= 60 else url[:40] + "…"


def _data(url: str, kind: str) -> tuple[str, bytes]:
    mime, data = _probe(lambda: split_data_url(url))
    if not mime.startswith(kind):
        raise _Refused(f"is a data URL of {mime or 'no type'}, not {kind}*")
    return mime, data


def _probe(read: Callable[[], T]) -> T:
    try:
        return read()
    except ProbeError as exc:
        raise _Refused(
            str(exc), exc.fix or "Check that it is whole and of the type its name says"
        ) from None


def _raise(problem: str | None) -> None:
    if problem:
        raise _Refused(problem)


def sampling(part: VideoPart) -> tuple[float, int]:
    """The fps and max_frames a video is sampled at: the row's, else the defaults."""
    return part.fps or FPS_DEFAULT, part.max_frames or MAX_FRAMES_DEFAULT
