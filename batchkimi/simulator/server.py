"""Serve the simulator under uvicorn on 127.0.0.1, in a background thread.

``SimulatorServer.running()`` binds its own socket (port 0 picks a free one), so the URL
is known before the first request, and stops the server when the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import uvicorn

from batchkimi.simulator.app import LoggedRequest, SimulatorApp
from batchkimi.simulator.behaviour import Behaviour, Fault


class SimulatorServer:
    """A running simulator: its URL, its request log, and knobs to turn in tests."""

    def __init__(self, app: SimulatorApp, sock: socket.socket) -> None:
        self.app = app
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            app,
            log_level="critical",
            access_log=False,
            lifespan="off",
            http="httptools",
            loop="asyncio",
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
    ) -> Iterator[SimulatorServer]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn writes a response's head and body separately; with Nagle's algorithm
        # on, the body waits ~40 ms for the client's delayed ACK of the head. Accepted
        # connections inherit this option from the listening socket (Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        server = cls(SimulatorApp(behaviour), sock)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                msg = "the simulator did not start within 10 s"
                raise RuntimeError(msg)
            time.sleep(0.005)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    @property
    def compatible_base(self) -> str:
        return f"{self.url}/compatible-mode/v1"

    @property
    def native_base(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def requests(self) -> list[LoggedRequest]:
        return list(self.app.requests)

    def reset(self, seed: int = 0, **knobs: Any) -> None:
        """Forget served requests and scripts; set fresh knobs."""
        self.app.reset(Behaviour(seed=seed, **knobs))

    def script(self, model: str, faults: list[Fault]) -> None:
        """Queue faults for the next requests to ``model`` (``"*"``: any model), or
        for the upload steps: ``"getPolicy"`` and ``"oss"`` (the form POST), whose
        ``error(code)`` faults answer as the service and the store would."""
        self.app.behaviour.scripts.setdefault(model, deque()).extend(faults)
