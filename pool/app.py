"""The pool service's HTTP app: ``create_app(settings)`` with a lifespan that opens and closes
the Docker runtime, Redis, the pools and the registration.

Every route but ``GET /healthz`` needs ``Authorization: Bearer <pool token>``; cross-origin requests,
bodies that are not JSON and oversized bodies are refused before any route runs (:mod:`pool.guard`).

Routes (JSON unless noted):

- ``GET  /healthz`` (public: ``{"ok": true}`` and nothing else)
- ``POST /v1/tasks`` (TaskRequest -> TaskResult), ``DELETE /v1/tasks/{task_id}``
- ``GET  /v1/pools``, ``GET /v1/pools/{key}``, ``POST /v1/pools/{key}/resize``, ``POST /v1/pools/{key}/drain``
- ``/v1/agents`` (deploy, list), ``/v1/agents/{id}`` (get, delete), ``.../start``, ``.../stop``,
  ``.../logs`` (text; ``?follow=1`` streams lines)
- ``/v1/kept`` (list, remove a workflow's), ``/v1/kept/{id}`` (get, delete), ``.../logs``, ``.../files``
  (containers kept by a cleanup policy, :mod:`pool.routes.kept`)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import pooltoken
from flowcore.errors import FlowError
from flowcore.settings import PoolSettings
from pool.guard import PoolGuard
from pool.routes import agents, kept, tasks
from pool.services import PoolServices


async def healthz(request: Request) -> Response:
    """Liveness only: unauthenticated, so it names nothing (the service id is in ``GET /v1/pools``)."""
    return JSONResponse({"ok": True})


async def flow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


def create_app(settings: PoolSettings) -> Starlette:
    """Build the pool app. Refuses (ConfigError) a non-loopback bind without ``FLOW_POOL_TOKEN``."""
    token = pooltoken.resolve(settings.pool_token, settings.pool_token_file, bind_host=settings.host)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await PoolServices.open(settings, token=token)
        app.state.services = services
        try:
            yield
        finally:
            await services.close()

    routes = [Route("/healthz", healthz, methods=["GET"]), *tasks.routes, *agents.routes, *kept.routes]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={FlowError: flow_error},
        middleware=[Middleware(PoolGuard, token=token, max_body_bytes=settings.max_body_bytes)],
    )
