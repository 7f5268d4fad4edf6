"""How many requests go to one model server at once.

Many local servers run one request at a time per model (llama-cpp-python's server, Ollama and
LM Studio by default), and some cut the request in progress when a second arrives: both come
back as connection errors. `RequestSlots` either holds a fixed limit that the user set, or, in
"auto" mode, starts without one and drops to one at a time once requests that overlapped
failed to connect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator


@dataclass(eq=False)
class Flight:
    """One request while it holds a slot; `overlapped` is set if another was in flight too."""

    overlapped: bool = False


class RequestSlots:
    """A limit on concurrent requests to one server, for one event loop.

    `limit=None` is "auto": no limit until `serialize()` is called.
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("a concurrency limit must be at least 1")
        self.limit = limit
        self.auto = limit is None
        self._flights: set[Flight] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Flight]:
        """Wait for a free slot and hold it for the body of the `async with`."""
        while self.limit is not None and len(self._flights) >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        flight = Flight(overlapped=bool(self._flights))
        for other in self._flights:
            other.overlapped = True
        self._flights.add(flight)
        try:
            yield flight
        finally:
            self._flights.discard(flight)
            self._wake_one()

    def serialize(self) -> bool:
        """In auto mode, allow one request at a time from now on; True the first time only."""
        if not self.auto or self.limit == 1:
            return False
        self.limit = 1
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
