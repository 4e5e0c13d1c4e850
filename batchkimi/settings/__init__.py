"""A job's settings: typed value objects (``sections``), the whole ``Job`` with its
cross-section checks, and the sources they are read from (``sources``)."""

from batchkimi.settings.job import Job
from batchkimi.settings.sources import Source, load_job, read_job_file

__all__ = ["Job", "Source", "load_job", "read_job_file"]
