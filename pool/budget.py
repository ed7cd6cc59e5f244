"""The cap on the containers one pool service holds (``max_containers``: pooled and one-shot).

A slot is taken before a container is created and given back once it is removed, so the engine never
holds more than the cap for this service. At the cap a request queues (FIFO) and asks the manager to
evict the least recently used idle container of another pool; the slot that removal frees goes to the
first in the queue. A request still queued after its bounded wait raises
:class:`~pool.errors.PoolWaitTimeout` and the dispatcher follows ``on_exhausted``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from pool import sizing
from pool.errors import PoolWaitTimeout

Evictor = Callable[[Any], bool]
"""Remove one idle container of a pool other than the argument (None: any pool); true when one goes."""


class ContainerBudget:
    def __init__(self, limit: int, evict: Evictor | None = None) -> None:
        self.limit = limit
        self.evict = evict
        self.used = 0
        self.evicting = 0  # evictions asked for whose slot has not come back yet
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def wants_eviction(self) -> bool:
        """Requests wait for a slot that no eviction in flight will free."""
        return self.waiting > self.evicting

    def try_take(self) -> bool:
        """A slot now, without waiting or evicting (warming spares must not push others out)."""
        if sizing.budget_action(used=self.used, limit=self.limit, waiters=self.waiting) == "take":
            self.used += 1
            return True
        return False

    def force_take(self) -> None:
        """Count a container that exists already (adopted after a restart), even over the cap."""
        self.used += 1

    def give_back(self, *, evicted: bool = False) -> None:
        """A container is gone: its slot goes to the first waiter, else back to the budget."""
        if evicted:
            self.evicting = max(0, self.evicting - 1)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.used = max(0, self.used - 1)

    def request(self, requester: Any = None) -> asyncio.Future[None]:
        """A slot, now or later: the future is done when the slot is this caller's.

        At the cap it asks for one idle container of another pool to be evicted. The caller must
        :meth:`cancel` the future when it stops waiting (a slot granted meanwhile is given back).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.try_take():
            future.set_result(None)
            return future
        self._waiters.append(future)
        if self.evict is not None and self.wants_eviction():
            self.evict(requester)  # counted in ``evicting`` by the pool that evicts
        return future

    def cancel(self, future: asyncio.Future[None]) -> None:
        """Stop waiting; a slot that was granted at the same moment is given back."""
        if future.done() and not future.cancelled():
            self.give_back()
        else:
            future.cancel()

    async def take(self, timeout_s: float, requester: Any = None) -> None:
        """A slot within ``timeout_s`` (evicting an idle container of another pool), else PoolWaitTimeout."""
        future = self.request(requester)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                return  # granted at the last moment
            future.cancel()
            raise PoolWaitTimeout(
                f"the pool service holds its maximum of {self.limit} containers (max_containers), all busy,"
                f" for {timeout_s:g} s"
            ) from None
        except asyncio.CancelledError:
            self.cancel(future)
            raise

    @contextlib.asynccontextmanager
    async def slot(self, timeout_s: float) -> AsyncIterator[None]:
        """Hold a slot for a one-shot container's whole life (create to remove)."""
        await self.take(timeout_s)
        try:
            yield
        finally:
            self.give_back()

    def report(self) -> dict[str, int]:
        return {"max_containers": self.limit, "containers": self.used, "waiting": self.waiting}
