"""The declared answer and the check of each answer: what a labelling user relies on
before any typed column is written (issue 11)."""

from __future__ import annotations

import pytest

from batchkimi.answers.check import AnswerChecker, Invalid, Valid
from batchkimi.answers.repair import repair_turn
from batchkimi.answers.schema import AnswerSpec, answer_spec
from batchkimi.errors import ConfigError
from batchkimi.records import Completion, ToolCall

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "aspects": {
            "type": "array",
            "items": {"type": "string", "enum": ["price", "quality"]},
            "uniqueItems": True,
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer"},
    },
    "required": ["sentiment", "confidence"],
}


def declared(**settings: object) -> AnswerSpec | None:
    values: dict[str, object] = dict.fromkeys(
        ("schema", "labels", "multi_labels", "mode", "label_case", "max_repairs")
    )
    values.update(settings)
    return answer_spec(**values)  # type: ignore[arg-type]


def spec(**settings: object) -> AnswerSpec:
    found = declared(**settings)
    assert found is not None
    return found


def called(arguments: str, name: str = "answer") -> Completion:
    return Completion(
        content="",
        reasoning_content="",
        finish_reason="tool_calls",
        usage=None,
        request_id="req",
        model=None,
        tool_calls=(ToolCall("call_1", name, arguments),),
    )


def said(content: str) -> Completion:
    return Completion(content, "", "stop", None, "req", None)


def test_labels_compile_to_one_required_enum_and_multi_labels_to_a_set() -> None:
    labels = spec(labels=["positive", "negative"]).schema
    assert labels["properties"] == {
        "label": {"type": "string", "enum": ["positive", "negative"]}
    }
    assert labels["required"] == ["label"]
    assert labels["additionalProperties"] is False
    multi = spec(multi_labels=["a", "b", "c"]).schema["properties"]["labels"]
    assert multi["type"] == "array"
    assert multi["uniqueItems"] is True
    assert multi["items"]["enum"] == ["a", "b", "c"]


def test_a_schema_that_is_not_an_object_is_wrapped_as_one_property() -> None:
    wrapped = spec(schema={"enum": ["yes", "no"], "$defs": {"x": {"type": "string"}}})
    assert wrapped.wrapped
    assert wrapped.schema["properties"] == {"answer": {"enum": ["yes", "no"]}}
    assert wrapped.schema["$defs"] == {"x": {"type": "string"}}
    checker = AnswerChecker(wrapped)
    assert isinstance(checker.check(called('{"answer": "yes"}')), Valid)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"schema": {"type": "strin"}}, "not a valid JSON Schema"),
        ({"schema": {}}, "empty"),
        ({"schema": REVIEW_SCHEMA, "labels": ["a"]}, "declare the answer once"),
        ({"labels": ["a", "a"]}, "more than once"),
        ({"labels": ["a", " "]}, "non-empty"),
        ({"mode": "prompt"}, "no answer is declared"),
        ({"label_case": "insensitive"}, "no answer is declared"),
        ({"labels": ["a"], "mode": "json"}, "use tool or prompt"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused_before_anything_is_sent(
    settings: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        declared(**settings)


def test_the_fingerprint_part_follows_schema_mode_and_label_case_not_repairs() -> None:
    base = spec(schema=REVIEW_SCHEMA)
    assert spec(schema=REVIEW_SCHEMA, max_repairs=5).fingerprint_part == (
        base.fingerprint_part
    )
    for other in (
        spec(schema=REVIEW_SCHEMA, mode="prompt"),
        spec(schema=REVIEW_SCHEMA, label_case="insensitive"),
        spec(schema={**REVIEW_SCHEMA, "required": ["sentiment"]}),
    ):
        assert other.fingerprint_part != base.fingerprint_part


def test_a_valid_tool_answer_is_kept_as_compact_json() -> None:
    checker = AnswerChecker(spec(schema=REVIEW_SCHEMA))
    verdict = checker.check(called('{"sentiment": "mixed", "confidence": 0.5}'))
    assert verdict == Valid(
        {"sentiment": "mixed", "confidence": 0.5},
        '{"sentiment":"mixed","confidence":0.5}',
    )


def test_an_integer_written_as_a_whole_float_becomes_an_integer() -> None:
    checker = AnswerChecker(spec(schema=REVIEW_SCHEMA))
    verdict = checker.check(called('{"sentiment":"mixed","confidence":1,"stars":4.0}'))
    assert isinstance(verdict, Valid)
    assert verdict.value["stars"] == 4
    assert isinstance(verdict.value["stars"], int)
    assert '"stars":4}' in verdict.json


@pytest.mark.parametrize(
    ("arguments", "cause", "words"),
    [
        ('{"sentiment": "Positive", "confidence": 1}', "enum", '"Positive" is not'),
        ('{"confidence": 0.2}', "required", '"sentiment" is a required property'),
        ('{"sentiment": "mixed", "confidence": "0.9"}', "type", "not of type"),
        ('{"sentiment": "mixed", "confidence": 3}', "maximum", "at confidence"),
        ('{"sentiment": "mixed", "confid', "json", "not valid JSON"),
    ],
)
def test_an_invalid_answer_says_why_in_the_validators_words(
    arguments: str, cause: str, words: str
) -> None:
    verdict = AnswerChecker(spec(schema=REVIEW_SCHEMA)).check(called(arguments))
    assert isinstance(verdict, Invalid)
    assert verdict.cause == cause
    assert words in verdict.message


def test_the_wrong_label_is_named_with_the_labels_allowed() -> None:
    verdict = AnswerChecker(spec(labels=["positive", "negative", "mixed"])).check(
        called('{"label": "Positive"}')
    )
    assert isinstance(verdict, Invalid)
    for label in ("Positive", "positive", "negative", "mixed"):
        assert label in verdict.message


def test_labels_match_exactly_unless_case_insensitive_which_folds_only_case_and_spaces() -> (
    None
):
    exact = AnswerChecker(spec(labels=["positive", "negative"]))
    loose = AnswerChecker(
        spec(labels=["positive", "negative"], label_case="insensitive")
    )
    assert isinstance(exact.check(called('{"label": " Positive "}')), Invalid)
    folded = loose.check(called('{"label": " POSITIVE\\n"}'))
    assert isinstance(folded, Valid)
    assert folded.value == {"label": "positive"}
    for near_miss in ("Positive.", "positiv", "pos itive", "positive!"):
        verdict = loose.check(called(f'{{"label": "{near_miss}"}}'))
        assert isinstance(verdict, Invalid), near_miss
    multi = AnswerChecker(
        spec(multi_labels=["Price", "Quality"], label_case="insensitive")
    )
    verdict = multi.check(called('{"labels": ["price", " QUALITY"]}'))
    assert isinstance(verdict, Valid)
    assert verdict.value == {"labels": ["Price", "Quality"]}


def test_text_instead_of_the_call_is_a_failed_attempt() -> None:
    checker = AnswerChecker(spec(labels=["a", "b"]))
    for completion, cause in (
        (said("The answer is a."), "text"),
        (called('{"label": "a"}', name="other"), "text"),
        (said(""), "empty"),
    ):
        verdict = checker.check(completion)
        assert isinstance(verdict, Invalid)
        assert verdict.cause == cause


@pytest.mark.parametrize(
    "content",
    [
        '{"label": "b"}',
        'Here is the label:\n```json\n{"label": "b"}\n```',
        '```\n{"label": "b"}\n```',
        'The label is {"label": "b"} as asked.',
    ],
)
def test_prompt_mode_takes_the_json_bare_fenced_or_inside_a_sentence(
    content: str,
) -> None:
    verdict = AnswerChecker(spec(labels=["a", "b"], mode="prompt")).check(said(content))
    assert verdict == Valid({"label": "b"}, '{"label":"b"}')


def test_prompt_mode_without_json_in_the_answer_is_invalid() -> None:
    verdict = AnswerChecker(spec(labels=["a", "b"], mode="prompt")).check(
        said("It is b.")
    )
    assert isinstance(verdict, Invalid)
    assert verdict.cause == "json"


def test_the_repair_turn_answers_every_call_with_the_validators_message() -> None:
    answer_spec_ = spec(labels=["a", "b"])
    completion = Completion(
        content="",
        reasoning_content="thinking…",
        finish_reason="tool_calls",
        usage=None,
        request_id=None,
        model=None,
        tool_calls=(
            ToolCall("c1", "answer", '{"label": "A"}'),
            ToolCall("c2", "lookup", "{}"),
        ),
    )
    invalid = Invalid("enum", 'at label: "A" is not one of "a" or "b"')
    assistant, first, second = repair_turn(completion, invalid, answer_spec_)
    assert assistant.role == "assistant"
    assert assistant.tool_calls == completion.tool_calls
    assert assistant.reasoning_content == "thinking…"
    assert (first.role, first.tool_call_id) == ("tool", "c1")
    assert invalid.message in first.parts[0].text  # type: ignore[union-attr]
    assert (second.role, second.tool_call_id) == ("tool", "c2")


def test_a_text_answer_is_repaired_with_a_user_turn_asking_for_the_call() -> None:
    turn = repair_turn(
        said("b"), Invalid("text", "the model answered in text"), spec(labels=["b"])
    )
    assert [m.role for m in turn] == ["assistant", "user"]
    assert "calling the function answer" in turn[1].parts[0].text  # type: ignore[union-attr]
