"""What the outputs were built from, so a re-run of a finished job can stop at once.

After every run that writes its outputs, ``state.json`` records a key over everything
that shapes the results (the manifest's content, the job settings that shape requests
and rows, batchkimi's version), the size of every journal, and how many rows were left
to send. A later run whose key and journals match and which has nothing left to send
has nothing to do: results.parquet and summary.json are already current. Anything else
(an edited manifest, another shard's answers, --retry-errors) takes the full path.

``finished_outcome`` makes that check before a run loads anything it needs to send
(polars, the HTTP client): standard library and the job spec only, so a nightly
re-run of a finished job takes a fraction of a second.

The state also records the *raw key* of the command line that built (or last found
current) the outputs: a digest of the job as written, before its settings are typed
(``cli/rerun.py``). ``recorded_outcome`` answers the same command run again from that
alone, with the same checks under the same lock, without loading pydantic.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from batchkimi.outcome import RunOutcome
from batchkimi.store.files import file_facts, store_sizes
from batchkimi.store.lock import OutputLock
from batchkimi.store.outputs import replace_text
from batchkimi.version import __version__

STATE_NAME = "state.json"
STATE_DIR = ".batchkimi"
_SUMMARY_NAME = "summary.json"
_RESULTS_NAME = "results.parquet"
_SHARD_STATE = re.compile(r"^state-shard-(.+)\.json$")
_CHUNK = 1 << 20  # bytes hashed at a time


@dataclass(frozen=True, slots=True)
class ManifestStamp:
    """A manifest's content digest, with the file facts it was computed for."""

    digest: str
    size: int
    mtime_ns: int
    inode: int

    @property
    def facts(self) -> tuple[int, int, int]:
        """The file facts it was computed for (as ``files.file_facts`` gives)."""
        return self.size, self.mtime_ns, self.inode


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
    #: the raw key of the command line these outputs are current for (None: a run
    #: from Python, or from before raw keys); see ``recorded_outcome``
    raw: str | None = None
    #: ``settings_key`` of the run (None: the manifest changed while it ran), and
    #: the facts of each file of the register it left: see ``settled``
    settings: str | None = None
    register: list[list[int]] | None = None


def stamp_manifest(path: Path, previous: ManifestStamp | None) -> ManifestStamp:
    """Hash the manifest, unless its size, mtime and inode say it is unchanged. A
    folder or glob manifest is stamped by what it lists."""
    return stamp_growth(path, previous)[0]


def stamp_growth(
    path: Path, previous: ManifestStamp | None
) -> tuple[ManifestStamp, bool]:
    """``stamp_manifest``, and whether the file is the one ``previous`` stamped
    with bytes added after its end, which was the end of a line (rows appended to
    a CSV or JSONL file). Told in the same read: the digest of the first
    ``previous.size`` bytes is ``previous``'s."""
    facts = file_facts(path)
    if facts is None:
        from batchkimi.manifest.reader import listing_digest  # polars: only for globs

        return ManifestStamp(listing_digest(path), 0, 0, 0), False
    if previous is not None and previous.facts == facts:
        return previous, False
    digest = hashlib.sha256()
    grown = False
    with path.open("rb") as handle:
        if previous is not None and 0 < previous.size < facts[0]:
            last = _read_into(digest, handle, previous.size)
            grown = last == b"\n" and digest.hexdigest() == previous.digest
        _read_into(digest, handle, None)
    return ManifestStamp(digest.hexdigest(), *facts), grown


def _read_into(digest: Any, handle: BinaryIO, size: int | None) -> bytes:
    """Hash ``size`` bytes of ``handle`` (None: all the rest); the last byte read."""
    last = b""
    left = size
    while left is None or left > 0:
        chunk = handle.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        last = chunk[-1:]
        if left is not None:
            left -= len(chunk)
    return last


def settings_key(settings: Mapping[str, Any]) -> str:
    """A digest of the job's ``settings`` that shape requests and rows, and of
    batchkimi's version: ``inputs_key`` without the manifest."""
    text = json.dumps(
        {**settings, "batchkimi": __version__}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def inputs_key(settings: Mapping[str, Any], manifest: ManifestStamp) -> str:
    """A digest of everything that shapes the results: the job's ``settings`` (those
    that shape requests and rows), the manifest's content, batchkimi's version."""
    settings = dict(settings)
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
    replace_text(
        _state_path(state_dir, shard), json.dumps(asdict(state), indent=2) + "\n"
    )


def current_state(
    state: RunState | None, key: str, state_dir: Path, outputs: list[Path]
) -> RunState | None:
    """``state`` if a run with ``key`` would send nothing and rebuild nothing."""
    if state is not None and state.key == key and _is_fresh(state, state_dir, outputs):
        return state
    return None


def _is_fresh(state: RunState, state_dir: Path, outputs: list[Path]) -> bool:
    """Whether the outputs are what a run with ``state``'s key would leave: nothing
    to send, no local media to look at again, no answers since, both files there."""
    return (
        _nothing_since(state, state_dir)
        and not state.local_media
        and all(path.exists() for path in outputs)
    )


def _nothing_since(state: RunState, state_dir: Path) -> bool:
    """Whether the run that left ``state`` left no row to send, and no answer came
    since it built its outputs."""
    return state.pending == 0 and state.journals == journal_sizes(state_dir)


def settled(
    state: RunState | None,
    *,
    settings: str,
    register: list[list[int]] | None,
    state_dir: Path,
) -> bool:
    """Whether the last run, on these ``settings`` (``settings_key``), left nothing
    to send, no answer came since it built its outputs, and the register there
    (``register``: its files' facts) is the one it left. Then every row of that
    register with a request stands answered, so a row whose request the register
    had (``rowcache``) needs no lookup: only rows built now are asked about. (A
    register written by a run that died before its state does not count: its
    rows were never settled.)"""
    return (
        state is not None
        and state.settings == settings
        and state.register is not None
        and state.register == register
        and _nothing_since(state, state_dir)
    )


def already_current(
    output: Path, state: RunState, on_info: Callable[[str], None]
) -> RunOutcome:
    """The outcome of a finished job run again on the same inputs: nothing to send
    or rebuild."""
    on_info(
        f"nothing to do: all {state.rows:,} rows have their results and "
        "results.parquet is current (--retry-errors or --rerun sends failed rows again)"
    )
    summary = json.loads((output / _SUMMARY_NAME).read_text("utf-8"))
    return RunOutcome(
        exit_code=state.exit_code,
        output=output,
        by_status=state.by_status,
        sent=0,
        summary=summary,
    )


def finished_outcome(
    output: Path,
    shard: str | None,
    manifest: Path,
    settings: Mapping[str, Any],
    on_info: Callable[[str], None],
    *,
    raw: str | None = None,
) -> RunOutcome | None:
    """``already_current`` if the outputs of a job (its output folder, shard,
    manifest and the ``settings`` that shape its results) are current, checked under
    the output's lock as a run would (a run holding it: exit 4); None when a run has
    work to do. Loads nothing a run needs, so call it before loading the runner.

    A current job found for a command line (``raw``, its raw key) records that key,
    with the manifest's stamp as it stands, so the same command run again is
    answered by ``recorded_outcome`` (a job finished from Python, or by a command
    written differently, becomes fast on its next identical run)."""
    state_dir = output / STATE_DIR
    if not (state_dir / _state_path(state_dir, shard).name).is_file():
        return None
    with OutputLock(state_dir, shard=shard):
        previous = load_state(state_dir, shard)
        if previous is None:
            return None
        stamp = stamp_manifest(manifest, previous.manifest)
        outputs = [output / _RESULTS_NAME, output / _SUMMARY_NAME]
        key = inputs_key(settings, stamp)
        if (current := current_state(previous, key, state_dir, outputs)) is None:
            return None
        if raw is not None and (current.raw, current.manifest) != (raw, stamp):
            save_state(state_dir, shard, replace(current, raw=raw, manifest=stamp))
        return already_current(output, current, on_info)


def shards_recording(output: Path, raw: str) -> list[str | None]:
    """The shard (None: the whole job) of each state in ``output`` that records the
    raw key ``raw``: one at most, as the key covers the shard. Read without the
    lock, so ``recorded_outcome`` reads the state again under it."""
    state_dir = output / STATE_DIR
    found: list[str | None] = []
    for path in sorted(state_dir.glob("state*.json")):
        if path.name == STATE_NAME:
            shard = None
        elif match := _SHARD_STATE.match(path.name):
            shard = match[1]
        else:
            continue
        try:
            recorded = json.loads(path.read_text("utf-8")).get("raw")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == raw:
            found.append(shard)
    return found


def recorded_outcome(
    output: Path,
    shard: str | None,
    raw: str,
    manifest: Path,
    on_info: Callable[[str], None],
) -> RunOutcome | None:
    """``already_current`` if the state of ``shard`` still records the command line
    ``raw`` and its outputs are current, checked under the shard's lock as
    ``finished_outcome`` checks them (a run holding it: exit 4); None otherwise, and
    then the typed path decides.

    The raw key stands for the typed settings (``cli/rerun.py``), so what is left
    to check is the manifest (``manifest``, the path the command names): its file
    facts must equal the stamp's, or its content would have to be hashed again, which
    the typed path does. A folder or glob manifest always takes the typed path."""
    state_dir = output / STATE_DIR
    with OutputLock(state_dir, shard=shard):
        state = load_state(state_dir, shard)
        outputs = [output / _RESULTS_NAME, output / _SUMMARY_NAME]
        if (
            state is None
            or state.raw != raw
            or not _stamp_holds(manifest, state.manifest)
            or not _is_fresh(state, state_dir, outputs)
        ):
            return None
        return already_current(output, state, on_info)


def _stamp_holds(manifest: Path, stamp: ManifestStamp) -> bool:
    """Whether ``manifest`` is a regular file with the facts ``stamp`` was made for."""
    return file_facts(manifest) == stamp.facts
