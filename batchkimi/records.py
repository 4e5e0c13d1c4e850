"""The records that cross layers, named as the output columns are.

A field here, a column in results.parquet and a key in summary.json are the same word,
so nothing is renamed on the way out. Vendor vocabulary never appears here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: the error code of a paid answer batchkimi failed to process (a bug of ours): kept,
#: and processed again by the next run without sending the row
UNPROCESSED = "unprocessed_answer"


class RowStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    #: the service answered, but the answer is cut off or empty (paid for, kept)
    INCOMPLETE = "incomplete"
    #: a structured answer that stayed invalid after every repair (paid for, kept)
    INVALID = "invalid"
    #: the row was not reached: the run stopped before sending it
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    #: the end of a prefix the service should cache (``--cache explicit``)
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str  # https URL, data URL, oss:// URL; file:// until it is sent
    #: a local file's size and mtime, so a changed file is a new request
    stamp: str = ""


@dataclass(frozen=True, slots=True)
class VideoPart:
    """A video file (``url``) or a video given as its frames (``frames``).

    Local files are ``file://`` URLs until the moment of sending, when they become
    data URLs, uploads or extracted frames (``batchkimi.schedule.media``).
    """

    url: str | None = None
    frames: tuple[str, ...] = ()
    fps: float | None = None
    max_frames: int | None = None
    stamp: str = ""  # local files' sizes and mtimes (see ImagePart)
    duration_s: float | None = None  # a local video's length, once probed


Part = TextPart | ImagePart | VideoPart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made: its arguments are a JSON text, as sent."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant | tool
    parts: tuple[Part, ...]
    reasoning_content: str | None = None  # an assistant turn's thinking, if kept
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers


@dataclass(frozen=True, slots=True)
class RowRequest:
    """One manifest row, ready to send: everything a codec needs and nothing else."""

    index: int  # 0-based position in the manifest: the order of results.parquet
    row_id: str
    model: str
    messages: tuple[Message, ...]
    #: request parameters in batchkimi's names (temperature, max_tokens, seed, …)
    parameters: tuple[tuple[str, Any], ...]
    enable_thinking: bool | None  # None: the model's own default, not sent
    fingerprint: str  # content hash of what is sent: the journal's key
    tools: tuple[Tool, ...] = ()
    #: None: not sent; "auto" or "none"; any other value forces that function
    tool_choice: str | None = None
    #: the cached prefix this request ends with a marker, when it has one: the
    #: first request of each goes alone (the cache exists once it has answered)
    cache_key: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0  # includes reasoning tokens, as the service bills them
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # read from a cache (part of input_tokens)
    total_tokens: int = 0
    cache_creation_tokens: int = 0  # written to a new explicit cache (part of input)
    explicit_cache: bool = False  # the hit was on an explicit cache (cache_type)


@dataclass(frozen=True, slots=True)
class Completion:
    """What the service answered, in batchkimi's words."""

    content: str
    reasoning_content: str
    finish_reason: str | None
    usage: Usage | None  # None when the service reported none
    request_id: str | None
    model: str | None  # the model the service named in its answer
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified error answer from the service (or the transport)."""

    kind: str  # transient | row | fatal
    code: str
    message: str
    http_status: int | None
    budget: str | None = None  # rpm | tpm | burst, for throttles
    request_id: str | None = None
    retry_after_s: float | None = None
    #: the body of a 200 that could not be read: kept, it was paid for
    raw: str | None = None


@dataclass(slots=True)
class RowResult:
    """The outcome of one row: written to the journal, then to results.parquet."""

    fingerprint: str
    status: RowStatus
    model: str
    api: str
    content: str | None = None
    reasoning_content: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    wait_ms: float = 0.0  # paced by rate limits or backing off between attempts
    request_id: str | None = None
    response_model: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    retries: dict[str, int] = field(default_factory=dict)  # cause -> count
    #: the last failure was transient (attempts ran out): the next run sends it again
    retryable: bool = False
    cache_creation_tokens: int | None = None  # input written to an explicit cache
    #: the model's function calls, as JSON ([{"id", "name", "arguments"}])
    tool_calls: str | None = None
    #: a structured answer, validated against the job's schema (ok rows only)
    answer_json: str | None = None
    repairs: int = 0  # re-asks after an invalid structured answer
    repair_causes: dict[str, int] = field(default_factory=dict)  # cause -> count
    validation_error: str | None = None  # why the last structured answer was invalid
    #: the body of a 200 batchkimi could not read (kept: the next run reads it again)
    raw_response: str | None = None
