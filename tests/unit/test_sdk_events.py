"""The SDK's server-sent events: the parser, ``stream_events`` and ``monitor()`` over the stream, with its
fallback to polling (httpx.MockTransport answering as the gateway does)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from agentainer_flow import ClientError, WorkflowClient, WorkflowStatus
from agentainer_flow.events import ServerEvent, SSEParser


def parse(text: str) -> tuple[list[ServerEvent], SSEParser]:
    parser = SSEParser()
    events = [e for line in text.split("\n") if (e := parser.feed(line)) is not None]
    return events, parser


def test_parser_follows_the_event_stream_rules() -> None:
    text = (
        "retry: 2000\n\n"
        ": keep-alive\n\n"
        "data: plain\n\n"
        "id: 7-0,0-0\nevent: step\ndata: {\"a\": 1}\n\n"
        "event: multi\ndata: one\ndata:two\ndata:  three\n\n"
        "event: no-data\n\n"
        "id\ndata\n\n"
        "unknown: field\nid: bad\0id\ndata: x\n\n"
    )
    events, parser = parse(text)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("message", "plain", None),
        ("step", '{"a": 1}', "7-0,0-0"),
        ("multi", "one\ntwo\n three", "7-0,0-0"),
        ("message", "", ""),  # `id` alone resets the id; `data` alone is an empty line of data
        ("message", "x", ""),  # an id with NUL is ignored
    ]
    assert events[1].json() == {"a": 1} and events[0].json() is None
    assert parser.retry_ms == 2000 and parser.last_event_id == ""


def sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "retry: 2000\n\n" + "".join(
        f"id: {i}-0,0-0\nevent: {name}\ndata: {json.dumps(data)}\n\n" for i, (name, data) in enumerate(events, 1)
    )


def wf(status: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": "wf-1", "name": "w", "status": status, "created_at": "2026-01-02T03:04:05Z", "config": {},
            "steps": steps or []}


def step(status: str) -> dict[str, Any]:
    return {"id": "a", "type": "sequential", "status": status, "attempts": 1,
            "tasks": [{"index": 0, "status": status, "pooled": True}]}


class Gateway:
    """Answers the workflow (running until ``finish_after`` GETs) and its event stream (``events``)."""

    def __init__(self, events: httpx.Response | Exception | None, finish_after: int = 1) -> None:
        self.events = events
        self.finish_after = finish_after
        self.gets = 0
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.endswith("/events"):
            if isinstance(self.events, Exception):
                raise self.events
            return self.events or httpx.Response(404, json={"error": "not_found", "message": "no route"})
        self.gets += 1
        done = self.gets > self.finish_after
        return httpx.Response(200, json=wf("completed" if done else "running", [step("succeeded" if done else "running")]))


def stream_response(body: str, ctype: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": ctype}, text=body)


async def test_stream_events_yields_typed_events_and_remembers_the_id() -> None:
    body = sse(("snapshot", {"status": "running"}), ("step", {"step_id": "a"}), ("end", {"status": "completed"}))
    gateway = Gateway(stream_response(body))
    async with WorkflowClient("http://gw", transport=httpx.MockTransport(gateway)) as client, \
            await client.stream_events("wf-1") as events:
        seen = [(e.event, e.json()) async for e in events]
        assert events.last_event_id == "3-0,0-0"
    assert [name for name, _ in seen] == ["snapshot", "step", "end"] and seen[1][1] == {"step_id": "a"}


async def test_stream_events_refuses_what_is_not_an_event_stream() -> None:
    gateway = Gateway(stream_response('{"id": "wf-1"}', ctype="application/json"))
    async with WorkflowClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        with pytest.raises(ClientError) as info:
            await client.stream_events("wf-1")
    assert info.value.code == "not_event_stream" and info.value.status_code == 200


async def test_monitor_follows_the_stream_without_polling() -> None:
    body = sse(("snapshot", {"status": "running"}), ("step", {"step_id": "a", "status": "running"}),
               ("log", {"line": "x"}), ("workflow", {"status": "completed"}), ("end", {"status": "completed"}))
    gateway = Gateway(stream_response(body), finish_after=1)
    seen: list[tuple[str, int]] = []

    async def on_update(workflow: Any, metrics: dict[str, Any]) -> None:
        seen.append((workflow.status.value, len(metrics["step_metrics"])))

    async with WorkflowClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        final = await client.execution("wf-1").monitor(callback=on_update, interval=0.0)
    assert final.status == WorkflowStatus.COMPLETED
    assert seen[0] == ("running", 1) and seen[-1] == ("completed", 1)
    # one refresh at the start, at most one for the burst of changes, one at the end: no polling loop
    assert gateway.paths.count("/v1/workflows/wf-1/events") == 1 and gateway.gets <= 3


@pytest.mark.parametrize(
    "events",
    [
        None,  # 404: the gateway has no stream
        httpx.Response(405, json={"error": "method_not_allowed", "message": "no"}),
        stream_response('{"not": "a stream"}', ctype="application/json"),
        httpx.ConnectError("refused"),
        stream_response(sse(("snapshot", {"status": "running"}))),  # the stream ends without `end`
    ],
)
async def test_monitor_falls_back_to_polling(events: httpx.Response | Exception | None) -> None:
    gateway = Gateway(events, finish_after=2)
    statuses: list[str] = []
    async with WorkflowClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        final = await client.execution("wf-1").monitor(callback=lambda w, m: statuses.append(w.status.value),
                                                       interval=0.001)
    assert final.status == WorkflowStatus.COMPLETED and statuses[-1] == "completed" and "running" in statuses


async def test_monitor_raises_other_errors() -> None:
    gateway = Gateway(httpx.Response(401, json={"error": "unauthorized", "message": "invalid token"}))
    async with WorkflowClient("http://gw", transport=httpx.MockTransport(gateway)) as client:
        with pytest.raises(ClientError) as info:
            await client.execution("wf-1").monitor()
    assert info.value.status_code == 401
