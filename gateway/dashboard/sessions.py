"""Browser sessions of the dashboard: an opaque random id in a cookie, its record in Redis.

Logging in with the API token creates a session: a random id (256 bits) that only the browser's
HttpOnly cookie holds, and a CSRF token that the dashboard's JavaScript sends back in the
``X-Flow-CSRF`` header on every POST. Redis keeps the SHA-256 of the id (a Redis dump does not hand
out live cookies) with the CSRF token, and expires the record after ``ttl_s``. Logging out deletes it.
The token itself is never stored, and never reaches a cookie, a URL or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.errors import ServiceUnavailable
from flowcore.keyspace import Keyspace
from gateway.middleware import SESSION_COOKIE

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "NewSession", "SessionStore"]

CSRF_COOKIE = "flow_csrf"  # not HttpOnly: the page's script reads it and sends it as X-Flow-CSRF
SESSION_TTL_S = 12 * 3600
_ID_BYTES = 32
_MAX_ID_CHARS = 128  # anything longer is not one of ours: no Redis round trip for it


@dataclass(frozen=True)
class NewSession:
    session_id: str  # goes into the HttpOnly cookie, nowhere else
    csrf: str  # readable by the page's script, echoed in X-Flow-CSRF


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), (presented or "").encode())


class SessionStore:
    """Sessions in Redis. Built without I/O; :meth:`connect` gives it the lifespan's connection."""

    def __init__(self, keys: Keyspace, *, ttl_s: int = SESSION_TTL_S) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._redis: Redis | None = None

    def connect(self, redis: Redis) -> None:
        self._redis = redis

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise ServiceUnavailable("the session store is not connected (the gateway is starting or stopping)")
        return self._redis

    async def create(self) -> NewSession:
        session = NewSession(secrets.token_urlsafe(_ID_BYTES), secrets.token_urlsafe(_ID_BYTES))
        key = self.keys.ui_session(digest(session.session_id))
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"csrf": session.csrf, "created_at": repr(time.time())})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
        return session

    async def csrf_token(self, session_id: str) -> str | None:
        """The CSRF token of a live session, or None (unknown, expired, logged out, malformed)."""
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return None
        try:
            raw = await self.redis.hget(self.keys.ui_session(digest(session_id)), "csrf")
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def delete(self, session_id: str) -> None:
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return
        try:
            await self.redis.delete(self.keys.ui_session(digest(session_id)))
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
