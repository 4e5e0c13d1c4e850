"""What a request asks of the model beyond text: tools, tool_choice, tool turns, and
response_format, read and checked as the service would (FACTS §6.5).

Both APIs use the OpenAI shapes: compatible mode at the top level of the body, native
under ``parameters``. Every refusal is a sentence for a 400 ``InvalidParameter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# FACTS §6.5 lists "auto", "none" and the object naming a function; "required" is not
# among the documented values, so it is refused rather than guessed at
_CHOICES = ("auto", "none")


class RequestProblem(ValueError):
    """A request the service refuses with 400 InvalidParameter; the message says
    why."""


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """The tools a request offers and how the model may use them."""

    functions: tuple[Function, ...]
    choice: str  # auto | none | forced
    forced: str | None = None  # the function named by a forced choice

    @property
    def calls_a_tool(self) -> bool:
        return bool(self.functions) and self.choice != "none"

    def function(self, name: str) -> Function:
        return next(f for f in self.functions if f.name == name)


def read_tools(params: dict[str, Any]) -> ToolSpec | None:
    """The request's tools and tool_choice, or None if it offers none.

    Raises RequestProblem for a malformed tool, a duplicate name, or a tool_choice
    that is not one of the documented forms or names an unknown function.
    """
    tools = params.get("tools")
    choice = params.get("tool_choice")
    parallel = params.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        msg = "parallel_tool_calls must be a boolean."
        raise RequestProblem(msg)
    if tools is None:
        if isinstance(choice, dict):
            _raise_unknown(choice)
        if choice is not None and choice not in _CHOICES:
            _raise_bad_choice(choice)
        return None
    if not isinstance(tools, list) or not tools:
        msg = "tools must be a non-empty list of function definitions."
        raise RequestProblem(msg)
    functions = tuple(_function(i, tool) for i, tool in enumerate(tools))
    names = [f.name for f in functions]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        msg = f"tools: the function name {duplicate!r} is used more than once."
        raise RequestProblem(msg)
    if choice is None or choice == "auto":
        return ToolSpec(functions, "auto")
    if choice == "none":
        return ToolSpec(functions, "none")
    if isinstance(choice, dict):
        name = _choice_name(choice)
        if name not in names:
            _raise_unknown(choice)
        return ToolSpec(functions, "forced", name)
    _raise_bad_choice(choice)
    raise AssertionError  # pragma: no cover - _raise_bad_choice raises


def _function(index: int, tool: Any) -> Function:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        msg = f'{where}: each tool must be {{"type": "function", "function": {{…}}}}.'
        raise RequestProblem(msg)
    function = tool.get("function")
    if not isinstance(function, dict):
        msg = f"{where}.function must be an object with a name and parameters."
        raise RequestProblem(msg)
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        msg = (
            f"{where}.function.name must be 1 to 64 letters, digits, underscores or "
            f"dashes (got {name!r})."
        )
        raise RequestProblem(msg)
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        msg = f"{where}.function.description must be a string."
        raise RequestProblem(msg)
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        msg = f"{where}.function.parameters must be a JSON Schema object."
        raise RequestProblem(msg)
    declared = parameters.get("type", "object")
    if declared != "object":
        msg = (
            f"Invalid schema for function {name!r}: parameters must be a JSON Schema "
            f'of type "object", got {declared!r}.'
        )
        raise RequestProblem(msg)
    return Function(name, parameters)


def _choice_name(choice: dict[str, Any]) -> str | None:
    function = choice.get("function")
    if choice.get("type") != "function" or not isinstance(function, dict):
        return None
    name = function.get("name")
    return name if isinstance(name, str) else None


def _raise_unknown(choice: dict[str, Any]) -> None:
    name = _choice_name(choice)
    if name is None:
        _raise_bad_choice(choice)
    msg = f"tool_choice names the function {name!r}, which is not among the tools."
    raise RequestProblem(msg)


def _raise_bad_choice(choice: Any) -> None:
    msg = (
        'tool_choice must be "auto", "none" or {"type": "function", "function": '
        '{"name": …}}' + f" (got {choice!r})."
    )
    raise RequestProblem(msg)


def check_tool_turns(messages: list[Any]) -> None:
    """Refuse a tool message that answers no call of the assistant turn before it,
    and assistant tool calls in the wrong shape, as OpenAI's API does.

    A call left unanswered is let through: the documentation does not say the
    service refuses it, and a client may follow a call with a user turn.
    """
    open_ids: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "assistant":
            open_ids = _call_ids(index, message.get("tool_calls"))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_ids:
                msg = (
                    f"messages[{index}]: a message with role 'tool' must answer a "
                    "tool call of the assistant message before it: tool_call_id "
                    f"{call_id!r} was not called there."
                )
                raise RequestProblem(msg)
            content = message.get("content")
            if not isinstance(content, str | list):
                msg = f"messages[{index}]: a tool message needs a content."
                raise RequestProblem(msg)
        else:
            open_ids = set()


def _call_ids(index: int, calls: Any) -> set[str]:
    if calls is None:
        return set()
    where = f"messages[{index}].tool_calls"
    if not isinstance(calls, list):
        msg = f"{where} must be a list."
        raise RequestProblem(msg)
    ids: set[str] = set()
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            msg = (
                f"{where}[{number}] must be {{'id', 'type': 'function', 'function': "
                "{'name', 'arguments': <a JSON string>}}."
            )
            raise RequestProblem(msg)
        ids.add(call["id"])
    return ids


def check_response_format(params: dict[str, Any], model: str, supported: bool) -> None:
    """Refuse JSON mode and JSON Schema output on a model without structured output.

    FACTS §6.5 (the seed's feature table): kimi-k2.7-code, kimi-k2.6 and kimi-k2.5
    do not support structured output, so ``response_format`` other than the default
    text is refused, naming the parameter, rather than silently ignored: a client
    that relies on it would otherwise believe its answers are constrained when they
    are not. ``{"type": "text"}`` asks for nothing and is accepted.
    """
    value = params.get("response_format")
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind not in ("json_object", "json_schema"):
        msg = (
            'response_format must be {"type": "text" | "json_object" | "json_schema"}.'
        )
        raise RequestProblem(msg)
    if not supported:
        msg = (
            f"The response_format parameter ({kind}) is not supported by model "
            f"{model}: it has no structured output. Use tool calling instead."
        )
        raise RequestProblem(msg)
