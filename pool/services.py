"""The objects one pool service process runs on, opened and closed together by the app lifespan."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from flowcore import pooltoken, redisconn
from flowcore.errors import FlowError
from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from flowcore.state import StateStore
from pool.agent_bridge import AgentBridge
from pool.agent_restart import AgentWatcher
from pool.agents import AgentService
from pool.containers import safe_name
from pool.dispatch import Dispatcher
from pool.docker_runtime import DockerRuntime
from pool.kept import Keeper
from pool.manager import PoolManager
from pool.records import ContainerRecorder
from pool.registration import Registrar
from pool.statebridge import StateBridge
from pool.tasklogs import LogShipper

log = logging.getLogger(__name__)


@dataclass
class PoolServices:
    settings: PoolSettings
    runtime: DockerRuntime
    redis: Redis
    manager: PoolManager
    dispatcher: Dispatcher
    recorder: ContainerRecorder
    logs: LogShipper
    registrar: Registrar
    agents: AgentService
    keeper: Keeper
    agent_watcher: AgentWatcher | None = None  # agents' restart policies (on_error)

    @classmethod
    async def open(cls, settings: PoolSettings, *, token: str | None = None) -> PoolServices:
        """``token``: the pool token (signs the registration); resolved from ``settings`` when None."""
        if token is None:
            token = pooltoken.resolve(settings.pool_token, settings.pool_token_file, bind_host=settings.host)
        keys = Keyspace(settings.redis.prefix)
        runtime = await DockerRuntime(
            settings.docker_host, pull_missing=settings.pull_missing, pull_timeout_s=settings.pull_timeout_s
        ).open()
        redis: Redis = redisconn.connect(settings.redis)
        try:
            await redisconn.check_credentials(redis, settings.redis)
            manager = PoolManager(runtime, settings, StateBridge(StateStore(redis, keys)))
            recorder = ContainerRecorder(redis, keys)
            logs = LogShipper(redis, keys)
            keeper = Keeper(runtime, redis, keys, settings)
            services = cls(
                settings=settings,
                runtime=runtime,
                redis=redis,
                manager=manager,
                dispatcher=Dispatcher(manager, recorder, logs, keeper),
                recorder=recorder,
                logs=logs,
                registrar=Registrar(redis, keys, settings, manager, token=token),
                agents=AgentService(runtime, redis, keys, settings),
                keeper=keeper,
            )
            # Agents deployed for a workflow reach its state over their own socket (ADR 015).
            services.agents.bridge = AgentBridge(redis, keys, manager.work_dir / safe_name(settings.service_id, 24))
            try:  # before the pools adopt (which never take a kept container either: by its name)
                await keeper.adopt()
            except FlowError as exc:  # the sweep tries again
                log.warning("cannot adopt the kept containers: %s", exc.message)
            await manager.start()
            try:
                await services.agents.adopt()
            except FlowError as exc:  # the agents stay as they are; get/list refresh them one by one
                log.warning("cannot adopt the agent containers: %s", exc.message)
        except BaseException:
            await redis.aclose()
            await runtime.close()
            raise
        services.registrar.start()
        services.keeper.start()
        services.agent_watcher = AgentWatcher(services.agents, settings.agent_watch_s)
        services.agent_watcher.start()
        return services

    async def close(self) -> None:
        await self.registrar.stop()
        await self.keeper.stop()
        if self.agent_watcher is not None:
            await self.agent_watcher.stop()
        await self.manager.stop()
        await self.logs.close()
        await self.recorder.flush()
        if not self.settings.keep_containers_on_shutdown:
            with contextlib.suppress(Exception):
                await self.agents.remove_all_own()
        if self.agents.bridge is not None:
            await self.agents.bridge.close_all(remove_dirs=not self.settings.keep_containers_on_shutdown)
        await self.redis.aclose()
        await self.runtime.close()
