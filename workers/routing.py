"""Which pool service runs a task.

Pool services register in Redis (``{p}:pools:services``) and heartbeat (``{p}:pools:heartbeat``).
A task goes to a live service holding a warm container for its pool key, else to the least loaded
one (:func:`pool.routing.choose_service`, a pure function); with no registration the configured
URL is used, so a single-host stack needs no setup.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.pool_api import DispatchMode, TaskRequest
from pool.keys import key_for
from pool.routing import choose_service, parse_registration

STALE_AFTER_MS = 5000
CACHE_S = 0.5


class PoolRouter:
    def __init__(self, redis: Redis, keys: Keyspace, fallback_url: str) -> None:
        self.redis = redis
        self.keys = keys
        self.fallback_url = fallback_url
        self._cache: tuple[float, dict[str, Any], dict[str, float]] | None = None
        self._down_until: dict[str, float] = {}

    def mark_down(self, url: str) -> None:
        """This worker could not reach ``url``: route around it until its heartbeat would be stale."""
        self._down_until[url] = time.monotonic() + STALE_AFTER_MS / 1000

    async def _registry(self) -> tuple[dict[str, Any], dict[str, float]]:
        now = time.monotonic()
        if self._cache and now - self._cache[0] < CACHE_S:
            return self._cache[1], self._cache[2]
        raw = await self.redis.hgetall(self.keys.pool_services)
        beats = await self.redis.zrange(self.keys.pool_heartbeats, 0, -1, withscores=True)
        regs = {(k.decode() if isinstance(k, bytes) else k): parse_registration(v) for k, v in raw.items()}
        regs = {k: v for k, v in regs.items() if v is not None}
        hb = {(k.decode() if isinstance(k, bytes) else k): float(s) for k, s in beats}
        self._cache = (now, regs, hb)
        return regs, hb

    async def choose(self, request: TaskRequest) -> str:
        regs, beats = await self._registry()
        now = time.monotonic()
        down = {url for url, until in self._down_until.items() if until > now}
        regs = {sid: reg for sid, reg in regs.items() if reg.get("url") not in down}
        if not regs:
            return self.fallback_url
        if request.mode == DispatchMode.COLD:
            pool_key = None
        else:
            pool_key = key_for(request, "exec" if request.mode == DispatchMode.EXEC else "agent").hash
        service = choose_service(regs, beats, pool_key, time.time() * 1000, STALE_AFTER_MS)
        if service is None:
            return self.fallback_url
        url = regs[service].get("url")
        return str(url) if url else self.fallback_url
