"""The objects one pool service process runs on, opened and closed together by the app lifespan."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from flowcore.state import StateStore
from pool.agents import AgentService
from pool.dispatch import Dispatcher
from pool.docker_runtime import DockerRuntime
from pool.manager import PoolManager
from pool.records import ContainerRecorder
from pool.registration import Registrar
from pool.statebridge import StateBridge


@dataclass
class PoolServices:
    settings: PoolSettings
    runtime: DockerRuntime
    redis: Redis
    manager: PoolManager
    dispatcher: Dispatcher
    recorder: ContainerRecorder
    registrar: Registrar
    agents: AgentService

    @classmethod
    async def open(cls, settings: PoolSettings) -> PoolServices:
        keys = Keyspace(settings.redis.prefix)
        runtime = await DockerRuntime(
            settings.docker_host, pull_missing=settings.pull_missing, pull_timeout_s=settings.pull_timeout_s
        ).open()
        redis: Redis = Redis.from_url(settings.redis.url)
        try:
            manager = PoolManager(runtime, settings, StateBridge(StateStore(redis, keys)))
            recorder = ContainerRecorder(redis, keys)
            services = cls(
                settings=settings,
                runtime=runtime,
                redis=redis,
                manager=manager,
                dispatcher=Dispatcher(manager, recorder),
                recorder=recorder,
                registrar=Registrar(redis, keys, settings, manager),
                agents=AgentService(runtime, redis, keys, settings),
            )
            await manager.start()
        except BaseException:
            await redis.aclose()
            await runtime.close()
            raise
        services.registrar.start()
        return services

    async def close(self) -> None:
        await self.registrar.stop()
        await self.manager.stop()
        await self.recorder.flush()
        if not self.settings.keep_containers_on_shutdown:
            with contextlib.suppress(Exception):
                await self.agents.remove_all_own()
        await self.redis.aclose()
        await self.runtime.close()
