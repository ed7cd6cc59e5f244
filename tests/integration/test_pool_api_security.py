"""Attacks on the pool API and on pool registrations, each against the real pool service.

The pool service starts containers as the engine's user, so its API is for the stack's own
processes: the pool token, no web page, JSON only, bounded bodies, no env values out; and a pool
service registration only counts when the pool token signed it (docs/security.md).
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from flowcore.errors import ConfigError
from flowcore.keyspace import Keyspace
from flowcore.pool_api import ErrorKind, TaskRequest
from flowcore.poolsigning import sign
from flowcore.settings import GatewaySettings, PoolClientSection, PoolSettings, RedisSection
from gateway.app import create_app as create_gateway
from pool.app import create_app
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    client,
    pool,
    pool_headers,
    pool_settings,
    served,
    service_containers,
    work_dir,
)
from workers.pool_client import PoolClient
from workers.routing import PoolRouter

KEYS = Keyspace("flow")
EVIL = "http://evil.example"


def task_body(image: str, task_id: str | None = None) -> dict[str, Any]:
    return {
        "task_id": task_id or f"t-{uuid.uuid4().hex[:8]}",
        "workflow_id": "wf-sec",
        "step_id": "s",
        "image": image,
        "command": "echo 1",
    }


def agent_body(image: str) -> dict[str, Any]:
    return {"name": f"a{uuid.uuid4().hex[:6]}", "image": image, "command": "sleep 30"}


@pytest.fixture
async def anonymous(pool_settings: PoolSettings, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The same running pool app as ``client``, without the pool token."""
    async with httpx.AsyncClient(transport=client._transport, base_url="http://pool") as c:
        yield c


async def nothing_happened(pool_settings: PoolSettings, docker_host: str, redis_url: str) -> None:
    assert service_containers(docker_host, pool_settings.service_id) == []
    conn = aioredis.from_url(redis_url)
    try:
        assert await conn.hlen(KEYS.agents) == 0
    finally:
        await conn.aclose()


async def test_healthz_is_open_and_says_nothing(anonymous: httpx.AsyncClient, pool_settings: PoolSettings) -> None:
    r = await anonymous.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert pool_settings.service_id not in r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tasks"),
        ("DELETE", "/v1/tasks/some-task"),
        ("GET", "/v1/pools"),
        ("GET", "/v1/pools/some-key"),
        ("POST", "/v1/pools/some-key/drain"),
        ("GET", "/v1/agents"),
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents/agent-1/logs"),
        ("DELETE", "/v1/agents/agent-1"),
        ("GET", "/nope"),
    ],
)
async def test_every_route_but_healthz_needs_the_pool_token(
    anonymous: httpx.AsyncClient, pool_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str,
    method: str, path: str,
) -> None:
    body = task_body(base_image) if path == "/v1/tasks" else agent_body(base_image)
    token = pool_settings.pool_token.get_secret_value()
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
        {"Authorization": "Bearer default-token"},  # the gateway's dev user token is not a pool token
    ]
    for headers in attempts:
        json_body = body if method == "POST" else None
        r = await anonymous.request(method, path, json=json_body, headers=headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        assert token not in r.text
    await nothing_happened(pool_settings, docker_host, redis_url)


async def test_a_web_page_cannot_start_a_container(
    anonymous: httpx.AsyncClient, client: httpx.AsyncClient, pool_settings: PoolSettings, base_image: str,
    docker_host: str, redis_url: str,
) -> None:
    """What any web page can send to 127.0.0.1 without a CORS preflight: a text/plain POST with its Origin."""
    for path, body in (("/v1/tasks", task_body(base_image)), ("/v1/agents", agent_body(base_image))):
        simple = {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8"}
        r = await anonymous.post(path, content=json.dumps(body), headers=simple)
        assert r.status_code == 403 and r.json()["error"] == "cross_origin", r.text
        # Not even with the token (a page never has it) and a JSON body: no browser request is served.
        r = await client.post(path, json=body, headers={"Origin": EVIL})
        assert r.status_code == 403, r.text
        r = await client.get("/v1/agents", headers={"Origin": "null"})
        assert r.status_code == 403, r.text
    await nothing_happened(pool_settings, docker_host, redis_url)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonx", None],
)
async def test_only_json_bodies(
    client: httpx.AsyncClient, pool_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str,
    content_type: str | None,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for path, body in (("/v1/tasks", task_body(base_image)), ("/v1/agents", agent_body(base_image))):
        # httpx adds no Content-Type for raw bytes: the None case is a JSON body without a type.
        r = await client.post(path, content=json.dumps(body).encode(), headers=headers)
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", r.text
    await nothing_happened(pool_settings, docker_host, redis_url)


async def test_oversized_bodies_are_413(
    client: httpx.AsyncClient, pool_settings: PoolSettings, docker_host: str, redis_url: str
) -> None:
    huge = b'{"task_id": "' + b"x" * pool_settings.max_body_bytes + b'"}'
    r = await client.post("/v1/tasks", content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert str(pool_settings.max_body_bytes) in r.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams in
        yield b'{"task_id": "'
        for _ in range(pool_settings.max_body_bytes // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    r = await client.post("/v1/agents", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text
    await nothing_happened(pool_settings, docker_host, redis_url)


async def test_agents_never_give_their_env_values_back(
    client: httpx.AsyncClient, base_image: str, redis_url: str
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    spec = {
        "name": "holder",
        "image": base_image,
        "env": {"API_SECRET": secret, "PLAIN": "plain-value-xyz"},
        "command": 'echo "seen $API_SECRET"; sleep 30',
    }
    deployed = await client.post("/v1/agents", json=spec)
    assert deployed.status_code == 201, deployed.text
    agent_id = deployed.json()["id"]
    try:
        answers = [
            deployed,
            await client.get("/v1/agents"),
            await client.get(f"/v1/agents/{agent_id}"),
            await client.post(f"/v1/agents/{agent_id}/stop"),
            await client.post(f"/v1/agents/{agent_id}/start"),
        ]
        for answer in answers:
            assert secret not in answer.text and "plain-value-xyz" not in answer.text, answer.text
        assert set(answers[2].json()["env"]) == {"API_SECRET", "PLAIN"}  # the names stay visible
        conn = aioredis.from_url(redis_url)
        try:
            stored = json.dumps({k.decode(): v.decode() for k, v in (await conn.hgetall(KEYS.agents)).items()})
        finally:
            await conn.aclose()
        assert secret not in stored and "API_SECRET" in stored
        for _ in range(100):  # the container itself got the value
            if f"seen {secret}" in (await client.get(f"/v1/agents/{agent_id}/logs")).text:
                break
            await asyncio.sleep(0.1)
        assert f"seen {secret}" in (await client.get(f"/v1/agents/{agent_id}/logs")).text
    finally:
        assert (await client.delete(f"/v1/agents/{agent_id}")).status_code == 204


async def test_the_token_holder_is_served(client: httpx.AsyncClient, base_image: str) -> None:
    """The control case: the same kind of request with the token, JSON and no Origin runs."""
    r = await client.post("/v1/tasks", json=task_body(base_image))
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert (await client.post("/v1/pools/unknown/drain")).status_code == 404  # bodiless POST, no type


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_pool_service_off_loopback_refuses_to_start_without_a_token(
    pool_settings: PoolSettings, host: str
) -> None:
    open_bind = pool_settings.model_copy(update={"host": host, "pool_token": SecretStr("")})
    with pytest.raises(ConfigError, match="FLOW_POOL_TOKEN"):
        create_app(open_bind)
    create_app(open_bind.model_copy(update={"pool_token": SecretStr("configured")}))  # builds, binds nothing


# ---- forged registrations -----------------------------------------------------------------------------


def forged(service_id: str, url: str, *, key: str | None, now_ms: int) -> str:
    """A registration that advertises everything a router likes: idle containers, no load."""
    body = {"id": service_id, "url": url, "capacity": 1000, "busy": 0, "warm": {}}
    return json.dumps(sign(body, key, now_ms) if key else body)


async def test_a_forged_registration_is_never_chosen(
    pool: PoolServices, pool_settings: PoolSettings, redis_url: str, base_image: str
) -> None:
    token = pool_settings.pool_token.get_secret_value()
    genuine_url = f"http://{pool_settings.host}:{pool_settings.port}"
    conn = aioredis.from_url(redis_url)
    try:
        for _ in range(100):  # the real service's signed registration
            if await conn.hexists(KEYS.pool_services, pool_settings.service_id):
                break
            await asyncio.sleep(0.05)
        raw = await conn.hget(KEYS.pool_services, pool_settings.service_id)
        assert raw is not None and "sig" in json.loads(raw)
        now_ms = int(time.time() * 1000)
        attacker = "http://127.0.0.1:6666"
        fakes = {
            "evil-unsigned": forged("evil-unsigned", attacker, key=None, now_ms=now_ms),
            "evil-wrong-key": forged("evil-wrong-key", attacker, key="guessed-token", now_ms=now_ms),
            # The genuine registration, filed under another id as it is, and with its url rewritten.
            "evil-copy": raw,
            "evil-rewritten": json.dumps({**json.loads(raw), "url": attacker}),
        }
        await conn.hset(KEYS.pool_services, mapping=fakes)
        await conn.zadd(KEYS.pool_heartbeats, dict.fromkeys(fakes, now_ms + 60_000))

        task = TaskRequest.model_validate(task_body(base_image))
        router = PoolRouter(conn, KEYS, "http://fallback.invalid", token=token)
        for _ in range(20):
            assert await router.choose(task) == genuine_url
            router._cache = None  # re-read Redis every time
        assert sum(router.refused.values()) >= 4 * 20
        assert set(router.refused) == {
            "unsigned", "bad signature", f"signed for another service id ({pool_settings.service_id!r})"
        }

        # Without the genuine service, the forgeries still never win: the configured URL is used.
        await conn.hdel(KEYS.pool_services, pool_settings.service_id)
        router._cache = None
        assert await router.choose(task) == "http://fallback.invalid"
        # A router without the pool token trusts no registration at all.
        blind = PoolRouter(conn, KEYS, "http://fallback.invalid")
        assert await blind.choose(task) == "http://fallback.invalid"
    finally:
        await conn.aclose()


# ---- the stack's own clients carry the token ----------------------------------------------------------


@pytest.fixture
def gateway_settings(pool_settings: PoolSettings, redis_url: str) -> Iterator[GatewaySettings]:
    yield GatewaySettings(
        redis=RedisSection(url=redis_url),
        tokens=[SecretStr("user-token")],
        pool_token=pool_settings.pool_token,
    )


async def test_a_task_too_large_to_send_fails_as_an_input_error(pool_settings: PoolSettings, base_image: str) -> None:
    """The pool API's body limit met by a step's input: a clear, non-retried input_error (was 'runtime')."""
    small = pool_settings.model_copy(update={"max_body_bytes": 64 * 1024})
    async with served(small) as url:
        worker = PoolClient(token=small.pool_token.get_secret_value())
        try:
            task = TaskRequest.model_validate({**task_body(base_image), "input": {"blob": "x" * 100_000}})
            result = await worker.execute(url, task)
        finally:
            await worker.aclose()
    assert not result.ok and result.error is not None
    assert result.error.kind == ErrorKind.INPUT and not result.error.retriable
    assert "pass large data by reference" in result.error.message and "bytes of JSON" in result.error.message


async def test_workers_and_gateway_send_the_pool_token(
    pool_settings: PoolSettings, gateway_settings: GatewaySettings, base_image: str
) -> None:
    async with served(pool_settings) as url:
        token = pool_settings.pool_token.get_secret_value()
        worker = PoolClient(token=token)
        tokenless = PoolClient()
        try:
            task = TaskRequest.model_validate(task_body(base_image))
            result = await worker.execute(url, task)
            assert result.ok, result
            refused = await tokenless.execute(url, TaskRequest.model_validate(task_body(base_image)))
            assert not refused.ok and refused.error is not None and "401" in refused.error.message
        finally:
            await worker.aclose()
            await tokenless.aclose()

        for pool_token, expected in ((pool_settings.pool_token, 200), (SecretStr("not-the-pool-token"), 401)):
            settings = gateway_settings.model_copy(
                update={"pool": PoolClientSection(url=url), "pool_token": pool_token}
            )
            gateway = create_gateway(settings)
            async with (
                gateway.router.lifespan_context(gateway),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as api,
            ):
                # A browser's request to the gateway carries Origin and cookies: the gateway answers it
                # (its own auth decides), the pool only ever sees the gateway with the pool token.
                r = await api.get(
                    "/v1/pools",
                    headers={"Authorization": "Bearer user-token", "Origin": "http://127.0.0.1:8081",
                             "Cookie": "flow_session=x", "Sec-Fetch-Site": "same-origin"},
                )
                assert r.status_code == expected, r.text
                if expected == 200:
                    assert r.json()["service_id"] == pool_settings.service_id
