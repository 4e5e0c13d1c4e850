"""A Ray cluster of two CPUs on loopback, shared by the tests of this folder; they
are not collected where Ray is not installed (``pip install 'batchkimi[ray]'``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import batchkimi

try:
    import ray
except ImportError:  # the ray extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]
PACKAGE = str(Path(batchkimi.__file__).parent)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """``ray.init`` with two CPUs, as a user would start one; its jobs carry this
    checkout's batchkimi to the workers."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _node_ip_address="127.0.0.1",
        runtime_env={"py_modules": [PACKAGE]},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
