"""What batchkimi knows about each Kimi model: endpoint, inputs, thinking, limits,
lifecycle.

Loaded once from ``data/models.toml``. The simulator keeps its own transcription of the
same facts; a test checks that the two agree.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from batchkimi.errors import ConfigError

Tokens = Annotated[int | None, Field(ge=1)]
Names = Annotated[tuple[str, ...], Strict(False)]  # a TOML list


class ModelInfo(BaseModel):
    """One model's facts, parsed strictly from the catalogue's TOML."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    name: str
    native_path: Literal["multimodal-generation", "text-generation"]
    inputs: Names
    thinking: Literal["hybrid", "always", "never"]
    status: Literal["active", "retired"]
    enable_thinking_default: bool | None = None
    preserve_thinking_default: bool | None = None
    temperature: float | None = None
    temperature_thinking: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    fps: float | None = None
    max_frames: Tokens = None
    context_tokens: Tokens = None
    max_input_tokens: Tokens = None
    max_input_tokens_thinking: Tokens = None
    max_reasoning_tokens: Tokens = None
    max_output_tokens: Tokens = None
    rpm: Tokens = None
    tpm: Tokens = None
    retired_on: dt.date | None = None
    replacements: Names = ()
    regions: Names = ()
    source: str = ""

    @property
    def is_retired(self) -> bool:
        return self.status == "retired"

    def thinking_by_default(self) -> bool:
        """Whether the model thinks when ``enable_thinking`` is not sent."""
        if self.thinking == "always":
            return True
        if self.thinking == "never":
            return False
        return bool(self.enable_thinking_default)

    def retirement_advice(self) -> str:
        when = self.retired_on.isoformat() if self.retired_on else "an earlier date"
        instead = ", ".join(self.replacements) or "a current model"
        return (
            f"model {self.name!r} was retired on {when} and no longer answers. "
            f"Migrate to {instead} as the service recommends, or to kimi-k2.6 / "
            "kimi-k2.5 for a Kimi model (set `model` in the job spec or --model)"
        )


def _parse(name: str, raw: Any, origin: str) -> ModelInfo:
    if not isinstance(raw, dict):
        msg = f"{origin}: models.{name!r} must be a table of the model's facts"
        raise ConfigError(msg)
    try:
        return ModelInfo.model_validate({**raw, "name": name})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        msg = (
            f"{origin}: models.{name!r}.{where} = {error.get('input')!r}: "
            f"{error['msg']}. Fix it in the file"
        )
        raise ConfigError(msg) from None


def _parse_file(text: str, origin: str) -> dict[str, ModelInfo]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{origin} is not valid TOML: {exc}. Fix the file"
        raise ConfigError(msg) from None
    models = raw.get("models")
    if not isinstance(models, dict) or set(raw) - {"models"}:
        msg = (
            f'{origin} must hold [models."name"] tables of model facts, as '
            "batchkimi's own models.toml does (see `batchkimi models --json`)"
        )
        raise ConfigError(msg)
    return {str(name): _parse(str(name), spec, origin) for name, spec in models.items()}


class Catalogue:
    """The models a job may use: the packaged ones, and any a ``--models`` file adds
    or overrides (a model the service offers before batchkimi knows it)."""

    def __init__(self, models: Mapping[str, ModelInfo], source: Path | None = None):
        self.models = dict(models)
        self.source = source  # the user's models file, if any

    @classmethod
    @cache
    def packaged(cls) -> Catalogue:
        text = resources.files("batchkimi").joinpath("data/models.toml")
        return cls(_parse_file(text.read_text("utf-8"), "models.toml"))

    @classmethod
    def with_file(cls, path: Path | None) -> Catalogue:
        """The packaged models, with ``path``'s entries added or taking their place."""
        packaged = cls.packaged()
        if path is None:
            return packaged
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read the models file {path}: {exc}. Give a TOML file"
            raise ConfigError(msg) from None
        return cls({**packaged.models, **_parse_file(text, str(path))}, path)

    def get(self, name: str) -> ModelInfo:
        """The model's facts, or a ConfigError that lists the models known."""
        info = self.models.get(name)
        if info is None:
            lowered = {k.lower(): k for k in self.models}
            hint = lowered.get(name.lower())
            did_you_mean = f' Did you mean "{hint}"?' if hint else ""
            known = ", ".join(sorted(self.models))
            msg = (
                f"unknown model {name!r}: batchkimi knows {known}.{did_you_mean} "
                "Model names are case-sensitive. A model the service offers that "
                "batchkimi does not list yet can be described in a file given with "
                "--models FILE (the shape of `batchkimi models --json`, as TOML)"
            )
            raise ConfigError(msg)
        return info

    def usable(self, name: str) -> ModelInfo:
        """The model's facts, refusing retired models before anything is sent."""
        info = self.get(name)
        if info.is_retired:
            raise ConfigError(info.retirement_advice())
        return info


def load_catalogue() -> dict[str, ModelInfo]:
    """All packaged models, by name."""
    return Catalogue.packaged().models


def get_model(name: str) -> ModelInfo:
    """A packaged model's facts (a job's own catalogue is ``Job.catalogue``)."""
    return Catalogue.packaged().get(name)


def check_usable(name: str) -> ModelInfo:
    """A packaged model's facts, refusing retired models."""
    return Catalogue.packaged().usable(name)


def check_output_limits(
    info: ModelInfo, parameters: dict[str, Any]
) -> tuple[str, str] | None:
    """(parameter, why) when a request asks for more output than the model gives,
    a limit the service answers with 400 "Range of max_tokens should be …" (FACTS
    §3.2, §6.2); None when it fits or the model's limit is not documented."""
    for name, limit, what in (
        ("max_tokens", info.max_output_tokens, "maximum output"),
        ("thinking_budget", info.max_reasoning_tokens, "longest chain of thought"),
    ):
        value = parameters.get(name)
        if limit is not None and isinstance(value, int) and value > limit:
            return name, (
                f"{name} = {value:,} is over {info.name}'s {what} of {limit:,} "
                "tokens; the service refuses such a request"
            )
    return None


def check_thinking(info: ModelInfo, enable_thinking: bool | None) -> str | None:
    """Why this thinking setting cannot be sent to this model, or None if it can."""
    if enable_thinking is False and info.thinking == "always":
        return (
            f"{info.name} always thinks: enable_thinking=false is not allowed. "
            "Remove the setting (or use --thinking), or choose a hybrid model "
            "such as kimi-k2.6 to answer without thinking"
        )
    if enable_thinking is True and info.thinking == "never":
        return f"{info.name} cannot think: remove enable_thinking or use --no-thinking"
    return None
