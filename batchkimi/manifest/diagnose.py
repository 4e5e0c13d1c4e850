"""Find the line of a manifest that polars refused, so the error can name it.

polars says *what* is wrong with a file ("invalid utf-8 sequence", "found more fields
than defined in 'Schema'") but not *where*. When it refuses a file, this reads the file
again with the standard library, line by line, and returns the first line that breaks
the rule, with the fix. It runs only after a failure, so a good manifest never pays
for it. Lines are physical lines, counted from 1 with the header as line 1, as an
editor shows them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchkimi import jsoncodec


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int
    problem: str
    fix: str

    @property
    def sentence(self) -> str:
        return f"line {self.line:,} {self.problem}"


def locate_problem(path: Path, fmt: str) -> LineProblem | None:
    """The first line of ``path`` that a reader of ``fmt`` must refuse, if any."""
    try:
        if fmt in ("csv", "tsv"):
            return _text_problem(path) or _csv_problem(
                path, "," if fmt == "csv" else "\t"
            )
        if fmt == "jsonl":
            return _text_problem(path) or _jsonl_problem(path)
    except OSError:
        return None
    return None


_HEAD = 1 << 16  # bytes of a header line read to check it


def header_problem(path: Path) -> LineProblem | None:
    """What is wrong with a text manifest's first line, if anything: a binary file
    (NUL bytes) or a header that is not UTF-8. polars would turn such a header into
    replacement characters instead of refusing it, as it refuses a row."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD).split(b"\n", 1)[0]
    except OSError:
        return None
    if b"\x00" in head:
        return LineProblem(
            1,
            "holds NUL bytes: this is a binary file, not text",
            "Check --input: give a CSV, TSV or JSONL text file (or a .parquet file)",
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return LineProblem(
            1,
            f"(the header) is not UTF-8 (byte 0x{head[exc.start]:02x}, the line's "
            f"byte {exc.start + 1})",
            "Save the file as UTF-8 (in a spreadsheet: CSV UTF-8)",
        )
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)


def _text_problem(path: Path) -> LineProblem | None:
    for number, raw in _lines(path):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start]
            return LineProblem(
                number,
                f"is not UTF-8 (byte 0x{byte:02x}, the line's byte {exc.start + 1})",
                "Save the file as UTF-8 (in a spreadsheet: CSV UTF-8)",
            )
    return None


def _csv_problem(path: Path, separator: str) -> LineProblem | None:
    # a prompt cell may be longer than the csv module's default 128 KiB field limit,
    # which polars does not have (and nothing else in batchkimi reads with csv)
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=separator, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return None
            start = reader.line_num + 1
            for record in reader:
                if len(record) > len(header):
                    return LineProblem(
                        start,
                        f"has {len(record)} fields, and the header has {len(header)}",
                        'Quote a value that contains the separator ("a, b"), or '
                        "name the extra column in the header",
                    )
                start = reader.line_num + 1
        except csv.Error:
            return LineProblem(
                start,
                "has a quoted value that is not closed, or text after a closing quote",
                'Close the quote; write a quote inside a quoted value as two ("")',
            )
    return None


def _jsonl_problem(path: Path) -> LineProblem | None:
    for number, raw in _lines(path):
        text = raw.strip()
        if not text:
            continue
        try:
            value = jsoncodec.loads(text)
        except ValueError:
            start = text[:40].decode("utf-8", "replace")
            return LineProblem(
                number,
                f"is not JSON: it starts {start!r}",
                "Write one JSON object per line (JSON Lines)",
            )
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else type(value).__name__
            return LineProblem(
                number,
                f"is {kind}, not a JSON object",
                'Write one object per line, such as {"id": "a1", "prompt": "…"}',
            )
    return None
