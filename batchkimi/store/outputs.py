"""What writing the output folder's files shares: the error a failed write raises,
and the removal of what a killed writer left half written."""

from __future__ import annotations

from pathlib import Path

from batchkimi.errors import BatchkimiError


class OutputWriteError(BatchkimiError):
    """results.parquet or summary.json could not be written; the journal is intact."""

    exit_code = 3

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(
            f"cannot write {path}: {exc.strerror or exc}. Every answer received is in "
            "the journal and the previous file is untouched: free disk space (or fix "
            "permissions) and re-run the same command to rebuild it"
        )


def clear_leftovers(path: Path) -> None:
    """Remove the temporary files a killed run left beside ``path``. Call it under
    the lock that guards ``path``: then no other writer can own one."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
