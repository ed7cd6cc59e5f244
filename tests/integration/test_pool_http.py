"""The pool service's HTTP API through its real lifespan (httpx.ASGITransport)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json

import httpx
import redis.asyncio as aioredis

from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from pool.app import create_app
from tests.pool_fixtures import client, pool_headers, pool_settings, service_containers, work_dir  # noqa: F401


def body(image: str, **fields: object) -> dict[str, object]:
    return {
        "task_id": f"t-{id(fields)}-{len(fields)}",
        "workflow_id": "wf-http",
        "step_id": "s",
        "image": image,
        **fields,
    }


async def test_health_tasks_and_pools(
    client: httpx.AsyncClient, base_image: str, redis_url: str, pool_settings: PoolSettings
) -> None:
    assert (await client.get("/healthz")).json()["ok"] is True
    ok = await client.post("/v1/tasks", json=body(base_image, command="echo 5", task_id="a1"))
    assert ok.status_code == 200 and ok.json()["ok"] is True and ok.json()["output"] == 5
    result = ok.json()
    assert (
        result["pooled"] is True
        and result["mode"] == "agent"
        and result["pool_service"] == pool_settings.service_id
    )
    assert set(result["timings"]) == {"acquire_ms", "exec_ms", "total_ms"}
    failed = await client.post("/v1/tasks", json=body(base_image, command="exit 2", task_id="a2"))
    assert failed.status_code == 200 and failed.json()["ok"] is False
    assert failed.json()["error"] == {"kind": "exit_code", "message": "exited with code 2"}

    pools = (await client.get("/v1/pools")).json()
    assert pools["service_id"] == pool_settings.service_id
    assert pools["overall"]["warm_hits"] == 1 and pools["overall"]["cold_starts"] == 1
    key = result["pool_key"]
    assert [p["key"] for p in pools["pools"]] == [key]
    resized = await client.post(f"/v1/pools/{key}/resize", json={"min_size": 2, "max_size": 3})
    assert resized.status_code == 200 and resized.json()["config"]["min_size"] == 2
    for _ in range(100):
        if (await client.get(f"/v1/pools/{key}")).json()["idle"] == 2:
            break
        await asyncio.sleep(0.1)
    assert (await client.get(f"/v1/pools/{key}")).json()["idle"] == 2
    drained = await client.post(f"/v1/pools/{key}/drain")
    assert drained.json()["removed_idle"] == 2
    assert (await client.post("/v1/pools/nope/drain")).status_code == 404
    bad_resize = await client.post(f"/v1/pools/{key}/resize", json={"min_size": 5, "max_size": 1})
    assert bad_resize.status_code == 422

    # Registration in Redis.
    keys = Keyspace("flow")
    r = aioredis.from_url(redis_url)
    try:
        await asyncio.sleep(pool_settings.heartbeat_s * 2)
        registration = json.loads(await r.hget(keys.pool_services, pool_settings.service_id))
        assert registration["id"] == pool_settings.service_id and registration["url"].startswith(
            "http://127.0.0.1:"
        )
        assert await r.zscore(keys.pool_heartbeats, pool_settings.service_id) is not None
    finally:
        await r.aclose()


async def test_invalid_requests_name_the_field(client: httpx.AsyncClient, base_image: str) -> None:
    missing = await client.post("/v1/tasks", json={"workflow_id": "w", "step_id": "s", "image": base_image})
    assert missing.status_code == 422 and missing.json()["field"] == "task_id"
    bad_timeout = await client.post("/v1/tasks", json=body(base_image, command="true", timeout_s=-1))
    assert bad_timeout.status_code == 422 and bad_timeout.json()["field"] == "timeout_s"
    neither = await client.post("/v1/tasks", json=body(base_image))
    assert neither.status_code == 422 and neither.json()["field"] == "command"
    garbage = await client.post(
        "/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400
    assert (await client.delete("/v1/tasks/unknown")).status_code == 404


async def test_cancel_over_http(client: httpx.AsyncClient, base_image: str) -> None:
    post = asyncio.create_task(
        client.post("/v1/tasks", json=body(base_image, command="sleep 30", task_id="c1"))
    )
    for _ in range(200):
        await asyncio.sleep(0.1)
        if (await client.delete("/v1/tasks/c1")).status_code == 202:
            break
    answer = await asyncio.wait_for(post, 15)
    assert answer.json()["error"]["kind"] == "cancelled"


async def test_lifespan_exit_removes_containers(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    app = create_app(pool_settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://pool", headers=pool_headers(pool_settings)
        ) as c:
            assert (await c.post("/v1/tasks", json=body(base_image, command="echo 1", task_id="x"))).json()[
                "ok"
            ]
        assert service_containers(docker_host, pool_settings.service_id)
    assert service_containers(docker_host, pool_settings.service_id) == []
