"""Whether the service takes a request, and what it asks for.

Each check returns (or raises, as ``RequestProblem``) the documented refusal: an
unknown or retired model, thinking the model cannot switch, ``max_tokens`` or input
beyond the model's range, media over the limits, malformed tools or tool turns,
``response_format`` on a model without structured output, or too many cache markers.
Pure apart from resolving ``oss://`` URLs against the upload store.
"""

from __future__ import annotations

from typing import Any

from batchkimi.simulator.cache import Prefixes, read_prefixes
from batchkimi.simulator.composer import Ask
from batchkimi.simulator.facts import MODELS
from batchkimi.simulator.media import media_problem
from batchkimi.simulator.reading import (
    asks_in_plain_text,
    media_parts,
    media_urls,
    prompt_schema,
)
from batchkimi.simulator.tools import (
    check_response_format,
    check_tool_turns,
    read_tools,
)
from batchkimi.simulator.uploads import UploadStore


def model_problem(
    model_name: str, params: dict[str, Any], thinking: bool | None
) -> tuple[str, str] | None:
    """(code, message) if the model or its thinking and output settings are
    refused."""
    model = MODELS.get(model_name)
    if model is None or model.retired:
        return "ModelNotFound", "Model not exist."
    if thinking is False and model.thinking == "always":
        return "InvalidParameter", (
            f"The model {model_name} only supports thinking mode: "
            "enable_thinking must be true."
        )
    if thinking is True and model.thinking == "never":
        return "InvalidParameter", "This model does not support enable_thinking."
    cap = params.get("max_tokens")
    limit = model.max_output
    if limit is not None and isinstance(cap, int) and not 1 <= cap <= limit:
        # FACTS §3.2: "Range of max_tokens should be …"
        return "InvalidParameter", f"Range of max_tokens should be [1, {limit}]"
    return None


def input_too_long(ask: Ask, tokens: int) -> str | None:
    """FACTS §6.2: input over the model's maximum is refused, naming it."""
    info = MODELS[ask.model]
    limit = (info.max_input_thinking if ask.thinks else None) or info.max_input
    if limit is not None and tokens > limit:
        return f"Range of input length should be [1, {limit}]"
    return None


def media_refusal(
    messages: list[Any], model: str, uploads: UploadStore, *, oss_ok: bool
) -> str | None:
    """Why the service would refuse the request's media (400 InvalidParameter)."""
    for part in media_parts(messages):
        if problem := media_problem(part):
            return problem
    for url in media_urls(messages):
        if url.startswith("file://"):
            return (
                f"The URL {url[:80]} cannot be read by the service: a local file "
                "must be uploaded first, or sent as a data: URL."
            )
        if url.startswith("oss://"):
            if not oss_ok:
                return (
                    f"The URL {url[:80]} is a temporary oss:// URL: send the "
                    "header X-DashScope-OssResourceResolve: enable with the native "
                    "API."
                )
            if why := uploads.resolve(url, model):
                return why
    return None


def read_ask(
    model: str, messages: list[Any], params: dict[str, Any], thinking: bool | None
) -> tuple[Ask, Prefixes]:
    """What the request asks for, and its input as cache prefixes.

    Raises tools.RequestProblem for malformed tools, tool turns or cache markers,
    and for response_format on a model without structured output.
    """
    tools = read_tools(params)
    check_tool_turns(messages)
    check_response_format(params, model, MODELS[model].structured_output)
    prefixes = read_prefixes(messages, params.get("tools"))
    schema = None
    if tools is None or not tools.calls_a_tool:
        schema = prompt_schema(messages)
    ask = Ask(
        model,
        messages,
        params,
        thinking,
        tools=tools,
        schema=schema,
        plain_text=asks_in_plain_text(messages),
    )
    return ask, prefixes
