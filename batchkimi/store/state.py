"""What the outputs were built from, so a re-run of a finished job can stop at once.

After every run that writes its outputs, ``state.json`` records a key over everything
that shapes the results (the manifest's content, the job settings that shape requests
and rows, batchkimi's version), the size of every journal, and how many rows were left
to send. A later run whose key and journals match and which has nothing left to send
has nothing to do: results.parquet and summary.json are already current. Anything else
(an edited manifest, another shard's answers, --retry-errors) takes the full path.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batchkimi import __version__
from batchkimi.jobspec import JobSpec
from batchkimi.store.files import store_sizes

STATE_NAME = "state.json"
#: job settings that change how a run goes, never what its results hold
_OPERATIONAL = {
    "output",
    "concurrency",
    "max_attempts",
    "timeout_s",
    "limit",
    "max_cost",
    "max_runtime_s",
    "grace_s",
    "base_url",
    "workspace_id",
    "stream",
    "batch_rows",
    "prices",
    "retry_errors",
    "rpm",
    "tpm",
    "idle_timeout_s",
    "max_throttle_wait_s",
}


@dataclass(frozen=True, slots=True)
class ManifestStamp:
    """A manifest's content digest, with the file facts it was computed for."""

    digest: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class RunState:
    key: str
    manifest: ManifestStamp
    journals: dict[str, int]  # journal file name -> size when the outputs were built
    pending: int  # in-scope rows a re-run would send
    rows: int
    exit_code: int
    by_status: dict[str, int]
    #: rows named local media files, which may change under an unchanged manifest:
    #: such a job always takes the full path, which looks at every file again
    local_media: bool = False


def stamp_manifest(path: Path, previous: ManifestStamp | None) -> ManifestStamp:
    """Hash the manifest, unless its size, mtime and inode say it is unchanged. A
    folder or glob manifest is stamped by what it lists."""
    if not path.is_file():
        from batchkimi.manifest.reader import listing_digest  # polars: only for globs

        return ManifestStamp(listing_digest(path), 0, 0, 0)
    facts = path.stat()
    if previous is not None and (previous.size, previous.mtime_ns, previous.inode) == (
        facts.st_size,
        facts.st_mtime_ns,
        facts.st_ino,
    ):
        return previous
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return ManifestStamp(digest, facts.st_size, facts.st_mtime_ns, facts.st_ino)


def inputs_key(spec: JobSpec, manifest: ManifestStamp) -> str:
    """A digest of everything that shapes the results of ``spec``."""
    settings: dict[str, Any] = {
        name: value for name, value in asdict(spec).items() if name not in _OPERATIONAL
    }
    settings["input"] = str(spec.input)
    settings["rerun_set"] = sorted(spec.rerun_set)
    settings["manifest"] = manifest.digest
    settings["batchkimi"] = __version__
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def journal_sizes(state_dir: Path) -> dict[str, int]:
    """The size of every journal file and segment: a change means new answers."""
    return store_sizes(state_dir)


def _state_path(state_dir: Path, shard: str | None) -> Path:
    return state_dir / (f"state-shard-{shard}.json" if shard else STATE_NAME)


def load_state(state_dir: Path, shard: str | None) -> RunState | None:
    try:
        raw = json.loads(_state_path(state_dir, shard).read_text("utf-8"))
        raw["manifest"] = ManifestStamp(**raw["manifest"])
        return RunState(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # no state, or an older or damaged one: take the full path


def save_state(state_dir: Path, shard: str | None, state: RunState) -> None:
    path = _state_path(state_dir, shard)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", "utf-8")
    tmp.replace(path)


def current_state(
    state: RunState | None, key: str, state_dir: Path, outputs: list[Path]
) -> RunState | None:
    """``state`` if a run with ``key`` would send nothing and rebuild nothing."""
    if (
        state is not None
        and state.key == key
        and state.pending == 0
        and not state.local_media
        and state.journals == journal_sizes(state_dir)
        and all(path.exists() for path in outputs)
    ):
        return state
    return None
