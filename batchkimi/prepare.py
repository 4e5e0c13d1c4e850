"""Everything ``run`` and ``plan`` need before the first send, checked once, the same
way for both: the settings (already typed in ``Job``), the prices, the manifest and its
columns, the rows, and what may be sent again.

Neither command adds checks of its own, so a job ``plan`` passes is a job ``run``
starts, and a job ``run`` refuses (exit 2) is a job ``plan`` refuses. What stays in the
runner is only the running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchkimi.errors import ConfigError, ManifestError
from batchkimi.estimate import EXPLICIT_CACHE_MIN_TOKENS
from batchkimi.pricing import PriceTable, load_prices
from batchkimi.records import RowStatus
from batchkimi.settings import Job

if TYPE_CHECKING:  # the manifest's side is loaded only when a run has work to do
    from batchkimi.manifest.reader import Manifest
    from batchkimi.manifest.requests import RequestBuilder
    from batchkimi.media.preflight import MediaSettings


#: statuses a row may be sent again from (an ok answer always stands)
RERUN_STATUSES = tuple(s.value for s in RowStatus if s is not RowStatus.OK)


@dataclass(slots=True)
class PreparedJob:
    """A job whose settings, prices, manifest columns and (once ``read_rows`` has
    run) every row have been checked."""

    job: Job
    prices: PriceTable
    manifest: Manifest
    builder: RequestBuilder
    kept: dict[str, str]  # manifest column -> output column
    media: MediaSettings
    rows: int | None = field(default=None)  # rows in the manifest, once read

    def read_rows(self) -> int:
        """Parse every row once, so a line that breaks on row 900,000 stops the job
        before the first send; a manifest with no rows is refused too."""
        if self.rows is None:
            from batchkimi.manifest.reader import check_rows

            self.rows = check_rows(self.manifest)
            if self.rows == 0:
                problem = "has no rows: there is nothing to send"
                raise ManifestError(
                    problem,
                    path=str(self.manifest.path),
                    fix="Check the file (an export that failed?) or the --input path",
                )
        return self.rows


def uncached_note(rows: int) -> str:
    """What ``plan`` and ``run`` say of rows sent without a cache marker."""
    return (
        f"--cache explicit: {rows:,} rows have no shared prefix (a system message or "
        f"earlier turns) of {EXPLICIT_CACHE_MIN_TOKENS:,} tokens or more, the least "
        "a cache block takes: they are sent without a cache marker"
    )


def check_settings(job: Job) -> PriceTable:
    """The checks that need no manifest (prices, what is sent again, the budget):
    cheap enough for a finished job's re-run to make before it answers."""
    prices = load_prices(job.writing.prices)
    _check_rerun(job)
    _check_budget(job, prices)
    return prices


def prepare_job(job: Job) -> PreparedJob:
    """Check everything that can be checked before reading every row."""
    from batchkimi.manifest.reader import open_manifest
    from batchkimi.manifest.requests import RequestBuilder
    from batchkimi.media.preflight import media_settings

    prices = check_settings(job)
    manifest = open_manifest(job.reading.input)
    kept = kept_columns(job, manifest)
    builder = RequestBuilder(job, manifest.columns, str(job.reading.input))
    return PreparedJob(job, prices, manifest, builder, kept, media_settings(job))


def kept_columns(job: Job, manifest: Manifest) -> dict[str, str]:
    """Manifest column → output column for the input columns the job keeps."""
    from batchkimi.manifest.reader import column_list
    from batchkimi.store.schema import OUTPUT_COLUMNS

    keep = job.reading.keep_columns
    wanted = list(keep) if keep is not None else manifest.columns
    missing = [c for c in wanted if c not in manifest.columns]
    if missing:
        msg = (
            f"keep_columns names {', '.join(map(repr, missing))}, which the manifest "
            f"does not have (it has: {column_list(manifest.columns)}). Fix "
            "--keep-columns"
        )
        raise ConfigError(msg)
    return {
        column: f"input_{column}" if column in OUTPUT_COLUMNS else column
        for column in wanted
        if column != "id"  # the manifest's id becomes the output's id itself
    }


def _check_rerun(job: Job) -> None:
    """``--rerun`` names statuses or error codes batchkimi records; anything else
    (a typo, ``ok``) would silently send nothing again."""
    if not job.writing.rerun:
        return
    from batchkimi.api.failures import known_codes, looks_like_service_code
    from batchkimi.manifest.requests import ROW_CODES
    from batchkimi.schedule.outcome import OUTCOME_CODES

    known = set(RERUN_STATUSES) | known_codes() | ROW_CODES | OUTCOME_CODES
    unknown = [
        item
        for item in job.writing.rerun
        if item not in known and not looks_like_service_code(item)
    ]
    if unknown:
        msg = (
            f"rerun names {', '.join(map(repr, unknown))}, which is neither a status "
            f"that can be sent again ({', '.join(RERUN_STATUSES)}) nor an error code "
            "batchkimi records (see error_code in results.parquet). Fix --rerun"
        )
        raise ConfigError(msg)


def _check_budget(job: Job, prices: PriceTable) -> None:
    if job.stopping.max_cost is None:
        return
    model, region = job.asking.model, job.connection.region
    if (model, region) not in prices:
        msg = (
            f"--max-cost needs a price, and none is known for {model} in {region}: "
            "give one with --prices FILE (see `batchkimi models`)"
        )
        raise ConfigError(msg)
