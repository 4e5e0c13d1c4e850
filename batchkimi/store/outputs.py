"""What writing the output folder's files shares: the error a failed write raises,
a text file replaced whole, and the removal of what a killed writer left half
written. Standard library only (a finished job's check writes its state)."""

from __future__ import annotations

import os
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


def temporary(path: Path) -> Path:
    """Where ``path`` is written before it is moved into place: a name
    ``clear_leftovers`` finds when a killed writer left it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def replace_text(path: Path, text: str) -> None:
    """``text`` as the whole of ``path``, or ``path`` as it was: written to a
    temporary file, then moved into place."""
    tmp = temporary(path)
    try:
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def clear_leftovers(path: Path) -> None:
    """Remove the temporary files a killed run left beside ``path``. Call it under
    the lock that guards ``path``: then no other writer can own one."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
