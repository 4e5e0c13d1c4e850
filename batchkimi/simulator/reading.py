"""What the simulator reads from a request's messages: the user's text, media URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
