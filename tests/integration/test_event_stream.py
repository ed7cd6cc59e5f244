"""The server-sent event streams over real HTTP (uvicorn in this process) on a real Redis: live order,
log lines, resume, heartbeat, end of stream, 404/422, and the Redis read released when a client leaves.
Workflows are moved on by tests.integration.driver (the worker's own transactions)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from agentainer_flow.events import ServerEvent, SSEParser
from flowcore.settings import GatewaySettings
from gateway.app import create_app
from tests.integration.driver import Worker, ok
from tests.ports import free_port

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
CHAIN = [{"id": "a", **STEP}, {"id": "b", "depends_on": ["a"], **STEP}]


Serve = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def serve(conn: Redis, redis_url: str) -> AsyncIterator[Serve]:
    """Start the gateway under uvicorn on a free loopback port; returns an HTTP client for it."""
    started: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(heartbeat_s: float = 0.5, block_ms: int = 200) -> httpx.AsyncClient:
        app = create_app(GatewaySettings(redis={"url": redis_url}), redis=conn)
        app.state.sse_heartbeat_s = heartbeat_s
        app.state.sse_block_ms = block_ms
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30)
        started.append((server, task, client))
        return client

    yield start
    for server, task, client in started:
        await client.aclose()
        server.should_exit = True
        await task


class Events:
    """SSE frames of one streamed response, as the SDK parses them, counting comment lines."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.parser = SSEParser()
        self.comments = 0

    async def next(self) -> ServerEvent | None:
        async for line in self.lines:
            if line.startswith(":"):
                self.comments += 1
            event = self.parser.feed(line)
            if event is not None:
                return event
        return None  # the server closed the stream

    async def until(self, done: Callable[[ServerEvent], bool]) -> list[ServerEvent]:
        seen: list[ServerEvent] = []
        while True:
            event = await self.next()
            assert event is not None, f"stream ended before the expected event; got {[e.event for e in seen]}"
            seen.append(event)
            if done(event):
                return seen

    async def rest(self) -> list[ServerEvent]:
        seen = []
        while (event := await self.next()) is not None:
            seen.append(event)
        return seen


def brief(events: list[ServerEvent]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        d = e.json()
        key = d.get("line") if e.event == "log" else d.get("step_id")
        out.append((e.event, key, d.get("status")))
    return out


def ids_increase(events: list[ServerEvent]) -> bool:
    """Each entry's id moves one stream cursor forward and never moves the other back."""
    entries = [e for e in events if e.event not in ("snapshot", "end")]
    parts = [tuple(tuple(int(x) for x in p.split("-")) for p in e.id.split(",")) for e in entries if e.id]
    assert len(parts) == len(entries)
    return all(all(b >= a for a, b in zip(x, y, strict=True)) and x != y for x, y in itertools.pairwise(parts))


async def create(client: httpx.AsyncClient, start: bool = True) -> str:
    r = await client.post("/v1/workflows", params={"start": str(start).lower()}, json={"name": "live", "steps": CHAIN})
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


async def test_a_running_workflow_streams_its_events_in_order_then_ends(serve: Serve, conn: Redis) -> None:
    client = await serve()
    worker = Worker(conn)
    wf_id = await create(client)
    async with client.stream("GET", f"/v1/workflows/{wf_id}/events") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        first = await events.until(lambda e: e.event == "step" and e.json()["status"] == "running")
        assert brief(first) == [("snapshot", None, "running"), ("workflow", None, "running"), ("step", "a", "running")]

        await worker.run(wf_id, "a", ok(), logs=["hello", "world"])
        second = await events.until(lambda e: e.event == "step" and e.json() == {**e.json(), "step_id": "b"})
        assert brief(second) == [
            ("task", "a", "running"), ("log", "hello", None), ("log", "world", None), ("task", "a", "succeeded"),
            ("step", "a", "succeeded"), ("step", "b", "running"),
        ]
        assert second[1].json()["attempt"] == 1 and second[1].json()["stream"] == "stdout"

        await worker.run(wf_id, "b", ok())
        last = await events.rest()
        assert brief(last) == [("task", "b", "running"), ("task", "b", "succeeded"), ("step", "b", "succeeded"),
                               ("workflow", None, "completed"), ("end", None, "completed")]
    everything = first + second + last
    assert ids_increase(everything) and all(e.json()["workflow_id"] == wf_id for e in everything)

    # Resume after the first log line: from Last-Event-ID or ?since=, the rest of the run, then the end.
    hello = next(e for e in everything if e.event == "log")
    for kwargs in ({"headers": {"Last-Event-ID": hello.id}}, {"params": {"since": hello.id}}):
        async with client.stream("GET", f"/v1/workflows/{wf_id}/events", **kwargs) as response:
            resumed = await Events(response).rest()
        assert brief(resumed)[0] == ("snapshot", None, "completed")
        assert [e.id for e in resumed[1:]] == [e.id for e in everything[everything.index(hello) + 1 :]]

    # A finished workflow replays its history and ends at once.
    async with client.stream("GET", f"/v1/workflows/{wf_id}/events") as response:
        replay = await Events(response).rest()
    assert brief(replay) == [("snapshot", None, "completed"), *brief(everything[1:])]


async def test_unknown_workflow_and_bad_cursor_are_4xx(serve: Serve) -> None:
    client = await serve()
    r = await client.get("/v1/workflows/wf-nope/events")
    assert r.status_code == 404 and r.json()["field"] == "workflow_id"
    wf_id = await create(client, start=False)
    r = await client.get(f"/v1/workflows/{wf_id}/events", params={"since": "yesterday"})
    assert r.status_code == 422 and r.json()["field"] == "since"
    r = await client.get(f"/v1/workflows/{wf_id}/events", headers={"Last-Event-ID": "1,2,3"})
    assert r.status_code == 422 and r.json()["field"] == "Last-Event-ID"
    r = await client.get("/v1/events", params={"since": "x"})
    assert r.status_code == 422 and r.json()["field"] == "since"
    assert (await client.get("/v1/events", headers={"Authorization": ""})).status_code == 401


async def test_heartbeat_while_idle_and_end_when_the_workflow_is_deleted(serve: Serve) -> None:
    client = await serve(heartbeat_s=0.2, block_ms=100)
    wf_id = await create(client, start=False)
    async with client.stream("GET", f"/v1/workflows/{wf_id}/events") as response:
        events = Events(response)
        assert brief([await events.next()]) == [("snapshot", None, "pending")]  # type: ignore[list-item]
        while events.comments < 2:  # keep-alive comments arrive while nothing happens
            await anext_line(events)
        assert (await client.delete(f"/v1/workflows/{wf_id}")).status_code == 204
        assert brief(await events.rest()) == [("end", None, "deleted")]


async def anext_line(events: Events) -> None:
    line = await events.lines.__anext__()
    if line.startswith(":"):
        events.comments += 1


async def blocked_xreads(conn: Redis) -> int:
    clients = await conn.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def test_a_client_that_leaves_releases_its_blocking_read(serve: Serve, conn: Redis) -> None:
    client = await serve(heartbeat_s=60, block_ms=30_000)
    wf_id = await create(client, start=False)
    async with client.stream("GET", f"/v1/workflows/{wf_id}/events") as response:
        events = Events(response)
        assert (await events.next()) is not None  # the snapshot; now the server waits in XREAD BLOCK
        for _ in range(500):
            if await blocked_xreads(conn) == 1:
                break
            await asyncio.sleep(0.01)
        assert await blocked_xreads(conn) == 1
    # The client is gone: Starlette cancels the stream and redis-py drops the blocked connection.
    for _ in range(1000):
        if await blocked_xreads(conn) == 0:
            break
        await asyncio.sleep(0.01)
    assert await blocked_xreads(conn) == 0


async def test_the_global_stream_carries_every_workflow_from_now_on(serve: Serve, conn: Redis) -> None:
    client = await serve()
    before = await create(client, start=False)
    async with client.stream("GET", "/v1/events") as response:
        events = Events(response)
        wf_id = await create(client)
        seen = await events.until(lambda e: e.json().get("workflow_id") == wf_id and e.json().get("status") == "running")
    assert all(e.json().get("workflow_id") != before for e in seen)
    assert brief(seen)[:2] == [("workflow", None, "pending"), ("workflow", None, "running")]
    assert all(e.id for e in seen)
    async with client.stream("GET", "/v1/events", params={"since": seen[0].id}) as response:
        again = await Events(response).until(lambda e: e.id == seen[-1].id)
    assert [e.id for e in again] == [e.id for e in seen[1:]]
