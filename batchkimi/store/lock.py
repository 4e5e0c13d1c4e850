"""The output folder's lock: one run at a time (or one run per shard).

Built on ``flock``: the kernel releases a lock when its holder dies, however it dies, so
a stale lock from a killed run is taken over safely with no pid guessing. The holder
writes who it is (pid, host, start time) into the lock file for the error message a
second run prints. An unsharded run locks the folder exclusively; a sharded run shares
the folder lock with other shards and locks its own shard exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from batchkimi.errors import OutputLockedError

FOLDER_LOCK = "run.lock"
OUTPUTS_LOCK = "outputs.lock"


def _held_exclusively(path: Path) -> bool:
    """Whether a live process holds ``path`` exclusively (a dead one holds nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return "another batchkimi run"
    shard = f", shard {holder['shard']}" if holder.get("shard") else ""
    return (
        f"batchkimi pid {holder.get('pid')} on {holder.get('host')}{shard}, "
        f"started {holder.get('started_at')}"
    )


class OutputLock:
    """``with OutputLock(state_dir, shard="2-of-4"):`` or without a shard."""

    def __init__(self, state_dir: Path, *, shard: str | None = None) -> None:
        self.state_dir = state_dir
        self.shard = shard
        self._fds: list[int] = []

    def _take(self, name: str, mode: int) -> int:
        path = self.state_dir / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            candidates = [self.state_dir / FOLDER_LOCK]
            candidates += sorted(self.state_dir.glob("run-shard-*.lock"))
            who = "; ".join(_holder_text(p) for p in candidates if _held_exclusively(p))
            msg = (
                f"the output folder {self.state_dir.parent} is in use by "
                f"{who or 'another batchkimi run'}. Wait for it to finish, or write to "
                "another --output"
            )
            raise OutputLockedError(msg) from None
        self._fds.append(fd)
        return fd

    def _sign(self, fd: int) -> None:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "shard": self.shard,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.shard is None:
            self._sign(self._take(FOLDER_LOCK, fcntl.LOCK_EX))
        else:
            self._take(FOLDER_LOCK, fcntl.LOCK_SH)
            self._sign(self._take(f"run-shard-{self.shard}.lock", fcntl.LOCK_EX))

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the descriptor releases the flock

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def outputs_lock(state_dir: Path) -> Iterator[None]:
    """Serialise rebuilding results.parquet and summary.json among concurrent shards.

    Each rebuild reads the journals while holding it, so whichever shard replaces the
    files last has read everything the others had journalled before it.
    """
    fd = os.open(state_dir / OUTPUTS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
