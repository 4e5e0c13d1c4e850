"""Prompt templates over manifest columns: ``"Classify the sentiment of: {review}"``.

Plain ``{column}`` fields only, and ``{{``/``}}`` for literal braces. Format specs and
attribute access are refused up front, so a template fails on its first check, never
on row 90,000.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batchkimi.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    #: (literal, field or None) pairs, as string.Formatter parses them
    pieces: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for _, name in self.pieces:
            if name is not None:
                seen.setdefault(name, None)
        return tuple(seen)

    def missing_columns(self, columns: Iterable[str]) -> list[str]:
        available = set(columns)
        return [name for name in self.fields if name not in available]

    def render(self, row: Mapping[str, Any]) -> str:
        """Fill the fields; the caller has checked every field has a value."""
        out: list[str] = []
        for literal, name in self.pieces:
            out.append(literal)
            if name is not None:
                out.append(str(row[name]))
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse once; a malformed template is a ConfigError that quotes the problem."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        msg = (
            f"prompt template {text!r} is malformed ({exc}). Use {{column}} for a "
            "column's value and {{ or }} for a literal brace"
        )
        raise ConfigError(msg) from exc
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        if name == "" or name.isdigit():
            msg = (
                f"prompt template {text!r} has an unnamed field {{{name}}}: name the "
                "column, e.g. {review}"
            )
            raise ConfigError(msg)
        if spec or conversion or "." in name or "[" in name:
            msg = (
                f"prompt template field {{{name}"
                f"{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not supported: use the plain "
                "column "
                "name in braces, e.g. {review}"
            )
            raise ConfigError(msg)
        pieces.append((literal, name))
    return Template(text=text, pieces=tuple(pieces))
