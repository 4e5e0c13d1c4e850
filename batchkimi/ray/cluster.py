"""Joining a Ray cluster, and what every batchkimi actor there needs.

Ray is imported here and in the modules beside this one only: ``import batchkimi``
and the command line stay as fast as before, and a missing Ray is a configuration
error (exit 2) that says how to install it, before anything is sent.

A cluster started here binds 127.0.0.1 and nothing else. A job batchkimi starts
carries this very ``batchkimi`` package (Ray's ``py_modules``), so its workers run
the driver's code even where another version is installed, or none; a caller who
joined the cluster already (``batchkimi.ray.process``) chooses for itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from batchkimi.errors import ConfigError

RAY_MISSING = (
    "--engine ray needs Ray, which is not installed here: pip install "
    "'batchkimi[ray]' (it brings ray[data])"
)
#: the namespace of the actors shared by every job on a cluster (the budgets)
NAMESPACE = "batchkimi"


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or the ConfigError that says how to get
    it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(RAY_MISSING) from exc
    return ray


def job_env() -> dict[str, Any]:
    """The runtime environment of a job batchkimi starts: this package's code, for
    every actor of the job (Ray ships a folder at the job's start only)."""
    return {"py_modules": [str(Path(__file__).resolve().parents[1])]}


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[ModuleType]:
    """Ray, ready: as it is when this process has joined a cluster already (the
    caller's); else the cluster at ``address`` (or RAY_ADDRESS), else a new one on
    this machine, on loopback only. Whatever was joined here is left at the end."""
    ray = require_ray()
    _quiet_ray_data(ray)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "include_dashboard": False,
        "runtime_env": job_env(),
    }
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": a new instance even when another runs here (ray.init() alone
        # would join the last one started on this machine, whoever's it is)
        options.update(address="local", _node_ip_address="127.0.0.1")
    else:
        options.update(address=address)
        del options["include_dashboard"]  # the cluster's own setting
    with _signals_kept():
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
            msg = (
                f"cannot join the Ray cluster at {where}: {exc}. Check "
                "--ray-address (HOST:PORT of the head node, or ray://HOST:10001)"
            )
            raise ConfigError(msg) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data(ray: ModuleType) -> None:
    """Ray Data's own progress bars and logs would interleave with batchkimi's."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with its own exit; a run's first
    SIGTERM must stop it gently, as on one machine, so the handler is put back."""
    kept = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
