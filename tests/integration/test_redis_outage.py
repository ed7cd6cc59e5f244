"""Every process rides out a Redis outage: Redis is SIGKILLed and started again on the same port (AOF on).

- A real worker process (``python -m workers``) used to exit within 50 ms of Redis going away (arq's
  poll loop ends on the first connection error) and never came back; it must stay up and finish a
  workflow submitted after Redis returns.
- While Redis is down the gateway answers 503 with ``Retry-After`` on every route that needs Redis
  (``POST /v1/events`` and ``GET /v1/workflows`` used to answer 500), and recovers by itself after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.settings import GatewaySettings
from flowcore.store import WorkflowStore
from tests.gateway_client import gateway_client
from tests.integration.faults import KillableRedis, Services, python_step, submit, wait_finished

OUTAGE_S = 3.0  # as reproduced: a three-second outage stopped the platform


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[KillableRedis]:
    data = tmp_path / "redis"
    data.mkdir()
    server = KillableRedis(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_worker_process_survives_a_redis_restart_and_runs_what_comes_after(
    tmp_path: Path, redis_proc: KillableRedis, docker_host: str, base_image: str, test_labels: dict[str, str]
) -> None:
    services = Services.create(tmp_path, redis_proc.url, docker_host, test_labels)
    conn = Redis.from_url(redis_proc.url)
    store = WorkflowStore(conn, Keyspace())
    try:
        services.start_pool()
        worker = services.spawn("worker", "workers")
        before, _ = await submit(store, {"name": "before", "steps": [python_step("a", "print(1)")]})
        assert (await wait_finished(store, before, 60, services.logs)).status.value == "completed", services.logs()

        redis_proc.kill()
        await asyncio.sleep(OUTAGE_S)
        assert worker.popen.poll() is None, f"the worker exited while Redis was down:\n{services.logs()}"
        redis_proc.start()  # same port, same dir: the AOF brings the data back

        after, _ = await submit(store, {"name": "after", "steps": [python_step("a", "print(2)")]})
        snap = await wait_finished(store, after, 60, services.logs)
        assert snap.status.value == "completed", services.logs()
        assert worker.popen.poll() is None, services.logs()
        assert "redis is unreachable" in worker.tail(400), worker.tail()
    finally:
        await conn.aclose()
        services.stop()


@pytest.fixture
async def api(redis_proc: KillableRedis) -> AsyncIterator[httpx.AsyncClient]:
    conn = Redis.from_url(redis_proc.url, socket_timeout=2, socket_connect_timeout=2)
    async with gateway_client(GatewaySettings(redis={"url": redis_proc.url}), conn) as client:
        yield client
    await conn.aclose()


WORKFLOW = {"name": "outage", "steps": [python_step("a", "print(1)")]}


async def test_the_gateway_answers_503_with_retry_after_while_redis_is_down(
    api: httpx.AsyncClient, redis_proc: KillableRedis
) -> None:
    created = await api.post("/v1/workflows", json=WORKFLOW)
    assert created.status_code == 201, created.text
    wf_id = created.json()["id"]

    redis_proc.kill()
    requests = {
        "POST /v1/events": lambda: api.post("/v1/events", json={"type": "outage.test", "payload": {"n": 1}}),
        "GET /v1/workflows": lambda: api.get("/v1/workflows"),
        "POST /v1/workflows": lambda: api.post("/v1/workflows", json=WORKFLOW),
        f"GET /v1/workflows/{wf_id}": lambda: api.get(f"/v1/workflows/{wf_id}"),
        "GET /healthz": lambda: api.get("/healthz"),
    }
    for name, send in requests.items():
        response = await send()
        assert response.status_code == 503, f"{name}: {response.status_code} {response.text}"
        assert response.headers.get("Retry-After", "").isdigit(), f"{name}: no Retry-After"
        if name != "GET /healthz":
            assert response.json()["error"] == "service_unavailable", f"{name}: {response.text}"

    redis_proc.start()
    for name, send in requests.items():
        response = await send()
        assert response.status_code < 300, f"{name} after the restart: {response.status_code} {response.text}"
