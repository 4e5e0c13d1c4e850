"""batchkimi on a Ray cluster: ``process(dataset, job)`` from Python, and the engine of
``batchkimi run --engine ray`` (``engine.py``).

    import ray, batchkimi, batchkimi.ray

    videos = ray.data.read_parquet("/shared/archive/manifest.parquet")
    captions = batchkimi.ray.process(  # a lazy ray.data.Dataset
        videos, prompt="Describe this video.", output="/shared/captions"
    )
    captions.write_parquet("/shared/captions/parquet")

Each row goes through batchkimi's own request builder and sender on a worker, with
the cluster's one rate budget per account and model (``budget.py``); each worker
journals its answers into the job's output folder (a file system every node
shares), so running the same job again pays only for rows never answered. Importing
this package imports Ray; ``import batchkimi`` alone never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchkimi.credentials import read_api_key
from batchkimi.ray.cluster import require_ray
from batchkimi.ray.rows import RESULT_SCHEMA
from batchkimi.settings import Job, Source, load_job

__all__ = ["RESULT_SCHEMA", "process"]


def process(
    dataset: Any,
    job: Job | None = None,
    *,
    key: str | None = None,
    **settings: Any,
) -> Any:
    """Send every row of ``dataset`` (a ``ray.data.Dataset`` with the manifest's
    columns: ``id``, ``prompt`` or the template's columns, ``image``, ``video``, …)
    as ``job`` and ``settings`` say (the job spec's keys; ``output`` is needed);
    return the lazy dataset of results (``RESULT_SCHEMA``: the row's ``id``, every
    result column, and ``sent``, False for an answer a run journaled before).

    ``key``: the API key, else ``DASHSCOPE_API_KEY``. Local media paths resolve
    against ``media_root`` (default: the current folder) on the workers.
    """
    ray = require_ray()
    from batchkimi.ray.budget import budget_keeper
    from batchkimi.ray.claims import start_ledger
    from batchkimi.ray.engine import map_rows
    from batchkimi.ray.worker import WorkerKey

    resolved = _job(job, settings)
    api_key = read_api_key({"DASHSCOPE_API_KEY": key} if key else None)
    worker = {
        "job": resolved,
        "key": WorkerKey(api_key),
        "keeper": budget_keeper(api_key, resolved.connection.resolved_base_url),
        "ledger": start_ledger(),
    }
    return map_rows(ray, dataset, resolved, worker)


def _job(job: Job | None, settings: dict[str, Any]) -> Job:
    """``job`` with ``settings`` over it; the rows come from the dataset, so the
    job's ``input`` is only where media paths resolve (the current folder)."""
    values: dict[str, Any] = {}
    if job is not None:
        for section in job.model_dump(by_alias=True).values():
            values.update({k: v for k, v in section.items() if v is not None})
    values.setdefault("input", Path.cwd())
    values.update({k: v for k, v in settings.items() if v is not None})
    loaded = load_job([Source("batchkimi.ray.process()", values)])
    _ = loaded.output  # the workers journal there
    return loaded
