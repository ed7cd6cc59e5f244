"""One warm pool: the containers of one pool key, their FIFO wait queue, reaping and health.

The decisions (take idle, grow, wait; what to reap; how many to warm) come from
:mod:`pool.sizing`; this module does the I/O around them. A busy container is never reaped; a
container found dead or unhealthy is replaced, and when it was busy it is killed so that the task
on it ends at once (the dispatcher reports ``container_lost``).
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
    def __init__(self, key: PoolKey, config: PoolConfig, factory: ContainerFactory) -> None:
        self.key = key
        self.config = config
        self.factory = factory
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
            container = await self._start(busy=True)
            return self._lease(container, started, hit=False, waited=False)
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

    def _lease(self, container: PooledContainer, started: float, *, hit: bool, waited: bool) -> Lease:
        ms = (time.perf_counter() - started) * 1000
        self.stats.record_acquire(ms, hit=hit, waited=waited)
        return Lease(container, hit, waited, ms)

    def release(self, container: PooledContainer) -> None:
        """Give a container back after a task; retire or replace it when it must not serve again."""
        container.busy = False
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
        self._spawn(self.factory.destroy(container))
        self.refill()

    # ------------------------------------------------------------------ growth
    async def _start(self, *, busy: bool) -> PooledContainer:
        self.starting += 1
        try:
            container = await self.factory.create(self.key)
        except FlowError as exc:
            self.last_error = exc.message
            raise
        finally:
            self.starting -= 1
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
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            warm_up=self.config.warm_up,
        )
        waiting = max(0, self.waiting - self.starting)
        room = self.config.max_size - len(self.containers) - self.starting
        for _ in range(max(0, min(max(want, waiting), room))):
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
            min_size=self.config.min_size,
            idle_timeout_s=self.config.idle_timeout_s,
            now_s=now_s,
        )
        for container_id in doomed:
            container = self.containers.get(container_id)
            if container is not None and not container.busy:
                self.stats.reaped += 1
                self.containers.pop(container_id, None)
                self._idle.remove(container)
                self._spawn(self.factory.destroy(container))
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
            self._spawn(self.factory.destroy(container))
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
                continue
            await self.factory.destroy(container)
