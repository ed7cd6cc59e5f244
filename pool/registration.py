"""Registration of this pool service in Redis, refreshed every ``heartbeat_s``.

``keys.pool_services`` holds ``service id -> registration JSON`` (see :mod:`pool.routing` for the
shape and how workers choose), ``keys.pool_heartbeats`` the last heartbeat time in ms. On a clean
stop both entries are removed. Each registration is signed with the pool token (:mod:`flowcore.poolsigning`):
readers ignore one that something without the token wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.aiotasks import cancel_and_wait
from flowcore.keyspace import Keyspace
from flowcore.poolsigning import sign
from flowcore.settings import PoolSettings
from pool.manager import PoolManager

log = logging.getLogger(__name__)


def registration(settings: PoolSettings, manager: PoolManager) -> dict[str, Any]:
    return {
        "id": settings.service_id,
        "url": f"http://{settings.host}:{settings.port}",
        "capacity": settings.capacity,
        "busy": manager.busy(),
        "warm": manager.warm_keys(),
    }


class Registrar:
    def __init__(
        self, redis: Redis, keys: Keyspace, settings: PoolSettings, manager: PoolManager, *, token: str
    ) -> None:
        self._redis = redis
        self._token = token
        self._keys = keys
        self._settings = settings
        self._manager = manager
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        now_ms = int(time.time() * 1000)
        body = json.dumps(sign(registration(self._settings, self._manager), self._token, now_ms))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.pool_services, self._settings.service_id, body)
            pipe.zadd(self._keys.pool_heartbeats, {self._settings.service_id: now_ms})
            await pipe.execute()

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except RedisError as exc:
                log.warning("cannot register the pool service: %s", exc)
            await asyncio.sleep(self._settings.heartbeat_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.pool_services, self._settings.service_id)
                pipe.zrem(self._keys.pool_heartbeats, self._settings.service_id)
                await pipe.execute()
