"""Long-running agents (/v1/agents) against the real engine and Redis."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio

import httpx

from tests.pool_fixtures import client, pool_settings, service_containers, work_dir  # noqa: F401


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
