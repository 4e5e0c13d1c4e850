"""Every setting is typed: a quoted boolean, a decimal where a whole number belongs,
a string where a number belongs is refused (exit 2) with the file, the key, the value
and what was expected, before anything is sent (issue 12)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchkimi.simulator import SimulatorServer
from tests.hostile.conftest import Job, invoke


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("allow_outside_media_root", "false", "valid boolean"),
        ("thinking", "false", "valid boolean"),
        ("retry_errors", "no", "valid boolean"),
        ("stream", "no", "valid boolean"),
        ("concurrency", 16.5, "valid integer"),
        ("max_attempts", 2.5, "valid integer"),
        ("concurrency", "16", "valid integer"),
        ("timeout", "fast", "valid number"),
        ("max_cost", -1, "greater than or equal to 0"),
        ("api", "anthropic", "'openai' or 'dashscope'"),
        ("video_frames", "sometimes", "'auto', 'always' or 'never'"),
        ("keep_columns", 3, "valid tuple"),
        ("shard", "3/2", "I/N"),
    ],
)
def test_a_wrongly_typed_setting_is_named_and_nothing_is_sent(
    job: Job, simulator: SimulatorServer, key: str, value: Any, expected: str
) -> None:
    path = job.write(**{key: value})
    for command in ("run", "plan"):  # the same check in both
        result = invoke(command, str(path))
        assert result.exit_code == 2, result.output
        message = result.stderr
        assert str(path) in message
        assert key in message
        assert repr(value) in message
        assert expected in message
    assert simulator.requests == []


def test_a_wrong_type_on_the_command_line_names_the_option(
    job: Job, simulator: SimulatorServer
) -> None:
    path = job.write()
    result = invoke("run", str(path), "--param", "max_tokens=2.5")
    assert result.exit_code == 2
    assert "--param max_tokens = 2.5" in result.stderr
    assert "valid integer" in result.stderr
    result = invoke("run", str(path), "--param", "preserve_thinking=yes")
    assert result.exit_code == 2
    assert "valid boolean" in result.stderr
    assert simulator.requests == []


def test_a_misspelt_key_gets_the_nearest_one(job: Job) -> None:
    result = invoke("plan", str(job.write(concurency=4)))
    assert result.exit_code == 2
    assert "unknown key 'concurency'" in result.stderr
    assert "did you mean 'concurrency'" in result.stderr


#: keys and the kind of value each one takes
KINDS = {
    "concurrency": "int",
    "max_attempts": "int",
    "batch_rows": "int",
    "frame_max_side": "int",
    "limit": "int",
    "rpm": "int",
    "timeout": "float",
    "grace": "float",
    "max_cost": "float",
    "stream": "bool",
    "thinking": "bool",
    "retry_errors": "bool",
    "fix_images": "bool",
    "check_urls": "bool",
    "allow_outside_media_root": "bool",
    "allow_insecure_http": "bool",
    "model": "str",
    "system": "str",
    "api": "str",
    "region": "str",
}
_TEXT = st.text(string.ascii_letters + string.digits + " ._-", max_size=12)
_OTHER = {
    "int": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda x: not float(x).is_integer()
        ),
        _TEXT,
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    ),
    "float": st.one_of(_TEXT, st.booleans(), st.lists(st.floats(0, 1), max_size=2)),
    "bool": st.one_of(
        st.sampled_from(["false", "true", "no", "yes", "0", "1", "off"]),
        st.integers(0, 1),
        st.floats(0, 1),
    ),
    "str": st.one_of(st.integers(), st.floats(0, 9), st.booleans()),
}


@st.composite
def wrong_settings(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(
        st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=3, unique=True)
    )
    return {key: draw(_OTHER[KINDS[key]]) for key in keys}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=wrong_settings())
def test_any_setting_of_the_wrong_type_is_exit_2_with_nothing_sent(
    tmp_path: Path, simulator: SimulatorServer, values: dict[str, Any]
) -> None:
    simulator.reset(seed=1)
    job = Job(tmp_path, simulator)
    result = invoke("run", str(job.write(**values)))
    assert result.exit_code == 2, (values, result.output)
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output
    assert any(key in result.stderr for key in values), result.stderr
    assert simulator.requests == []
