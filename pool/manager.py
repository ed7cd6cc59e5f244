"""The pools of one service: created per key on demand, maintained in the background.

:class:`PoolManager` owns the warm pools, the per-image python3 probe, adoption of the containers
a previous run of the same ``service_id`` left behind, and the maintenance loop (reap idle, warm
up to ``min_size``, drop empty pools, health checks every ``health_interval_s``). On stop it removes
every container it labelled (or leaves idle ones for adoption with ``keep_containers_on_shutdown``).

It also owns the service's container budget (``max_containers``, :mod:`pool.budget`): every pooled
container and every one-shot container (:meth:`PoolManager.oneshot_slot`) holds a slot; at the cap
the least recently used idle container of another pool is evicted to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from flowcore.aiotasks import cancel_and_wait
from flowcore.errors import FlowError, NotFound
from flowcore.models import PoolOptions
from flowcore.settings import PoolSettings
from pool import sizing
from pool.budget import ContainerBudget
from pool.channel import StateHandler
from pool.containers import ContainerFactory, PooledContainer
from pool.kept import is_kept_name
from pool.keys import PoolConfig, PoolKey
from pool.runtime import (
    LABEL_FLOW,
    LABEL_KIND,
    LABEL_SERVICE,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
)
from pool.stats import PoolStats, merge
from pool.warm import WarmPool

log = logging.getLogger(__name__)
PROBE = ["python3", "-c", "import asyncio, json, socket, importlib.util"]
HEALTH_PING_TIMEOUT_S = 5.0
ADOPT_CONCURRENCY = 32  # containers adopted at once after a restart


class PoolManager:
    def __init__(
        self, runtime: ContainerRuntime, settings: PoolSettings, state_handler: StateHandler | None
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.work_dir = Path(settings.work_dir).resolve()
        self.factory = ContainerFactory(
            runtime,
            service_id=settings.service_id,
            work_dir=self.work_dir,
            agent_start_timeout_s=settings.agent_start_timeout_s,
            state_handler=state_handler,
            extra_labels=settings.extra_labels,
        )
        self.pools: dict[str, WarmPool] = {}
        self.cold_stats = PoolStats()
        self.dropped_stats = PoolStats()  # of pools forgotten once empty (keeps ``overall`` monotonic)
        self.budget = ContainerBudget(settings.max_containers, evict=self._evict)
        self._python: dict[str, asyncio.Future[bool]] = {}
        self._images: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.factory.service_dir.mkdir(parents=True, exist_ok=True)
        await self.adopt()
        self._loop_task = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        await cancel_and_wait(self._loop_task)
        keep = self.settings.keep_containers_on_shutdown
        for pool in list(self.pools.values()):
            await pool.close(keep_idle=keep)
        # One-shot containers still running (their tasks are being cancelled by the shutdown).
        for state in await self._own_containers():
            kind = state.labels.get(LABEL_KIND)
            if is_kept_name(state.name):
                continue  # kept for inspection: outlives the service, expires on its own (pool.kept)
            if kind == "oneshot" or (kind == "pooled" and not keep):
                await self.runtime.remove(state.container_id)

    async def _own_containers(self) -> list[Any]:
        try:
            return await self.runtime.list({LABEL_FLOW: "1", LABEL_SERVICE: self.settings.service_id})
        except FlowError as exc:
            log.warning("cannot list containers: %s", exc.message)
            return []

    async def adopt(self) -> int:
        """Adopt healthy idle pooled containers this service left; remove the rest (not agents)."""
        adopted: list[PooledContainer] = []
        states = [
            s
            for s in await self._own_containers()
            if s.labels.get(LABEL_KIND) != "agent" and not is_kept_name(s.name)  # kept: never back in a pool
        ]
        # All at once: each agent takes up to a second to reconnect, and a restarted pool service
        # answers no task until adoption is done (in-flight workflows wait for it).
        gate = asyncio.Semaphore(ADOPT_CONCURRENCY)

        async def one(state: ContainerState) -> PooledContainer | None:
            async with gate:
                container = await self.factory.adopt(state) if state.labels.get(LABEL_KIND) == "pooled" else None
                if container is None:
                    await self.runtime.remove(state.container_id)
                return container

        for container in await asyncio.gather(*(one(s) for s in states)):
            if container is None:
                continue
            pool = self.pools.get(container.key.hash)
            if pool is None:
                pool = self._new_pool(container.key, None)
            pool.add_adopted(container)
            adopted.append(container)
        self.factory.remove_orphan_dirs({c.host_dir for c in adopted})
        if adopted:
            log.info("adopted %d warm containers", len(adopted))
        return len(adopted)

    # ------------------------------------------------------------------ pools
    def _new_pool(self, key: PoolKey, options: PoolOptions | None) -> WarmPool:
        pool = WarmPool(
            key,
            PoolConfig.from_options(options, self.settings),
            self.factory,
            self.budget,
            self.settings.workflow_idle_timeout_s,
        )
        self.pools[key.hash] = pool
        return pool

    def _evict(self, requester: WarmPool | None) -> bool:
        """At the cap: remove the least recently used idle container of a pool other than ``requester``."""
        candidates = [
            sizing.EvictionCandidate(key_hash, c.container_id, c.idle_since_s)
            for key_hash, pool in self.pools.items()
            for c in pool.idle_containers()
        ]
        exclude = requester.key.hash if requester is not None else None
        chosen = sizing.choose_eviction(candidates, exclude_pool=exclude)
        if chosen is None:
            return False
        pool = self.pools[chosen.pool]
        container = pool.containers.get(chosen.container_id)
        if container is None or container.busy:
            return False
        log.info("pool %s: evicting idle container %s to make room", pool.key.hash, container.short_id)
        pool.evict(container)
        return True

    def oneshot_slot(self, timeout_s: float | None = None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a slot of ``max_containers`` around a one-shot container (create to remove).

        Waits up to ``timeout_s`` (default ``acquire_timeout_s``), evicting an idle pooled container
        when that makes room; then raises :class:`~pool.errors.PoolWaitTimeout` (503 pool_exhausted).
        """
        return self.budget.slot(self.settings.acquire_timeout_s if timeout_s is None else timeout_s)

    def drop_settled(self, now_s: float) -> int:
        """Forget pools that are empty and quiet (their stats stay in ``overall``)."""
        dropped = [key for key, pool in self.pools.items() if pool.droppable(now_s)]
        for key in dropped:
            pool = self.pools.pop(key)
            self.dropped_stats = merge([self.dropped_stats, pool.stats])
        return len(dropped)

    def pool_for(self, key: PoolKey, options: PoolOptions | None) -> WarmPool:
        """The pool of ``key``, created with the request's options (later requests don't resize it)."""
        pool = self.pools.get(key.hash)
        if pool is None:
            pool = self._new_pool(key, options)
            pool.refill()
        return pool

    def get(self, key_hash: str) -> WarmPool:
        pool = self.pools.get(key_hash)
        if pool is None:
            raise NotFound(f"no pool with key {key_hash!r}", field="key")
        return pool

    async def ensure_image(self, image: str) -> None:
        if image in self._images:
            return
        await self.runtime.ensure_image(image)
        self._images.add(image)

    async def has_python(self, image: str) -> bool:
        """Whether the image runs python3 (probed once per image with a one-shot container)."""
        future = self._python.get(image)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._python[image] = future
            try:
                future.set_result(await self._probe(image))
            except BaseException as exc:
                del self._python[image]
                future.set_exception(exc)
                future.exception()  # retrieved: only this caller raises
                raise
        return await asyncio.shield(future)

    async def _probe(self, image: str) -> bool:
        spec = ContainerSpec(
            image=image,
            entrypoint=PROBE,
            command=[],
            labels=self.factory.base_labels("oneshot"),
            network="none",
        )
        try:
            async with self.oneshot_slot():
                result = await self.runtime.run_once(spec, 30.0)
        except FlowError as exc:
            if "executable file not found" in exc.message or "no such file" in exc.message.lower():
                return False
            raise
        return result.exit_code == 0

    # ------------------------------------------------------------------ maintenance
    async def _maintain(self) -> None:
        tick_s = min(self.settings.health_interval_s, 1.0)
        next_health = time.monotonic() + self.settings.health_interval_s
        while True:
            await asyncio.sleep(tick_s)
            try:
                now = time.monotonic()
                for pool in list(self.pools.values()):
                    pool.reap(now)
                    pool.refill()
                self.drop_settled(now)
                if now >= next_health:
                    next_health = now + self.settings.health_interval_s
                    await asyncio.gather(
                        *(p.health_check(HEALTH_PING_TIMEOUT_S) for p in list(self.pools.values()))
                    )
            except Exception:  # the loop must survive anything
                log.exception("pool maintenance failed")

    async def health_check_now(self) -> None:
        """One health round at once (tests and operators)."""
        await asyncio.gather(*(p.health_check(HEALTH_PING_TIMEOUT_S) for p in list(self.pools.values())))

    # ------------------------------------------------------------------ reporting
    def warm_keys(self) -> dict[str, int]:
        return {key: pool.idle_count for key, pool in self.pools.items() if pool.containers}

    def busy(self) -> int:
        return sum(p.busy_count for p in self.pools.values())

    def report(self) -> dict[str, Any]:
        pools = [p.report() for p in self.pools.values()]
        busy = sum(p.busy_count for p in self.pools.values())
        idle = sum(p.idle_count for p in self.pools.values())
        overall = merge([p.stats for p in self.pools.values()] + [self.cold_stats, self.dropped_stats])
        return {
            "service_id": self.settings.service_id,
            "capacity": self.budget.report(),
            "overall": overall.report(busy=busy, idle=idle),
            "cold": self.cold_stats.report(busy=0, idle=0),
            "pools": pools,
        }
