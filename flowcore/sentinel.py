"""Redis through Sentinel: the master's clients of every process, found by asking the Sentinels (ADR 021).

With ``FLOW_REDIS__SENTINELS`` set, :mod:`flowcore.redisconn` makes every client here instead of from the
URL: a client whose connection pool asks the Sentinels for the master of ``FLOW_REDIS__SENTINEL_MASTER``
whenever it opens a connection. Following a failover needs nothing else:

- a connection to a master that died fails (``ConnectionError``) and is dropped; the next one asks the
  Sentinels again, and they name the promoted replica once the failover is done. Until then the
  callers see the same errors as in a Redis outage and ride it out the same way (503 with Retry-After
  in the gateway, backoff in the workers, retries in the pool service and the scheduler);
- a connection to a former master that came back as a replica answers ``READONLY``: redis-py's
  Sentinel connection drops it and raises ``ConnectionError``, so the same path applies;
- while a Sentinel sees the master down (before the promotion) it names no master:
  :class:`~redis.asyncio.sentinel.MasterNotFoundError`, a ``ConnectionError`` as well.

The URL still gives the database number and, if it has them, the credentials of the data nodes.
The Sentinels' own credentials are ``FLOW_REDIS__SENTINEL_USERNAME`` / ``..._PASSWORD``.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.sentinel
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from flowcore.settings import RedisSection

DEFAULT_SENTINEL_PORT = 26379


def parse_address(item: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; the port defaults to 26379) -> ``(host, port)``; ValueError names the item."""
    text = item.strip()
    if not text or any(c.isspace() or c in "/@?#" for c in text):
        raise ValueError(f"sentinel address {item!r} is not host:port")
    host, sep, port_text = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port_text = text, str(DEFAULT_SENTINEL_PORT)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"sentinel address {item!r}: write an IPv6 address in brackets, as [::1]:26379")
    if not host:
        raise ValueError(f"sentinel address {item!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {item!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def addresses(section: RedisSection) -> list[tuple[str, int]]:
    return [parse_address(item) for item in section.sentinels]


def sentinel_options(section: RedisSection) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves: bounded, with their own credentials."""
    options: dict[str, Any] = {
        "socket_timeout": section.sentinel_timeout_s,
        "socket_connect_timeout": section.sentinel_timeout_s,
    }
    if section.sentinel_username:
        options["username"] = section.sentinel_username
    if section.sentinel_password is not None and section.sentinel_password.get_secret_value():
        options["password"] = section.sentinel_password.get_secret_value()
    return options


def master_options(section: RedisSection, credentials: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Options of the connections to the master: the URL's database (and credentials, which win), the
    configured credentials, then the caller's options. Host and port come from the Sentinels."""
    from_url = {k: v for k, v in parse_url(section.url).items() if k in ("db", "username", "password")}
    return {**credentials, **from_url, **options}


class _ClosesSentinels:
    """Mixed into a master client: closing it closes its Sentinel clients too (no connection is left)."""

    sentinel_manager: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)  # type: ignore[misc]
        for client in self.sentinel_manager.sentinels:
            await client.aclose()


class SentinelRedis(_ClosesSentinels, Redis):  # type: ignore[misc]  # redis-py is partly untyped
    """The master's asyncio client."""


class SentinelArqRedis(_ClosesSentinels, ArqRedis):
    """The master's client for arq's worker (a subclass of :class:`~redis.asyncio.Redis` with arq's jobs)."""


def _manager(section: RedisSection, credentials: dict[str, Any], options: dict[str, Any]) -> Sentinel:
    return Sentinel(
        addresses(section), sentinel_kwargs=sentinel_options(section), **master_options(section, credentials, options)
    )


def master_client(section: RedisSection, credentials: dict[str, Any], **options: Any) -> Redis:
    """An asyncio client of the current master (lazy: it asks the Sentinels when it connects)."""
    manager = _manager(section, credentials, options)
    client: SentinelRedis = manager.master_for(section.sentinel_master, redis_class=SentinelRedis)
    client.sentinel_manager = manager
    return client


def arq_client(section: RedisSection, credentials: dict[str, Any], **options: Any) -> ArqRedis:
    """arq's client of the current master; arq's own Sentinel support can take neither the Sentinels'
    credentials nor timeouts, so the worker is handed this one (``Worker(redis_pool=...)``)."""
    manager = _manager(section, credentials, options)
    client: SentinelArqRedis = manager.master_for(section.sentinel_master, redis_class=SentinelArqRedis)
    client.sentinel_manager = manager
    return client


def master_client_sync(section: RedisSection, credentials: dict[str, Any], **options: Any) -> redis.Redis:
    """A blocking client of the current master (the span exporter's thread)."""
    manager = redis.sentinel.Sentinel(
        addresses(section), sentinel_kwargs=sentinel_options(section), **master_options(section, credentials, options)
    )
    client: redis.Redis = manager.master_for(section.sentinel_master)
    return client
