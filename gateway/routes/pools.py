"""``/v1/pools`` and ``/v1/agents``: the pool service's user-facing endpoints, behind the gateway's auth.

The gateway forwards these to the pool service (the only process that talks to Docker) and streams
the answer back, so followed agent logs arrive line by line. An unreachable pool service is a 503
with a body saying so; the pool's own 4xx answers pass through unchanged.

Only the pool's user-facing routes are reachable (:func:`forwarded_path`): the path is rebuilt from
segments that are each a fixed name or an id (:mod:`flowcore.ids`), so ``..``, ``%2e%2e``, ``//``
and encoded slashes are refused (422) and nothing else of the pool service (``/v1/tasks``) can be
reached through the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flowcore.errors import InvalidInput, ServiceUnavailable
from flowcore.ids import is_valid_id

log = logging.getLogger(__name__)

# Resource -> the actions that may follow ``/v1/<resource>/<id>``.
_ACTIONS = {
    "pools": frozenset({"resize", "drain"}),
    "agents": frozenset({"start", "stop", "logs"}),
    "kept": frozenset({"logs", "files"}),  # containers kept by a cleanup policy (ADR 014)
}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization"}
# The caller's, not the pool's: the pool service sees the gateway only, with the pool token (the
# pool_http client's default header), and refuses any request carrying an Origin.
CALLER_HEADERS = {"origin", "referer", "cookie", "x-flow-csrf", "proxy-authorization"}


def forwarded_path(raw_path: bytes) -> str:
    """The pool path for the request's raw path, rebuilt from checked segments; 422 for anything else.

    Allowed: ``/v1/pools``, ``/v1/pools/<key>``, ``/v1/pools/<key>/resize|drain``, ``/v1/agents``,
    ``/v1/agents/<id>``, ``/v1/agents/<id>/start|stop|logs``, ``/v1/kept``, ``/v1/kept/<id>``,
    ``/v1/kept/<id>/logs|files``. The raw path is used because the
    router sees it percent-decoded (``%2F`` would already be a ``/``); no valid path needs a ``%``.
    """
    try:
        path = raw_path.split(b"?", 1)[0].decode("ascii")  # some servers leave the query on raw_path
    except UnicodeDecodeError:
        path = ""
    parts = path.split("/")
    ok = (
        bool(path)
        and "%" not in path
        and "\\" not in path
        and len(parts) in (3, 4, 5)
        and parts[0] == ""
        and parts[1] == "v1"
        and parts[2] in _ACTIONS
        and (len(parts) < 4 or is_valid_id(parts[3]))
        and (len(parts) < 5 or parts[4] in _ACTIONS[parts[2]])
    )
    if not ok:
        shown = path if len(path) <= 120 else path[:117] + "..."
        raise InvalidInput(f"no pool route {shown!r}: forwarded paths are /v1/pools/<key>[/resize|/drain] "
                           "/v1/agents/<id>[/start|/stop|/logs] and /v1/kept/<id>[/logs|/files]", field="path")
    return "/".join(parts)


async def forward(request: Request) -> Response:
    """Forward to the pool service (pools: stats, resize, drain; agents: deploy, start, stop, logs...)."""
    return await forward_to(request, request.app.state.settings.pool.url)


async def forward_to(request: Request, base: str) -> Response:
    """Forward to the pool service at ``base`` (the gateway's own, or the owner of a kept container)."""
    client: httpx.AsyncClient = request.app.state.pool_http
    url = f"{base.rstrip('/')}{forwarded_path(request.scope.get('raw_path') or request.url.path.encode())}"
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in HOP_HEADERS and k.lower() not in CALLER_HEADERS and not k.lower().startswith("sec-fetch-")
    }
    body = await request.body()
    outgoing = client.build_request(
        request.method, url, params=request.query_params, headers=headers, content=body, timeout=None
    )
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"the pool service at {base} is unreachable: {type(exc).__name__}") from exc

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return

    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
    return StreamingResponse(
        relay(), status_code=upstream.status_code, headers=out_headers, background=BackgroundTask(upstream.aclose)
    )


METHODS = ["GET", "POST", "PUT", "DELETE"]
routes = [
    Route("/v1/pools", forward, methods=["GET"]),
    Route("/v1/pools/{rest:path}", forward, methods=METHODS),
    Route("/v1/agents", forward, methods=["GET", "POST"]),
    Route("/v1/agents/{rest:path}", forward, methods=METHODS),
]  # /v1/kept: gateway.routes.kept (every pool service's kept containers)


async def forget_kept(request: Request, workflow_id: str) -> None:
    """A deleted workflow's kept containers go now, on every running pool service (best effort: one that
    is down removes them in its sweep once it sees the workflow record gone; ADR 014)."""
    from gateway.routes.kept import remove_everywhere  # that module forwards through this one

    try:
        await remove_everywhere(request, workflow_id)
    except RedisError as exc:  # the registrations are unreadable: the sweeps will do it
        log.info("kept containers of %s: the pool services will sweep them (%s)", workflow_id, type(exc).__name__)
