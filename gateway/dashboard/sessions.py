"""Browser sessions of the dashboard: an opaque random id in a cookie, its record in Redis.

Logging in with the API token creates a session: a random id (256 bits) that only the browser's
HttpOnly cookie holds, and a CSRF token that the dashboard's JavaScript sends back in the
``X-Flow-CSRF`` header on every POST. Redis keeps the SHA-256 of the id (a Redis dump does not hand
out live cookies) with the CSRF token, and expires the record after ``ttl_s``. Logging out deletes it.
The token itself is never stored, and never reaches a cookie, a URL or a log line: the record keeps
the token's name and a fingerprint of its hash (:func:`gateway.scopes.fingerprint`), and a session
whose token was removed from the settings or rotated (another hash) ends at its next request.
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
from gateway.scopes import Grant, TokenBook

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

    def __init__(self, keys: Keyspace, *, ttl_s: int = SESSION_TTL_S, book: TokenBook | None = None) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.book = book if book is not None else TokenBook([])
        self._redis: Redis | None = None

    def connect(self, redis: Redis) -> None:
        self._redis = redis

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise ServiceUnavailable("the session store is not connected (the gateway is starting or stopping)")
        return self._redis

    async def create(self, grant: Grant) -> NewSession:
        """A session of the token ``grant`` stands for (its name and fingerprint, never its value)."""
        session = NewSession(secrets.token_urlsafe(_ID_BYTES), secrets.token_urlsafe(_ID_BYTES))
        key = self.keys.ui_session(digest(session.session_id))
        record = {"csrf": session.csrf, "created_at": repr(time.time()), "token": grant.name, "fp": grant.fingerprint}
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=record)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
        return session

    async def lookup(self, session_id: str) -> tuple[str, Grant] | None:
        """The CSRF token and the token's grant of a live session; None when the session is unknown,
        expired, logged out or malformed, or its token is no longer configured as it was (the record
        is then deleted)."""
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return None
        key = self.keys.ui_session(digest(session_id))
        try:
            csrf, name, print_ = await self.redis.hmget(key, ["csrf", "token", "fp"])
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
        if csrf is None:
            return None
        grant = self.book.by_session(_s(name), _s(print_)) if name is not None and print_ is not None else None
        if grant is None:  # revoked, rotated, or a session from before tokens were named
            try:
                await self.redis.delete(key)
            except RedisError as exc:
                raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc
            return None
        return _s(csrf), grant

    async def csrf_token(self, session_id: str) -> str | None:
        """The CSRF token of a live session, or None (see :meth:`lookup`)."""
        found = await self.lookup(session_id)
        return found[0] if found is not None else None

    async def delete(self, session_id: str) -> None:
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return
        try:
            await self.redis.delete(self.keys.ui_session(digest(session_id)))
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}") from exc


def _s(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
