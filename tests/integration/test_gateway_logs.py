"""``GET /v1/workflows/{id}/logs`` in-process on a real Redis, with lines written by the pool's own
log shipper (no worker, no Docker: the lines are what a pool would have appended)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.pool_api import TaskRequest
from flowcore.settings import GatewaySettings
from pool.tasklogs import LogShipper
from tests.gateway_client import gateway_client

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["true"]}
DEFINITION = {
    "name": "talkative",
    "input": {"xs": [1, 2]},
    "steps": [
        {"id": "prep", **STEP},
        {"id": "fan", "type": "map", "items": "input.xs", "depends_on": ["prep"], **STEP},
    ],
}


@pytest.fixture
async def api(redis_url: str, conn: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(GatewaySettings(redis={"url": redis_url}), conn) as client:
        yield client


async def started(api: httpx.AsyncClient) -> str:
    r = await api.post("/v1/workflows", params={"start": "true"}, json=DEFINITION)
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


async def write(conn: Redis, wf_id: str, step_id: str, index: int, *lines: str, stream: str = "stdout") -> None:
    shipper = LogShipper(conn, Keyspace("flow"))
    request = TaskRequest(task_id="t", workflow_id=wf_id, step_id=step_id, index=index, attempt=1, image="i", command="x")
    task_log = shipper.task(request)
    task_log.feed(stream, "".join(f"{line}\n" for line in lines).encode())  # type: ignore[arg-type]
    await task_log.finish()
    await shipper.close()


async def test_lines_filtered_and_paged(api: httpx.AsyncClient, conn: Redis) -> None:
    wf_id = await started(api)
    await write(conn, wf_id, "prep", 0, "p1", "p2")
    await write(conn, wf_id, "fan", 1, "f1-a", stream="stderr")
    await write(conn, wf_id, "fan", 0, "f0-a")

    body = (await api.get(f"/v1/workflows/{wf_id}/logs")).json()
    assert [(i["source"], i["line"]) for i in body["items"]] == [
        ("prep", "p1"), ("prep", "p2"), ("fan#1", "f1-a"), ("fan#0", "f0-a"),
    ]
    first = body["items"][2]
    assert {k: first[k] for k in ("step_id", "index", "attempt", "stream")} == {
        "step_id": "fan", "index": 1, "attempt": 1, "stream": "stderr",
    }
    assert isinstance(first["ts"], float) and body["next"] == body["items"][-1]["id"]

    only = (await api.get(f"/v1/workflows/{wf_id}/logs", params={"step": "fan", "index": 0})).json()
    assert [i["line"] for i in only["items"]] == ["f0-a"]

    page = (await api.get(f"/v1/workflows/{wf_id}/logs", params={"limit": 3})).json()
    assert [i["line"] for i in page["items"]] == ["p1", "p2", "f1-a"]
    rest = (await api.get(f"/v1/workflows/{wf_id}/logs", params={"since": page["next"]})).json()
    assert [i["line"] for i in rest["items"]] == ["f0-a"]
    empty = (await api.get(f"/v1/workflows/{wf_id}/logs", params={"since": rest["next"]})).json()
    assert empty == {"items": [], "next": rest["next"]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"step": "nope"}, "step"),
        ({"index": "x"}, "index"),
        ({"index": "-1"}, "index"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"follow": "maybe"}, "follow"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    wf_id = await started(api)
    r = await api.get(f"/v1/workflows/{wf_id}/logs", params=params)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


async def test_unknown_workflow_is_404(api: httpx.AsyncClient) -> None:
    for follow in ("false", "true"):
        r = await api.get("/v1/workflows/wf-nope/logs", params={"follow": follow})
        assert r.status_code == 404 and r.json()["field"] == "workflow_id"


async def test_follow_streams_until_the_workflow_finishes(api: httpx.AsyncClient, conn: Redis) -> None:
    wf_id = await started(api)
    await write(conn, wf_id, "prep", 0, "before")

    # httpx.ASGITransport hands the body over once the app ends it: the stream must end by itself
    # when the workflow finishes, with the lines written meanwhile.
    async def follow(params: dict[str, str]) -> httpx.Response:
        return await api.get(f"/v1/workflows/{wf_id}/logs", params={"follow": "true", **params})

    everything = asyncio.create_task(follow({}))
    only_fan = asyncio.create_task(follow({"step": "fan"}))
    await asyncio.sleep(0.3)
    assert not everything.done()
    await write(conn, wf_id, "prep", 0, "during")
    await write(conn, wf_id, "fan", 1, "fan line")
    assert (await api.post(f"/v1/workflows/{wf_id}/cancel")).status_code == 202
    response = await asyncio.wait_for(everything, 30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text == "[prep] before\n[prep] during\n[fan#1] fan line\n"
    assert (await asyncio.wait_for(only_fan, 30)).text == "[fan#1] fan line\n"

    # A finished workflow: the stream gives what there is (after `since`) and ends.
    items = (await api.get(f"/v1/workflows/{wf_id}/logs")).json()["items"]
    later = await follow({"since": items[0]["id"]})
    assert later.text == "[prep] during\n[fan#1] fan line\n"
