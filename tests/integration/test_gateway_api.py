"""The gateway API in-process (httpx ASGI transport) on a real Redis: routes, auth, state, bad input.

These tests need no worker: a started workflow simply waits with its first tasks queued.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.settings import GatewaySettings
from gateway.app import create_app
from tests.gateway_client import gateway_api

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_api(redis_url, max_body_bytes=64 * 1024) as client:
        yield client


async def create(api: httpx.AsyncClient, body: dict[str, Any], start: bool = False) -> dict[str, Any]:
    r = await api.post("/v1/workflows", params={"start": str(start).lower()}, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_health_needs_no_token_and_everything_else_does(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz", headers={"Authorization": ""})).status_code == 200
    r = await api.get("/v1/workflows", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = await api.get("/v1/workflows", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "invalid token" in r.json()["message"]
    assert (await api.get("/v1/workflows")).status_code == 200


async def test_openapi_document_lists_the_routes(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/v1/workflows"]
    assert "WorkflowDefinition" in doc["components"]["schemas"]


async def test_create_get_list_start_and_conflicts(api: httpx.AsyncClient) -> None:
    wf = await create(api, {"name": "one", "steps": [{"id": "a", **STEP}]})
    assert wf["status"] == "pending" and wf["steps"][0]["status"] == "pending"
    got = (await api.get(f"/v1/workflows/{wf['id']}")).json()
    assert got["name"] == "one" and got["created_at"].endswith("Z")
    r = await api.post(f"/v1/workflows/{wf['id']}/start")
    assert r.status_code == 202 and r.json()["status"] == "running"
    r = await api.post(f"/v1/workflows/{wf['id']}/start")
    assert r.status_code == 409 and "only once" in r.json()["message"]
    r = await api.delete(f"/v1/workflows/{wf['id']}")
    assert r.status_code == 409
    other = await create(api, {"name": "two"})
    listing = (await api.get("/v1/workflows", params={"limit": 1})).json()
    assert listing["total"] == 2 and [w["id"] for w in listing["items"]] == [other["id"]]
    running = (await api.get("/v1/workflows", params={"status": "running"})).json()
    assert [w["id"] for w in running["items"]] == [wf["id"]]
    r = await api.post(f"/v1/workflows/{wf['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert (await api.post(f"/v1/workflows/{wf['id']}/cancel")).status_code == 409
    assert (await api.delete(f"/v1/workflows/{wf['id']}")).status_code == 204
    assert (await api.get(f"/v1/workflows/{wf['id']}")).status_code == 404


async def test_yaml_definitions_are_accepted(api: httpx.AsyncClient) -> None:
    body = """
name: from-yaml
config: {max_parallel: 3, timeout: 1h}
steps:
  - id: prepare
    image: agentainer-flow/python:3.11
    command: [python3, -c, "print('{}')"]
  - id: fan
    type: map
    items: steps.prepare.output.list
    depends_on: [prepare]
    image: agentainer-flow/python:3.11
    command: [cat]
"""
    r = await api.post("/v1/workflows", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["max_parallel"] == 3 and r.json()["config"]["timeout"] == 3600


BAD_DEFINITIONS: list[tuple[str, Any, int, str]] = [
    ("not an object", [1, 2], 422, "JSON object"),
    ("unknown type", {"name": "x", "steps": [{"id": "a", "type": "teleport", **STEP}]}, 422, "steps[0]"),
    ("duplicate ids", {"name": "x", "steps": [{"id": "a", **STEP}, {"id": "a", **STEP}]}, 422, "'a'"),
    ("missing dep", {"name": "x", "steps": [{"id": "a", "depends_on": ["ghost"], **STEP}]}, 422, "ghost"),
    (
        "cycle",
        {"name": "x", "steps": [{"id": "a", "depends_on": ["b"], **STEP}, {"id": "b", "depends_on": ["a"], **STEP}]},
        422,
        "cycle",
    ),
    (
        "branch target missing",
        {
            "name": "x",
            "steps": [{"id": "b", "type": "branch", "condition": {"field": "input.x", "op": "exists"}, "then": ["nope"]}],
        },
        422,
        "nope",
    ),
    ("negative timeout", {"name": "x", "config": {"timeout": -5}}, 422, "config.timeout"),
    ("bad duration", {"name": "x", "config": {"timeout": "soon"}}, 422, "soon"),
    ("no image", {"name": "x", "steps": [{"id": "a", "command": "true"}]}, 422, "needs an image"),
    ("bad map path", {"name": "x", "steps": [{"id": "m", "type": "map", "items": "nowhere", **STEP}]}, 422, "items"),
    ("bad operator", {"name": "x", "steps": [{"id": "b", "type": "branch", "condition": {"field": "input.x", "op": "~"}, "then": ["b2"]}, {"id": "b2", **STEP}]}, 422, "op"),
    ("max_parallel zero", {"name": "x", "config": {"max_parallel": 0}}, 422, "max_parallel"),
]


@pytest.mark.parametrize(("label", "body", "status", "needle"), BAD_DEFINITIONS, ids=[b[0] for b in BAD_DEFINITIONS])
async def test_bad_definitions_are_rejected_and_nothing_is_lost(
    api: httpx.AsyncClient, label: str, body: Any, status: int, needle: str
) -> None:
    keep = await create(api, {"name": "keep", "steps": [{"id": "a", **STEP}]}, start=True)
    r = await api.post("/v1/workflows", json=body)
    assert r.status_code == status, r.text
    text = json.dumps(r.json())
    assert needle in text, text
    listing = (await api.get("/v1/workflows")).json()
    assert [w["id"] for w in listing["items"]] == [keep["id"]]
    assert (await api.get(f"/v1/workflows/{keep['id']}")).json()["status"] == "running"


@pytest.mark.parametrize(
    ("content", "ctype", "needle"),
    [
        (b'{"name": "x",', "application/json", "malformed JSON"),
        (b"name: [unclosed", "application/yaml", "malformed YAML"),
        (b"", "application/json", "empty"),
        (b"\xff\xfe", "application/json", "UTF-8"),
    ],
)
async def test_malformed_bodies_are_400(api: httpx.AsyncClient, content: bytes, ctype: str, needle: str) -> None:
    r = await api.post("/v1/workflows", content=content, headers={"content-type": ctype})
    assert r.status_code == 400 and needle in r.json()["message"], r.text


async def test_body_over_limit_is_413(api: httpx.AsyncClient) -> None:
    big = {"name": "big", "input": {"blob": "x" * 70_000}}
    r = await api.post("/v1/workflows", json=big)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the stream is cut as it arrives
        yield b'{"name": "big", "input": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    r = await api.post("/v1/workflows", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


async def test_unknown_ids_and_routes_are_404(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/workflows/wf-nope"),
        ("POST", "/v1/workflows/wf-nope/start"),
        ("POST", "/v1/workflows/wf-nope/cancel"),
        ("DELETE", "/v1/workflows/wf-nope"),
        ("GET", "/v1/workflows/wf-nope/state"),
        ("GET", "/v1/workflows/wf-nope/jobs"),
        ("GET", "/v1/nothing-here"),
    ]:
        r = await api.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["message"]


async def test_list_rejects_bad_query(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/workflows", params={"status": "sleeping"})
    assert r.status_code == 422 and r.json()["field"] == "status"
    r = await api.get("/v1/workflows", params={"limit": "many"})
    assert r.status_code == 422 and r.json()["field"] == "limit"


async def test_state_operations(api: httpx.AsyncClient) -> None:
    wf = await create(api, {"name": "s"})
    base = f"/v1/workflows/{wf['id']}/state"
    assert (await api.get(base)).json()["state"] == {}
    assert (await api.get(f"{base}/missing")).status_code == 404
    assert (await api.put(f"{base}/k", json={"value": {"a": [1]}})).json()["value"] == {"a": [1]}
    assert (await api.get(f"{base}/k")).json()["value"] == {"a": [1]}
    assert (await api.post(f"{base}/n/increment", json={"by": 5})).json()["value"] == 5
    assert (await api.post(f"{base}/n/increment", json={})).json()["value"] == 6
    assert (await api.post(f"{base}/l/append", json={"value": "x"})).json()["value"] == ["x"]
    assert (await api.post(f"{base}/l/append", json={"value": 2})).json()["value"] == ["x", 2]
    r = await api.post(f"{base}/k/increment", json={"by": 1})
    assert r.status_code == 422 and "not a number" in r.json()["message"]
    r = await api.post(f"{base}/n/append", json={"value": 1})
    assert r.status_code == 422 and "not a list" in r.json()["message"]
    assert (await api.post(f"{base}/n/cas", json={"expected": 5, "value": 0})).json()["swapped"] is False
    assert (await api.post(f"{base}/n/cas", json={"expected": 6, "value": 0})).json()["swapped"] is True
    assert (await api.post(f"{base}/new/cas", json={"expect_missing": True, "value": 1})).json()["swapped"] is True
    assert (await api.put(f"{base}/k", json={"wrong": 1})).status_code == 422
    assert (await api.delete(f"{base}/k")).status_code == 204
    assert (await api.delete(f"{base}/k")).status_code == 404
    state = (await api.get(base)).json()["state"]
    assert state == {"n": 0, "l": ["x", 2], "new": 1}


async def test_non_loopback_bind_without_token_refuses_to_start() -> None:
    from flowcore.errors import ConfigError

    with pytest.raises(ConfigError, match="not loopback"):
        create_app(GatewaySettings(host="0.0.0.0"))
    app = create_app(GatewaySettings(host="0.0.0.0", tokens=["s3cret"]))
    assert app is not None


async def test_unreachable_pool_service_is_503(redis_url: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = GatewaySettings(redis={"url": redis_url}, pool={"url": f"http://127.0.0.1:{port}"})
    conn = Redis.from_url(redis_url)
    app = create_app(settings, redis=conn)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw", headers=AUTH) as c,
    ):
        r = await c.get("/v1/pools")
    await conn.aclose()
    assert r.status_code == 503 and "unreachable" in r.json()["message"]
