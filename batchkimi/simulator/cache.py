"""The context cache of FACTS §6.3: explicit ``cache_control`` blocks and the implicit
prefix cache, per model, with an injectable clock so TTL tests never sleep.

A request's input is read as a chain of prefixes (tool definitions first, as a chat
template renders them, then every message's content in order), each named by a
running hash and measured with the simulator's own token count. Two granularities:

- at the end of each content part, where ``cache_control`` markers sit. **Explicit**:
  at most four markers; the prefix runs from the start of the input to the marked
  part. A live entry at a marker, or at one of the 20 parts before it, is a hit
  (``cached_tokens``, ``cache_type: "ephemeral"``) and resets its 5 minutes. On a miss
  a prefix of at least 1,024 tokens is billed as a creation and becomes usable only
  once this answer is complete (it is stored as the answer's last frame is sent): a
  request that arrives meanwhile misses too.
  Under 1,024 tokens nothing is cached and nothing is refused.
- every 64 characters of text (16 tokens), as block-wise prefix caches work.
  **Implicit**: a request without markers whose input shares at least 256 tokens
  with an earlier, finished request of the same model hits with the seeded
  probability ``implicit_cache_hit_rate`` (a hit is not guaranteed, the doc says),
  reporting ``cached_tokens`` and no ``cache_type``.

Our reading of "from the start of messages to the marker": tool definitions count as
part of every prefix, since the model sees them first (FACTS §6.3 lists a tool schema
among the prefixes rows share).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchkimi.simulator.behaviour import (
    MESSAGE_TOKENS,
    count_text_tokens,
    part_tokens,
    tool_calls_tokens,
)
from batchkimi.simulator.tools import RequestProblem

TTL_S = 300.0  # an explicit entry lives 5 minutes from its creation or last hit
EXPLICIT_MIN_TOKENS = 1024
IMPLICIT_MIN_TOKENS = 256
MAX_MARKERS = 4
LOOKBACK_PARTS = 20  # the service looks back this many content blocks from a marker
_CHUNK_CHARS = 64  # a multiple of 4: chunk token counts add up to the text's
_IMPLICIT_CAPACITY = 200_000  # remembered prefixes per simulator, least recent out


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """What the usage object reports about the cache for one request."""

    cached_tokens: int = 0
    creation_tokens: int = 0
    ephemeral: bool = False  # the explicit cache was used: cache_type "ephemeral"


@dataclass(frozen=True, slots=True)
class Point:
    """A prefix of the input: its running hash and its tokens from the start."""

    digest: bytes
    tokens: int


@dataclass(slots=True)
class Prefixes:
    """A request's input as prefixes: at each content part, and every 64 chars."""

    parts: list[Point] = field(default_factory=list)
    chunks: list[Point] = field(default_factory=list)
    markers: list[int] = field(default_factory=list)  # indices into ``parts``

    @property
    def tokens(self) -> int:
        return self.parts[-1].tokens if self.parts else 0

    @property
    def digest(self) -> bytes:
        return self.parts[-1].digest if self.parts else b""


@dataclass(frozen=True, slots=True)
class CachePlan:
    """The cache's answer for one request, and what to store once it completes."""

    model: str
    usage: CacheUsage = field(default_factory=CacheUsage)
    hit: Point | None = None  # an explicit entry to keep alive
    writes: tuple[Point, ...] = ()  # explicit entries to create
    remember: tuple[Point, ...] = ()  # implicit prefixes to remember


def _part_key(part: Any) -> bytes:
    """One media (or unknown) part, the same whichever API's shape it came in."""
    if not isinstance(part, dict):
        return b"?" + json.dumps(part).encode()
    for key in ("image", "image_url", "video", "video_url"):
        value = part.get(key)
        if isinstance(value, dict):
            value = value.get("url")
        if isinstance(value, str):
            return key[0].encode() + value.encode()
        if value is not None:
            return key[0].encode() + json.dumps(value).encode()
    rest = {k: v for k, v in part.items() if k != "cache_control"}
    return b"p" + json.dumps(rest, sort_keys=True).encode()


def _is_marked(index: int, part: Any) -> bool:
    control = part.get("cache_control") if isinstance(part, dict) else None
    if control is None:
        return False
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        msg = (
            f"messages[{index}]: cache_control must be "
            f'{{"type": "ephemeral"}} (got {control!r}).'
        )
        raise RequestProblem(msg)
    return True


class _Chain:
    """Builds the prefixes of one request, part after part."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.tokens = 0
        self.out = Prefixes()

    def add_text(self, text: str, extra_tokens: int) -> None:
        pieces = [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)]
        for piece in pieces or [""]:
            self.hash.update(b"\x1et" + piece.encode())
            self.tokens += count_text_tokens(piece) + extra_tokens
            extra_tokens = 0
            self.out.chunks.append(Point(self.hash.digest(), self.tokens))

    def add_block(self, key: bytes, tokens: int) -> None:
        self.hash.update(b"\x1e" + key)
        self.tokens += tokens
        self.out.chunks.append(Point(self.hash.digest(), self.tokens))

    def end_part(self, marked: bool) -> None:
        if marked:
            self.out.markers.append(len(self.out.parts))
        self.out.parts.append(self.out.chunks[-1])


def read_prefixes(messages: list[Any], tools: Any) -> Prefixes:
    """The request's prefixes; raises RequestProblem for a malformed marker or more
    than four of them (FACTS §6.3)."""
    chain = _Chain()
    if tools:
        text = json.dumps(tools, sort_keys=True)
        chain.add_block(b"T" + text.encode(), count_text_tokens(text))
        chain.end_part(marked=False)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        chain.hash.update(b"\x1dm" + str(message.get("role")).encode())
        overhead = MESSAGE_TOKENS
        content = message.get("content")
        parts = [{"text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else []:
            words = part.get("text") if isinstance(part, dict) else None
            if isinstance(words, str):
                chain.add_text(words, overhead)
            else:
                chain.add_block(_part_key(part), part_tokens(part) + overhead)
            overhead = 0
            chain.end_part(_is_marked(index, part))
        calls = tool_calls_tokens(message)
        if calls or overhead:
            raw = json.dumps(message.get("tool_calls"), sort_keys=True)
            chain.add_block(b"c" + raw.encode(), calls + overhead)
            chain.end_part(marked=False)
    if len(chain.out.markers) > MAX_MARKERS:
        msg = (
            f"At most {MAX_MARKERS} cache_control markers are allowed in a request "
            f"(got {len(chain.out.markers)})."
        )
        raise RequestProblem(msg)
    return chain.out


@dataclass(slots=True)
class _Entry:
    tokens: int
    expires_at: float


class ContextCache:
    """Both caches for every model. Lookups change nothing; ``commit`` stores, once
    the answer is complete."""

    def __init__(
        self, clock: Callable[[], float], seed: int, implicit_hit_rate: float
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.implicit_hit_rate = implicit_hit_rate
        self._explicit: dict[tuple[str, bytes], _Entry] = {}
        self._implicit: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def lookup(self, model: str, prefixes: Prefixes) -> CachePlan:
        if prefixes.markers:  # explicit and implicit are exclusive per request
            return self._explicit_plan(model, prefixes)
        return self._implicit_plan(model, prefixes)

    def _live(self, model: str, point: Point, now: float) -> _Entry | None:
        entry = self._explicit.get((model, point.digest))
        if entry is not None and entry.expires_at <= now:
            del self._explicit[(model, point.digest)]
            return None
        return entry

    def _explicit_plan(self, model: str, prefixes: Prefixes) -> CachePlan:
        now = self.clock()
        best: Point | None = None
        for marker in prefixes.markers:
            for index in range(marker, max(-1, marker - LOOKBACK_PARTS), -1):
                point = prefixes.parts[index]
                if self._live(model, point, now) is not None:
                    if best is None or point.tokens > best.tokens:
                        best = point
                    break
        if best is not None:
            return CachePlan(model, CacheUsage(best.tokens, 0, True), hit=best)
        writes = tuple(
            prefixes.parts[m]
            for m in prefixes.markers
            if prefixes.parts[m].tokens >= EXPLICIT_MIN_TOKENS
        )
        if not writes:
            return CachePlan(model)
        created = max(point.tokens for point in writes)
        return CachePlan(model, CacheUsage(0, created, True), writes=writes)

    def _implicit_plan(self, model: str, prefixes: Prefixes) -> CachePlan:
        long_enough = tuple(
            p for p in prefixes.chunks if p.tokens >= IMPLICIT_MIN_TOKENS
        )
        shared = 0
        for point in long_enough:  # every prefix of a remembered one is remembered
            key = (model, point.digest)
            if key not in self._implicit:
                break
            self._implicit.move_to_end(key)
            shared = point.tokens
        usage = CacheUsage()
        if shared and self._draw(model, prefixes) < self.implicit_hit_rate:
            usage = CacheUsage(cached_tokens=shared)
        return CachePlan(model, usage, remember=long_enough)

    def _draw(self, model: str, prefixes: Prefixes) -> float:
        """A seeded draw that depends on the request, not on arrival order."""
        seed = hashlib.sha256(f"{self.seed}\x1f{model}".encode() + prefixes.digest)
        return random.Random(seed.digest()).random()

    def commit(self, plan: CachePlan) -> None:
        """The answer is complete: store its entries, keep its hit alive."""
        now = self.clock()
        for point in (*plan.writes, *((plan.hit,) if plan.hit else ())):
            self._explicit[(plan.model, point.digest)] = _Entry(
                point.tokens, now + TTL_S
            )
        for point in plan.remember:
            key = (plan.model, point.digest)
            self._implicit[key] = point.tokens
            self._implicit.move_to_end(key)
        while len(self._implicit) > _IMPLICIT_CAPACITY:
            self._implicit.popitem(last=False)
