"""``Job``: a whole job's settings, typed, checked, and split into sections.

Built from flat values (``{"model": …, "concurrency": 16, "parameters": {…}}``) as a
job spec file, the command line and the Python API all give them; see ``sources`` for
reading files and merging them. Checks that span sections (the model against its
parameters, the endpoint against plain http, the input against the output) run once,
here, so ``plan`` and ``run`` refuse exactly the same jobs.
"""

from __future__ import annotations

import difflib
import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from batchkimi.catalogue import Catalogue, check_output_limits, check_thinking
from batchkimi.errors import ConfigError
from batchkimi.settings.sections import (
    SECTION_OF,
    Asking,
    Connection,
    Media,
    Pacing,
    Reading,
    Stopping,
    Writing,
)

#: older or shorter spellings of a key, still accepted
ALIASES = {
    "timeout": "timeout_s",
    "idle_timeout": "idle_timeout_s",
    "max_runtime": "max_runtime_s",
    "grace": "grace_s",
    "max_throttle_wait": "max_throttle_wait_s",
}
#: settings that change how a run goes, never what its results hold
OPERATIONAL = frozenset(
    {
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
        "allow_insecure_http",
        "stream",
        "batch_rows",
        "prices",
        "retry_errors",
        "rerun",
        "rpm",
        "tpm",
        "idle_timeout_s",
        "max_throttle_wait_s",
        "expected_output_tokens",
        "check_urls",
        "engine",
        "ray_address",
        "ray_workers",
    }
)


def unknown_key(key: str, origin: str) -> ConfigError:
    """The error for a key no section has, with the closest known one."""
    close = difflib.get_close_matches(key, [*SECTION_OF, *ALIASES], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    known = ", ".join(sorted(SECTION_OF))
    return ConfigError(f"{origin}: unknown key {key!r}: {hint}Known keys: {known}")


class Job(BaseModel):
    """Everything a run needs, typed and checked. Build with ``Job.of(values)`` or
    ``settings.sources.load_job``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reading: Reading
    asking: Asking
    media: Media
    connection: Connection
    pacing: Pacing
    stopping: Stopping
    writing: Writing

    @classmethod
    def of(cls, values: dict[str, Any]) -> Job:
        """The job that flat ``values`` describe (raises pydantic's error)."""
        return cls.model_validate(values)

    @model_validator(mode="before")
    @classmethod
    def _sort_into_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict) or (data and set(data) <= set(cls.model_fields)):
            return data  # already in sections (a copy, or a test's own)
        sections: dict[str, dict[str, Any]] = {name: {} for name in cls.model_fields}
        for raw_key, value in data.items():
            key = ALIASES.get(str(raw_key), str(raw_key))
            section = SECTION_OF.get(key)
            if section is None:
                raise unknown_key(str(raw_key), "job settings")
            if value is not None:
                sections[section][key] = value
        return sections

    @model_validator(mode="after")
    def _check_across_sections(self) -> Job:
        """The checks that need more than one section, with the fix in each."""
        info = self.catalogue.usable(self.asking.model)
        problem = check_thinking(info, self.asking.thinking)
        if problem:
            raise ConfigError(problem)
        too_much = check_output_limits(info, dict(self.asking.parameters.as_items()))
        if too_much is not None:
            msg = f"{too_much[1]}. Lower {too_much[0]} under [parameters]"
            raise ConfigError(msg)
        _check_transport(self.connection)
        _check_engine(self.pacing, self.stopping)
        _ = self.asking.answer  # one declared answer, usable as a schema
        _check_tool_choice(self.asking)
        output = self.writing.output
        if output is not None:
            for name, path in self.input_files().items():
                if _inside(path, output):
                    msg = (
                        f"{name} {path} is inside the output folder {output}: a run "
                        "writes there, and would overwrite or re-read its own "
                        "results. Choose another --output"
                    )
                    raise ConfigError(msg)
        return self

    # --- what readers ask of the whole job ----------------------------------------

    @cached_property
    def catalogue(self) -> Catalogue:
        """The models this job may use: packaged, plus its ``--models`` file."""
        return Catalogue.with_file(self.asking.models)

    def input_files(self) -> dict[str, Path]:
        """The files this job reads, by what they are."""
        files = {"input": self.reading.input}
        if self.writing.prices is not None:
            files["prices"] = self.writing.prices
        if self.asking.models is not None:
            files["models"] = self.asking.models
        return files

    @property
    def output(self) -> Path:
        """The output folder; a ConfigError when the job has none (``run`` needs
        one, ``plan`` does not)."""
        if self.writing.output is None:
            msg = (
                'no output given: set --output on the command line or `output = "…"` '
                "in the job spec"
            )
            raise ConfigError(msg)
        return self.writing.output

    @property
    def media_base(self) -> Path:
        """Where local media paths resolve: ``media_root``, else the manifest's
        folder (a folder manifest itself; for a glob, the folder it starts from)."""
        if self.media.media_root is not None:
            return self.media.media_root
        source = self.reading.input
        if is_glob(source):
            return glob_base(source)
        return source if source.is_dir() else source.parent

    def limits_of(self, model: str) -> tuple[int | None, int | None]:
        """(RPM, TPM) to keep ``model`` under: the job's, else the catalogue's."""
        info = self.catalogue.usable(model)
        rpm, tpm = self.pacing.rpm, self.pacing.tpm
        return (
            info.rpm if rpm is None else (rpm or None),
            info.tpm if tpm is None else (tpm or None),
        )

    def results_settings(self) -> dict[str, Any]:
        """The settings that shape results (for the "nothing to do" key)."""
        flat: dict[str, Any] = {}
        for section in (
            self.reading,
            self.asking,
            self.media,
            self.connection,
            self.pacing,
            self.stopping,
            self.writing,
        ):
            flat.update(section.model_dump(mode="json", by_alias=True))
        kept = {k: v for k, v in flat.items() if k not in OPERATIONAL}
        kept["rerun_set"] = sorted(self.writing.rerun_set)
        return kept


def _check_engine(pacing: Pacing, stopping: Stopping) -> None:
    """A budget a run may not overspend needs one process to see every request
    before it goes; on Ray, workers send on their own. (``ray_address`` and
    ``ray_workers`` are simply unused with ``engine = "local"``, so a cluster's
    job file can be tried on one machine with ``--engine local``.)"""
    if pacing.engine == "ray" and stopping.max_cost is not None:
        msg = (
            "--max-cost is not available with --engine ray: the workers send on "
            "their own, and no single process sees every request before it goes. "
            "Drop --max-cost, or run on one machine (--engine local)"
        )
        raise ConfigError(msg)


def _check_tool_choice(asking: Asking) -> None:
    names = [tool.name for tool in asking.tool_records]
    if names and asking.answer is not None:
        msg = (
            "tools and a declared answer (schema, labels or multi_labels) are both "
            "given: a structured job's one tool is its answer. Remove one of them"
        )
        raise ConfigError(msg)
    if len(set(names)) < len(names):
        msg = f"tools name a function twice ({', '.join(names)}): give each once"
        raise ConfigError(msg)
    choice = asking.tool_choice
    if choice is None:
        return
    if not names:
        msg = "tool_choice is set but no tools are given: add --tools FILE"
        raise ConfigError(msg)
    if choice not in ("auto", "none", *names):
        msg = (
            f"tool_choice = {choice!r}: use auto, none, or the name of one of the "
            f"tools ({', '.join(names)})"
        )
        raise ConfigError(msg)


def is_glob(path: Path) -> bool:
    """A pattern of files (``archive/**/*.mp4``); a file or folder that exists under
    its own name (``reviews[2024].csv``) is itself, whatever characters it holds."""
    return any(ch in part for part in path.parts for ch in "*?[") and not path.exists()


def glob_base(pattern: Path) -> Path:
    """The folder a glob pattern starts from: its parts before the first wildcard."""
    fixed: list[str] = []
    for part in pattern.parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _inside(path: Path, folder: Path) -> bool:
    target = path if not is_glob(path) else glob_base(path)
    try:
        target.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (traffic there never leaves it)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_transport(connection: Connection) -> None:
    """The key travels in every request: never in clear over a network."""
    url = connection.resolved_base_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"base_url {url!r} is not an http(s) URL: give e.g. https://host/api/v1"
        raise ConfigError(msg)
    if parts.username or parts.password:
        msg = (
            "base_url carries a user name or password: batchkimi authenticates with "
            "DASHSCOPE_API_KEY only, and never writes credentials down. Remove them "
            "from the URL"
        )
        raise ConfigError(msg)
    if (
        parts.scheme == "http"
        and not is_loopback(parts.hostname)
        and not connection.allow_insecure_http
    ):
        msg = (
            f"base_url {url} is plain http to {parts.hostname}: the API key would "
            "travel unencrypted. Use https://, or pass --allow-insecure-http if this "
            "is a trusted proxy on your own network"
        )
        raise ConfigError(msg)
