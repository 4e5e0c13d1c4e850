"""A ``messages`` cell: a whole chat history as JSON, in OpenAI or DashScope form,
read into batchkimi's records. Pure: media references are returned as written, for
the request builder to confine and check like every other column's.

Besides system, user and assistant turns, a history may hold tool calls: assistant
turns with ``tool_calls`` and ``tool`` turns answering them (FACTS §6.5).
"""

from __future__ import annotations

import json
from typing import Any

from batchkimi.records import ImagePart, Message, Part, TextPart, ToolCall, VideoPart

_ROLES = ("system", "user", "assistant", "tool")


class RowError(Exception):
    """A cell that cannot be sent as written: the code, column, problem and fix."""

    def __init__(self, code: str, column: str | None, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.code, self.column, self.problem, self.fix = code, column, problem, fix


def parse_messages(raw: Any, column: str) -> tuple[Message, ...]:
    """Accept a JSON chat history in OpenAI or DashScope form."""
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RowError(
                "invalid_messages",
                column,
                f"is not valid JSON ({exc.msg} at character {exc.pos})",
                'Give a JSON list like [{"role": "user", "content": "…"}]',
            ) from exc
    if not isinstance(data, list) or not data:
        raise RowError(
            "invalid_messages",
            column,
            "must be a non-empty JSON list of messages",
            'Give a JSON list like [{"role": "user", "content": "…"}]',
        )
    messages: list[Message] = []
    for position, item in enumerate(data, start=1):
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise RowError(
                "invalid_messages",
                column,
                f"message {position} needs a role of system, user, assistant or tool",
                "Fix the chat history",
            )
        messages.append(_message(item, column, position))
    return tuple(messages)


def _message(item: dict[str, Any], column: str, position: int) -> Message:
    role = item["role"]
    calls = _tool_calls(item.get("tool_calls"), column, position)
    if calls and role != "assistant":
        raise RowError(
            "invalid_messages",
            column,
            f"message {position} is a {role} turn with tool_calls",
            "Only assistant turns carry tool_calls",
        )
    call_id = item.get("tool_call_id")
    if role == "tool" and not (isinstance(call_id, str) and call_id):
        raise RowError(
            "invalid_messages",
            column,
            f"message {position} is a tool turn without a tool_call_id",
            "Give the id of the call it answers",
        )
    content = item.get("content")
    if content is None and calls:
        parts: tuple[Part, ...] = ()  # a turn that only calls
    else:
        parts = _parse_content(content, column, position)
    reasoning = item.get("reasoning_content")
    return Message(
        role,
        parts,
        reasoning if isinstance(reasoning, str) else None,
        tool_calls=calls,
        tool_call_id=call_id if role == "tool" else None,
    )


def _tool_calls(raw: Any, column: str, position: int) -> tuple[ToolCall, ...]:
    """An assistant turn's calls, in the OpenAI shape both APIs use."""
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list):
        raw = None
    calls: list[ToolCall] = []
    for call in raw or [None]:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(call, dict) or not isinstance(name, str) or not name:
            raise RowError(
                "invalid_messages",
                column,
                f"message {position} has tool_calls that are not a list of "
                '{"id", "type": "function", "function": {"name", "arguments"}}',
                "Fix the chat history",
            )
        arguments = function.get("arguments", "") if function else ""
        if not isinstance(arguments, str):  # an object, as some exports write it
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(str(call.get("id") or ""), name, arguments))
    return tuple(calls)


def _parse_content(content: Any, column: str, position: int) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, list):
        raise RowError(
            "invalid_messages",
            column,
            f"message {position} has no content (a string or a list of parts)",
            "Fix the chat history",
        )
    parts: list[Part] = []
    for part in content:
        parsed = _parse_part(part, column, position) if isinstance(part, dict) else None
        if parsed is None:
            raise RowError(
                "invalid_messages",
                column,
                f"message {position} has a content part batchkimi does not know: "
                f"{json.dumps(part)[:80]}",
                "Use text, image / image_url or video / video_url parts",
            )
        parts.append(parsed)
    return tuple(parts)


def _sampling(part: dict[str, Any], column: str, position: int) -> tuple[Any, Any]:
    """A video part's fps and max_frames, refused unless they are numbers."""
    fps, most = part.get("fps"), part.get("max_frames")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float)):
        raise RowError(
            "invalid_media",
            column,
            f"message {position}: fps = {fps!r} is not a number",
            "Give fps as a number from 0.1 to 10",
        )
    if most is not None and (isinstance(most, bool) or not isinstance(most, int)):
        raise RowError(
            "invalid_media",
            column,
            f"message {position}: max_frames = {most!r} is not a whole number",
            "Give max_frames as a whole number up to 2,000",
        )
    return fps, most


_CONTENT_KEYS = ("text", "image", "image_url", "video", "video_url", "audio")


def _parse_part(part: dict[str, Any], column: str, position: int) -> Part | None:
    held = [key for key in _CONTENT_KEYS if key in part]
    if len(held) > 1:
        raise RowError(
            "invalid_messages",
            column,
            f"message {position} has a content part holding both {' and '.join(held)}",
            "Give each in a part of its own, as both APIs expect",
        )
    kind = part.get("type")
    if "text" in part and kind in (None, "text"):
        return TextPart(str(part["text"]))
    fps, most = _sampling(part, column, position)
    if kind == "image_url" and isinstance(part.get("image_url"), dict):
        return ImagePart(str(part["image_url"].get("url", "")))
    if kind in (None, "image") and isinstance(part.get("image"), str):
        return ImagePart(part["image"])
    if kind == "video_url" and isinstance(part.get("video_url"), dict):
        return VideoPart(url=str(part["video_url"].get("url", "")), fps=fps)
    video = part.get("video")
    if kind in (None, "video") and isinstance(video, str):
        return VideoPart(url=video, fps=fps, max_frames=most)
    if kind in (None, "video") and isinstance(video, list):
        return VideoPart(frames=tuple(map(str, video)), fps=fps, max_frames=most)
    return None
