"""Settings as they are written, before they are typed: where they come from
(``Source``), a job spec file read, and paths resolved against their origin's folder.

Standard library only, so a finished job's re-run can find its output folder and
manifest from what the user wrote without loading pydantic (``cli/rerun.py``); the
typed settings (``sources.load_job``) resolve paths with the same code.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from batchkimi.errors import ConfigError

#: keys whose values are paths, resolved against their origin's folder
PATH_KEYS = frozenset({"input", "output", "prices", "media_root", "models"})

ColumnRole = Literal[
    "id",
    "prompt",
    "system",
    "messages",
    "image",
    "images",
    "video",
    "frames",
    "fps",
    "max_frames",
    "model",
    "enable_thinking",
    "temperature",
    "top_p",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "seed",
]
#: manifest columns a job may map to its own names (DESIGN.md, "Manifest")
COLUMN_ROLES: tuple[str, ...] = get_args(ColumnRole)


@dataclass(frozen=True, slots=True)
class Source:
    """Settings from one place: a file, the command line, Python keywords."""

    origin: str  # "jobs/label.toml", "the command line", "batchkimi.run()"
    values: Mapping[str, Any]
    base_dir: Path = field(default_factory=Path.cwd)
    #: how this source spells a key in messages (``--max-attempts`` for options)
    option_names: bool = False

    def spelled(self, key: str) -> str:
        if not self.option_names:
            return key
        head, dot, rest = key.partition(".")
        if head == "parameters" and dot:
            return f"--param {rest}"
        if head == "columns" and dot:
            return f"--column {rest}"
        return "--" + head.replace("_", "-")


def read_job_file(path: Path) -> Source:
    """A job spec file's settings, with relative paths resolved against its folder."""
    return parse_job_file(path, read_job_bytes(path))


def read_job_bytes(path: Path) -> bytes:
    """A job spec file's bytes, or a ConfigError saying why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"job spec {path} does not exist: check the path"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"cannot read job spec {path}: {exc.strerror}"
        raise ConfigError(msg) from None


def parse_job_file(path: Path, data: bytes) -> Source:
    """The settings ``data`` (the bytes of the job spec ``path``) holds."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        msg = f"job spec {path} is not UTF-8 text: save it as UTF-8 TOML"
        raise ConfigError(msg) from None
    # newlines as a file opened as text reads them
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"job spec {path} is not valid TOML: {exc}. Fix the file"
        raise ConfigError(msg) from None
    return Source(str(path), raw, base_dir=path.resolve().parent)


def resolved_path(value: Any, base_dir: Path) -> Path | None:
    """A path setting as the job will hold it: ``~`` expanded, a relative path
    joined to ``base_dir`` (the folder of the file that gave it), normalised; None
    when ``value`` is not a path at all (the typed settings refuse it)."""
    if not isinstance(value, str | Path) or not str(value):
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(os.path.normpath(path))
