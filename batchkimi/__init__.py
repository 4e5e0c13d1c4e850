"""batchkimi: run batch jobs on Kimi models served by Alibaba Cloud Model Studio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchkimi.jobs import RunStoppedWarning, job, plan, run
    from batchkimi.settings import Job

from batchkimi.version import USER_AGENT, __version__

# The Python API (batchkimi.jobs), loaded on first use: `import batchkimi` stays light.
_API = {"run", "plan", "job", "RunStoppedWarning"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from batchkimi import jobs

        return getattr(jobs, name)
    if name == "Job":
        from batchkimi.settings import Job

        return Job
    msg = f"module 'batchkimi' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "USER_AGENT",
    "Job",
    "RunStoppedWarning",
    "__version__",
    "job",
    "plan",
    "run",
]
