"""``/v1/kept`` across every pool service sharing this Redis (ADR 014, 2026-11-29).

- ``GET /v1/kept[?workflow_id=W]``: the kept containers of all pool services, oldest first, read from
  their records in Redis (``keys.kept(service)``), so that a service that is down still shows its own.
- ``/v1/kept/{id}[/logs|/files]`` (GET, DELETE): sent to the pool service that kept the container (its
  owner in ``keys.kept_owner``; the id may be a unique prefix of 12+ hex digits), at the address of its
  registration. Only a registration signed with the pool token and fresh counts (the pool token goes
  with the request: it must never go to an address someone else wrote). A container nobody indexed goes
  to the gateway's own pool service (``FLOW_POOL__URL``), as before; an owner that is not running: 503.
- ``DELETE /v1/kept?workflow_id=W``: every running pool service removes the workflow's (``removed``: the
  sum); one that is down does it in its sweep once it sees the workflow gone.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.errors import InvalidInput, ServiceUnavailable
from flowcore.ids import check_id
from flowcore.keyspace import Keyspace
from flowcore.pool_api import KeptContainer
from flowcore.poolsigning import verify
from gateway.routes import pools

log = logging.getLogger(__name__)

CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")
REGISTRATION_MAX_AGE_MS = 15_000  # a pool service refreshes its registration every heartbeat_s (1 s)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def owner_of(container_id: str, owners: Mapping[str, str]) -> tuple[str, str] | None:
    """(full container id, owning service) for an id or a unique prefix of 12+ characters; None: unknown."""
    if container_id in owners:
        return container_id, owners[container_id]
    if len(container_id) < 12:
        return None
    found = [(cid, owner) for cid, owner in owners.items() if cid.startswith(container_id)]
    return found[0] if len(found) == 1 else None


def live_services(registrations: Mapping[str, Any], token: str | None, now_ms: float) -> dict[str, str]:
    """Service id -> base URL of the registrations signed with ``token`` and fresh (pure)."""
    services: dict[str, str] = {}
    if token is None:
        return services
    for service_id, raw in registrations.items():
        try:
            reg = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if not isinstance(reg, dict) or not isinstance(reg.get("url"), str):
            continue
        if verify(reg, token, service_id=service_id, now_ms=now_ms, max_age_ms=REGISTRATION_MAX_AGE_MS) is None:
            services[service_id] = reg["url"]
    return services


async def _registered(request: Request) -> dict[str, str]:
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    raw = await redis.hgetall(keys.pool_services)
    regs = {_text(k): _text(v) for k, v in raw.items()}
    return live_services(regs, request.app.state.pool_token, time.time() * 1000)


async def _owners(request: Request) -> dict[str, str]:
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    raw = await redis.hgetall(keys.kept_owner)
    return {_text(k): _text(v) for k, v in raw.items()}


def _workflow_param(request: Request) -> str | None:
    value = request.query_params.get("workflow_id")
    return check_id(value, "workflow_id") if value is not None else None


async def list_kept(request: Request) -> Response:
    workflow_id = _workflow_param(request)
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    services = set((await _owners(request)).values()) | set(await _registered(request))
    records: list[KeptContainer] = []
    for service_id in sorted(s for s in services if s):
        raw = await redis.hgetall(keys.kept(service_id))
        for value in raw.values():
            try:
                record = KeptContainer.model_validate_json(value)
            except ValueError:
                continue
            if workflow_id is None or record.workflow_id == workflow_id:
                records.append(record)
    records.sort(key=lambda r: (r.kept_at_s, r.container_id))
    return JSONResponse({"kept": [r.model_dump(mode="json") for r in records]})


async def remove_everywhere(request: Request, workflow_id: str) -> int | None:
    """Ask every running pool service (and the gateway's own) to remove a workflow's kept containers;
    the number removed, None when none answered."""
    client: httpx.AsyncClient = request.app.state.pool_http
    urls = {url.rstrip("/") for url in (await _registered(request)).values()}
    urls.add(request.app.state.settings.pool.url.rstrip("/"))
    removed: int | None = None
    for url in sorted(urls):
        try:
            answer = await client.delete(f"{url}/v1/kept", params={"workflow_id": workflow_id}, timeout=5.0)
        except httpx.HTTPError as exc:
            log.info("kept containers of %s at %s: left to its sweep (%s)", workflow_id, url, type(exc).__name__)
            continue
        if answer.status_code == 200:
            try:
                count = answer.json().get("removed")
            except (ValueError, AttributeError):
                count = 0
            removed = (removed or 0) + (count if isinstance(count, int) else 0)
    return removed


async def remove_for_workflow(request: Request) -> Response:
    workflow_id = _workflow_param(request)
    if workflow_id is None:
        raise InvalidInput("workflow_id is required to remove kept containers in bulk", field="workflow_id")
    removed = await remove_everywhere(request, workflow_id)
    if removed is None:
        raise ServiceUnavailable("no pool service answered; each removes them in its sweep once the workflow is gone")
    return JSONResponse({"removed": removed})


async def one(request: Request) -> Response:
    """``/v1/kept/{id}[/logs|/files]``: to the pool service that kept it."""
    path = pools.forwarded_path(request.scope.get("raw_path") or request.url.path.encode())  # 422 for bad paths
    given = path.split("/")[3]
    if not CONTAINER_ID.match(given):
        raise InvalidInput("container_id must be 12 to 64 lowercase hex digits", field="container_id")
    found = owner_of(given, await _owners(request))
    if found is None:  # not indexed (kept before the index existed): the gateway's own pool service
        return await pools.forward_to(request, request.app.state.settings.pool.url)
    container_id, owner = found
    url = (await _registered(request)).get(owner)
    if url is None:
        raise ServiceUnavailable(
            f"kept container {container_id[:12]} belongs to pool service {owner!r}, which is not running;"
            " it is removed when that service returns and its time is up"
        )
    return await pools.forward_to(request, url)


routes = [
    Route("/v1/kept", list_kept, methods=["GET"]),
    Route("/v1/kept", remove_for_workflow, methods=["DELETE"]),
    Route("/v1/kept/{rest:path}", one, methods=["GET", "DELETE"]),
]
