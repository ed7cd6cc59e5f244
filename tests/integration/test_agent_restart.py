"""Agents' restart policies (on_error: restart / keep / remove) with a crashing agent, on the real
engine and Redis (ADR 014)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flowcore.settings import PoolSettings
from pool.app import create_app
from tests.pool_fixtures import docker_cli, pool_headers, pool_settings, work_dir  # noqa: F401

CRASH = 'echo "run $(date +%s%N)"; sleep 0.3; exit 7'


@pytest.fixture
async def api(pool_settings: PoolSettings) -> AsyncIterator[httpx.AsyncClient]:
    pool_settings.agent_watch_s = 0.1
    app = create_app(pool_settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://pool", headers=pool_headers(pool_settings)) as c,
    ):
        yield c


async def _until(api: httpx.AsyncClient, agent_id: str, check: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await api.get(f"/v1/agents/{agent_id}")).json()
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"agent never got there: {body}")


async def test_a_crashing_agent_is_restarted_up_to_max_restarts(
    api: httpx.AsyncClient, base_image: str, docker_host: str
) -> None:
    spec = {"name": "crasher", "image": base_image, "command": CRASH, "on_error": "restart", "max_restarts": 2,
            "restart_backoff": "0.2s", "restart_backoff_max": "1s"}
    deployed = await api.post("/v1/agents", json=spec)
    assert deployed.status_code == 201, deployed.text
    agent_id = deployed.json()["id"]
    final = await _until(api, agent_id, lambda b: b["desired"] == "stopped")
    assert final["restarts"] == 2 and final["status"] == "stopped" and final["last_exit_code"] == 7
    assert "after 2 restarts" in final["reason"]
    runs = [line for line in (await api.get(f"/v1/agents/{agent_id}/logs")).text.splitlines() if line.startswith("run")]
    assert len(runs) == 3  # the first run and two restarts, then no more
    await asyncio.sleep(1.0)
    assert (await api.get(f"/v1/agents/{agent_id}")).json()["restarts"] == 2
    assert (await api.delete(f"/v1/agents/{agent_id}")).status_code == 204


async def test_keep_and_remove_variants_and_a_clean_exit(
    api: httpx.AsyncClient, base_image: str, docker_host: str
) -> None:
    kept = (await api.post("/v1/agents", json={"name": "kept", "image": base_image, "command": CRASH})).json()
    removed = (
        await api.post("/v1/agents", json={"name": "gone", "image": base_image, "command": CRASH, "on_error": "remove"})
    ).json()
    clean = (
        await api.post(
            "/v1/agents", json={"name": "done", "image": base_image, "command": "echo ok", "on_error": "restart"}
        )
    ).json()
    body = await _until(api, kept["id"], lambda b: b["desired"] == "stopped")
    assert body["status"] == "stopped" and body["restarts"] == 0 and "kept stopped" in body["reason"]
    assert "run" in (await api.get(f"/v1/agents/{kept['id']}/logs")).text  # its logs stay readable
    body = await _until(api, removed["id"], lambda b: b["status"] == "removed")
    assert "removed (on_error: remove)" in body["reason"]
    assert not docker_cli(docker_host, "ps", "-aq", "--filter", f"id={removed['container_id']}").strip()
    await asyncio.sleep(1.0)  # exit 0 is a normal end: no restart
    body = (await api.get(f"/v1/agents/{clean['id']}")).json()
    assert body["status"] == "stopped" and body["restarts"] == 0 and body["desired"] == "running"
    for agent in (kept, removed, clean):
        await api.delete(f"/v1/agents/{agent['id']}")


async def test_an_agent_stopped_through_the_api_is_not_restarted(api: httpx.AsyncClient, base_image: str) -> None:
    spec = {"name": "sleeper", "image": base_image, "command": "sleep 600", "on_error": "restart"}
    agent = (await api.post("/v1/agents", json=spec)).json()
    stopped = (await api.post(f"/v1/agents/{agent['id']}/stop")).json()
    assert stopped["desired"] == "stopped"
    await asyncio.sleep(1.0)
    body = (await api.get(f"/v1/agents/{agent['id']}")).json()
    assert body["status"] == "stopped" and body["restarts"] == 0
    await api.delete(f"/v1/agents/{agent['id']}")


async def test_bad_restart_policies_are_422(api: httpx.AsyncClient, base_image: str) -> None:
    base = {"name": "x", "image": base_image, "command": "true"}
    for bad in (
        {"on_error": "explode"},
        {"max_restarts": -1},
        {"max_restarts": 1000},
        {"restart_backoff": "-1s"},
        {"restart_backoff": "forever"},
        {"restart_backoff_max": "30d"},
    ):
        answer = await api.post("/v1/agents", json={**base, **bad})
        assert answer.status_code == 422, (bad, answer.text)
    assert (await api.get("/v1/agents")).json()["agents"] == []
