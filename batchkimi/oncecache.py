"""Async results computed once per key, for the steps that rows share: a file several
rows upload, a URL several rows name.

Callers asking for a key at the same moment wait for one computation rather than each
starting their own; later callers get the remembered result while it is fresh. At most
``size`` results are remembered (the oldest go first), so memory stays bounded however
long the manifest. A failed computation is not remembered: the next caller tries again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OnceCache(Generic[K, V]):
    def __init__(
        self,
        *,
        size: int,
        now: Callable[[], float],
        max_age_s: float | None = None,
    ) -> None:
        self._size = size
        self._now = now
        self._max_age_s = max_age_s
        self._done: OrderedDict[K, tuple[V, float]] = OrderedDict()  # newest last
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The result for ``key``: remembered, shared with a computation under way,
        or computed now by ``compute``."""
        done = self._done.get(key)
        if done is not None and (
            self._max_age_s is None or self._now() - done[1] < self._max_age_s
        ):
            return done[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(compute())
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        value = await asyncio.shield(pending)  # one caller cancelled cancels no other
        self._done[key] = (value, self._now())
        self._done.move_to_end(key)
        while len(self._done) > self._size:
            self._done.popitem(last=False)
        return value
