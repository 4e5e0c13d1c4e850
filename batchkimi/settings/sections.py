"""A job's settings, as the value objects their readers need.

Each section is parsed strictly (pydantic, ``strict=True``): a quoted boolean, a
decimal where a whole number belongs or a string where a number belongs is refused,
never guessed at. Defaults are written once, here. A job spec file stays flat (every
key at the top level, plus ``[columns]``, ``[parameters]`` and ``[schema]`` tables):
``Job`` sorts its keys into these sections, so one name means one thing in a file, on
the command line (``max_attempts`` is ``--max-attempts``) and in Python.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

from batchkimi.answers.schema import AnswerSpec, answer_spec, check_schema
from batchkimi.records import Tool
from batchkimi.regions import api_base, base_url_for, resolve_region
from batchkimi.settings.parameters import Parameters
from batchkimi.settings.written import COLUMN_ROLES as COLUMN_ROLES
from batchkimi.settings.written import ColumnRole

VIDEO_FRAME_MODES = ("auto", "always", "never")
_SHARD = re.compile(r"^(\d+)/(\d+)$")


def _as_path(value: Any) -> Any:
    """A string names a path (relative ones were resolved when the file was read);
    anything else is left for the type check to refuse."""
    return Path(value).expanduser() if isinstance(value, str) and value else value


def _comma_list(value: Any) -> Any:
    """``"a,b,c"`` (the command line's form) as a list; lists as they are. An empty
    name between commas is kept, for the check of its setting to refuse."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")] if value.strip() else []
    return value


AnyPath = Annotated[Path, BeforeValidator(_as_path)]
#: a list in TOML, JSON or Python; a comma-separated string on the command line
Names = Annotated[tuple[str, ...], BeforeValidator(_comma_list), Strict(False)]


class Section(BaseModel):
    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False
    )


class Reading(Section):
    """What to read: the manifest, which of its columns play which role, which
    rows this run takes."""

    input: AnyPath
    columns: dict[ColumnRole, str] = Field(default_factory=dict)
    keep_columns: Names | None = None  # None: every input column
    batch_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 2_000
    shard: str | None = None  # "I/N": only the rows of shard I of N
    limit: Annotated[int | None, Field(ge=0)] = None  # rows sent this run

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _SHARD.match(value)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            msg = "must be I/N with 1 <= I <= N, e.g. 2/4 for the second of four"
            raise ValueError(msg)
        return value

    def column(self, role: str) -> str:
        """The manifest column that plays ``role`` (its own name unless mapped)."""
        return next((c for r, c in self.columns.items() if r == role), role)

    @property
    def shard_parts(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    @property
    def shard_label(self) -> str | None:
        """``2-of-4``: the shard's name in file names and messages."""
        parts = self.shard_parts
        return f"{parts[0]}-of-{parts[1]}" if parts else None


class Asking(Section):
    """What to ask: the model, the prompt, the request parameters, and the answer
    a structured job declares."""

    model_config = ConfigDict(populate_by_name=True)

    model: str = "kimi-k2.6"
    #: a TOML file of model facts that adds to (or overrides) the packaged catalogue
    models: AnyPath | None = None
    prompt: str | None = None  # a template over the manifest's columns
    system: str | None = None
    thinking: bool | None = None  # None: the model's own default, not sent
    parameters: Parameters = Field(default_factory=Parameters)
    #: the declared answer: a JSON Schema, labels (exactly one of them) or
    #: multi_labels (a set of them); None: free text
    answer_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    labels: Names | None = None
    multi_labels: Names | None = None
    structured: Literal["tool", "prompt"] | None = None
    #: functions the model may call (the OpenAI shape both APIs use, FACTS §6.5),
    #: and which: "auto", "none", or one function's name to force it
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    #: the context cache (FACTS §6.3): implicit (the service's own, nothing sent)
    #: or explicit (the end of the rows' shared prefix marked for caching)
    cache: Literal["implicit", "explicit"] = "implicit"
    label_case: Literal["exact", "insensitive"] | None = None
    max_repairs: Annotated[int | None, Field(ge=0, le=10)] = None
    #: what `plan` assumes a request answers when it sets no max_tokens (thinking
    #: included); None: 256 tokens, plus 1,024 when the request thinks
    expected_output_tokens: Annotated[int | None, Field(ge=1, le=10**7)] = None

    @field_validator("answer_schema")
    @classmethod
    def _is_a_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "schema")
        return value

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(
        cls, value: list[dict[str, Any]] | None
    ) -> list[dict[str, Any]] | None:
        for position, tool in enumerate(value or [], start=1):
            _check_tool(tool, position)
        return value

    @property
    def tool_records(self) -> tuple[Tool, ...]:
        """The job's own functions (a structured job's one tool is its answer)."""
        return tuple(
            Tool(
                name=tool["function"]["name"],
                description=str(tool["function"].get("description") or ""),
                parameters=tool["function"].get("parameters")
                or {"type": "object", "properties": {}},
            )
            for tool in self.tools or []
        )

    @cached_property
    def answer(self) -> AnswerSpec | None:
        """The structured answer the job asks for, or None for free text."""
        return answer_spec(
            schema=self.answer_schema,
            labels=self.labels,
            multi_labels=self.multi_labels,
            mode=self.structured,
            label_case=self.label_case,
            max_repairs=self.max_repairs,
        )


_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_tool(tool: Any, position: int) -> None:
    """A function tool as FACTS §6.5 shows it, or a ValueError saying what is off."""
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type", "function") != "function":
        msg = (
            f"tool {position} is not "
            '{"type": "function", "function": {"name", "description", "parameters"}}'
        )
        raise ValueError(msg)
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        msg = f"tool {position} needs a name of letters, digits, _ or - (at most 64)"
        raise ValueError(msg)
    if "parameters" in function:
        check_schema(function["parameters"], f"tool {name!r}: parameters")


class Media(Section):
    """How local media is found and made sendable."""

    #: local paths resolve here (default: the manifest's folder, or the folder a
    #: glob starts from); a path that leads outside it is refused unless allowed
    media_root: AnyPath | None = None
    allow_outside_media_root: bool = False
    #: frames extracted here from local videos: auto (when a video cannot be sent
    #: as it is), always, or never (refuse such a video)
    video_frames: Literal["auto", "always", "never"] = "auto"
    frame_max_side: Annotated[int, Field(ge=64, le=8192)] = 768  # px
    fix_images: bool = False  # shrink or re-encode an image the service would refuse
    #: look at image and video URLs (HEAD) before asking the service to fetch them
    check_urls: bool = False


class Connection(Section):
    """Where requests go, and how each one travels."""

    api: Literal["openai", "dashscope"] = "openai"
    region: str = "cn-beijing"
    workspace_id: str | None = None
    base_url: str | None = None  # overrides region and workspace
    #: send the key over plain http to a host that is not this machine
    allow_insecure_http: bool = False
    stream: bool = True
    timeout_s: Annotated[float, Field(ge=1, le=86_400)] = 900.0
    #: a stream with no data this long fails the attempt; None: timeout_s
    idle_timeout_s: Annotated[float | None, Field(ge=1, le=86_400)] = None

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return resolve_region(value).name

    @property
    def resolved_base_url(self) -> str:
        """The SDK-style base URL (``…/compatible-mode/v1`` or ``…/api/v1``)."""
        if self.base_url:
            return api_base(self.api, self.base_url)
        return base_url_for(self.api, self.region, self.workspace_id)


class Pacing(Section):
    """How hard to push: requests in flight, rate budgets, attempts."""

    concurrency: Annotated[int, Field(ge=1, le=4096)] = 16
    #: per-model limits; None: the catalogue's (500 RPM, 1M TPM); 0: none, adapt
    rpm: Annotated[int | None, Field(ge=0, le=10**12)] = None
    tpm: Annotated[int | None, Field(ge=0, le=10**12)] = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    #: stop (resumable) when throttles or an outage have lasted this long
    max_throttle_wait_s: Annotated[float, Field(ge=1, le=7 * 86_400)] = 600.0
    #: where rows are sent from: this process (local), or workers on a Ray cluster
    engine: Literal["local", "ray"] = "local"
    #: the Ray cluster to join (``ray://…`` or ``HOST:PORT``); None: a local one
    ray_address: Annotated[str | None, Field(min_length=1)] = None
    #: worker actors on the cluster; None: one per CPU the cluster has
    ray_workers: Annotated[int | None, Field(ge=1, le=4096)] = None


class Stopping(Section):
    """When a run stops early, resumably."""

    #: this run's budget, in the price table's currency
    max_cost: Annotated[float | None, Field(ge=0, le=10**12)] = None
    max_runtime_s: Annotated[float | None, Field(ge=1, le=10**9)] = None
    grace_s: Annotated[float, Field(ge=0, le=86_400)] = 30.0  # in-flight after a stop


class Writing(Section):
    """Where results go, what is sent again, and what a run's bill is priced at."""

    output: AnyPath | None = None  # `plan` may go without; `run` may not
    rerun: Names = ()  # statuses or error codes to send again
    retry_errors: bool = False
    prices: AnyPath | None = None  # a TOML price file over the packaged prices

    @field_validator("prices")
    @classmethod
    def _prices_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            msg = "no such file: give the path of a TOML price file"
            raise ValueError(msg)
        return value

    @property
    def rerun_set(self) -> frozenset[str]:
        """What to send again: ``--rerun``, plus every failed, cut-off or invalid
        answer for ``--retry-errors``."""
        extra = {"error", "incomplete", "invalid"} if self.retry_errors else set()
        return frozenset(self.rerun) | extra


SECTIONS: dict[str, type[Section]] = {
    "reading": Reading,
    "asking": Asking,
    "media": Media,
    "connection": Connection,
    "pacing": Pacing,
    "stopping": Stopping,
    "writing": Writing,
}


def _key_of(name: str, section: type[Section]) -> str:
    alias = section.model_fields[name].alias
    return alias or name


#: flat key (as a file, an option or a keyword spells it) -> its section
SECTION_OF: dict[str, str] = {
    _key_of(name, model): section
    for section, model in SECTIONS.items()
    for name in model.model_fields
}
