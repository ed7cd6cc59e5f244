"""The gateway app in-process on a real Redis, for the integration tier (no worker, no pool).

``gateway_client(settings, conn)`` runs the app's lifespan and yields an httpx client bound to it
through ``httpx.ASGITransport`` (which buffers whole responses: streaming tests serve the app with
uvicorn instead). ``gateway_api(redis_url, **settings)`` does the same with its own Redis connection,
closed afterwards: what most modules' ``api`` fixture is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from redis.asyncio import Redis

from flowcore.settings import GatewaySettings
from gateway.app import create_app

AUTH = {"Authorization": "Bearer default-token"}


@contextlib.asynccontextmanager
async def gateway_client(
    settings: GatewaySettings, conn: Redis, *, headers: dict[str, str] | None = None, base_url: str = "http://gw"
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis=conn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=AUTH if headers is None else headers
        ) as client:
            yield client


@contextlib.asynccontextmanager
async def gateway_api(redis_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on ``redis_url`` with these ``GatewaySettings`` fields, behind an authenticated client."""
    conn = Redis.from_url(redis_url)
    try:
        async with gateway_client(GatewaySettings(redis={"url": redis_url}, **settings), conn) as client:
            yield client
    finally:
        await conn.aclose()
