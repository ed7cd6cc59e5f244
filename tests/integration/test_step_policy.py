"""What steps may ask for, at submission: the gateway in-process on a real Redis.

A definition whose step asks for a network, a user or limits the operator does not allow, or for a
field that does not exist (privileged mode, devices, capabilities, mounts), is answered 422 naming
the field, and nothing is stored. A policy tightened after a template was stored is enforced on
manual fires and retries too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.settings import GatewaySettings, TaskPolicySection
from tests.gateway_client import gateway_client

STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


def settings(redis_url: str, **policy: Any) -> GatewaySettings:
    return GatewaySettings(redis={"url": redis_url}, policy=TaskPolicySection(**policy))


@pytest.fixture
async def api(redis_url: str, conn: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(settings(redis_url, allowed_networks=["none", "etl"]), conn) as client:
        yield client


def one_step(**fields: Any) -> dict[str, Any]:
    return {"name": "asks", "steps": [{"id": "ok", **STEP}, {"id": "a", "depends_on": ["ok"], **STEP, **fields}]}


REFUSED = [
    ("host network", {"network": "host"}, "steps[1].network", "never allowed"),
    ("container network", {"network": "container:abc"}, "steps[1].network", "another container"),
    ("network not allowed", {"network": "bridge"}, "steps[1].network", "allows: none, etl"),
    ("root", {"user": "0"}, "steps[1].user", "root"),
    ("root group", {"user": "1000:0"}, "steps[1].user", "root"),
    ("user name", {"user": "root"}, "steps[1].user", "pattern"),
    ("cpu over max", {"resources": {"cpu": 16}}, "steps[1].resources.cpu", "maximum"),
    ("memory over max", {"resources": {"memory_mb": 65536}}, "steps[1].resources.memory_mb", "maximum"),
    ("pids over max", {"resources": {"pids": 100000}}, "steps[1].resources.pids", "maximum"),
    # Fields that do not exist are refused by the schema (extra="forbid"), naming the field.
    ("privileged", {"privileged": True}, "steps[1].privileged", "Extra inputs are not permitted"),
    ("devices", {"devices": ["/dev/sda:/dev/sda"]}, "steps[1].devices", "Extra inputs are not permitted"),
    ("cap_add", {"cap_add": ["SYS_ADMIN"]}, "steps[1].cap_add", "Extra inputs are not permitted"),
    ("volumes", {"volumes": ["/:/host"]}, "steps[1].volumes", "Extra inputs are not permitted"),
    ("mounts", {"mounts": [{"source": "/", "target": "/host"}]}, "steps[1].mounts", "Extra inputs are not permitted"),
    ("security_opt", {"security_opt": ["seccomp=unconfined"]}, "steps[1].security_opt", "Extra inputs are not permitted"),
    ("resources extra", {"resources": {"cpu": 1, "devices": 1}}, "steps[1].resources.devices", "Extra inputs"),
]


async def workflow_ids(api: httpx.AsyncClient) -> list[str]:
    return [w["id"] for w in (await api.get("/v1/workflows")).json()["items"]]


@pytest.mark.parametrize(("label", "fields", "field", "needle"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_a_step_asking_for_what_is_not_allowed_is_422_and_nothing_is_stored(
    api: httpx.AsyncClient, label: str, fields: dict[str, Any], field: str, needle: str
) -> None:
    for start in ("false", "true"):
        r = await api.post("/v1/workflows", params={"start": start}, json=one_step(**fields))
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_input" and body["field"] == field, body
        assert needle in json.dumps(body), body
    assert await workflow_ids(api) == []


async def test_yaml_is_checked_the_same(api: httpx.AsyncClient) -> None:
    doc = "name: y\nsteps:\n  - id: a\n    image: agentainer-flow/python:3.11\n    command: 'true'\n    network: host\n"
    r = await api.post("/v1/workflows", content=doc, headers={"content-type": "application/yaml"})
    assert r.status_code == 422 and r.json()["field"] == "steps[0].network"
    assert await workflow_ids(api) == []


async def test_what_the_operator_allows_is_accepted(api: httpx.AsyncClient) -> None:
    fields = {
        "network": "etl",
        "user": "1000:1000",
        "read_only_root": False,
        "resources": {"cpu": 4, "memory_mb": 4096, "pids": 4096},
        "pool": {"scope": "image"},
    }
    r = await api.post("/v1/workflows", json=one_step(**fields))
    assert r.status_code == 201, r.text
    assert await workflow_ids(api) == [r.json()["id"]]


async def test_root_and_cross_workflow_reuse_are_operator_switches(redis_url: str, conn: Redis) -> None:
    async with gateway_client(settings(redis_url, allow_root_tasks=True), conn) as api:
        assert (await api.post("/v1/workflows", json=one_step(user="0"))).status_code == 201
    async with gateway_client(settings(redis_url, allow_cross_workflow_reuse=False), conn) as api:
        r = await api.post("/v1/workflows", json=one_step(pool={"scope": "image"}))
        assert r.status_code == 422 and r.json()["field"] == "steps[1].pool.scope"
        assert (await api.post("/v1/workflows", json=one_step(pool={"scope": "workflow"}))).status_code == 201


async def test_a_policy_tightened_later_refuses_manual_fires_and_retries(redis_url: str, conn: Redis) -> None:
    async with gateway_client(settings(redis_url, allowed_networks=["none", "etl"]), conn) as open_api:
        created = await open_api.post("/v1/workflows", json=one_step(network="etl"))
        assert created.status_code == 201, created.text
        template = created.json()["id"]
        trigger = await open_api.post(f"/v1/workflows/{template}/triggers", json={"type": "manual"})
        assert trigger.status_code == 201, trigger.text
        assert (await open_api.post(f"/v1/workflows/{template}/cancel")).status_code == 202
    async with gateway_client(settings(redis_url), conn) as strict:
        before = await workflow_ids(strict)
        for path in (
            f"/v1/workflows/{template}/trigger",
            f"/v1/triggers/{trigger.json()['id']}/fire",
            f"/v1/workflows/{template}/retry",
        ):
            r = await strict.post(path)
            assert r.status_code == 422, (path, r.text)
            assert r.json()["field"] == "steps[1].network", r.json()
        assert await workflow_ids(strict) == before
