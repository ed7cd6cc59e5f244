"""Every process works against a Redis that requires a password or an ACL user, and fails clearly without.

A redis-server of this module alone (``--requirepass`` plus an ACL user), on a free loopback port.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import create_pool
from pydantic import SecretStr
from redis.exceptions import AuthenticationError

from flowcore import redisconn
from flowcore.errors import ConfigError
from flowcore.keyspace import Keyspace
from flowcore.pool_api import TaskRequest
from flowcore.poolsigning import verify
from flowcore.settings import GatewaySettings, PoolSettings, RedisSection
from flowcore.tracing_store import RedisSpanExporter
from gateway.app import create_app as create_gateway
from pool.services import PoolServices
from tests.pool_fixtures import pool_settings, work_dir  # noqa: F401
from workers.routing import PoolRouter

PASSWORD = f"requirepass-{uuid.uuid4().hex}"
ACL_USER = "flowsvc"
ACL_PASSWORD = f"acl-{uuid.uuid4().hex}"
KEYS = Keyspace("flow")


@dataclass(frozen=True)
class SecuredRedis:
    url: str  # no credentials in it


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make bootstrap`")
    data_dir = tmp_path_factory.mktemp("redis-auth")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log_path = data_dir / "redis.log"
    proc = subprocess.Popen(
        [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--logfile", str(log_path),
            "--requirepass", PASSWORD,
            "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = Path(log_path).read_text(errors="replace")[-2000:] if log_path.exists() else ""
                proc.kill()
                pytest.fail(f"redis-server with requirepass on port {port} did not answer:\n{log}")
            time.sleep(0.05)
        yield SecuredRedis(f"redis://127.0.0.1:{port}/0")
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


CREDENTIALS: dict[str, dict[str, Any]] = {
    "requirepass": {"password": SecretStr(PASSWORD)},
    "acl-user": {"username": ACL_USER, "password": SecretStr(ACL_PASSWORD)},
}


@pytest.fixture(params=sorted(CREDENTIALS))
def section(request: pytest.FixtureRequest, secured_redis: SecuredRedis) -> Iterator[RedisSection]:
    with redis.Redis.from_url(secured_redis.url, password=PASSWORD) as admin:
        admin.flushall()
    yield RedisSection(url=secured_redis.url, prefix="flow", **CREDENTIALS[request.param])


def without_password(section: RedisSection) -> RedisSection:
    return section.model_copy(update={"password": None})


def wrong_password(section: RedisSection) -> RedisSection:
    return section.model_copy(update={"password": SecretStr("wrong-password-123")})


async def test_pool_registration_and_worker_routing_with_a_password(
    section: RedisSection, pool_settings: PoolSettings, base_image: str
) -> None:
    settings = pool_settings.model_copy(update={"redis": section})
    services = await PoolServices.open(settings)
    conn = redisconn.connect(section)
    try:
        token = settings.pool_token.get_secret_value()
        raw = None
        for _ in range(100):
            raw = await conn.hget(KEYS.pool_services, settings.service_id)
            if raw is not None:
                break
            await asyncio.sleep(0.05)
        assert raw is not None
        reg = json.loads(raw)
        assert verify(reg, token, service_id=settings.service_id, now_ms=time.time() * 1000, max_age_ms=5000) is None
        router = PoolRouter(conn, KEYS, "http://fallback.invalid", token=token)
        task = TaskRequest(task_id="t", workflow_id="w", step_id="s", image=base_image, command="true")
        assert await router.choose(task) == reg["url"]
    finally:
        await conn.aclose()
        await services.close()


@pytest.mark.parametrize("spoil", [without_password, wrong_password])
async def test_a_pool_service_without_the_right_password_stops_with_a_clear_error(
    section: RedisSection,
    pool_settings: PoolSettings,
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[RedisSection], RedisSection],
) -> None:
    bad = spoil(section)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError, match="FLOW_REDIS__PASSWORD") as raised:
        await PoolServices.open(pool_settings.model_copy(update={"redis": bad}))
    for secret in (PASSWORD, ACL_PASSWORD, "wrong-password-123"):
        assert secret not in str(raised.value) and secret not in caplog.text


async def test_the_gateway_with_a_password(section: RedisSection, caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    settings = GatewaySettings(redis=section, tokens=[SecretStr("user-token")], pool_token=SecretStr("p"))
    app = create_gateway(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as api,
    ):
        health = await api.get("/healthz")
        assert health.status_code == 200 and health.json()["redis"] == "ok"
        listed = await api.get("/v1/workflows", headers={"Authorization": "Bearer user-token"})
        assert listed.status_code == 200, listed.text

    caplog.set_level(logging.DEBUG)
    for bad in (without_password(section), wrong_password(section)):
        app = create_gateway(settings.model_copy(update={"redis": bad}))
        with pytest.raises(ConfigError, match="refused this process's credentials"):
            async with app.router.lifespan_context(app):
                pass
    for secret in (PASSWORD, ACL_PASSWORD, "wrong-password-123"):
        assert secret not in caplog.text


async def test_the_worker_queue_and_the_span_store_with_a_password(section: RedisSection) -> None:
    arq_redis = await create_pool(redisconn.arq_settings(section))
    try:
        assert await arq_redis.ping()
    finally:
        await arq_redis.aclose()
    arq_settings = redisconn.arq_settings(without_password(section))
    arq_settings.conn_retries = 0
    with pytest.raises(AuthenticationError):
        await create_pool(arq_settings)
    assert PASSWORD not in repr(redisconn.arq_settings(without_password(section)))

    store = RedisSpanExporter(section.url, KEYS, max_spans=10, retention_s=60, options=redisconn.credentials(section))
    assert store._redis.ping()
    with redisconn.connect_sync(section) as sync:
        assert sync.ping()
    with redisconn.connect_sync(without_password(section)) as sync, pytest.raises(AuthenticationError):
        sync.ping()


def test_credentials_in_the_url_win_over_the_section(secured_redis: SecuredRedis) -> None:
    url = secured_redis.url.replace("redis://", f"redis://:{PASSWORD}@")
    section = RedisSection(url=url, password=SecretStr("ignored"))
    with redisconn.connect_sync(section) as conn:
        assert conn.ping()
    assert redisconn.arq_settings(section).password == PASSWORD
