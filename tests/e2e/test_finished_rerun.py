"""Issue 14: `batchkimi run` on a finished job says "nothing to do" from the job as
written (the raw key its state records), before pydantic, rich or asyncio load; a
change to anything the job is made of takes the typed path, which answers as it
always has. Which path ran is told by what a fresh interpreter imported, never by
timing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import batchkimi
from batchkimi.cli import cli
from batchkimi.simulator import SimulatorServer
from batchkimi.store.lock import OutputLock
from tests.helpers import REVIEWS, run_args, run_fresh, write_manifest

#: what typing the settings and drawing a bar load; the answer from the raw key
#: loads none of them
TYPED = ("pydantic", "rich", "asyncio")
NOTHING_TO_DO = "nothing to do: all"
PRICES = (
    '[prices."kimi-k2.6"."cn-beijing"]\ncurrency = "CNY"\ninput = 6.5\noutput = 27\n'
)
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Rerun:
    code: int
    said: str  # stderr, as a user sees it
    loaded: set[str]  # top-level packages the process imported

    @property
    def typed(self) -> bool:
        """Whether the settings were typed (pydantic loaded): the full check."""
        return not self.loaded.isdisjoint(TYPED)

    @property
    def sent(self) -> int:
        line = next(x for x in self.said.splitlines() if "sent this run:" in x)
        return int(line.split("sent this run: ")[1].split()[0].replace(",", ""))


def fresh(*args: str) -> Rerun:
    """`batchkimi ARGS` in a fresh interpreter, in this working folder."""
    return Rerun(*run_fresh(*args))


def cli_run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code in (0, 1), result.stderr
    return result.stderr


def state_of(output: Path, name: str = "state.json") -> dict[str, object]:
    loaded: dict[str, object] = json.loads((output / ".batchkimi" / name).read_text())
    return loaded


def test_a_finished_job_run_again_answers_without_typing_its_settings(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    assert state_of(tmp_path / "out")["raw"]  # the command line it was run with
    again = fresh(*args)
    assert again.code == 0
    assert NOTHING_TO_DO in again.said and again.sent == 0
    assert not again.typed, sorted(again.loaded & set(TYPED))
    assert len(simulator.requests) == len(REVIEWS)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_answer_from_the_raw_key_reads_as_the_typed_one(
    tmp_path: Path, simulator: SimulatorServer, log_format: str
) -> None:
    """A job finished from Python records no raw key: the first command line run
    finds it current on the typed path and records its key, the second answers from
    it, and both print the same words (or the same JSON events)."""
    args = [*run_args(tmp_path, simulator), "--log-format", log_format]
    out = tmp_path / "out"
    batchkimi.run(
        tmp_path / "in" / "manifest.csv",
        prompt="Label: {review}",
        output=out,
        base_url=simulator.url,
        rpm=0,
        tpm=0,
    )
    assert state_of(out)["raw"] is None
    typed, answered = fresh(*args), fresh(*args)
    assert (typed.code, answered.code) == (0, 0)
    assert typed.typed and not answered.typed
    assert without_times(typed.said) == without_times(answered.said)
    assert NOTHING_TO_DO in answered.said
    assert len(simulator.requests) == len(REVIEWS)


def without_times(said: str) -> str:
    """JSON events carry the time they were written; nothing else differs."""
    lines = []
    for line in said.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            event.pop("time")
            line = json.dumps(event)
        lines.append(line)
    return "\n".join(lines)


def test_a_command_written_otherwise_is_checked_typed_then_answered(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """How fast to send shapes no result: a re-run with another --concurrency is
    still current, found so on the typed path, and fast from then on."""
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    paced = [*args, "--concurrency", "2"]
    first, second = fresh(*paced), fresh(*paced)
    assert NOTHING_TO_DO in first.said and NOTHING_TO_DO in second.said
    assert (first.typed, second.typed) == (True, False)


def test_an_edited_option_takes_the_full_path_and_is_answered_anew(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    thinking = fresh(*args, "--thinking")  # a flag: no string, no file it may name
    assert thinking.code == 0 and thinking.sent == len(REVIEWS)
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["reasoning_content"].is_not_null().all()
    reworded = fresh(*run_args(tmp_path, simulator, prompt="Mood of: {review}"))
    assert reworded.code == 0 and reworded.sent == len(REVIEWS)
    asked = {r.body["messages"][-1]["content"] for r in simulator.requests}
    assert {f"Mood of: {r['review']}" for r in REVIEWS} <= asked


def test_an_edited_manifest_takes_the_full_path(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    write_manifest(tmp_path / "in", [*REVIEWS, {"id": "new", "review": "Superb."}])
    grown = fresh(*args)
    assert grown.code == 0 and grown.sent == 1
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["id"].to_list()[-1] == "new"


def test_a_touched_manifest_is_hashed_again_then_answered_from_the_raw_key(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Same content, new file facts: the typed path finds it current (by its
    digest) and records the new facts, so the next re-run is fast again."""
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    (tmp_path / "in" / "manifest.csv").touch()
    touched, again = fresh(*args), fresh(*args)
    assert NOTHING_TO_DO in touched.said and touched.typed
    assert NOTHING_TO_DO in again.said and not again.typed


def write_job(tmp_path: Path, simulator: SimulatorServer, extra: str = "") -> Path:
    """A job spec in its own folder, naming its files relative to it."""
    folder = tmp_path / "job"
    if not folder.exists():  # made once: an edit rewrites the spec alone
        write_manifest(folder, REVIEWS)
        (folder / "prices.toml").write_text(PRICES)
    spec = folder / "label.toml"
    spec.write_text(
        'input = "manifest.csv"\noutput = "out"\nprompt = "Label: {review}"\n'
        f'prices = "prices.toml"\nbase_url = "{simulator.url}"\nrpm = 0\ntpm = 0\n'
        + extra
    )
    return spec


def test_an_edited_job_spec_takes_the_full_path(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = write_job(tmp_path, simulator)
    cli_run("run", str(spec))
    again = fresh("run", str(spec))
    assert NOTHING_TO_DO in again.said and not again.typed
    write_job(tmp_path, simulator, "thinking = true\n")  # no string, no file named
    edited = fresh("run", str(spec))
    assert edited.code == 0 and edited.sent == len(REVIEWS)
    results = pl.read_parquet(tmp_path / "job" / "out" / "results.parquet")
    assert results["reasoning_content"].is_not_null().all()


def test_a_broken_price_file_the_spec_names_is_refused_though_the_job_is_finished(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The price file is named relative to the spec's folder; whatever the working
    folder, an edit to it is seen, and a re-run refuses what a plan refuses."""
    spec = write_job(tmp_path, simulator)
    cli_run("run", str(spec))
    assert not fresh("run", str(spec)).typed
    (spec.parent / "prices.toml").write_text(PRICES.replace('currency = "CNY"\n', ""))
    broken = fresh("run", str(spec))
    assert broken.code == 2
    assert "currency is missing" in broken.said
    assert len(simulator.requests) == len(REVIEWS)


def test_an_edited_schema_takes_the_full_path_and_shapes_the_results(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    args = [*run_args(tmp_path, simulator), "--model", "kimi-k2.5"]
    args += ["--schema", str(schema), "--no-stream"]
    cli_run(*args)
    assert not fresh(*args).typed
    wider = json.loads(json.dumps(SCHEMA))
    wider["properties"]["stars"] = {"type": "integer", "minimum": 1, "maximum": 5}
    wider["required"].append("stars")
    schema.write_text(json.dumps(wider))
    edited = fresh(*args)
    assert edited.code == 0 and edited.sent == len(REVIEWS)
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["stars"].is_not_null().all()


def test_a_simulated_run_is_always_checked_typed(tmp_path: Path) -> None:
    """--simulate starts a simulator on a new port each time: its runs record no
    raw key, and a re-run always types its settings."""
    manifest = write_manifest(tmp_path / "in", REVIEWS)
    args = ["run", "-i", str(manifest), "-o", str(tmp_path / "out")]
    args += ["--prompt", "Label: {review}", "--simulate"]
    cli_run(*args)
    assert state_of(tmp_path / "out")["raw"] is None
    again = fresh(*args)
    assert NOTHING_TO_DO in again.said and again.typed


def test_a_shard_is_answered_from_its_own_state(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    args = [*run_args(tmp_path, simulator), "--shard", "1/2"]
    cli_run(*args)
    assert not (tmp_path / "out" / ".batchkimi" / "state.json").exists()
    assert state_of(tmp_path / "out", "state-shard-1-of-2.json")["raw"]
    again = fresh(*args)
    assert NOTHING_TO_DO in again.said and not again.typed


def test_a_finished_job_held_by_another_run_exits_4(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    with OutputLock(tmp_path / "out" / ".batchkimi"):
        held = fresh(*args)
    assert held.code == 4 and "in use by batchkimi pid" in held.said
    assert not held.typed


def test_a_finished_job_still_needs_the_key(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = run_args(tmp_path, simulator)
    cli_run(*args)
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    keyless = fresh(*args)
    assert keyless.code == 2 and "DASHSCOPE_API_KEY" in keyless.said
