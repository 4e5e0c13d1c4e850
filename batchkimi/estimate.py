"""Token estimates made before sending: pure arithmetic over a request.

Used where batchkimi must decide before the service has answered: a cost budget counts
every request in flight at its worst case. Estimates err high on purpose; the service's
reported usage replaces them once an answer arrives.
"""

from __future__ import annotations

import math

from batchkimi.catalogue import ModelInfo
from batchkimi.records import ImagePart, Message, RowRequest, TextPart

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


def text_tokens(text: str) -> int:
    """About three characters a token: high for English, near right for CJK text."""
    return math.ceil(len(text) / 3)


def input_tokens(messages: tuple[Message, ...]) -> int:
    total = 0
    for message in messages:
        total += 4  # role and separators
        for part in message.parts:
            if isinstance(part, TextPart):
                total += text_tokens(part.text)
            elif isinstance(part, ImagePart):
                total += IMAGE_TOKENS
            else:
                frames = len(part.frames) or min(
                    part.max_frames or URL_VIDEO_FRAMES, URL_VIDEO_FRAMES
                )
                total += FRAME_TOKENS * frames
        if message.reasoning_content:
            total += text_tokens(message.reasoning_content)
    return total


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
