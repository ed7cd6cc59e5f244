"""Integration-tier fixtures.

The in-process gateway tests talk to it as ``http://gw`` (or ``gw.test``): names this tier's gateways
are configured to serve, on top of the loopback names (the Host allow-list refuses any other, see
docs/security.md). A test that passes ``allowed_hosts`` itself (the Host tests) is unaffected.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.settings import GatewaySettings
from flowcore.store import WorkflowStore
from tests.gateway_client import gateway_client

TEST_HOSTS = ["gw", "gw.test", "localhost", "127.0.0.1", "[::1]"]


@pytest.fixture(autouse=True)
def _test_gateway_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_ALLOWED_HOSTS", json.dumps(TEST_HOSTS))


@pytest.fixture
async def conn(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the session's Redis (flushed before the test); a module may define its own."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def api(conn: Redis, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process on that Redis, with the default admin token; its pool service is a closed
    port (forwarded routes answer 503). A module may define its own."""
    settings = GatewaySettings(redis={"url": redis_url}, pool={"url": "http://127.0.0.1:9"})
    async with gateway_client(settings, conn) as client:
        yield client


@pytest.fixture
async def stores(redis_url: str, keys: Keyspace) -> AsyncIterator[list[WorkflowStore]]:
    """Two workflow stores on their own clients (two processes, as far as races go), under the module's
    ``keys`` fixture (each module that uses this defines its own key prefix)."""
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    yield [WorkflowStore(c, keys) for c in clients]
    for client in clients:
        await client.aclose()
