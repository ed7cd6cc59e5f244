"""One warm pool: the containers of one pool key, their FIFO wait queue, reaping and health.

The decisions (take idle, grow, wait; what to reap; how many to warm) come from
:mod:`pool.sizing`; this module does the I/O around them. A busy container is never reaped; a
container found dead or unhealthy is replaced, and when it was busy it is killed so that the task
on it ends at once (the dispatcher reports ``container_lost``).

Every container holds a slot of the service's :class:`~pool.budget.ContainerBudget` from before its
creation until its removal has finished. When the service is at its cap, growing waits for either a
container of this pool or a slot (freed by evicting an idle container of another pool), whichever
comes first. A workflow-scoped pool keeps ``min_size`` only while its workflow is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from flowcore.errors import FlowError, NotFound
from pool import sizing
from pool.budget import ContainerBudget
from pool.containers import ContainerFactory, PooledContainer
from pool.errors import PoolWaitTimeout
from pool.keys import PoolConfig, PoolKey
from pool.stats import PoolStats

log = logging.getLogger(__name__)


@dataclass
class Lease:
    container: PooledContainer
    hit: bool
    waited: bool
    acquire_ms: float


class WarmPool:
    def __init__(
        self,
        key: PoolKey,
        config: PoolConfig,
        factory: ContainerFactory,
        budget: ContainerBudget | None = None,
        workflow_idle_timeout_s: float = 15.0,
    ) -> None:
        self.key = key
        self.config = config
        self.factory = factory
        self.budget = budget if budget is not None else ContainerBudget(1_000_000)
        self.workflow_idle_timeout_s = workflow_idle_timeout_s
        self.last_active_s = time.monotonic()
        self._held: set[str] = set()  # containers holding a budget slot (given back once removed)
        self.stats = PoolStats()
        self.containers: dict[str, PooledContainer] = {}
        self._idle: list[PooledContainer] = []  # a stack: the most recently used is reused first
        self._waiters: deque[asyncio.Future[PooledContainer]] = deque()
        self.starting = 0
        self.generation = 0  # bumped by drain: containers of older generations are not reused
        self.closed = False
        self.last_error: str | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ counts
    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def busy_count(self) -> int:
        return sum(1 for c in self.containers.values() if c.busy)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def min_size_now(self, now_s: float) -> int:
        """``min_size``, or 0 once a workflow-scoped pool's workflow has gone quiet."""
        return sizing.effective_min_size(
            scope=self.key.scope,
            min_size=self.config.min_size,
            active=self.busy_count > 0 or self.waiting > 0,
            last_active_s=self.last_active_s,
            now_s=now_s,
            workflow_idle_timeout_s=self.workflow_idle_timeout_s,
        )

    def reap_after_s(self) -> float:
        return sizing.reap_timeout_s(
            scope=self.key.scope,
            idle_timeout_s=self.config.idle_timeout_s,
            workflow_idle_timeout_s=self.workflow_idle_timeout_s,
        )

    def droppable(self, now_s: float) -> bool:
        """Empty, nothing in flight, nothing to warm: the manager may forget this pool."""
        return sizing.should_drop(
            total=len(self.containers),
            starting=self.starting,
            waiters=self.waiting,
            busy=self.busy_count,
            pending=len(self._background),
            min_size=self.min_size_now(now_s),
            idle_for_s=now_s - self.last_active_s,
            reap_after_s=self.reap_after_s(),
        )

    def report(self) -> dict[str, Any]:
        return {
            "key": self.key.hash,
            "spec": self.key.describe(),
            "config": {
                "min_size": self.config.min_size,
                "max_size": self.config.max_size,
                "warm_up": self.config.warm_up,
                "idle_timeout_s": self.config.idle_timeout_s,
                "max_uses": self.config.max_uses,
            },
            "generation": self.generation,
            "size": len(self.containers),
            "last_error": self.last_error,
            "containers": [
                {"container_id": c.container_id, "busy": c.busy, "uses": c.uses}
                for c in self.containers.values()
            ],
            **self.stats.report(
                busy=self.busy_count, idle=self.idle_count, starting=self.starting, waiting=self.waiting
            ),
        }

    # ------------------------------------------------------------------ acquire / release
    async def acquire(self, timeout_s: float) -> Lease:
        """A container for one task: idle (hit), new (miss) or after a FIFO wait (hit, waited)."""
        started = time.perf_counter()
        self.last_active_s = time.monotonic()
        self._waiters = deque(w for w in self._waiters if not w.done())
        action = sizing.acquire_action(
            idle=len(self._idle),
            total=len(self.containers),
            starting=self.starting,
            max_size=self.config.max_size,
            waiters=len(self._waiters),
        )
        if self.closed:
            raise PoolWaitTimeout(f"pool {self.key.hash} is shutting down")
        if action == "idle":
            container = self._idle.pop()
            container.busy = True
            return self._lease(container, started, hit=True, waited=False)
        if action == "grow":
            if self.budget.try_take():
                container = await self._start(busy=True)
                return self._lease(container, started, hit=False, waited=False)
            return await self._acquire_at_cap(timeout_s, started)
        future: asyncio.Future[PooledContainer] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            container = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                container = future.result()  # handed over at the last moment
            else:
                future.cancel()
                self.stats.exhausted += 1
                raise PoolWaitTimeout(
                    f"pool {self.key.hash}: all {self.config.max_size} containers stayed busy for {timeout_s:g} s"
                ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            future.cancel()
            raise
        return self._lease(container, started, hit=True, waited=True)

    async def _acquire_at_cap(self, timeout_s: float, started: float) -> Lease:
        """The service holds ``max_containers``: a container of this pool or a freed slot, first come."""
        slot = self.budget.request(self)  # asks for an idle container of another pool to be evicted
        future: asyncio.Future[PooledContainer] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            either: list[asyncio.Future[Any]] = [slot, future]  # asyncio.wait cancels neither
            await asyncio.wait(
                either,
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            self.budget.cancel(slot)
            if future.done() and not future.cancelled():
                self.release(future.result())
            future.cancel()
            raise
        if future.done() and not future.cancelled():
            self.budget.cancel(slot)  # a container of this pool came first
            return self._lease(future.result(), started, hit=True, waited=True)
        future.cancel()
        if slot.done() and not slot.cancelled():
            container = await self._start(busy=True)
            return self._lease(container, started, hit=False, waited=True)
        self.budget.cancel(slot)
        self.stats.exhausted += 1
        raise PoolWaitTimeout(
            f"pool {self.key.hash}: the service holds its maximum of {self.budget.limit} containers"
            f" (max_containers) and none came free within {timeout_s:g} s"
        )

    def _lease(self, container: PooledContainer, started: float, *, hit: bool, waited: bool) -> Lease:
        ms = (time.perf_counter() - started) * 1000
        self.stats.record_acquire(ms, hit=hit, waited=waited)
        return Lease(container, hit, waited, ms)

    def release(self, container: PooledContainer) -> None:
        """Give a container back after a task; retire or replace it when it must not serve again."""
        container.busy = False
        self.last_active_s = time.monotonic()
        if container.container_id not in self.containers:
            return
        container.uses += 1
        retire = sizing.should_retire(container.uses, self.config.max_uses)
        unusable = container.broken or container.lost_reason is not None
        if container.channel is not None and container.channel.closed:
            unusable = True
        if retire or unusable or self.closed or container.generation != self.generation:
            if retire and not unusable:
                self.stats.retired += 1
            self.discard(container)
            return
        container.idle_since_s = time.monotonic()
        if not self._handoff(container):
            if self.budget.wants_eviction():  # another pool waits for room at the cap: make it
                self.evict(container)
                return
            self._idle.append(container)

    def _handoff(self, container: PooledContainer) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                container.busy = True
                waiter.set_result(container)
                return True
        return False

    def discard(self, container: PooledContainer) -> None:
        """Forget a container, remove it in the background, and start what the pool now lacks."""
        self.containers.pop(container.container_id, None)
        with contextlib.suppress(ValueError):
            self._idle.remove(container)
        self._spawn(self._destroy(container))
        self.refill()

    def quarantine(self, container: PooledContainer) -> bool:
        """Take a container out of the pool for good, without removing it (kept for inspection, ADR 014).

        Its budget slot is given back (kept containers have their own caps, :mod:`pool.kept`) and
        the pool starts what it now lacks. False when the container is no longer this pool's.
        """
        container.busy = False
        self.last_active_s = time.monotonic()
        if self.containers.pop(container.container_id, None) is None:
            return False
        with contextlib.suppress(ValueError):
            self._idle.remove(container)
        if container.channel is not None:
            container.channel.on_close = None
        self._free(container)
        self.refill()
        return True

    def evict(self, container: PooledContainer) -> None:
        """Remove an idle container so that another pool can start one (the service is at its cap)."""
        self.containers.pop(container.container_id, None)
        with contextlib.suppress(ValueError):
            self._idle.remove(container)
        self.stats.evicted += 1
        self.budget.evicting += 1
        self._spawn(self._destroy(container, evicted=True))

    def idle_containers(self) -> list[PooledContainer]:
        return list(self._idle)

    async def _destroy(self, container: PooledContainer, *, evicted: bool = False) -> None:
        """Remove a container, then give its slot back (so the engine never holds more than the cap)."""
        try:
            await self.factory.destroy(container)
        finally:
            self._free(container, evicted=evicted)

    def _free(self, container: PooledContainer, *, evicted: bool = False) -> None:
        if container.container_id in self._held:
            self._held.discard(container.container_id)
            self.budget.give_back(evicted=evicted)
        elif evicted:
            self.budget.evicting = max(0, self.budget.evicting - 1)

    # ------------------------------------------------------------------ growth
    async def _start(self, *, busy: bool) -> PooledContainer:
        """Start a container; the caller has taken its budget slot (given back if this fails)."""
        self.starting += 1
        try:
            container = await self.factory.create(self.key)
        except BaseException as exc:
            self.budget.give_back()
            if isinstance(exc, FlowError):
                self.last_error = exc.message
            raise
        finally:
            self.starting -= 1
        self._held.add(container.container_id)
        self.last_error = None
        container.busy = busy
        container.generation = self.generation
        self.containers[container.container_id] = container
        self.watch(container)
        return container

    def watch(self, container: PooledContainer) -> None:
        if container.channel is not None:
            container.channel.on_close = lambda: self._channel_closed(container)

    def add_adopted(self, container: PooledContainer) -> None:
        self.budget.force_take()
        self._held.add(container.container_id)
        self.containers[container.container_id] = container
        self.watch(container)
        self._idle.append(container)

    def _channel_closed(self, container: PooledContainer) -> None:
        if self.closed or container.container_id not in self.containers:
            return
        if container.lost_reason is None:
            container.lost_reason = "the agent connection closed (the container died)"
        if not container.busy:
            self.stats.replaced += 1
            self.discard(container)

    async def _start_spare(self) -> None:
        self.starting -= 1  # _start counts it again
        try:
            container = await self._start(busy=False)
        except FlowError as exc:
            log.warning("pool %s: cannot start a container: %s", self.key.hash, exc.message)
            return
        self.release_new(container)

    def release_new(self, container: PooledContainer) -> None:
        container.idle_since_s = time.monotonic()
        if self.closed or container.generation != self.generation:
            self.discard(container)
        elif not self._handoff(container):
            self._idle.append(container)

    def refill(self) -> None:
        """Start containers for queued waiters and up to ``min_size`` (never past ``max_size``)."""
        if self.closed:
            return
        want = sizing.warm_deficit(
            total=len(self.containers),
            starting=self.starting,
            min_size=self.min_size_now(time.monotonic()),
            max_size=self.config.max_size,
            warm_up=self.config.warm_up,
        )
        waiting = max(0, self.waiting - self.starting)
        room = self.config.max_size - len(self.containers) - self.starting
        for _ in range(max(0, min(max(want, waiting), room))):
            if not self.budget.try_take():
                break  # at the service's cap: waiters get a slot (or a container) when one frees
            self.starting += 1  # counted at once, so that the next refill does not start it again
            self._spawn(self._start_spare())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ maintenance
    def reap(self, now_s: float) -> int:
        idle = [sizing.IdleInfo(c.container_id, c.idle_since_s) for c in self._idle]
        doomed = sizing.containers_to_reap(
            idle,
            total=len(self.containers),
            min_size=self.min_size_now(now_s),
            idle_timeout_s=self.reap_after_s(),
            now_s=now_s,
        )
        for container_id in doomed:
            container = self.containers.get(container_id)
            if container is not None and not container.busy:
                self.stats.reaped += 1
                self.containers.pop(container_id, None)
                self._idle.remove(container)
                self._spawn(self._destroy(container))
        return len(doomed)

    async def health_check(self, ping_timeout_s: float) -> None:
        checks = [self._check(c, ping_timeout_s) for c in list(self.containers.values())]
        for container, reason in zip(
            list(self.containers.values()), await asyncio.gather(*checks), strict=False
        ):
            if reason is not None and container.container_id in self.containers:
                await self.lose(container, reason)

    async def _check(self, container: PooledContainer, ping_timeout_s: float) -> str | None:
        if container.lost_reason is not None:
            return container.lost_reason
        if container.channel is not None:
            if container.channel.closed:
                return "the agent connection closed (the container died)"
            try:
                await container.channel.ping(ping_timeout_s)
            except (FlowError, TimeoutError):
                return f"the agent did not answer a health check within {ping_timeout_s:g} s"
            return None
        try:
            state = await self.factory.runtime.inspect(container.container_id)
        except NotFound:
            return "the container is gone"
        except FlowError:
            return None  # the engine hiccuped; try again next round
        return None if state.running else f"the container is {state.status}"

    async def lose(self, container: PooledContainer, reason: str) -> None:
        """A dead or unhealthy container: kill it (ending any task on it) and replace it."""
        log.warning("pool %s: container %s lost: %s", self.key.hash, container.short_id, reason)
        container.lost_reason = reason
        self.stats.replaced += 1
        if container.busy:
            await self.factory.runtime.kill(container.container_id)
        else:
            self.discard(container)

    def resize(self, min_size: int, max_size: int) -> None:
        self.config.min_size = min_size
        self.config.max_size = max_size
        self.refill()

    async def drain(self) -> int:
        """Remove idle containers now and busy ones when their task ends; stop warming (min 0).

        The pool keeps serving: later tasks start fresh containers on demand.
        """
        self.generation += 1
        self.config.min_size = 0
        idle, self._idle = self._idle, []
        for container in idle:
            self.containers.pop(container.container_id, None)
            self._spawn(self._destroy(container))
        return len(idle)

    async def close(self, *, keep_idle: bool = False) -> None:
        """Remove every container (busy ones are killed); with ``keep_idle`` leave idle ones running."""
        self.closed = True
        for waiter in self._waiters:
            waiter.cancel()
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        containers = list(self.containers.values())
        self.containers.clear()
        self._idle.clear()
        for container in containers:
            if keep_idle and not container.busy:
                if container.channel is not None:
                    container.channel.on_close = None
                    await container.channel.close()
                self._free(container)  # left for a restart to adopt: no longer this run's
                continue
            await self._destroy(container)
