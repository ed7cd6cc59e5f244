"""Scoped tokens, sessions that die with their token, the auth throttle, the Host allow-list and Secure
cookies behind a trusted proxy: the in-process gateway on a real Redis (issue 13, docs/security.md).

Each test performs what was reproduced against the gateway before (one all-powerful token, sessions
surviving a rotation, 300 wrong logins unthrottled, any Host accepted, no Secure cookie behind a TLS
proxy) and checks that it now fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from flowcore.settings import GatewaySettings
from gateway.app import create_app

ADMIN = "admin-token-0123456789abcdef0123"
READ = "read-token-0123456789abcdef01234"
WRITE = "write-token-0123456789abcdef0123"
FIRE = "trigger-token-0123456789abcdef01"
STEP = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def hash_token(token: str) -> str:
    """What FLOW_API_TOKENS holds (``python -m gateway.tokens hash``)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_token(name: str, token: str, scopes: list[str], workflows: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "hash": hash_token(token), "scopes": scopes}
    if workflows is not None:
        doc["workflows"] = workflows
    return doc


def settings_for(redis_url: str, prefix: str, **extra: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "redis": {"url": redis_url, "prefix": prefix},
        "tokens": [SecretStr(ADMIN)],
        "api_tokens": [
            api_token("reader", READ, ["read"]),
            api_token("writer", WRITE, ["write"]),
            api_token("hook", FIRE, ["trigger"]),
        ],
    }
    base.update(extra)
    return GatewaySettings(**base)


@contextlib.asynccontextmanager
async def serve(settings: GatewaySettings, conn: Redis) -> AsyncIterator[Any]:
    app = create_app(settings, redis=conn)
    async with app.router.lifespan_context(app):
        yield app


def client(app: Any, *, peer: str = "127.0.0.1", host: str = "localhost", **kw: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", **kw)


@pytest.fixture
def prefix() -> str:
    return f"sc{uuid.uuid4().hex[:8]}"


async def make_template(api: httpx.AsyncClient, name: str = "tpl") -> str:
    r = await api.post("/v1/workflows", params={"start": "false"}, json={"name": name, "steps": [STEP]},
                       headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def make_trigger(api: httpx.AsyncClient, wf_id: str, event_type: str = "upload") -> str:
    r = await api.post(f"/v1/workflows/{wf_id}/triggers", json={"type": "event", "config": {"event_type": event_type}},
                       headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --- scopes ---------------------------------------------------------------------------------------------


async def test_a_read_token_reads_but_cannot_act(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        wf = await make_template(api)
        tr = await make_trigger(api, wf)
        read = bearer(READ)
        for path in ("/v1/workflows", f"/v1/workflows/{wf}", f"/v1/workflows/{wf}/state", "/v1/triggers",
                     f"/v1/triggers/{tr}", f"/v1/workflows/{wf}/jobs"):
            assert (await api.get(path, headers=read)).status_code == 200, path
        refused = [
            ("POST", "/v1/workflows", {"name": "x", "steps": [STEP]}),
            ("POST", f"/v1/workflows/{wf}/start", None),
            ("POST", f"/v1/workflows/{wf}/cancel", None),
            ("DELETE", f"/v1/workflows/{wf}", None),
            ("POST", f"/v1/workflows/{wf}/retry", None),
            ("PUT", f"/v1/workflows/{wf}/state/k", {"value": 1}),
            ("POST", f"/v1/workflows/{wf}/triggers", {"type": "event", "config": {"event_type": "x"}}),
            ("POST", f"/v1/workflows/{wf}/trigger", None),
            ("POST", f"/v1/triggers/{tr}/fire", None),
            ("POST", f"/v1/triggers/{tr}/disable", None),
            ("DELETE", f"/v1/triggers/{tr}", None),
            ("POST", "/v1/events", {"type": "upload"}),
            ("POST", "/v1/agents", {"image": "x"}),
            ("DELETE", "/v1/pools/some-pool", None),
        ]
        for method, path, body in refused:
            r = await api.request(method, path, json=body, headers=read)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"] == "forbidden" and "'reader'" in r.json()["message"]
            assert READ not in r.text
        # nothing changed
        got = (await api.get(f"/v1/workflows/{wf}", headers=bearer(ADMIN))).json()
        assert got["status"] == "pending"
        assert (await api.get("/v1/workflows", headers=bearer(ADMIN))).json()["total"] == 1
        assert (await api.get(f"/v1/triggers/{tr}", headers=bearer(ADMIN))).json()["enabled"] is True


async def test_a_trigger_token_can_only_fire(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        wf = await make_template(api)
        tr = await make_trigger(api, wf)
        fire = bearer(FIRE)
        r = await api.post(f"/v1/triggers/{tr}/fire", headers=fire)
        assert r.status_code == 201, r.text
        run = r.json()["workflow_id"]
        assert (await api.post(f"/v1/workflows/{wf}/trigger", headers=fire)).status_code == 201
        r = await api.post("/v1/events", json={"type": "upload", "payload": {}}, headers=fire)
        assert r.status_code < 300, r.text
        for method, path in [("GET", "/v1/workflows"), ("GET", f"/v1/workflows/{run}"), ("GET", "/v1/triggers"),
                             ("GET", f"/v1/workflows/{run}/logs"), ("GET", "/v1/events"),
                             ("POST", f"/v1/workflows/{run}/cancel"), ("DELETE", f"/v1/workflows/{wf}"),
                             ("POST", "/v1/workflows"), ("DELETE", f"/v1/triggers/{tr}"), ("GET", "/metrics")]:
            r = await api.request(method, path, headers=fire)
            assert r.status_code == 403, (method, path, r.text)
        # a write token fires and changes, but is no admin (pools and agents start containers)
        assert (await api.post(f"/v1/workflows/{run}/cancel", headers=bearer(WRITE))).status_code in (200, 202)
        assert (await api.post("/v1/agents", json={}, headers=bearer(WRITE))).status_code == 403


async def test_event_ids_are_scoped_to_the_sender(redis_url: str, conn: Redis, prefix: str) -> None:
    """Issue 13: two senders that pick the same event id used to collide: the second started nothing and
    was answered the first one's workflow ids. Now each sender's ids are its own."""
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        wf = await make_template(api)
        await make_trigger(api, wf)
        event = {"type": "upload", "id": "evt-7", "payload": {}}
        mine = (await api.post("/v1/events", json=event, headers=bearer(FIRE))).json()
        theirs = (await api.post("/v1/events", json=event, headers=bearer(WRITE))).json()
        assert mine["started"] == 1 and theirs["started"] == 1 and theirs["duplicate"] is False
        assert mine["fires"][0]["workflow_id"] != theirs["fires"][0]["workflow_id"]
        again = (await api.post("/v1/events", json=event, headers=bearer(FIRE))).json()
        assert again["duplicate"] is True and again["fires"][0]["workflow_id"] == mine["fires"][0]["workflow_id"]
        other_type = await api.post("/v1/events", json={**event, "type": "other"}, headers=bearer(WRITE))
        assert other_type.status_code == 409  # an id reused for another type, by the same sender


async def test_tokens_limited_to_workflows(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        mine, other = await make_template(api, "mine"), await make_template(api, "other")
        tr_mine, tr_other = await make_trigger(api, mine), await make_trigger(api, other)
    limited = settings_for(
        redis_url, prefix,
        api_tokens=[api_token("ci", FIRE, ["trigger"], [mine]), api_token("viewer", READ, ["read"], [mine])],
    )
    async with serve(limited, conn) as app, client(app) as api:
        r = await api.post(f"/v1/triggers/{tr_mine}/fire", headers=bearer(FIRE))
        assert r.status_code == 201, r.text
        run = r.json()["workflow_id"]
        assert (await api.post(f"/v1/workflows/{mine}/trigger", headers=bearer(FIRE))).status_code == 201
        for path in (f"/v1/triggers/{tr_other}/fire", f"/v1/workflows/{other}/trigger", "/v1/triggers/nope/fire"):
            r = await api.post(path, headers=bearer(FIRE))
            assert r.status_code == 403 and "limited to some workflows" in r.json()["message"], (path, r.text)
        # publishing an event may fire any template's triggers: not for a limited token
        assert (await api.post("/v1/events", json={"type": "upload"}, headers=bearer(FIRE))).status_code == 403
        # a limited reader sees its template and the runs started from it, nothing else, and no lists
        view = bearer(READ)
        for path in (f"/v1/workflows/{mine}", f"/v1/workflows/{run}", f"/v1/triggers/{tr_mine}"):
            assert (await api.get(path, headers=view)).status_code == 200, path
        for path in (f"/v1/workflows/{other}", f"/v1/triggers/{tr_other}", "/v1/workflows", "/v1/workflows/a:b"):
            assert (await api.get(path, headers=view)).status_code == 403, path


async def test_admin_and_legacy_tokens_keep_working(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        assert (await api.post("/v1/agents", json={}, headers=bearer(ADMIN))).status_code != 403
        # default-token is accepted only when no token at all is configured
        assert (await api.get("/v1/workflows", headers=bearer("default-token"))).status_code == 401
    async with serve(GatewaySettings(redis={"url": redis_url, "prefix": prefix}), conn) as app, client(app) as api:
        assert (await api.get("/v1/workflows", headers=bearer("default-token"))).status_code == 200


# --- sessions die with their token -----------------------------------------------------------------------


async def login(api: httpx.AsyncClient, token: str) -> tuple[str, str]:
    r = await api.post("/ui/login", content=f"token={token}&next=/ui/", headers=FORM)
    assert r.status_code == 303, r.text
    cookies = {h.split("=", 1)[0]: h.split(";", 1)[0].split("=", 1)[1] for h in r.headers.get_list("set-cookie")}
    return cookies["flow_session"], cookies["flow_csrf"]


def session(session_id: str, csrf: str) -> dict[str, str]:
    return {"cookie": f"flow_session={session_id}; flow_csrf={csrf}", "x-flow-csrf": csrf}


async def test_rotating_the_admin_token_ends_its_dashboard_sessions(redis_url: str, conn: Redis, prefix: str) -> None:
    old, new = "old-admin-token-0123456789abcdef", "new-admin-token-0123456789abcdef"
    first = GatewaySettings(redis={"url": redis_url, "prefix": prefix}, tokens=[SecretStr(old)])
    async with serve(first, conn) as app, client(app) as api:
        sid, csrf = await login(api, old)
        assert (await api.get("/v1/workflows", headers=session(sid, csrf))).status_code == 200
    rotated = GatewaySettings(redis={"url": redis_url, "prefix": prefix}, tokens=[SecretStr(new)])
    async with serve(rotated, conn) as app, client(app) as api:
        r = await api.get("/v1/workflows", headers=session(sid, csrf))
        assert r.status_code == 401 and r.json()["message"] == "session expired; log in again"
        r = await api.get("/ui/workflows", headers=session(sid, csrf))
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        # and the login page does not send the dead session round in circles
        assert (await api.get("/ui/login", headers=session(sid, csrf))).status_code == 200


async def test_removing_or_rehashing_a_scoped_token_ends_its_sessions_only(
    redis_url: str, conn: Redis, prefix: str
) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        reader = await login(api, READ)
        writer = await login(api, WRITE)
        assert (await api.get("/v1/workflows", headers=session(*reader))).status_code == 200
        # a session has its token's scopes: a read session cannot act
        r = await api.post("/v1/workflows", json={"name": "x", "steps": [STEP]}, headers=session(*reader))
        assert r.status_code == 403
        # the session record holds the token's name and a fingerprint, never the token or its hash
        dump = b""
        for key in await conn.keys(f"{prefix}:*"):
            if await conn.type(key) == b"hash":
                dump += b"".join((await conn.hgetall(key)).values())
        assert b"reader" in dump  # the session's record was read
        assert READ.encode() not in dump and hash_token(READ).encode() not in dump
    removed = settings_for(redis_url, prefix, api_tokens=[api_token("writer", WRITE, ["write"])])
    async with serve(removed, conn) as app, client(app) as api:
        assert (await api.get("/v1/workflows", headers=session(*reader))).status_code == 401
        assert (await api.get("/v1/workflows", headers=session(*writer))).status_code == 200
    # the same name with another token (a rotation) ends the writer's session too
    rotated = settings_for(redis_url, prefix, api_tokens=[api_token("writer", "another-token-0123456789abcdefgh", ["write"])])
    async with serve(rotated, conn) as app, client(app) as api:
        assert (await api.get("/v1/workflows", headers=session(*writer))).status_code == 401


async def test_a_trigger_token_cannot_open_a_dashboard_session(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(settings_for(redis_url, prefix), conn) as app, client(app) as api:
        r = await api.post("/ui/login", json={"token": FIRE})
        assert r.status_code == 403 and "read scope" in r.json()["message"] and not r.headers.get_list("set-cookie")


# --- throttling --------------------------------------------------------------------------------------------


async def test_wrong_tokens_are_throttled_per_client(redis_url: str, conn: Redis, prefix: str) -> None:
    settings = settings_for(redis_url, prefix, auth_throttle_burst=5, auth_throttle_refill_s=60)
    async with serve(settings, conn) as app, client(app, peer="203.0.113.7") as attacker, \
            client(app, peer="203.0.113.8") as other:
        for i in range(5):
            r = await attacker.get("/v1/workflows", headers=bearer(f"guess-{i}"))
            assert r.status_code == 401
        r = await attacker.get("/v1/workflows", headers=bearer("guess-5"))
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # a throttled client is not told whether a guess was right
        assert (await attacker.get("/v1/workflows", headers=bearer(ADMIN))).status_code == 429
        assert (await attacker.post("/ui/login", json={"token": ADMIN})).status_code == 429
        # other clients are not affected, and a missing token is no guess
        assert (await other.get("/v1/workflows", headers=bearer(ADMIN))).status_code == 200
        for _ in range(10):
            assert (await other.get("/v1/workflows")).status_code == 401


async def test_wrong_logins_are_throttled(redis_url: str, conn: Redis, prefix: str) -> None:
    settings = settings_for(redis_url, prefix, auth_throttle_burst=5, auth_throttle_refill_s=60)
    async with serve(settings, conn) as app, client(app, peer="198.51.100.4") as browser:
        statuses = [(await browser.post("/ui/login", json={"token": f"wrong-{i}"})).status_code for i in range(300)]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        r = await browser.post("/ui/login", content=f"token={READ}", headers=FORM)
        assert r.status_code == 429 and "retry-after" in r.headers and not r.headers.get_list("set-cookie")
        # a bearer guess from the same client is throttled too
        assert (await browser.get("/v1/workflows", headers=bearer("x"))).status_code == 429


async def test_forwarded_for_is_believed_only_from_trusted_proxies(redis_url: str, conn: Redis, prefix: str) -> None:
    settings = settings_for(redis_url, prefix, auth_throttle_burst=2, auth_throttle_refill_s=60,
                            trusted_proxies=["10.0.0.1"])
    async with serve(settings, conn) as app, client(app, peer="10.0.0.1") as proxy, \
            client(app, peer="192.0.2.50") as direct:
        for _ in range(2):
            assert (await proxy.get("/v1/workflows", headers={**bearer("x"), "x-forwarded-for": "192.0.2.1"})).status_code == 401
        r = await proxy.get("/v1/workflows", headers={**bearer("x"), "x-forwarded-for": "192.0.2.1"})
        assert r.status_code == 429
        # another client behind the same proxy has its own bucket
        r = await proxy.get("/v1/workflows", headers={**bearer(ADMIN), "x-forwarded-for": "192.0.2.2"})
        assert r.status_code == 200
        # a client that is no proxy cannot escape its bucket by claiming other addresses
        for i in range(2):
            assert (await direct.get("/v1/workflows", headers={**bearer("x"), "x-forwarded-for": f"192.0.2.{9 + i}"})).status_code == 401
        r = await direct.get("/v1/workflows", headers={**bearer(ADMIN), "x-forwarded-for": "192.0.2.99"})
        assert r.status_code == 429


# --- hosts -----------------------------------------------------------------------------------------------


async def test_a_foreign_host_is_refused_before_auth(redis_url: str, conn: Redis, prefix: str) -> None:
    # what a page that rebinds its DNS name to 127.0.0.1 sends to a dev stack accepting default-token
    settings = GatewaySettings(redis={"url": redis_url, "prefix": prefix}, allowed_hosts=[])
    async with serve(settings, conn) as app:
        for host in ("rebind.attacker.example:8081", "rebind.attacker.example", "127.0.0.1.attacker.example",
                     "localhost.attacker.example", "gw"):
            async with client(app, host=host) as api:
                r = await api.get("/v1/workflows", headers=bearer("default-token"))
                assert r.status_code == 421 and r.json()["error"] == "host_not_allowed", host
                r = await api.post("/v1/workflows", json={"name": "x", "steps": [STEP]}, headers=bearer("default-token"))
                assert r.status_code == 421, host
                assert (await api.post("/ui/login", json={"token": "default-token"})).status_code == 421
                assert (await api.get("/healthz")).status_code == 200  # probes name the address they hit
        for host in ("localhost:8081", "127.0.0.1:8081", "[::1]:8081", "LOCALHOST", "127.0.0.1"):
            async with client(app, host=host) as api:
                assert (await api.get("/v1/workflows", headers=bearer("default-token"))).status_code == 200, host
        assert (await conn.keys(f"{prefix}:wf:*")) == []


async def test_the_host_allow_list_is_configurable(redis_url: str, conn: Redis, prefix: str) -> None:
    settings = GatewaySettings(redis={"url": redis_url, "prefix": prefix}, host="10.9.8.7",
                               tokens=[SecretStr(ADMIN)], allowed_hosts=[])
    async with serve(settings, conn) as app, client(app, host="10.9.8.7:8081") as api:  # the bind host is served
        assert (await api.get("/v1/workflows", headers=bearer(ADMIN))).status_code == 200
    settings = GatewaySettings(redis={"url": redis_url, "prefix": prefix}, tokens=[SecretStr(ADMIN)],
                               allowed_hosts=["flow.example.com"])
    async with serve(settings, conn) as app:
        async with client(app, host="flow.example.com") as api:
            assert (await api.get("/v1/workflows", headers=bearer(ADMIN))).status_code == 200
        async with client(app, host="localhost") as api:
            assert (await api.get("/v1/workflows", headers=bearer(ADMIN))).status_code == 421


# --- Secure cookies --------------------------------------------------------------------------------------


async def test_cookies_are_secure_behind_a_trusted_tls_proxy_only(redis_url: str, conn: Redis, prefix: str) -> None:
    settings = settings_for(redis_url, prefix, trusted_proxies=["10.0.0.0/24"])
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "192.0.2.1"}

    async def cookies(api: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
        r = await api.post("/ui/login", json={"token": READ}, headers=headers)
        assert r.status_code == 200, r.text
        return r.headers.get_list("set-cookie")

    async with serve(settings, conn) as app:
        async with client(app, peer="10.0.0.1") as proxy:
            set_cookie = await cookies(proxy, https)
            assert len(set_cookie) == 2 and all("secure" in h.lower().split("; ") for h in set_cookie), set_cookie
            assert not any("secure" in h.lower().split("; ") for h in await cookies(proxy, {}))
            plain = await cookies(proxy, {"x-forwarded-proto": "http"})
            assert not any("secure" in h.lower().split("; ") for h in plain)
        async with client(app, peer="192.0.2.77") as direct:  # not a proxy: its header means nothing
            assert not any("secure" in h.lower().split("; ") for h in await cookies(direct, https))
