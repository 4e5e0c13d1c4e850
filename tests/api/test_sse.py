"""The SSE decoder reads both Model Studio framings, however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batchkimi.api.sse import SseDecoder, SseEvent

# FACTS §2.2, byte for byte: no space after the colons, a status comment, no [DONE]
NATIVE = (
    b"id:1\nevent:result\n:HTTP_STATUS/200\n"
    b'data:{"output":{"choices":[{"message":{"content":[],"reasoning_content":"Let",'
    b'"role":"assistant"},"finish_reason":"null"}]},"request_id":"r1"}\n\n'
    b"id:2\nevent:error\n:HTTP_STATUS/429\n"
    b'data:{"code":"Throttling.AllocationQuota","message":"quota","request_id":"r1"}\n\n'
)
# FACTS §4.3: "data: " with a space, a keep-alive comment, then [DONE]
COMPAT = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi \xe2\x80\xa8 there"}}]}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b"data: [DONE]\r\n\r\n"
)


def decode_all(payload: bytes, cuts: list[int]) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        events += decoder.feed(payload[start:cut])
        start = cut
    events += decoder.feed(payload[start:])
    return events + decoder.close()


def test_native_frames_keep_event_name_id_and_http_status() -> None:
    events = decode_all(NATIVE, [])
    assert [e.event for e in events] == ["result", "error"]
    assert [e.id for e in events] == ["1", "2"]
    assert [e.status for e in events] == [200, 429]
    assert events[1].data.startswith('{"code":"Throttling.AllocationQuota"')


def test_compat_frames_strip_one_space_and_skip_comments() -> None:
    events = decode_all(COMPAT, [])
    assert [e.data for e in events][1] == "[DONE]"
    assert len(events) == 2
    # U+2028 is a line separator to str.splitlines, but not to SSE
    assert "Hi \u2028 there" in events[0].data


def test_keepalive_comments_alone_produce_no_events() -> None:
    assert decode_all(b":keep-alive\n\n" * 50, []) == []


def test_last_event_without_blank_line_is_still_delivered() -> None:
    events = decode_all(b'data:{"a":1}', [])
    assert [e.data for e in events] == ['{"a":1}']


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(NATIVE)), max_size=12))
def test_native_events_do_not_depend_on_chunk_boundaries(cuts: list[int]) -> None:
    assert decode_all(NATIVE, cuts) == decode_all(NATIVE, [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(COMPAT)), max_size=12))
def test_compat_events_do_not_depend_on_chunk_boundaries(cuts: list[int]) -> None:
    """Cuts land inside CRLF pairs and inside the 3-byte U+2028 too."""
    assert decode_all(COMPAT, cuts) == decode_all(COMPAT, [])
