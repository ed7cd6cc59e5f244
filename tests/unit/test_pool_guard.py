"""The pool API's door (pool.guard.PoolGuard) in front of a small app, without an engine or Redis.

The same refusals are checked through the real pool app in tests/integration/test_pool_api_security.py;
here every rule runs in milliseconds, with the request that passes each one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from flowcore.errors import FlowError
from pool.app import flow_error
from pool.guard import PoolGuard

TOKEN = "test-pool-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY_BYTES = 64


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """Composed as pool.app.create_app does: the guard as middleware, FlowError answered by its handler."""
    app = Starlette(
        routes=[Route("/v1/tasks", echo, methods=["POST", "GET"]), Route("/healthz", healthz)],
        exception_handlers={FlowError: flow_error},
        middleware=[Middleware(PoolGuard, token=TOKEN, max_body_bytes=MAX_BODY_BYTES)],
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pool") as c:
        yield c


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


CASES = [
    # (method, path, headers, body, status, error)
    ("GET", "/healthz", {}, None, 200, None),
    ("GET", "/v1/tasks", {}, None, 401, "unauthorized"),
    ("GET", "/v1/tasks", {"Authorization": "Bearer wrong"}, None, 401, "unauthorized"),
    ("GET", "/v1/tasks", {"Authorization": f"Basic {TOKEN}"}, None, 401, "unauthorized"),
    ("GET", "/v1/tasks", {**AUTH, "Origin": "http://evil.example"}, None, 403, "cross_origin"),
    ("GET", "/healthz", {"Origin": "http://evil.example"}, None, 403, "cross_origin"),
    ("POST", "/v1/tasks", {**AUTH, "Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
    ("POST", "/v1/tasks", {**AUTH, "Content-Type": "application/json"}, b"x" * 65, 413, "body_too_large"),
    ("POST", "/v1/tasks", {**AUTH, "Content-Type": "Application/JSON; charset=utf-8"}, b"{}", 200, None),
    ("POST", "/v1/tasks", AUTH, None, 200, None),  # a bodiless POST may omit Content-Type
    ("GET", "/v1/tasks", {"authorization": f"bearer {TOKEN}"}, None, 200, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "error"), CASES)
async def test_each_rule_of_the_door(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes | None, status: int,
    error: str | None,
) -> None:
    r = await client.request(method, path, headers=headers, content=body)
    assert r.status_code == status, r.text
    if error is not None:
        assert r.json()["error"] == error and r.json()["message"]
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


async def test_a_streamed_body_is_cut_at_the_cap(client: httpx.AsyncClient) -> None:
    """No Content-Length to refuse by: the cap holds while the body streams in."""
    headers = {**AUTH, "Content-Type": "application/json"}
    r = await client.post("/v1/tasks", headers=headers, content=chunks(b"x" * 40, b"x" * 40))
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    ok = await client.post("/v1/tasks", headers=headers, content=chunks(b"x" * 30, b"x" * 30))
    assert ok.status_code == 200 and ok.json() == {"bytes": 60}


async def test_the_door_refuses_a_streamed_body_an_app_does_not_handle() -> None:
    """A bare ASGI app that lets the cap's error escape: the guard answers 413 itself."""

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = PoolGuard(bare, token=TOKEN, max_body_bytes=MAX_BODY_BYTES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://pool") as c:
        headers = {**AUTH, "Content-Type": "application/json"}
        r = await c.post("/v1/tasks", headers=headers, content=chunks(b"x" * 40, b"x" * 40))
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
        assert (await c.post("/v1/tasks", headers=headers, content=chunks(b"x" * 10))).status_code == 204


def test_the_door_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        PoolGuard(Starlette(), token="", max_body_bytes=MAX_BODY_BYTES)
