"""A finished job run again from the command line, answered from the job as written.

A nightly ``batchkimi run`` of a job whose outputs are current should cost little
more than starting Python; typing its settings (pydantic, the catalogue) costs more
than the rest of such a run. So ``run`` first computes a *raw key* over everything
the typed settings are made of, with the standard library only:

- batchkimi's and Python's versions, the working folder and the home folder
  (relative paths, ``~``);
- the options as click parsed them;
- the job spec file's resolved path and bytes (the same bytes are then typed);
- the file facts (size, mtime, inode) of every file an option or a spec value may
  name, against the working folder and against the spec's folder: the manifest,
  ``prices``, ``schema``, ``tools``, ``models``;
- the file facts of batchkimi's own files: an edited catalogue or price table in an
  editable install changes the key.

The settings read no environment variable (the API key, read as before, is not a
setting), so one raw key always types to the same settings and passes or fails the
same checks. A run records its raw key in the job's state, as does a re-run that
finds the job current on the typed path (``store.state.finished_outcome``); when a
state records this command's key, ``store.state.recorded_outcome`` checks what the
typed path would check, under the same lock. Anything else (no state with this key,
a manifest whose file facts changed, answers journalled since, ``--simulate``) takes
the typed path, which decides as it always has.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchkimi.credentials import read_api_key
from batchkimi.errors import ConfigError
from batchkimi.settings.written import (
    Source,
    parse_job_file,
    read_job_bytes,
    resolved_path,
)
from batchkimi.store.state import recorded_outcome, shards_recording
from batchkimi.version import __version__

if TYPE_CHECKING:
    from batchkimi.outcome import RunOutcome

_PACKAGE = Path(__file__).resolve().parent.parent  # batchkimi/


@dataclass(frozen=True, slots=True)
class WrittenJob:
    """A ``run`` command as written: its raw key, and what the key was made from."""

    key: str
    spec: Source | None  # the job spec file, read once (typed from these bytes)
    output: Path | None  # where the settings will put the output, if anywhere
    manifest: Path | None


def read_written_job(job: Path | None, options: Mapping[str, Any]) -> WrittenJob | None:
    """The command ``batchkimi run [JOB] OPTIONS`` as written; None when the job
    spec cannot be read or parsed (the typed path says why, as it always has)."""
    spec: Source | None = None
    bases = [Path.cwd()]
    facts: dict[str, Any] = {
        "batchkimi": __version__,
        "python": sys.version,
        "cwd": str(bases[0]),
        "home": _home(),
        "options": dict(options),
        "spec": None,
    }
    if job is not None:
        try:
            data = read_job_bytes(job)
            spec = parse_job_file(job, data)
        except ConfigError:
            return None
        facts["spec"] = [str(job.resolve()), hashlib.sha256(data).hexdigest()]
        bases.append(spec.base_dir)
    output = _path_setting("output", options, spec)
    names = set(_strings(options)) | set(_strings(spec.values if spec else {}))
    facts["files"] = {
        str(path): _stamp(path) if path != output else None  # made by the first run
        for name in sorted(names)
        for base in bases
        if (path := _candidate(name, base)) is not None
    }
    facts["package"] = _package_stamps()
    text = json.dumps(facts, sort_keys=True, default=str)
    return WrittenJob(
        key=hashlib.sha256(text.encode()).hexdigest(),
        spec=spec,
        output=output,
        manifest=_path_setting("input", options, spec),
    )


def finished_as_written(
    command: WrittenJob, on_info: Callable[[str], None]
) -> RunOutcome | None:
    """ "Nothing to do" if a state records this command and its outputs are current;
    None when the typed path must decide."""
    if command.output is None or command.manifest is None:
        return None
    recording = shards_recording(command.output, command.key)
    if not recording:
        return None
    read_api_key()  # a run needs the key, finished or not: missing, exit 2 as ever
    return recorded_outcome(
        command.output, recording[0], command.key, command.manifest, on_info
    )


def _path_setting(
    name: str, options: Mapping[str, Any], spec: Source | None
) -> Path | None:
    """A path setting as the typed settings resolve it: the option wins."""
    if options.get(name) is not None:
        return resolved_path(options[name], Path.cwd())
    if spec is not None and name in spec.values:
        return resolved_path(spec.values[name], spec.base_dir)
    return None


def _home() -> str | None:
    try:
        return str(Path.home())
    except RuntimeError:  # no HOME and no passwd entry: "~" resolves to nothing
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every string (or path) in ``value``, however deep in lists and tables."""
    if isinstance(value, str | Path):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _candidate(name: str, base: Path) -> Path | None:
    """The file ``name`` would be if it named one, resolved as settings resolve it."""
    try:
        return resolved_path(name, base)
    except (RuntimeError, ValueError):  # ~user of no such user, and the like
        return None


def _stamp(path: Path) -> list[int] | str | None:
    """A regular file's size, mtime and inode; a folder's kind only (whether a path
    is a glob depends on it; its mtime changes with every file in it); None for
    nothing there."""
    try:
        facts = path.stat()
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(facts.st_mode):
        return [facts.st_size, facts.st_mtime_ns, facts.st_ino]
    return "folder" if stat.S_ISDIR(facts.st_mode) else "other"


def _package_stamps() -> dict[str, list[int] | str | None]:
    """The file facts of every file batchkimi is made of (a millisecond or so)."""
    stamps: dict[str, list[int] | str | None] = {}
    for folder, subfolders, files in os.walk(_PACKAGE):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in files:
            path = Path(folder, name)
            stamps[str(path.relative_to(_PACKAGE))] = _stamp(path)
    return stamps
