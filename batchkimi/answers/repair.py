"""The repair turn: the conversation so far, the model's answer, and the validator's
words, asking once more. Pure.

In tool mode the answer was a function call, so the reply is a ``tool`` message
answering that call (every call of the turn gets one, as both APIs require); an answer
given in text gets a user message asking for the call. In prompt mode the reply is a
user message. The thinking of a turn with a call is kept beside it: Kimi's thinking
models expect the reasoning of a tool-call turn back in the conversation.
"""

from __future__ import annotations

from dataclasses import replace

from batchkimi.answers.check import Invalid
from batchkimi.answers.schema import TOOL_NAME, AnswerSpec
from batchkimi.records import Completion, Message, RowRequest, TextPart


def repair_request(
    request: RowRequest,
    completion: Completion,
    invalid: Invalid,
    spec: AnswerSpec,
) -> RowRequest:
    """``request`` with the invalid answer and the repair turn appended.

    The fingerprint stays the row's: a repair is part of answering the same request.
    """
    return replace(
        request,
        messages=request.messages + repair_turn(completion, invalid, spec),
    )


def repair_turn(
    completion: Completion, invalid: Invalid, spec: AnswerSpec
) -> tuple[Message, ...]:
    """The model's answer as an assistant message, then the reply that asks again."""
    parts = (TextPart(completion.content),) if completion.content else ()
    if spec.mode == "tool" and completion.tool_calls:
        answer = Message(
            "assistant",
            parts,
            reasoning_content=completion.reasoning_content or None,
            tool_calls=completion.tool_calls,
        )
        replies = tuple(
            Message(
                "tool",
                (TextPart(_tool_reply(call.name, invalid)),),
                tool_call_id=call.id,
            )
            for call in completion.tool_calls
        )
        return (answer, *replies)
    answer = Message("assistant", parts or (TextPart(""),))
    return (answer, Message("user", (TextPart(_user_reply(invalid, spec)),)))


def _tool_reply(name: str, invalid: Invalid) -> str:
    if name != TOOL_NAME:
        return f"There is no function {name}. Call {TOOL_NAME} with your answer."
    return (
        f"Invalid arguments: {invalid.message}. Call {TOOL_NAME} again with "
        "corrected arguments that follow its parameters schema."
    )


def _user_reply(invalid: Invalid, spec: AnswerSpec) -> str:
    if spec.mode == "tool":
        return (
            f"{invalid.message[0].upper()}{invalid.message[1:]}. Give your answer by "
            f"calling the function {TOOL_NAME}, with arguments that follow its "
            "parameters schema."
        )
    return (
        f"That answer is not valid: {invalid.message}. Reply again with only the "
        "corrected JSON, valid against the schema."
    )
