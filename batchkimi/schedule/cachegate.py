"""The first request of each explicitly cached prefix goes alone.

The service creates an explicit cache block only after the request that marked it has
been answered (FACTS §6.3), so requests sent beside it would each pay the creation
price instead of the hit price. Here the first request for a prefix is let through,
and the others wait for its answer; if it gets none (a failure), the next waiting one
takes its place. Created prefixes are remembered (a bounded number of them): later
requests go straight through, and each hit keeps the service's cache alive.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class Turn:
    """Set ``created`` when the request was answered: its prefix is now cached."""

    created: bool = False


class PrefixGate:
    def __init__(self, remembered: int = 10_000) -> None:
        self._creating: dict[str, asyncio.Event] = {}
        self._created: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Turn]:
        """Wait while another request is creating ``key``'s cache; then go."""
        while key not in self._created and (event := self._creating.get(key)):
            await event.wait()
        turn = Turn()
        if key in self._created:
            self._created.move_to_end(key)
            yield turn
            return
        event = self._creating[key] = asyncio.Event()
        try:
            yield turn
        finally:
            del self._creating[key]
            if turn.created:
                self._created[key] = None
                while len(self._created) > self._remembered:
                    self._created.popitem(last=False)
            event.set()
