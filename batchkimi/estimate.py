"""Token estimates made before sending: pure arithmetic over a request.

Used where batchkimi must decide before the service has answered: a cost budget counts
every request in flight at its worst case. Estimates err high on purpose; the service's
reported usage replaces them once an answer arrives.
"""

from __future__ import annotations

import math

from batchkimi import jsoncodec
from batchkimi.catalogue import ModelInfo
from batchkimi.records import (
    ImagePart,
    Message,
    RowRequest,
    TextPart,
    Tool,
    Usage,
    VideoPart,
)

#: Per image and per video frame. The Kimi pages document no rate; these are the
#: generous ends of Model Studio's vision models (a 2K image, a 448-pixel frame), so a
#: budget built on them is not overrun by media.
IMAGE_TOKENS = 2_500
FRAME_TOKENS = 260
#: frames a video given by URL is assumed to yield (FACTS: fps 2, up to 2,000 frames)
URL_VIDEO_FRAMES = 2_000
#: when the catalogue knows no limit for a model (FACTS §6.2 gaps)
DEFAULT_MAX_OUTPUT = 32_768
DEFAULT_MAX_REASONING = 32_768
#: the context Moonshot publishes for the models Model Studio gives none for (FACTS
#: §6.2: "probably 262,144")
DEFAULT_CONTEXT = 262_144


def text_tokens(text: str) -> int:
    """About three characters a token: high for English, near right for CJK text."""
    return math.ceil(len(text) / 3)


def video_frames(part: VideoPart, *, unknown: int | None = None) -> int:
    """Frames the service will see: a frame list's length; a video of known length
    sampled at its fps (default 2) up to max_frames; else ``unknown``, by default the
    most it may take."""
    cap = min(part.max_frames or URL_VIDEO_FRAMES, URL_VIDEO_FRAMES)
    if part.frames:
        return len(part.frames)
    if part.duration_s is not None:
        return max(4, min(cap, math.floor(part.duration_s * (part.fps or 2.0))))
    return cap if unknown is None else min(cap, unknown)


def input_tokens(
    messages: tuple[Message, ...], *, unknown_video_frames: int | None = None
) -> int:
    """Input tokens of ``messages``; a video of unknown length counts as the most
    frames it may yield, or as ``unknown_video_frames``."""
    total = 0
    for message in messages:
        total += 4  # role and separators
        for part in message.parts:
            if isinstance(part, TextPart):
                total += text_tokens(part.text)
            elif isinstance(part, ImagePart):
                total += IMAGE_TOKENS
            else:
                total += FRAME_TOKENS * video_frames(part, unknown=unknown_video_frames)
        if message.reasoning_content:
            total += text_tokens(message.reasoning_content)
    return total


#: FACTS §6.3: an explicit cache block needs at least this many tokens
EXPLICIT_CACHE_MIN_TOKENS = 1_024


def tool_tokens(tools: tuple[Tool, ...]) -> int:
    """Input tokens of tool definitions (a structured job's schema is one)."""
    return sum(
        text_tokens(tool.name + tool.description)
        + text_tokens(jsoncodec.dumps(tool.parameters).decode())
        for tool in tools
    )


def request_input_tokens(request: RowRequest) -> int:
    """Input tokens of a whole request: its messages and its tool definitions (a
    structured job's schema travels in every request)."""
    total = input_tokens(request.messages) + tool_tokens(request.tools)
    for message in request.messages:
        for call in message.tool_calls:
            total += text_tokens(call.name + call.arguments)
    return total


def cached_prefix_tokens(request: RowRequest) -> int:
    """Input tokens up to and including the turn marked for the explicit cache (the
    tool definitions come first), or 0 when nothing is marked."""
    for end, message in enumerate(request.messages, start=1):
        if any(isinstance(p, TextPart) and p.cache for p in message.parts):
            return input_tokens(request.messages[:end]) + tool_tokens(request.tools)
    return 0


def worst_output_tokens(request: RowRequest, info: ModelInfo) -> int:
    """The most output tokens (thinking included) the service may bill for a request."""
    params = dict(request.parameters)
    if isinstance(params.get("max_completion_tokens"), int):
        return int(params["max_completion_tokens"])  # FACTS §1.3: counts the thinking
    answer = params.get("max_tokens")
    answer = answer if isinstance(answer, int) else info.max_output_tokens
    thinks = (
        request.enable_thinking
        if request.enable_thinking is not None
        else info.thinking_by_default()
    )
    reasoning = (info.max_reasoning_tokens or DEFAULT_MAX_REASONING) if thinks else 0
    return (answer or DEFAULT_MAX_OUTPUT) + reasoning


#: a repair turn's reply: the validator's message and the request to answer again
REPAIR_REPLY_TOKENS = 80


def worst_case(request: RowRequest, info: ModelInfo, repairs: int = 0) -> Usage:
    """The most a request may be billed for: every answer using its whole output
    budget and, for a structured request, every answer invalid and repaired
    ``repairs`` times (each repair resends the conversation, grown by the answer
    and the validator's reply)."""
    estimated = request_input_tokens(request)
    worst = worst_output_tokens(request, info)
    return Usage(
        input_tokens=sum(
            estimated + turn * (worst + REPAIR_REPLY_TOKENS)
            for turn in range(repairs + 1)
        ),
        output_tokens=worst * (repairs + 1),
    )


def input_limit(request: RowRequest, info: ModelInfo) -> tuple[int, str]:
    """The most input tokens ``request`` may carry, and where that figure is from."""
    thinks = (
        request.enable_thinking
        if request.enable_thinking is not None
        else info.thinking_by_default()
    )
    limit = info.max_input_tokens_thinking if thinks else None
    limit = limit or info.max_input_tokens
    if limit is not None:
        return limit, f"{info.name}'s maximum input"
    return info.context_tokens or DEFAULT_CONTEXT, f"{info.name}'s context window"
