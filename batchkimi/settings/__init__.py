"""A job's settings: typed value objects (``sections``), the whole ``Job`` with its
cross-section checks, the sources they are read from (``sources``), and those sources
as written (``written``, standard library only).

The typed names load pydantic, so they are imported on first use (PEP 562): a
finished job's re-run reads ``settings.written`` and nothing heavier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchkimi.settings.written import Source, read_job_file

if TYPE_CHECKING:
    from batchkimi.settings.job import Job
    from batchkimi.settings.sources import load_job

__all__ = ["Job", "Source", "load_job", "read_job_file"]


def __getattr__(name: str) -> Any:
    if name == "Job":
        from batchkimi.settings.job import Job

        return Job
    if name == "load_job":
        from batchkimi.settings.sources import load_job

        return load_job
    msg = f"module 'batchkimi.settings' has no attribute {name!r}"
    raise AttributeError(msg)
