"""How the simulated service behaves: seeded knobs, deterministic answers, token counts.

Answers depend only on the request and the seed, so a test that sends the same request
twice gets the same answer. A prompt that ends with "one of: a, b, c" is answered with
one of those labels, so a labelling demo looks like labelling.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchkimi.simulator.answers import INVALID_KINDS
from batchkimi.simulator.limits import Limits

_PROSE = (
    "the review mentions quality price delivery and overall value which suggests a "
    "clear opinion about the product its packaging the seller and how well it works "
    "in daily use compared with what the buyer expected"
)
_WORDS = _PROSE.split()
_LABELS = re.compile(r"one of[:\s]+([^\n.?]+)", re.IGNORECASE)


@dataclass(slots=True)
class Fault:
    """A scripted misbehaviour for the next matching request.

    kind: ``error`` (answer ``code`` before streaming), ``midstream`` (``code`` as an
    ``event:error`` after ``after_chunks`` frames), ``disconnect`` (close the
    connection after ``after_chunks`` frames), ``stall`` (send keep-alive comments for
    ``seconds`` before answering), ``html502`` (a proxy's HTML error page). A stream
    shorter than ``after_chunks`` breaks just before its final frame, so a scripted
    fault always happens.

    Two kinds spoil the answer instead, and only a structured request (tools, or a
    schema stated in the system message) takes them from a script: ``invalid_answer``
    (JSON broken as ``code``: one of ``INVALID_KINDS``) and ``text_answer`` (prose,
    no tool call and no JSON).
    """

    kind: str
    code: str = "InternalError"
    after_chunks: int = 1
    seconds: float = 0.0


def error(code: str) -> Fault:
    return Fault("error", code=code)


def midstream(code: str, after_chunks: int = 2) -> Fault:
    return Fault("midstream", code=code, after_chunks=after_chunks)


def disconnect(after_chunks: int = 2) -> Fault:
    return Fault("disconnect", after_chunks=after_chunks)


def stall(seconds: float) -> Fault:
    return Fault("stall", seconds=seconds)


def html502() -> Fault:
    return Fault("html502")


#: faults that change what is answered rather than how: for structured requests only
ANSWER_FAULTS = frozenset({"invalid_answer", "text_answer"})


def invalid_answer(kind: str) -> Fault:
    """The next structured answer broken as ``kind``: ``enum`` (a value outside the
    enum, e.g. "Positive."), ``missing`` (a required property left out), ``type``
    (e.g. "0.9" for a number) or ``json`` (cut off: not JSON at all)."""
    if kind not in INVALID_KINDS:
        msg = f"unknown invalid-answer kind {kind!r}; known: {', '.join(INVALID_KINDS)}"
        raise ValueError(msg)
    return Fault("invalid_answer", code=kind)


def text_answer() -> Fault:
    """The next structured request answered in prose: no tool call, no JSON."""
    return Fault("text_answer", code="")


@dataclass(slots=True)
class Behaviour:
    """The knobs. Every random choice draws from ``rng``, seeded by ``seed``."""

    seed: int = 0
    #: median delay before the first byte of an answer, and its spread: the delay is
    #: ttft_ms times a log-normal factor with sigma ttft_jitter (0: always ttft_ms)
    ttft_ms: float = 0.0
    ttft_jitter: float = 0.0
    tokens_per_s: float = 0.0  # streaming speed; 0: all at once
    error_rates: dict[str, float] = field(default_factory=dict)  # code -> probability
    midstream_rates: dict[str, float] = field(default_factory=dict)  # code -> prob.
    disconnect_rate: float = 0.0  # streams cut off mid-answer
    stall_rate: float = 0.0  # answers preceded by stall_s of keep-alives only
    stall_s: float = 5.0
    bad_gateway_rate: float = 0.0  # a proxy's 502 HTML page instead of an answer
    limits: Limits = field(default_factory=Limits)
    policy_expire_s: float = 300.0  # lifetime of an upload policy (FACTS §5)
    api_keys: frozenset[str] | None = None  # None: any non-empty key is accepted
    answer_words: tuple[int, int] = (6, 30)
    reasoning_words: tuple[int, int] = (12, 40)
    #: structured answers (tool calls, prompt-mode JSON) broken: kind -> probability
    invalid_answer_rates: dict[str, float] = field(default_factory=dict)
    text_instead_of_tool_rate: float = 0.0  # tools given, prose answered
    #: FACTS §6.3: an implicit hit "is not guaranteed"; half of the eligible requests
    #: hit, so a run of a few rows sharing a prefix shows both bills
    implicit_cache_hit_rate: float = 0.5
    clock: Callable[[], float] = time.monotonic  # the context cache's TTLs
    scripts: dict[str, deque[Fault]] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        unknown = set(self.invalid_answer_rates) - set(INVALID_KINDS)
        if unknown:
            msg = (
                f"unknown invalid-answer kinds {sorted(unknown)}; known: "
                f"{', '.join(INVALID_KINDS)}"
            )
            raise ValueError(msg)

    def next_fault(
        self, model: str, *, structured: bool = False, tools: bool = False
    ) -> Fault | None:
        """A scripted fault if one is queued, else one drawn from the rates, or None.

        A request takes the first queued fault that applies to it: an unstructured
        request passes over answer faults, leaving them for the next structured one.
        Answer faults are drawn after every other rate, and only for structured
        requests, so the draws of seeded runs without them are unchanged.
        """
        for key in (model, "*"):
            queue = self.scripts.get(key)
            if not queue:
                continue
            for index, fault in enumerate(queue):
                if structured or fault.kind not in ANSWER_FAULTS:
                    del queue[index]
                    return fault
        draw = self.rng.random
        for code, rate in sorted(self.error_rates.items()):
            if rate > 0 and draw() < rate:
                return Fault("error", code=code)
        if self.bad_gateway_rate > 0 and draw() < self.bad_gateway_rate:
            return Fault("html502")
        for code, rate in sorted(self.midstream_rates.items()):
            if rate > 0 and draw() < rate:
                return Fault("midstream", code=code, after_chunks=2)
        if self.disconnect_rate > 0 and draw() < self.disconnect_rate:
            return Fault("disconnect", after_chunks=2)
        if self.stall_rate > 0 and draw() < self.stall_rate:
            return Fault("stall", seconds=self.stall_s)
        if not structured:
            return None
        rate = self.text_instead_of_tool_rate
        if tools and rate > 0 and draw() < rate:
            return Fault("text_answer", code="")
        for kind, rate in sorted(self.invalid_answer_rates.items()):
            if rate > 0 and draw() < rate:
                return Fault("invalid_answer", code=kind)
        return None

    def scripted(self, target: str) -> Fault | None:
        """The next fault queued for ``target`` alone: the upload steps
        (``"getPolicy"``, ``"oss"``) have queues of their own, never drawn from rates
        or from ``"*"``, so scripting generation faults leaves uploads alone."""
        queue = self.scripts.get(target)
        return queue.popleft() if queue else None

    def first_byte_delay_s(self) -> float:
        if self.ttft_ms <= 0:
            return 0.0
        factor = (
            self.rng.lognormvariate(0.0, self.ttft_jitter) if self.ttft_jitter else 1
        )
        return self.ttft_ms * factor / 1000


def _digest(*parts: str) -> random.Random:
    seed = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def compose_answer(
    prompt: str, seed: int, words: tuple[int, int], *, salt: str = "a"
) -> str:
    """A deterministic answer: a label if the prompt offers some, else plain words."""
    rng = _digest(str(seed), salt, prompt)
    match = _LABELS.search(prompt.strip().splitlines()[-1] if prompt.strip() else "")
    if match and salt == "a":
        labels = [w.strip(" '\"") for w in match.group(1).split(",") if w.strip()]
        if labels:
            return rng.choice(labels)
    count = rng.randint(*words)
    text = " ".join(rng.choice(_WORDS) for _ in range(count))
    return text[0].upper() + text[1:] + "."


def count_text_tokens(text: str) -> int:
    """About four characters a token, as for English text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


IMAGE_TOKENS = 256  # a documented-looking flat rate per image
FRAME_TOKENS = 64  # per video frame
URL_VIDEO_FRAMES = 20  # frames assumed for a video given by URL


MESSAGE_TOKENS = 4  # role and separators, per message


def part_tokens(part: Any) -> int:
    """Plausible tokens of one content part: its text, or a flat rate for media."""
    if not isinstance(part, dict):
        return 0
    if "text" in part and isinstance(part["text"], str):
        return count_text_tokens(part["text"])
    if "image" in part or part.get("type") == "image_url":
        return IMAGE_TOKENS
    if isinstance(part.get("video"), list):
        return FRAME_TOKENS * len(part["video"])
    if "video" in part or part.get("type") == "video_url":
        return FRAME_TOKENS * URL_VIDEO_FRAMES
    return 0


def tool_calls_tokens(message: dict[str, Any]) -> int:
    """An assistant turn's tool calls count as the text of their JSON."""
    calls = message.get("tool_calls")
    return count_text_tokens(json.dumps(calls)) if calls else 0


def count_input_tokens(messages: list[dict[str, Any]]) -> int:
    """Plausible input tokens: text, plus flat rates for images and video frames."""
    total = 0
    for message in messages:
        total += MESSAGE_TOKENS + tool_calls_tokens(message)
        content = message.get("content")
        if isinstance(content, str):
            total += count_text_tokens(content)
            continue
        for part in content or []:
            total += part_tokens(part)
    return total


def split_pieces(text: str, words_per_piece: int = 3) -> list[str]:
    """Cut an answer into stream pieces of a few words, keeping the spaces."""
    tokens = re.findall(r"\S+\s*", text)
    return [
        "".join(tokens[i : i + words_per_piece])
        for i in range(0, len(tokens), words_per_piece)
    ] or [text]
