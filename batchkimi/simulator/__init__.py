"""A local Model Studio for tests, demos and benchmarks.

Written from the service's documentation alone: it imports nothing from the rest of
batchkimi, so a client bug cannot be mirrored here and pass unnoticed.
"""

from __future__ import annotations

from batchkimi.simulator.behaviour import (
    Behaviour,
    Fault,
    disconnect,
    error,
    html502,
    invalid_answer,
    midstream,
    stall,
    text_answer,
)
from batchkimi.simulator.limits import Limits
from batchkimi.simulator.server import SimulatorServer

__all__ = [
    "Behaviour",
    "Fault",
    "Limits",
    "SimulatorServer",
    "disconnect",
    "error",
    "html502",
    "invalid_answer",
    "midstream",
    "stall",
    "text_answer",
]
