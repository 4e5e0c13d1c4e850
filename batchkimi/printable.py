"""Text from files, answers and servers, fit to show a person.

An escape sequence in a column name, a bidi override in a model's answer or a NUL in
an error code must never act on a terminal or a page: each control character is shown
as its escape (``\\x1b``) instead. Pure.
"""

from __future__ import annotations

import re

# C0 and C1 control characters (but newline and tab), DEL, and the bidi overrides
# that reorder what is shown
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as its escape."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
