"""What the simulator reads from a request's messages: the user's text, media URLs,
the form of the user's content, and a schema stated in the system message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCED_JSON = re.compile(r"```json[ \t]*\r?\n(.*?)```", re.DOTALL)
_SCHEMA_KEYS = frozenset({"type", "properties", "enum", "anyOf", "oneOf", "$ref"})


def media_urls(messages: list[Any]) -> list[str]:
    """Every image/video URL in the messages, in either API's part shapes."""
    urls: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            for key in ("image", "video", "image_url", "video_url"):
                value = part.get(key)
                if isinstance(value, dict):
                    value = value.get("url")
                if isinstance(value, str):
                    urls.append(value)
                elif isinstance(value, list):
                    urls.extend(v for v in value if isinstance(v, str))
    return urls


@dataclass(frozen=True, slots=True)
class MediaPart:
    kind: str  # image | video | frames
    urls: tuple[str, ...]
    fps: Any = None
    max_frames: Any = None


def media_parts(messages: list[Any]) -> list[MediaPart]:
    """Every image, video and frame list in the messages, in either API's shapes."""
    found: list[MediaPart] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            for key in ("image", "video", "image_url", "video_url"):
                value = part.get(key)
                if isinstance(value, dict):
                    value = value.get("url")
                kind = "image" if key.startswith("image") else "video"
                if isinstance(value, str):
                    urls: tuple[str, ...] = (value,)
                elif isinstance(value, list):
                    urls, kind = tuple(str(v) for v in value), "frames"
                else:
                    continue
                found.append(
                    MediaPart(kind, urls, part.get("fps"), part.get("max_frames"))
                )
    return found


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text"))
                for p in content
                if isinstance(p, dict) and p.get("text")
            )
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def prompt_schema(messages: list[Any]) -> dict[str, Any] | None:
    """The JSON Schema a system message states for the answer, or None.

    The convention of batchkimi's prompt mode: a fenced block opened by ```json whose
    content is a JSON object with a schema keyword (type, properties, enum, anyOf,
    oneOf or $ref). The last such block of any system message wins.
    """
    found: dict[str, Any] | None = None
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "system":
            continue
        for block in _FENCED_JSON.findall(_text_of(message.get("content"))):
            try:
                schema = json.loads(block)
            except ValueError:
                continue
            if isinstance(schema, dict) and _SCHEMA_KEYS & schema.keys():
                found = schema
    return found


def asks_in_plain_text(messages: list[Any]) -> bool:
    """Whether the last user message's content is a plain string (FACTS §2.1: the
    seed's kimi-k2.6 example then gets its answer as a string, not a list)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return isinstance(message.get("content"), str)
    return False
