"""Row keys and request fingerprints: pure hashes over canonical values.

A row key names a manifest row across runs (its ``id``, or a hash of its values that
does not change with column order or file format). A fingerprint names what is sent: the
model, the messages, the parameters and the thinking mode. The journal is keyed by
fingerprint, so an identical request is never paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from batchkimi.records import ImagePart, Message, TextPart, VideoPart


def canonical_value(value: Any) -> str:
    """The same text for a value whether it came from CSV, JSONL or Parquet."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def derive_row_key(row: Mapping[str, Any]) -> str:
    """A stable key for a row without an ``id``: a hash of its columns and values."""
    digest = hashlib.sha256()
    for name in sorted(row):
        digest.update(name.encode())
        digest.update(b"\x1f")
        digest.update(canonical_value(row[name]).encode())
        digest.update(b"\x1e")
    return "row-" + digest.hexdigest()[:16]


def _part_record(part: TextPart | ImagePart | VideoPart) -> dict[str, Any]:
    record: dict[str, Any]
    if isinstance(part, TextPart):
        return {"text": part.text, "cache": True} if part.cache else {"text": part.text}
    if isinstance(part, ImagePart):
        record = {"image": part.url}
    else:
        record = {
            "video": part.url,
            "frames": list(part.frames),
            "fps": part.fps,
            "max_frames": part.max_frames,
        }
    if part.stamp:  # local files only: URL requests keep their fingerprints
        record["stamp"] = part.stamp
    return record


def _message_record(message: Message) -> dict[str, Any]:
    record: dict[str, Any] = {
        "role": message.role,
        "parts": [_part_record(p) for p in message.parts],
        "reasoning_content": message.reasoning_content,
    }
    # only where present: a plain history keeps the fingerprint it always had
    if message.tool_calls:
        record["tool_calls"] = [[c.id, c.name, c.arguments] for c in message.tool_calls]
    if message.tool_call_id is not None:
        record["tool_call_id"] = message.tool_call_id
    return record


def fingerprint_request(
    *,
    model: str,
    messages: tuple[Message, ...],
    parameters: tuple[tuple[str, Any], ...],
    enable_thinking: bool | None,
    answer: str | None = None,
    tools: str | None = None,
) -> str:
    """The content hash of a request: equal requests, equal fingerprints.

    ``answer`` is a structured job's declared answer (schema, mode, label matching):
    it changes what counts as an answer, so it is part of the key. Free-text
    requests leave it out, so their fingerprints are what they always were.
    """
    body = {
        "model": model,
        "messages": [_message_record(m) for m in messages],
        "parameters": dict(parameters),
        "enable_thinking": enable_thinking,
    }
    if answer is not None:
        body["answer"] = answer
    if tools is not None:
        body["tools"] = tools
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def shard_of(row_id: str, count: int) -> int:
    """Which of ``count`` shards (1-based) a row belongs to: stable across runs,
    machines and Python versions, since it hashes the row's key with SHA-256."""
    digest = hashlib.sha256(row_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
