"""Turn manifest rows into ``RowRequest``s, or into problems naming row, column and fix.

Whole-file problems (a template column the manifest lacks) raise ``ManifestError``
before anything is sent. A problem in one row (an empty value, a bad override) becomes a
``RowProblem`` for that row alone: it is recorded as an error and never sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchkimi.answers.schema import TOOL_NAME
from batchkimi.catalogue import (
    ModelInfo,
    check_output_limits,
    check_thinking,
)
from batchkimi.errors import ConfigError, ManifestError
from batchkimi.estimate import EXPLICIT_CACHE_MIN_TOKENS, input_tokens, tool_tokens
from batchkimi.manifest.keys import canonical_value, derive_row_key, fingerprint_request
from batchkimi.manifest.messages import RowError as _RowError
from batchkimi.manifest.messages import parse_messages
from batchkimi.manifest.reader import column_list
from batchkimi.manifest.template import Template, parse_template
from batchkimi.media.limits import (
    IMAGE_TYPES,
    VIDEO_TYPES,
    check_fps,
    check_frame_count,
    check_max_frames,
)
from batchkimi.media.paths import (
    MediaPathError,
    MediaRoot,
    is_remote,
    unsupported_scheme,
)
from batchkimi.records import (
    ImagePart,
    Message,
    Part,
    RowRequest,
    TextPart,
    Tool,
    VideoPart,
)
from batchkimi.settings import Job
from batchkimi.settings.parameters import (
    PARAMETER_NAMES,
    WHOLE_NUMBERS,
    parameter_problem,
)
from batchkimi.settings.sections import COLUMN_ROLES

#: request parameters a manifest column may override, row by row
_OVERRIDES = tuple(role for role in COLUMN_ROLES if role in PARAMETER_NAMES)
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


#: the error codes of rows that cannot be sent as written
ROW_CODES = frozenset(
    {
        "invalid_model",
        "invalid_thinking",
        "unsupported_input",
        "invalid_value",
        "invalid_parameter",
        "missing_value",
        "invalid_messages",
        "invalid_media",
    }
)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that cannot be sent, and why, in words a user can act on."""

    index: int
    row_id: str
    code: str
    column: str | None
    problem: str
    fix: str

    @property
    def message(self) -> str:
        where = f'row {self.index + 1:,} (id "{self.row_id}")'
        if self.column:
            where += f', column "{self.column}"'
        return f"{where}: {self.problem}. {self.fix}"


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class RequestBuilder:
    """Checks the manifest's columns once, then builds one request per row."""

    def __init__(self, job: Job, columns: list[str], manifest_path: str) -> None:
        self.job = job
        self._models: dict[str, ModelInfo | str] = {}
        #: rows sent without a cache marker (``--cache explicit``): their shared
        #: prefix was missing or under the 1,024 tokens a cache needs
        self.uncached = 0
        asking = job.asking
        # the job's own tools are part of every request (a structured job's tool
        # is covered by its answer's part of the fingerprint)
        self._tools_key = (
            json.dumps([asking.tools, asking.tool_choice], sort_keys=True)
            if asking.tools
            else None
        )
        self.present = set(columns)
        # role → column, looked up once: a row asks for seventeen of them (issue 14)
        self._columns = {role: job.reading.column(role) for role in COLUMN_ROLES}
        self._present = {
            role: name for role, name in self._columns.items() if name in self.present
        }
        self._overrides = tuple(role for role in _OVERRIDES if role in self._present)
        self._parameter_items = tuple(job.asking.parameters.as_items())
        self.path = manifest_path
        self.media = MediaRoot(
            job.media_base, allow_outside=job.media.allow_outside_media_root
        )
        for role, column in job.reading.columns.items():
            if column not in self.present:
                self._whole_file(
                    column,
                    f"is mapped to {role!r} in [columns] but the manifest has no such "
                    f"column (it has: {column_list(columns)})",
                    "Fix the mapping in the job spec",
                )
        self.template: Template | None = None
        if job.asking.prompt is not None:
            self.template = parse_template(job.asking.prompt)
            for name in self.template.missing_columns(columns):
                self._whole_file(
                    name,
                    f"is used by the prompt template but the manifest has no such "
                    f"column (it has: {column_list(columns)})",
                    "Fix the template (--prompt / prompt) or the manifest",
                )
        elif not ({self.col("prompt"), self.col("messages")} & self.present):
            self._whole_file(
                self.col("prompt"),
                "is missing, and there is no messages column and no prompt template: "
                f"nothing to send (columns: {column_list(columns)})",
                'Give a template with --prompt "… {column} …", or map your text '
                'column in [columns] (prompt = "text")',
            )

    def _model(self, name: str) -> ModelInfo | str:
        """A row's model, or why it cannot be used (looked up once per name)."""
        found = self._models.get(name)
        if found is None:
            try:
                found = self.job.catalogue.usable(name)
            except ConfigError as exc:
                found = str(exc)
            self._models[name] = found
        return found

    def _whole_file(self, column: str, problem: str, fix: str) -> None:
        raise ManifestError(problem, path=self.path, column=column, row=1, fix=fix)

    def col(self, role: str) -> str:
        found = self._columns.get(role)
        return found if found is not None else self.job.reading.column(role)

    def value(self, row: Mapping[str, Any], role: str) -> Any:
        name = self._present.get(role)
        return None if name is None else row.get(name)

    def row_id(self, row: Mapping[str, Any]) -> str:
        raw = self.value(row, "id")
        return derive_row_key(row) if _is_blank(raw) else canonical_value(raw)

    def build(self, index: int, row: Mapping[str, Any]) -> RowRequest | RowProblem:
        row_id = self.row_id(row)
        try:
            return self._build(index, row_id, row)
        except _RowError as exc:
            return RowProblem(index, row_id, exc.code, exc.column, exc.problem, exc.fix)

    def _build(self, index: int, row_id: str, row: Mapping[str, Any]) -> RowRequest:
        model_name = self.value(row, "model")
        model_name = self.job.asking.model if _is_blank(model_name) else str(model_name)
        info = self._model(model_name)
        if isinstance(info, str):
            raise _RowError("invalid_model", self.col("model"), info, "Fix the value")
        thinking = self._thinking(row)
        problem = check_thinking(info, thinking)
        if problem:
            raise _RowError(
                "invalid_thinking", self.col("enable_thinking"), problem, ""
            )
        messages = self._messages(row)
        kinds = {
            "image" if isinstance(p, ImagePart) else "video"
            for m in messages
            for p in m.parts
            if not isinstance(p, TextPart)
        }
        for kind in sorted(kinds - set(info.inputs)):
            raise _RowError(
                "unsupported_input",
                self.col(kind),
                f"{info.name} does not accept {kind} input (it takes "
                f"{', '.join(info.inputs)})",
                "Use kimi-k2.6 or kimi-k2.5 for images and video",
            )
        parameters = self._parameters(row)
        too_much = check_output_limits(info, dict(parameters))
        if too_much is not None:
            name, problem = too_much
            # the row's own value, else the job's value meeting the row's model
            from_row = name in _OVERRIDES and not _is_blank(self.value(row, name))
            column = self.col(name) if from_row else self.col("model")
            raise _RowError(
                "invalid_value",
                column,
                problem,
                f"Lower {name}, or choose a model that gives more",
            )
        answer = self.job.asking.answer
        tools: tuple[Tool, ...] = self.job.asking.tool_records
        tool_choice: str | None = self.job.asking.tool_choice
        if answer is not None and answer.mode == "tool":
            tools = (answer.tool,)
            # the call is forced where the service accepts it: a thinking request
            # may only be given "auto" (as Model Studio's thinking models document
            # for tool_choice), and an answer in text is then a failed attempt
            thinks = thinking if thinking is not None else info.thinking_by_default()
            tool_choice = "auto" if thinks else TOOL_NAME
        elif answer is not None:
            messages = _with_instruction(messages, answer.prompt_instruction())
        cache_key = None
        if self.job.asking.cache == "explicit":
            messages, cache_key = self._mark_prefix(messages, tools, info.name)
        return RowRequest(
            index=index,
            row_id=row_id,
            model=info.name,
            messages=messages,
            parameters=parameters,
            enable_thinking=thinking,
            fingerprint=fingerprint_request(
                model=info.name,
                messages=messages,
                parameters=parameters,
                enable_thinking=thinking,
                answer=None if answer is None else answer.fingerprint_part,
                tools=self._tools_key,
            ),
            tools=tools,
            tool_choice=tool_choice,
            cache_key=cache_key,
        )

    def _mark_prefix(
        self, messages: tuple[Message, ...], tools: tuple[Tool, ...], model: str
    ) -> tuple[tuple[Message, ...], str | None]:
        """``--cache explicit``: mark the end of the rows' shared prefix (every turn
        before the row's own question: the system message, few-shot turns; the
        tool definitions come first) when it is long enough to be cached."""
        if len(messages) < 2 or messages[-1].role != "user":
            self.uncached += 1
            return messages, None
        prefix, last = messages[:-1], messages[-2]
        texts = [i for i, p in enumerate(last.parts) if isinstance(p, TextPart)]
        tokens = input_tokens(prefix) + tool_tokens(tools)
        if not texts or tokens < EXPLICIT_CACHE_MIN_TOKENS:
            self.uncached += 1
            return messages, None
        parts = list(last.parts)
        end = parts[texts[-1]]
        assert isinstance(end, TextPart)  # noqa: S101 - found among the text parts
        parts[texts[-1]] = TextPart(end.text, cache=True)
        marked = (*prefix[:-1], dataclasses.replace(last, parts=tuple(parts)))
        key = fingerprint_request(
            model=model,
            messages=marked,
            parameters=(),
            enable_thinking=None,
            tools=json.dumps(
                [t.name for t in tools] + [dict(t.parameters) for t in tools],
                sort_keys=True,
            ),
        )
        return (*marked, messages[-1]), key

    def _thinking(self, row: Mapping[str, Any]) -> bool | None:
        raw = self.value(row, "enable_thinking")
        if _is_blank(raw):
            return self.job.asking.thinking
        if isinstance(raw, bool):
            return raw
        text = canonical_value(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _RowError(
            "invalid_value",
            self.col("enable_thinking"),
            f"{raw!r} is not true or false",
            "Use true/false (or leave it empty for the job's setting)",
        )

    def _parameters(self, row: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        params = dict(self._parameter_items)
        for name in self._overrides:
            raw = self.value(row, name)
            if _is_blank(raw):
                continue
            value = _as_number(raw, int if name in WHOLE_NUMBERS else float)
            problem = (
                parameter_problem(name, value)
                if value is not None
                else (f"{raw!r} is not a number")
            )
            if problem:
                raise _RowError(
                    "invalid_value",
                    self.col(name),
                    problem,
                    "Fix the value, or leave it empty to use the job's setting",
                )
            params[name] = value
        return tuple(sorted(params.items()))

    def _messages(self, row: Mapping[str, Any]) -> tuple[Message, ...]:
        raw = self.value(row, "messages")
        if not _is_blank(raw):
            column = self.col("messages")
            return tuple(
                self._confined(message, column)
                for message in parse_messages(raw, column)
            )
        if self.template is not None:
            for name in self.template.fields:
                if _is_blank(row.get(name)):
                    raise _RowError(
                        "missing_value",
                        name,
                        "is empty, and the prompt template needs it",
                        "Fill the value, or remove the row",
                    )
            prompt = self.template.render(row)
        else:
            prompt_value = self.value(row, "prompt")
            if _is_blank(prompt_value):
                raise _RowError(
                    "missing_value",
                    self.col("prompt"),
                    "is empty: nothing to ask",
                    "Fill the prompt, or remove the row",
                )
            prompt = str(prompt_value)
        parts: list[Part] = [*self._media(row), TextPart(prompt)]
        messages: list[Message] = []
        system = self.value(row, "system")
        system = self.job.asking.system if _is_blank(system) else str(system)
        if system:
            messages.append(Message("system", (TextPart(system),)))
        messages.append(Message("user", tuple(parts)))
        return tuple(messages)

    def _media(self, row: Mapping[str, Any]) -> list[Part]:
        parts: list[Part] = []
        for role in ("image", "images"):
            for value in _as_list(self.value(row, role)):
                url, stamp = self._reference(value, role, IMAGE_TYPES)
                parts.append(ImagePart(url, stamp))
        fps = self._number(row, "fps", float)
        if fps is not None and (problem := check_fps(fps)):
            raise _RowError("invalid_media", self.col("fps"), problem, "Fix the value")
        max_frames = self._number(row, "max_frames", int)
        if max_frames is not None and (problem := check_max_frames(max_frames)):
            raise _RowError(
                "invalid_media", self.col("max_frames"), problem, "Fix the value"
            )
        video = self.value(row, "video")
        if not _is_blank(video):
            url, stamp = self._reference(str(video), "video", VIDEO_TYPES)
            parts.append(
                VideoPart(url=url, fps=fps, max_frames=max_frames, stamp=stamp)
            )
        frames = self._frames(row)
        if frames:
            urls, stamps = zip(*frames, strict=True)
            stamp = "|".join(stamps) if any(stamps) else ""
            parts.append(
                VideoPart(frames=urls, fps=fps, max_frames=max_frames, stamp=stamp)
            )
        return parts

    def _number(self, row: Mapping[str, Any], role: str, kind: type) -> Any:
        raw = self.value(row, role)
        if _is_blank(raw):
            return None
        value = _as_number(raw, kind)
        if value is None:
            raise _RowError(
                "invalid_parameter",
                self.col(role),
                f"{raw!r} is not {'a number' if kind is float else 'a whole number'}",
                "Fix the value",
            )
        return value

    def _frames(self, row: Mapping[str, Any]) -> list[tuple[str, str]]:
        values = _as_list(self.value(row, "frames"))
        if len(values) == 1 and not is_remote(values[0]):
            try:  # one local folder of frames
                found = self.media.frames(values[0])
            except MediaPathError as exc:
                if exc.outside:  # a folder, or a file, where it must not be
                    raise _RowError(
                        "invalid_media", self.col("frames"), exc.problem, exc.fix
                    ) from None
                found = None  # not a folder: a list of one frame, checked below
            if found is not None:
                values = [MediaRoot.uri(path) for path in found]
        if values and (problem := check_frame_count(len(values))):
            raise _RowError(
                "invalid_media",
                self.col("frames"),
                problem,
                "Give 4 to 2,000 frames (or a folder holding them)",
            )
        return [self._reference(v, "frames", IMAGE_TYPES) for v in values]

    def _confined(self, message: Message, column: str) -> Message:
        """A ``messages`` cell's media, checked as every other column's: local
        files confined to the media root, with the same limits."""
        parts: list[Part] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                url, stamp = self._reference_in(part.url, column, IMAGE_TYPES)
                parts.append(ImagePart(url, stamp))
            elif isinstance(part, VideoPart):
                parts.append(self._confined_video(part, column))
            else:
                parts.append(part)
        return dataclasses.replace(message, parts=tuple(parts))

    def _confined_video(self, part: VideoPart, column: str) -> VideoPart:
        for problem in (
            check_fps(part.fps) if part.fps is not None else None,
            check_max_frames(part.max_frames) if part.max_frames is not None else None,
            check_frame_count(len(part.frames)) if part.url is None else None,
        ):
            if problem:
                raise _RowError("invalid_media", column, problem, "Fix the message")
        if part.url is not None:
            url, stamp = self._reference_in(part.url, column, VIDEO_TYPES)
            return dataclasses.replace(part, url=url, stamp=stamp)
        found = [self._reference_in(f, column, IMAGE_TYPES) for f in part.frames]
        stamps = [stamp for _, stamp in found]
        return dataclasses.replace(
            part,
            frames=tuple(url for url, _ in found),
            stamp="|".join(stamps) if any(stamps) else "",
        )

    def _reference(
        self, value: str, role: str, accepted: Mapping[str, str]
    ) -> tuple[str, str]:
        """(URL, stamp) of a media reference in the column of ``role``."""
        return self._reference_in(value, self.col(role), accepted)

    def _reference_in(
        self, value: str, column: str, accepted: Mapping[str, str]
    ) -> tuple[str, str]:
        """(URL, stamp): a remote URL as it is; a local file as a confined
        ``file://`` URL, with its size and mtime as the stamp. Every local file any
        column names (``messages`` included) comes through here."""
        if is_remote(value):
            return value, ""
        if scheme := unsupported_scheme(value):
            raise _RowError(
                "invalid_media",
                column,
                f"{value!r} is a {scheme} address, which the service cannot fetch",
                "Give an https:// URL, an oss:// URL, a data: URL or a local path",
            )
        try:
            path = self.media.file(value)
        except MediaPathError as exc:
            raise _RowError("invalid_media", column, exc.problem, exc.fix) from None
        if path.suffix.lower() not in accepted:
            raise _RowError(
                "invalid_media",
                column,
                f"{value!r} is a {path.suffix or 'suffix-less'} file, not a format the "
                f"service accepts ({', '.join(sorted(accepted))})",
                "Convert it to an accepted format",
            )
        facts = path.stat()
        return MediaRoot.uri(path), f"{facts.st_size}-{facts.st_mtime_ns}"


def _with_instruction(
    messages: tuple[Message, ...], instruction: str
) -> tuple[Message, ...]:
    """The conversation with ``instruction`` closing its system message (one is
    added in front when there is none)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        text = "".join(p.text for p in first.parts if isinstance(p, TextPart))
        system = Message("system", (TextPart(f"{text}\n\n{instruction}"),))
        return (system, *messages[1:])
    return (Message("system", (TextPart(instruction),)), *messages)


def _as_number(raw: Any, kind: type) -> Any:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return kind(raw) if kind is float or float(raw).is_integer() else None
    try:
        number = float(str(raw).strip())
    except ValueError:
        return None
    if kind is int:
        return int(number) if number.is_integer() else None
    return number


def _as_list(raw: Any) -> list[str]:
    if _is_blank(raw):
        return []
    if isinstance(raw, list | tuple):
        return [str(v) for v in raw if not _is_blank(v)]
    text = str(raw).strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = None
        if isinstance(values, list):
            return [str(v) for v in values]
    return [text]
