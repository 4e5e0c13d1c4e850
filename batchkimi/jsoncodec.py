"""JSON on the hot path: every request body, every response, every journal line.

orjson is several times faster than the standard library, which matters at thousands
of rows a second. It refuses a few things the standard library takes (integers beyond
64 bits, non-string keys, lone UTF-16 surrogates such as a model's ``"\\ud800"``); those
fall back to the standard library, with any lone surrogate written as U+FFFD so the
bytes stay valid UTF-8. A hostile value costs speed, never a crash or a lost answer.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON (no ASCII escaping), as the wire and the journal want it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys
        )
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates become U+FFFD, as UTF-8 readers show
        return (
            text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        )


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a ValueError; retry what only the stdlib takes
        return json.loads(data)
