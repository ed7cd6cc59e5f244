"""Which pool service runs a task.

Pool services register in Redis (``{p}:pools:services``) and heartbeat (``{p}:pools:heartbeat``).
A task goes to a live service holding a warm container for its pool key, else to the least loaded
one (:func:`pool.routing.choose_service`, a pure function); with no registration the configured
URL is used, so a single-host stack needs no setup.

Only registrations signed with the pool token count (:func:`flowcore.poolsigning.verify`): one written by
anything else that can write to Redis is never chosen. Each refused registration is counted
(:attr:`PoolRouter.refused`) and logged once per service id and reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.pool_api import DispatchMode, TaskRequest
from flowcore.poolsigning import verify
from flowcore.settings import TaskPolicySection
from pool.keys import Kind, key_for
from pool.routing import choose_service, parse_registration

log = logging.getLogger(__name__)

STALE_AFTER_MS = 5000
CACHE_S = 0.5


class PoolRouter:
    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        fallback_url: str,
        *,
        token: str | None = None,
        policy: TaskPolicySection | None = None,
    ) -> None:
        """``token``: the pool token registrations are signed with; without it none is trusted.
        ``policy``: the operator's task policy, so that keys hash as the pool's do."""
        self.redis = redis
        self._policy = policy
        self.keys = keys
        self.fallback_url = fallback_url
        self._token = token
        self.refused: Counter[str] = Counter()  # refused registrations by reason, since start
        self._logged: set[tuple[str, str]] = set()
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
        parsed = {(k.decode() if isinstance(k, bytes) else k): parse_registration(v) for k, v in raw.items()}
        now_ms = time.time() * 1000
        regs = {k: v for k, v in parsed.items() if v is not None and self._genuine(k, v, now_ms)}
        hb = {(k.decode() if isinstance(k, bytes) else k): float(s) for k, s in beats}
        self._cache = (now, regs, hb)
        return regs, hb

    def _genuine(self, service_id: str, reg: dict[str, Any], now_ms: float) -> bool:
        if self._token is None:
            reason: str | None = "no pool token configured to check it"
        else:
            reason = verify(reg, self._token, service_id=service_id, now_ms=now_ms, max_age_ms=STALE_AFTER_MS)
        if reason is None:
            return True
        self.refused[reason] += 1
        if (service_id, reason) not in self._logged:
            self._logged.add((service_id, reason))
            log.warning("ignoring the registration of pool service %r: %s", service_id, reason)
        return False

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
            kind: Kind = "exec" if request.mode == DispatchMode.EXEC else "agent"
            pool_key = key_for(request, kind, self._policy, enforce=False).hash
        service = choose_service(regs, beats, pool_key, time.time() * 1000, STALE_AFTER_MS)
        if service is None:
            return self.fallback_url
        url = regs[service].get("url")
        return str(url) if url else self.fallback_url
