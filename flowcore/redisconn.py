"""Redis clients of every process, from one :class:`~flowcore.settings.RedisSection`.

Every client is made here, so a Redis with ``requirepass`` or ACL users works for all of them:
``FLOW_REDIS__USERNAME`` / ``FLOW_REDIS__PASSWORD`` (or credentials in the URL, which win). The
password travels as a :class:`~pydantic.SecretStr` until the client is made and is never part of a
URL this module builds, so it cannot end up in a log line or an error message.

With ``FLOW_REDIS__SENTINELS`` set, every client here (asyncio, blocking, arq's) finds the master through
the Sentinels and follows a failover (:mod:`flowcore.sentinel`, ADR 021).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError

from flowcore import sentinel
from flowcore.errors import ConfigError
from flowcore.settings import RedisSection

CONNECT_TIMEOUT_S = 2.0  # a master that does not answer a connect is treated as down (then: Sentinel again)


def credentials(section: RedisSection) -> dict[str, Any]:
    """``username`` / ``password`` options for redis-py (empty when none are configured)."""
    options: dict[str, Any] = {}
    if section.username:
        options["username"] = section.username
    if section.password is not None and section.password.get_secret_value():
        options["password"] = section.password.get_secret_value()
    return options


def connect(section: RedisSection, **options: Any) -> Redis:
    """An asyncio client (lazy: it connects on its first command); the master's, through Sentinel, when
    ``sentinels`` are configured (:mod:`flowcore.sentinel`)."""
    if section.sentinels:
        return sentinel.master_client(
            section, credentials(section), **{"socket_connect_timeout": CONNECT_TIMEOUT_S, **options}
        )
    client: Redis = Redis.from_url(section.url, **{**credentials(section), **options})
    return client


def connect_sync(section: RedisSection, **options: Any) -> redis.Redis:
    """A blocking client, for threads that cannot use the event loop (the span exporter)."""
    if section.sentinels:
        return sentinel.master_client_sync(section, credentials(section), **options)
    return redis.Redis.from_url(section.url, **{**credentials(section), **options})


def arq_pool(section: RedisSection) -> ArqRedis | None:
    """The arq worker's own client when it must be made here (through Sentinel), else None: arq makes
    it from :func:`arq_settings`."""
    if not section.sentinels:
        return None
    return sentinel.arq_client(section, credentials(section), socket_connect_timeout=CONNECT_TIMEOUT_S)


def arq_settings(section: RedisSection) -> RedisSettings:
    """arq's connection settings: the URL's, with the configured credentials unless the URL has its own
    (with Sentinel, the worker gets its client from :func:`arq_pool`; these settings then name the Sentinels)."""
    settings = RedisSettings.from_dsn(section.url)
    if section.sentinels:
        settings.host = sentinel.addresses(section)
        settings.sentinel = True
        settings.sentinel_master = section.sentinel_master
    extra = credentials(section)
    if settings.username is None and "username" in extra:
        settings.username = extra["username"]
    if settings.password is None and "password" in extra:
        settings.password = extra["password"]
    return settings



async def check_credentials(client: Redis, section: RedisSection) -> None:
    """Fail at start-up, clearly, when Redis refuses this process's credentials.

    Other failures (Redis not up yet) are left to the callers' retries and health checks.
    """
    try:
        await client.ping()
    except AuthenticationError as exc:
        raise ConfigError(
            f"Redis at {_where(section.url)} refused this process's credentials ({exc}): set FLOW_REDIS__PASSWORD "
            "(and FLOW_REDIS__USERNAME for an ACL user)"
        ) from None
    except RedisError:
        return


def _where(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without any credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
