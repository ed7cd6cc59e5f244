"""Long-running agents (/v1/agents) against the real engine and Redis."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio

import httpx
import redis

from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from pool.agents import AgentSpec
from pool.app import create_app
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    client,
    docker_cli,
    pool_headers,
    pool_settings,
    service_containers,
    work_dir,
)


async def test_agent_lifecycle(client: httpx.AsyncClient, base_image: str) -> None:
    spec = {
        "name": "ticker",
        "image": base_image,
        "env": {"GREETING": "hi"},
        "memory_mb": 64,
        "command": 'echo "$GREETING $FLOW_AGENT_ID"; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done',
        "workflow_id": "wf-a",
    }
    deployed = await client.post("/v1/agents", json=spec)
    assert deployed.status_code == 201, deployed.text
    agent = deployed.json()
    agent_id = agent["id"]
    assert agent["status"] == "running" and agent["container_id"]
    assert (await client.post("/v1/agents", json=spec)).status_code == 409  # same name
    assert (await client.post("/v1/agents", json={**spec, "name": "bad name!"})).status_code == 422

    await asyncio.sleep(0.6)
    logs = (await client.get(f"/v1/agents/{agent_id}/logs")).text
    assert f"hi {agent_id}" in logs and "tick 1" in logs

    # httpx.ASGITransport delivers a body only when the app finishes it: the followed stream ends when
    # the agent stops.
    async def follow() -> list[str]:
        async with client.stream("GET", f"/v1/agents/{agent_id}/logs", params={"follow": "1"}) as stream:
            return [line async for line in stream.aiter_lines() if line.startswith("tick")]

    following = asyncio.create_task(follow())
    await asyncio.sleep(1.0)
    stopped = await client.post(f"/v1/agents/{agent_id}/stop")
    assert stopped.json()["status"] == "stopped"
    lines = await asyncio.wait_for(following, 20)
    assert len(lines) >= 4 and lines[0] == "tick 1"

    listed = (await client.get("/v1/agents", params={"workflow_id": "wf-a"})).json()["agents"]
    assert [a["id"] for a in listed] == [agent_id]
    assert (await client.get("/v1/agents", params={"workflow_id": "other"})).json()["agents"] == []

    started = await client.post(f"/v1/agents/{agent_id}/start")
    assert started.json()["status"] == "running"
    assert (await client.delete(f"/v1/agents/{agent_id}")).status_code == 204
    assert (await client.get(f"/v1/agents/{agent_id}")).status_code == 404
    assert (await client.get("/v1/agents/nope/logs")).status_code == 404


async def test_restarted_pool_service_adopts_its_agents(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    keep = pool_settings.model_copy(update={"keep_containers_on_shutdown": True})
    ticker = 'echo "up $FLOW_AGENT_ID"; while true; do sleep 0.2; done'
    first = await PoolServices.open(keep)
    try:
        survivor = await first.agents.deploy(
            AgentSpec(name="survivor", image=base_image, command=ticker, workflow_id="wf-r", step_id="s1")
        )
        vanished = await first.agents.deploy(AgentSpec(name="vanished", image=base_image, command=ticker))
        orphan = await first.agents.deploy(AgentSpec(name="orphan-1", image=base_image, command=ticker))
    finally:
        await first.close()
    assert survivor.container_id and vanished.container_id and orphan.container_id
    # While the service is down: one container goes away, one record goes away.
    docker_cli(docker_host, "rm", "-f", vanished.container_id)
    with redis.Redis.from_url(pool_settings.redis.url) as conn:
        conn.hdel(Keyspace("flow").agents, orphan.id)

    second = await PoolServices.open(pool_settings)
    try:
        app = create_app(pool_settings)
        app.state.services = second  # the routes of the restarted service, on its adopted state
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://pool", headers=pool_headers(pool_settings)
        ) as api:
            listed = {a["id"]: a for a in (await api.get("/v1/agents")).json()["agents"]}
            assert listed[survivor.id]["status"] == "running"
            assert listed[survivor.id]["container_id"] == survivor.container_id
            assert listed[vanished.id]["status"] == "lost" and "gone" in listed[vanished.id]["reason"]
            rebuilt = listed[orphan.id]
            assert rebuilt["status"] == "running" and rebuilt["name"] == "orphan-1"
            assert rebuilt["container_id"] == orphan.container_id and rebuilt["image"] == base_image
            got = (await api.get(f"/v1/agents/{survivor.id}")).json()
            assert (got["workflow_id"], got["step_id"], got["name"]) == ("wf-r", "s1", "survivor")
            assert f"up {survivor.id}" in (await api.get(f"/v1/agents/{survivor.id}/logs")).text
            # The name of a lost agent is free again.
            again = await api.post("/v1/agents", json={"name": "vanished", "image": base_image, "command": ticker})
            assert again.status_code == 201, again.text
            assert (await api.post(f"/v1/agents/{survivor.id}/stop")).json()["status"] == "stopped"
            for agent_id in (survivor.id, orphan.id, vanished.id, again.json()["id"]):
                assert (await api.delete(f"/v1/agents/{agent_id}")).status_code == 204
            assert (await api.get("/v1/agents")).json()["agents"] == []
    finally:
        await second.close()
    assert service_containers(docker_host, pool_settings.service_id) == []
