"""An incremental Server-Sent Events decoder for both Model Studio framings.

Native (FACTS §2.2): ``id:N`` / ``event:result`` / ``:HTTP_STATUS/200`` /
``data:{…}``, no space after the colon, no ``[DONE]``. Compatible mode (FACTS §4.3):
``data: {…}`` and a final ``data: [DONE]``. One decoder reads both: the SSE rules strip
one optional space after a field's colon, and the ``:HTTP_STATUS/NNN`` comment is kept
as the event's status.
Bytes may be split anywhere, even inside a UTF-8 character; events come out the same.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_STATUS_PREFIX = ":HTTP_STATUS/"
# SSE ends lines at CRLF, LF or CR only. (str.splitlines would also split on U+2028
# and friends, which JSON strings may carry raw.)
_LINE_END = re.compile(r"\r\n|\r|\n")


def looks_like_sse(body: bytes) -> bool:
    """Whether a whole body is SSE-framed, whatever its Content-Type says."""
    return body.lstrip()[:6].startswith((b"id:", b"event:", b"data:", b":"))


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str | None = None
    id: str | None = None
    status: int | None = None  # from a ``:HTTP_STATUS/NNN`` comment, if one came


class SseDecoder:
    """Feed bytes as they arrive; get whole events back."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # text after the last complete line
        self._cr_seen = False  # the last chunk ended in "\r": a "\n" next is its pair
        self._reset()

    def _reset(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._status: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        text = self._text.decode(chunk)
        if self._cr_seen and text.startswith("\n"):
            text = text[1:]  # the "\n" of a "\r\n" split across two chunks
        if text:
            self._cr_seen = text.endswith("\r")
        lines = _LINE_END.split(self._pending + text)
        self._pending = lines.pop()  # an unfinished line waits for more bytes
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: dispatch a last event even if its blank line never came."""
        events = self.feed(b"")
        tail = self._pending + self._text.decode(b"", final=True)
        self._pending = ""
        if tail:
            event = self._line(tail)
            if event is not None:
                events.append(event)
        event = self._line("")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            if line.startswith(_STATUS_PREFIX):
                status = line[len(_STATUS_PREFIX) :].strip()
                if status.isdigit():
                    self._status = int(status)
            return None  # comments, including keep-alives, are not progress
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._reset()
            return None
        event = SseEvent(
            data="\n".join(self._data),
            event=self._event,
            id=self._id,
            status=self._status,
        )
        self._reset()
        return event
