"""``/v1/pools`` and ``/v1/agents``: the pool service's user-facing endpoints, behind the gateway's auth.

The gateway forwards these to the pool service (the only process that talks to Docker) and streams
the answer back, so followed agent logs arrive line by line. An unreachable pool service is a 503
with a body saying so; the pool's own 4xx answers pass through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flowcore.errors import ServiceUnavailable

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization"}


async def forward(request: Request) -> Response:
    """Forward to the pool service (pools: stats, resize, drain; agents: deploy, start, stop, logs...)."""
    client: httpx.AsyncClient = request.app.state.pool_http
    base: str = request.app.state.settings.pool.url
    url = f"{base}{request.url.path}"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
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
]
