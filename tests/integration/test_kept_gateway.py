"""The gateway's ``/v1/kept`` across two pool services on one Redis (ADR 014, 2026-11-29): both listed,
each container's requests reach the service that kept it, bad inputs refused, an absent owner said."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import redis as redis_sync
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.settings import GatewaySettings, PoolSettings
from gateway.routes.kept import live_services, owner_of
from tests.gateway_client import gateway_client
from tests.pool_fixtures import (  # noqa: F401
    docker_cli,
    eventually,
    pool_headers,
    pool_settings,
    served,
    service_containers,
    work_dir,
)

KEYS = Keyspace("flow")


def _inspect(docker_host: str, container_id: str) -> dict[str, Any] | None:
    out = docker_cli(docker_host, "inspect", container_id, check=False)
    data = json.loads(out) if out.strip() else []
    return data[0] if data else None


async def _keep_one(url: str, settings: PoolSettings, image: str, wf: str) -> str:
    body = {"task_id": f"t-{uuid.uuid4().hex[:8]}", "workflow_id": wf, "step_id": "s", "image": image,
            "command": "echo evidence > $HOME/note.txt; echo said-so; exit 2", "cleanup": {"on_failure": "keep"}}
    async with httpx.AsyncClient(headers=pool_headers(settings), timeout=60) as http:
        answer = await http.post(f"{url}/v1/tasks", json=body)
    assert answer.status_code == 200 and not answer.json()["ok"], answer.text
    return str(answer.json()["container_id"])


async def _registered(conn: Redis, *service_ids: str) -> bool:
    return all(await asyncio.gather(*(conn.hexists(KEYS.pool_services, s) for s in service_ids)))


async def test_the_gateway_lists_and_reaches_every_pool_services_kept_containers(
    pool_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str, tmp_path_factory: Any
) -> None:
    other = pool_settings.model_copy(deep=True)
    other.service_id = f"t-{uuid.uuid4().hex[:10]}"
    other.work_dir = str(tmp_path_factory.mktemp("fg"))  # short: unix socket paths hold 108 bytes
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    with redis_sync.Redis.from_url(redis_url) as client:
        client.hset(KEYS.workflow(wf), "status", "running")
    conn = Redis.from_url(redis_url)
    try:
        async with served(pool_settings) as url_a:
            b_ctx = served(other)
            url_b = await b_ctx.__aenter__()
            b_open = True
            try:
                await eventually(lambda: _registered(conn, pool_settings.service_id, other.service_id),
                                 what="both registrations")
                a_cid = await _keep_one(url_a, pool_settings, base_image, wf)
                b_cid = await _keep_one(url_b, other, base_image, wf)
                gw_settings = GatewaySettings(redis={"url": redis_url}, pool={"url": url_a},
                                              pool_token=pool_settings.pool_token)
                async with gateway_client(gw_settings, conn) as api:
                    listed = (await api.get("/v1/kept", params={"workflow_id": wf})).json()["kept"]
                    assert [(k["container_id"], k["service_id"]) for k in listed] == [
                        (a_cid, pool_settings.service_id), (b_cid, other.service_id)]
                    assert (await api.get("/v1/kept", params={"workflow_id": "wf-none"})).json() == {"kept": []}
                    # The other service's container, through the gateway whose own pool is the first.
                    one = await api.get(f"/v1/kept/{b_cid[:12]}")
                    assert one.status_code == 200 and one.json()["service_id"] == other.service_id
                    logs = await api.get(f"/v1/kept/{b_cid}/logs")
                    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
                    files = await api.get(f"/v1/kept/{b_cid}/files")
                    assert files.status_code == 200 and files.headers["content-type"] == "application/x-tar"
                    # Bad inputs: 4xx, and nothing changed.
                    for path, status in (
                        ("/v1/kept/NOT-AN-ID", 422),
                        ("/v1/kept/abc", 422),
                        (f"/v1/kept/{b_cid}/explode", 422),
                        (f"/v1/kept/{b_cid}/..%2F..%2Fpools", 422),
                        ("/v1/kept/" + "0" * 64, 404),
                        (f"/v1/kept/{b_cid}/files?path=../../etc", 422),
                        (f"/v1/kept/{b_cid}/logs?tail=-1", 422),
                        ("/v1/kept?workflow_id=../x", 422),
                    ):
                        answer = await api.get(path)
                        assert answer.status_code == status, (path, answer.text)
                    assert (await api.delete("/v1/kept")).status_code == 422
                    assert (await api.delete("/v1/kept", params={"workflow_id": "a b"})).status_code == 422
                    assert (await api.delete("/v1/kept/" + "f" * 64)).status_code == 404
                    assert len((await api.get("/v1/kept")).json()["kept"]) == 2
                    # Removed now, by its owner.
                    assert (await api.delete(f"/v1/kept/{b_cid[:12]}")).status_code == 204
                    assert _inspect(docker_host, b_cid) is None
                    assert [k["container_id"] for k in (await api.get("/v1/kept")).json()["kept"]] == [a_cid]
                    # An owner that is not running: still listed, its container not reachable (503, said so).
                    b2 = await _keep_one(url_b, other, base_image, wf)
                    b_open = False
                    await b_ctx.__aexit__(None, None, None)
                    assert len((await api.get("/v1/kept", params={"workflow_id": wf})).json()["kept"]) == 2
                    absent = await api.get(f"/v1/kept/{b2}")
                    assert absent.status_code == 503 and other.service_id in absent.text
                    # Bulk removal reaches whoever runs: the first service's one goes.
                    assert (await api.delete("/v1/kept", params={"workflow_id": wf})).json() == {"removed": 1}
                    assert _inspect(docker_host, a_cid) is None and _inspect(docker_host, b2) is not None
            finally:
                if b_open:
                    await b_ctx.__aexit__(None, None, None)
    finally:
        await conn.aclose()
        leftover = service_containers(docker_host, other.service_id)
        if leftover:
            docker_cli(docker_host, "rm", "-f", *leftover, check=False)


def test_owner_of_and_live_services() -> None:
    owners = {"a" * 64: "p1", "ab" + "c" * 62: "p2"}
    assert owner_of("a" * 64, owners) == ("a" * 64, "p1")
    assert owner_of("a" * 12, owners) == ("a" * 64, "p1")
    assert owner_of("a" * 11, owners) is None  # too short to be a prefix
    assert owner_of("b" * 12, owners) is None
    assert live_services({"p1": "not json", "p2": json.dumps({"url": "http://x"})}, "tok", 0.0) == {}  # unsigned
    assert live_services({"p1": json.dumps({"url": "http://x"})}, None, 0.0) == {}
