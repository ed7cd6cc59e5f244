"""The dashboard's auth on a real Redis, in process: login, the session cookie, CSRF, logout, masking,
and the retry route its button calls."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from flowcore.settings import GatewaySettings, RedisSection
from gateway.dashboard.masking import MASK
from gateway.dashboard.sessions import SESSION_TTL_S
from tests.gateway_client import gateway_client

TOKEN = "dashboard-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
async def gw(redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Redis]]:
    settings = GatewaySettings(redis=RedisSection(url=redis_url), tokens=[SecretStr(TOKEN)])
    conn = Redis.from_url(redis_url)
    async with gateway_client(settings, conn, headers={}, base_url="http://gw.test") as client:
        yield client, conn
    await conn.aclose()


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the whole header, attributes included)."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


async def login(client: httpx.AsyncClient, next_path: str = "/ui/") -> tuple[str, str]:
    """Log in through the form; returns (session cookie value, csrf token)."""
    r = await client.post("/ui/login", content=f"token={TOKEN}&next={next_path}", headers=FORM)
    assert r.status_code == 303, r.text
    cookies = set_cookies(r)
    return cookie_value(cookies["flow_session"]), cookie_value(cookies["flow_csrf"])


def session_headers(session: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"cookie": f"flow_session={session}; flow_csrf={csrf or ''}"}
    if csrf is not None:
        headers["x-flow-csrf"] = csrf
    return headers


async def create(client: httpx.AsyncClient, body: dict[str, Any], start: bool = True) -> dict[str, Any]:
    r = await client.post("/v1/workflows", params={"start": str(start).lower()}, json=body, headers=BEARER)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_pages_redirect_to_the_public_login_page(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, _ = gw
    r = await client.get("/ui/workflows/wf-1")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/workflows/wf-1"
    r = await client.get("/ui/login", params={"next": "/ui/workflows/wf-1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/ui/login"' in r.text and 'value="/ui/workflows/wf-1"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    asset = await client.get("/ui/static/js/core.js")
    assert asset.status_code == 200 and "X-Flow-CSRF" in asset.text
    assert asset.headers["x-content-type-options"] == "nosniff"
    # the API itself still answers 401 (JSON), not a redirect
    r = await client.get("/v1/workflows")
    assert r.status_code == 401 and r.json()["message"] == "missing bearer token"


async def test_login_sets_an_opaque_httponly_strict_cookie(
    gw: tuple[httpx.AsyncClient, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    client, redis = gw
    caplog.set_level(logging.DEBUG)
    r = await client.post("/ui/login", content=f"token={TOKEN}&next=/ui/pools", headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == "/ui/pools"
    cookies = set_cookies(r)
    session = cookies["flow_session"]
    attrs = [a.strip().lower() for a in session.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert f"max-age={SESSION_TTL_S}" in attrs
    csrf_attrs = [a.strip().lower() for a in cookies["flow_csrf"].split(";")]
    assert "httponly" not in csrf_attrs and "samesite=strict" in csrf_attrs
    session_id = cookie_value(session)
    assert TOKEN not in str(r.headers) and TOKEN not in r.text
    assert len(session_id) >= 40 and session_id != cookie_value(cookies["flow_csrf"])
    # Redis holds a digest of the id, with a TTL; neither the id nor the token is stored
    key = f"flow:ui:session:{hashlib.sha256(session_id.encode()).hexdigest()}"
    assert 0 < await redis.ttl(key) <= SESSION_TTL_S
    for stored in await redis.keys("*"):
        assert session_id.encode() not in stored
        if stored.startswith(b"flow:ui:session:"):
            values = await redis.hgetall(stored)
            assert all(TOKEN.encode() not in v and session_id.encode() not in v for v in values.values())
    assert not [rec for rec in caplog.records if TOKEN in rec.getMessage()]
    # an already logged-in browser skips the form
    r = await client.get("/ui/login", headers=session_headers(session_id))
    assert r.status_code == 303 and r.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        ("token=wrong-token&next=/ui/", FORM["content-type"], 401, "invalid token"),
        ("token=&next=/ui/", FORM["content-type"], 422, "token is required"),
        ('{"token": "wrong-token"}', "application/json", 401, "invalid token"),
        ("{}", "application/json", 422, "token is required"),
        ("[1]", "application/json", 400, "JSON object"),
    ],
)
async def test_bad_login_is_refused_with_a_message_and_no_cookie(
    gw: tuple[httpx.AsyncClient, Redis], body: str, ctype: str, status: int, needle: str
) -> None:
    client, redis = gw
    r = await client.post("/ui/login", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert needle in r.text
    assert "set-cookie" not in r.headers
    if ctype == "application/json":
        assert r.json()["message"].startswith(needle) or needle in r.json()["message"]
    else:
        assert 'id="login-error"' in r.text  # the form again, with the message
    assert not await redis.keys("flow:ui:session:*")


async def test_cross_site_login_and_foreign_next_are_refused(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, _ = gw
    r = await client.post("/ui/login", content=f"token={TOKEN}", headers={**FORM, "origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    for target in ("https://evil.example/ui/", "//evil.example/ui/", "/v1/workflows", "/ui/login"):
        r = await client.post("/ui/login", content=f"token={TOKEN}&next={target}", headers={**FORM, "origin": "http://gw.test"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/", target


async def test_session_cookie_authenticates_reads_and_csrf_guards_changes(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, _ = gw
    wf = await create(client, {"name": "csrf", "steps": [{"id": "a", **STEP}]})
    session, csrf = await login(client)
    r = await client.get("/v1/workflows", headers=session_headers(session))
    assert r.status_code == 200 and r.json()["total"] == 1
    shell = await client.get("/ui/workflows/" + wf["id"], headers=session_headers(session))
    assert shell.status_code == 200 and 'src="/ui/static/js/main.js"' in shell.text
    cancel = f"/v1/workflows/{wf['id']}/cancel"
    r = await client.post(cancel, headers=session_headers(session))  # no X-Flow-CSRF
    assert r.status_code == 403 and r.json()["error"] == "csrf_failed" and "X-Flow-CSRF" in r.json()["message"]
    r = await client.post(cancel, headers={**session_headers(session), "x-flow-csrf": "forged"})
    assert r.status_code == 403
    other_session, other_csrf = await login(client)
    r = await client.post(cancel, headers={**session_headers(session), "x-flow-csrf": other_csrf})
    assert r.status_code == 403, "a CSRF token belongs to its own session"
    assert (await client.get(f"/v1/workflows/{wf['id']}", headers=BEARER)).json()["status"] == "running"
    r = await client.post(cancel, headers=session_headers(session, csrf))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    # bearer clients are unchanged: no CSRF header needed
    wf2 = await create(client, {"name": "bearer", "steps": [{"id": "a", **STEP}]})
    assert (await client.post(f"/v1/workflows/{wf2['id']}/cancel", headers=BEARER)).status_code == 202
    # an unknown or forged cookie is not a session
    r = await client.get("/v1/workflows", headers=session_headers("not-a-session"))
    assert r.status_code == 401 and "log in again" in r.json()["message"]
    r = await client.get("/ui/", headers=session_headers("not-a-session"))
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert other_session != session


async def test_logout_ends_the_session(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, redis = gw
    session, csrf = await login(client)
    r = await client.post("/ui/logout", headers=session_headers(session))
    assert r.status_code == 403, "a live session needs its CSRF token to log out"
    r = await client.post("/ui/logout", headers=session_headers(session, csrf))
    assert r.status_code == 204
    cleared = set_cookies(r)
    assert 'flow_session=""' in cleared["flow_session"] or "max-age=0" in cleared["flow_session"].lower()
    assert not await redis.keys("flow:ui:session:*")
    assert (await client.get("/v1/workflows", headers=session_headers(session))).status_code == 401
    # logging out without a session just clears the cookies and goes to the login page
    r = await client.post("/ui/logout")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"


async def test_env_secrets_are_masked_for_sessions_only(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, _ = gw
    env = {"API_TOKEN": "tok-hidden-1", "DB_PASSWORD": "pw-hidden-2", "AWS_SECRET_ACCESS_KEY": "k-hidden-3",
           "LOG_LEVEL": "debug", "EMPTY_KEY": ""}
    wf = await create(client, {"name": "masked", "steps": [{"id": "a", **STEP, "env": env}]}, start=False)
    session, _ = await login(client)
    r = await client.get(f"/v1/workflows/{wf['id']}", headers=session_headers(session))
    assert r.status_code == 200
    assert "hidden" not in r.text
    masked_env = r.json()["definition"]["steps"][0]["env"]
    assert masked_env == {"API_TOKEN": MASK, "DB_PASSWORD": MASK, "AWS_SECRET_ACCESS_KEY": MASK,
                          "LOG_LEVEL": "debug", "EMPTY_KEY": ""}
    assert int(r.headers["content-length"]) == len(r.content)
    raw = await client.get(f"/v1/workflows/{wf['id']}", headers=BEARER)
    assert raw.json()["definition"]["steps"][0]["env"] == env, "API clients with the token see their own definition"


async def test_retry_starts_a_new_workflow_with_the_same_definition_and_input(gw: tuple[httpx.AsyncClient, Redis]) -> None:
    client, _ = gw
    wf = await create(client, {"name": "again", "input": {"n": 3}, "steps": [{"id": "a", **STEP}]})
    r = await client.post(f"/v1/workflows/{wf['id']}/retry", headers=BEARER)
    assert r.status_code == 409 and "running" in r.json()["message"] and r.json()["field"] == "workflow_id"
    assert (await client.post(f"/v1/workflows/{wf['id']}/cancel", headers=BEARER)).status_code == 202
    r = await client.post(f"/v1/workflows/{wf['id']}/retry", headers=BEARER)
    assert r.status_code == 201, r.text
    new_id = r.json()["workflow_id"]
    assert new_id != wf["id"] and r.headers["location"] == f"/v1/workflows/{new_id}"
    new = (await client.get(f"/v1/workflows/{new_id}", headers=BEARER)).json()
    assert new["status"] == "running" and new["name"] == "again" and new["input"] == {"n": 3}
    assert new["origin"]["kind"] == "retry" and new["origin"]["template_id"] == wf["id"]
    assert new["definition"]["steps"] == wf["definition"]["steps"]
    old = (await client.get(f"/v1/workflows/{wf['id']}", headers=BEARER)).json()
    assert old["status"] == "cancelled"
    r = await client.post("/v1/workflows/wf-does-not-exist/retry", headers=BEARER)
    assert r.status_code == 404 and "not found" in r.json()["message"]
    # the dashboard's button: session cookie plus CSRF header
    session, csrf = await login(client)
    assert (await client.post(f"/v1/workflows/{new_id}/cancel", headers=session_headers(session, csrf))).status_code == 202
    r = await client.post(f"/v1/workflows/{new_id}/retry", headers=session_headers(session, csrf))
    assert r.status_code == 201
    doc = (await client.get("/v1/openapi.json")).json()
    assert "post" in doc["paths"]["/v1/workflows/{workflow_id}/retry"]
    assert not [p for p in doc["paths"] if p.startswith("/ui")]
