"""The journal's files: their names, and consistent listings of them.

Each writer (a run, or one shard of it) appends to its own *stream* of journal files
in the state folder, one *generation* at a time; a full generation is sealed and
compacted into a columnar segment holding the same records in the same order
(``segments.py``)::

    journal.jsonl              generation 0 of the stream "journal" (the only file an
                               output folder from before segments has)
    journal.000001.jsonl       generation 1, and so on
    journal-shard-1-of-2.jsonl one stream per shard
    segments/journal.000000.parquet   generation 0 of "journal", compacted

Readers hold no lock: they list the JSONL files first and the segments second. A
generation compacted meanwhile is then still found: if the first listing missed its
JSONL, it was unlinked before that listing ended, so its segment had been renamed
into place before the second began (see ``segments.compact``). A listed JSONL file
gone when it is opened is read from its segment.

Standard library only: a finished job's check lists these files and loads nothing
else.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

SEGMENTS_DIR = "segments"
_JOURNAL = re.compile(r"^(journal(?:-shard-[^.]+)?)(?:\.(\d{6}))?\.jsonl$")
_SEGMENT = re.compile(r"^(journal(?:-shard-[^.]+)?)\.(\d{6})\.parquet$")
_BLOCK = 1 << 16


def stream_of(shard: str | None) -> str:
    """Each shard appends to its own stream; every run reads them all."""
    return f"journal-shard-{shard}" if shard else "journal"


def journal_file(stream: str, generation: int) -> str:
    # generation 0 keeps the name every journal had before generations
    return f"{stream}.jsonl" if generation == 0 else f"{stream}.{generation:06d}.jsonl"


def segment_file(stream: str, generation: int) -> str:
    return f"{SEGMENTS_DIR}/{stream}.{generation:06d}.parquet"


def _parse(name: str, pattern: re.Pattern[str]) -> tuple[str, int] | None:
    match = pattern.match(name)
    return (match[1], int(match[2] or 0)) if match else None


def journals(state_dir: Path) -> dict[tuple[str, int], Path]:
    """(stream, generation) -> path of every JSONL journal file."""
    found = {}
    for path in state_dir.glob("journal*.jsonl"):
        if (key := _parse(path.name, _JOURNAL)) is not None:
            found[key] = path
    return found


def segments(state_dir: Path) -> dict[tuple[str, int], Path]:
    """(stream, generation) -> path of every segment."""
    found = {}
    for path in (state_dir / SEGMENTS_DIR).glob("journal*.parquet"):
        if (key := _parse(path.name, _SEGMENT)) is not None:
            found[key] = path
    return found


def journal_paths(state_dir: Path) -> list[Path]:
    """Every JSONL journal file, compacted or not yet."""
    return sorted(journals(state_dir).values())


def store_sizes(state_dir: Path) -> dict[str, int]:
    """The size of every journal file and segment, by name: what the outputs were
    built from (a compaction changes it, which only ever costs a rebuild)."""
    paths = [*journals(state_dir).values(), *segments(state_dir).values()]
    sizes = {}
    for path in paths:
        try:
            sizes[path.relative_to(state_dir).as_posix()] = path.stat().st_size
        except FileNotFoundError:
            continue  # compacted while listed: its segment is listed
    return sizes


@dataclass(frozen=True, slots=True)
class AnswerFile:
    """One generation of one stream, as a reader found it."""

    stream: str
    generation: int
    path: Path
    is_segment: bool
    #: a JSONL file's complete lines when listed: a reader stops there, so every
    #: pass over one listing sees the same records
    end: int = 0


def answer_files(state_dir: Path) -> list[AnswerFile]:
    """Every generation of every stream, in (stream, generation) order; a generation
    compacted into a segment is read from the segment. See the module docstring."""
    listed = journals(state_dir)  # first: see the module docstring for why
    compacted = segments(state_dir)
    files = []
    for key in sorted(listed.keys() | compacted.keys()):
        stream, generation = key
        if key in compacted:
            files.append(AnswerFile(stream, generation, compacted[key], True))
            continue
        path = listed[key]
        try:
            end = path.stat().st_size - torn_tail_bytes(path)
        except FileNotFoundError:  # compacted since: its segment is in place
            segment = state_dir / segment_file(stream, generation)
            files.append(AnswerFile(stream, generation, segment, True))
            continue
        files.append(AnswerFile(stream, generation, path, False, end))
    return files


def file_facts(path: Path) -> tuple[int, int, int] | None:
    """A regular file's size, mtime and inode, which change when it is written or
    replaced; None for anything else, or nothing."""
    try:
        facts = path.stat()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(facts.st_mode):
        return None
    return facts.st_size, facts.st_mtime_ns, facts.st_ino


def torn_tail_bytes(path: Path) -> int:
    """How many bytes follow the last newline: a record whose write never finished.

    Reads backwards from the end in blocks, so a large journal is not read whole.
    """
    if not path.exists():
        return 0
    size = path.stat().st_size
    with path.open("rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - _BLOCK)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline != -1:
                return size - (start + newline + 1)
            end = start
    return size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_prefix(stream: str) -> str:
    return f".{stream}."


def clear_compaction_leftovers(state_dir: Path, stream: str) -> None:
    """Remove temporary segments a killed compaction of ``stream`` left. Only the
    stream's writer may call this (another writer's are its own, and live)."""
    for leftover in (state_dir / SEGMENTS_DIR).glob(f"{tmp_prefix(stream)}*.tmp"):
        leftover.unlink(missing_ok=True)


def finish_compactions(state_dir: Path, stream: str) -> None:
    """Unlink the JSONL generations of ``stream`` whose segments are in place (step
    3 of a compaction a kill interrupted). Only the stream's writer may call this."""
    compacted = segments(state_dir)
    done = [
        path
        for key, path in journals(state_dir).items()
        if key[0] == stream and key in compacted
    ]
    if not done:
        return
    fsync_dir(state_dir / SEGMENTS_DIR)  # the segments' names are durable first
    for path in done:
        path.unlink(missing_ok=True)
    fsync_dir(state_dir)
