"""Raw-HTTP helpers for the simulator's wire tests: bodies in each API's shape, and
streams folded the way a careful client folds them."""

from __future__ import annotations

import json
from typing import Any

import httpx

from batchkimi.simulator import SimulatorServer

NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
COMPAT = "/compatible-mode/v1/chat/completions"
AUTH = {"Authorization": "Bearer sk-test"}
SSE = {"X-DashScope-SSE": "enable"}
# one client for every test: making an httpx client costs ~35 ms (its TLS context)
_CLIENT = httpx.Client(timeout=10)

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
LABEL_TOOL = {
    "type": "function",
    "function": {
        "name": "record_label",
        "description": "Record the review's label.",
        "parameters": LABEL_SCHEMA,
    },
}


def request(
    api: str,
    messages: list[dict[str, Any]],
    *,
    model: str = "kimi-k2.6",
    stream: bool = False,
    **fields: Any,
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, body, headers) of one request in ``api``'s shape: ``fields`` go at
    the top level in compatible mode and under ``parameters`` natively."""
    if api == "compat":
        body = {"model": model, "messages": messages, **fields}
        if stream:
            body["stream"] = True
        return COMPAT, body, {}
    parameters = {"result_format": "message", **fields}
    if stream:
        parameters["incremental_output"] = True
    body = {"model": model, "input": {"messages": messages}, "parameters": parameters}
    return NATIVE, body, SSE if stream else {}


def send(
    simulator: SimulatorServer,
    api: str,
    messages: list[dict[str, Any]],
    **fields: Any,
) -> httpx.Response:
    path, body, headers = request(api, messages, **fields)
    return _CLIENT.post(simulator.url + path, json=body, headers={**AUTH, **headers})


def events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON of every data line of a stream, in either framing, minus [DONE]."""
    return [
        json.loads(line[5:])
        for line in response.text.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]


def message_of(api: str, data: dict[str, Any]) -> dict[str, Any]:
    """The assistant message of a whole answer (``message``) or a chunk (``delta``)."""
    if api == "compat":
        choice = data["choices"][0]
        return dict(choice.get("message") or choice.get("delta") or {})
    return dict(data["output"]["choices"][0]["message"])


def finish_of(api: str, data: dict[str, Any]) -> Any:
    choices = data["choices"] if api == "compat" else data["output"]["choices"]
    return choices[0]["finish_reason"] if choices else None


def fold_tool_calls(
    api: str, chunks: list[dict[str, Any]]
) -> dict[int, dict[str, str]]:
    """Tool calls joined per index: the first non-empty id and name, arguments
    concatenated, as FACTS §6.5 says a client must."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        if api == "compat" and not chunk.get("choices"):
            continue
        for call in message_of(api, chunk).get("tool_calls") or []:
            folded = calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
            function = call.get("function") or {}
            folded["id"] = folded["id"] or call.get("id") or ""
            folded["name"] += function.get("name") or ""
            folded["args"] += function.get("arguments") or ""
    return calls


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content or ""
