"""batchkimi from Python: ``run``, ``plan`` and ``Job``, for notebooks and pipelines.

The same checks, journal, resume and outputs as the command line, which is a thin
layer over this module. A manifest may be a path (CSV, TSV, Parquet, JSONL, a folder
or a glob) or a table in memory (polars, pandas, Arrow): a table is written once to a
content-addressed Parquet file under the user's cache folder, so running the same
table again resumes instead of starting over.

    import batchkimi

    results = batchkimi.run(
        "reviews.csv",
        prompt="Sentiment of: {review}",
        labels=["positive", "negative", "mixed"],
        output="out/reviews",
    )

Inside a running event loop (Jupyter), the job runs on a worker thread with a loop of
its own, so ``run`` can be called as it is anywhere.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from batchkimi.credentials import SIMULATOR_KEY, ApiKey, read_api_key
from batchkimi.errors import ConfigError
from batchkimi.settings.written import Source, read_job_file

if TYPE_CHECKING:  # typed settings load pydantic: only when a job is built
    from collections.abc import Callable, Coroutine

    import polars as pl

    from batchkimi.outcome import RunObserver, RunOutcome
    from batchkimi.planner import Plan
    from batchkimi.settings import Job

T = TypeVar("T")
_ORIGIN = "batchkimi.run()"


class RunStoppedWarning(UserWarning):
    """A run stopped early (a limit, a budget, an outage): the results hold what was
    answered, and running the same job again resumes."""


def job(source: str | os.PathLike[str] | None = None, **settings: Any) -> Job:
    """A ``Job`` from a TOML job spec (``source``) and keyword settings, which win;
    the same names as the spec's keys and the command line's options."""
    from batchkimi.settings import load_job

    sources = [read_job_file(Path(source))] if source is not None else []
    sources.append(Source(_ORIGIN, _dropped_none(settings)))
    return load_job(sources)


def run(
    manifest: Any = None,
    *,
    job: Job | None = None,
    simulate: bool = False,
    key: str | None = None,
    observer: RunObserver | None = None,
    **settings: Any,
) -> pl.DataFrame:
    """Run a job and return its results as a polars DataFrame (``results.parquet``).

    ``manifest``: a path, a glob, or a polars/pandas DataFrame or Arrow table; or
    None when ``job`` (or ``input=``) names it. ``settings`` are the job spec's keys
    (``prompt``, ``model``, ``output``, ``labels``, ``concurrency``, …) and win over
    ``job``'s. ``simulate``: against the bundled simulator, no key, no network.
    ``key``: the API key, else ``DASHSCOPE_API_KEY``.

    Raises what the command line exits 2, 4 or 5 for (``ConfigError``,
    ``ManifestError``, ``OutputLockedError``, ``FatalApiError``). A run that stops
    early (exit 3) returns what it has, with a ``RunStoppedWarning``.
    """
    import polars as pl

    with simulated(simulate) as url:
        resolved = _resolve(manifest, job, settings, url)
        outcome = execute(resolved, _key(key, simulate), observer=observer)
    if outcome.fatal is not None:
        raise outcome.fatal
    if outcome.exit_code == 3:
        why = outcome.stop_detail or outcome.stop_reason or "stopped"
        warnings.warn(
            f"the run stopped early ({why}); run the same job again to resume",
            RunStoppedWarning,
            stacklevel=2,
        )
    results = resolved.output / "results.parquet"
    return pl.read_parquet(results, glob=False) if results.exists() else pl.DataFrame()


def plan(
    manifest: Any = None,
    *,
    job: Job | None = None,
    simulate: bool = False,
    **settings: Any,
) -> Plan:
    """What ``run`` would send and what it would cost, with nothing sent: the same
    checks as a run, and ``plan.json`` saved when the job has an output folder."""
    from batchkimi.planner import make_plan, save_plan
    from batchkimi.prepare import prepare_job

    with simulated(simulate) as url:
        resolved = _resolve(manifest, job, settings, url, output_needed=False)
        made = make_plan(prepare_job(resolved))
    if resolved.writing.output is not None:
        save_plan(made, resolved.writing.output)
    return made


# --- the pieces -----------------------------------------------------------------


def execute(
    job: Job,
    key: ApiKey,
    *,
    observer: RunObserver | None = None,
    handle_signals: bool = False,
    raw_key: str | None = None,
) -> RunOutcome:
    """Run ``job`` as ``batchkimi run`` does (the command line calls this): a job
    whose outputs are current is answered from its state before anything heavy is
    loaded; otherwise it is prepared (every check of ``plan``) and run.

    ``raw_key``: the command line's key over the job as written (``cli/rerun.py``),
    recorded in the job's state so the same command, run again, is answered before
    the settings are even typed. Not for Ray jobs, whose re-run checks Ray first."""
    from batchkimi.outcome import SilentObserver
    from batchkimi.prepare import check_settings
    from batchkimi.store.state import finished_outcome

    told = observer or SilentObserver()
    check_settings(job)  # what plan refuses, a finished job's re-run refuses too
    dispatch = None
    if job.pacing.engine == "ray":
        from batchkimi.ray.engine import RayDispatch  # imports Ray: only here

        dispatch = RayDispatch(job, key)  # no Ray installed: exit 2, said how
        raw_key = None
    done = finished_outcome(
        job.output,
        job.reading.shard_label,
        job.reading.input,
        job.results_settings(),
        told.on_info,
        raw=raw_key,
    )
    if done is not None:
        return done
    from batchkimi.prepare import prepare_job
    from batchkimi.runner import run_job

    prepared = prepare_job(job)
    return _in_own_loop(
        lambda: run_job(
            prepared,
            key,
            observer=told,
            handle_signals=handle_signals,
            dispatch=dispatch,
            raw_key=raw_key,
        )
    )


def _resolve(
    manifest: Any,
    base: Job | None,
    settings: Mapping[str, Any],
    simulator_url: str | None,
    *,
    output_needed: bool = True,
) -> Job:
    """The job ``base``, ``manifest`` and ``settings`` describe, in that order."""
    from batchkimi.settings import load_job

    values: dict[str, Any] = base.model_dump(by_alias=True) if base is not None else {}
    flat: dict[str, Any] = {}
    for section in values.values():
        flat.update(section)
    given = _dropped_none(settings)
    if manifest is not None:
        given["input"], in_memory = _manifest_path(manifest)
        if in_memory and "media_root" not in given and "media_root" not in flat:
            given["media_root"] = Path.cwd()  # a table's paths are the caller's
    if simulator_url is not None:
        given["base_url"] = simulator_url
        for name in ("rpm", "tpm"):  # the simulator enforces none by default
            if name not in given and flat.get(name) is None:
                given[name] = 0
    sources = [Source("the job", _dropped_none(flat))] if flat else []
    sources.append(Source(_ORIGIN, given))
    resolved = load_job(sources)
    if output_needed:
        _ = resolved.output  # a run needs somewhere to write
    return resolved


def _dropped_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _manifest_path(manifest: Any) -> tuple[Path, bool]:
    """(path, in memory): a path as it is; a table written once to the cache."""
    if isinstance(manifest, str | os.PathLike):
        return Path(manifest), False
    table = _as_arrow(manifest)
    return _cached_parquet(table), True


def _as_arrow(manifest: Any) -> Any:
    import pyarrow as pa

    if isinstance(manifest, pa.Table):
        return manifest
    to_arrow = getattr(manifest, "to_arrow", None)  # polars
    if callable(to_arrow):
        return to_arrow()
    if type(manifest).__module__.startswith("pandas"):
        return pa.Table.from_pandas(manifest, preserve_index=False)
    msg = (
        f"manifest is a {type(manifest).__name__}: give a path, or a polars or pandas "
        "DataFrame, or an Arrow table"
    )
    raise ConfigError(msg)


def _cached_parquet(table: Any) -> Path:
    """The table as Parquet, named by its content: the same table, the same file
    (and so the same manifest digest: a second run resumes)."""
    import pyarrow.parquet as pq

    folder = _cache_home() / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{os.getpid()}.{threading.get_ident()}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    digest = hashlib.sha256()
    with tmp.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    path = folder / f"{digest.hexdigest()[:24]}.parquet"
    if path.exists():
        tmp.unlink()
    else:
        tmp.replace(path)
    return path


def _cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchkimi"


def _key(key: str | None, simulate: bool) -> ApiKey:
    if simulate:
        return ApiKey(SIMULATOR_KEY)
    if key is not None:
        return read_api_key({"DASHSCOPE_API_KEY": key})
    return read_api_key()


@contextmanager
def simulated(enabled: bool) -> Iterator[str | None]:
    """``--simulate``: the bundled simulator on loopback, for as long as it is used."""
    if not enabled:
        yield None
        return
    from batchkimi.simulator import SimulatorServer

    with SimulatorServer.running() as server:
        yield server.url


def _in_own_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end: here when no loop runs in this thread, else on a
    worker thread with a loop of its own (Jupyter already runs one)."""
    import asyncio  # only a run that sends needs it

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=work, name="batchkimi-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
