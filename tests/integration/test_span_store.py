"""The Redis span store on a real Redis: the exporter's bounds and expiry, and ``GET /v1/workflows/{id}/spans``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowcore import tracing
from flowcore.keyspace import Keyspace
from flowcore.tracing_store import RedisSpanExporter
from tests.gateway_client import gateway_api

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["true"]}


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_api(redis_url) as client:
        yield client


def make_spans(wf_id: str, count: int) -> list[ReadableSpan]:
    """``count`` finished spans of one trace, started at 1000 + i seconds, plus one of no workflow."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "flow-worker"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    root = tracer.start_span("workflow w", start_time=tracing.to_ns(999), attributes={tracing.WORKFLOW_ID: wf_id})
    context = tracing.context_from(tracing.traceparent_of(root.get_span_context()))
    for i in reversed(range(count)):
        tracer.start_span(
            f"step s{i}", context=context, start_time=tracing.to_ns(1000 + i), attributes={tracing.WORKFLOW_ID: wf_id}
        ).end(end_time=tracing.to_ns(1000.5 + i))
    tracer.start_span("no workflow").end()
    root.end(end_time=tracing.to_ns(999.5))
    return list(memory.get_finished_spans())


async def test_spans_route_reads_the_store_in_start_order(api: httpx.AsyncClient, redis_url: str) -> None:
    wf_id = (await api.post("/v1/workflows", json={"name": "w", "steps": [STEP]})).json()["id"]
    assert (await api.get(f"/v1/workflows/{wf_id}/spans")).json() == {"trace_id": None, "items": []}
    spans = make_spans(wf_id, 3)
    exporter = RedisSpanExporter(redis_url, Keyspace(), max_spans=100, retention_s=3600)
    try:
        exporter.export(spans)
    finally:
        exporter.shutdown()
    body = (await api.get(f"/v1/workflows/{wf_id}/spans")).json()
    assert [s["name"] for s in body["items"]] == ["workflow w", "step s0", "step s1", "step s2"]
    assert {s["trace_id"] for s in body["items"]} == {body["trace_id"]}
    root_id = body["items"][0]["span_id"]
    assert all(s["parent_span_id"] == root_id for s in body["items"][1:])
    assert body["items"][1]["service"] == "flow-worker" and body["items"][1]["duration_ms"] == 500.0


async def test_store_is_bounded_expires_and_goes_with_the_workflow(api: httpx.AsyncClient, redis_url: str) -> None:
    wf_id = (await api.post("/v1/workflows", json={"name": "w", "steps": [STEP]})).json()["id"]
    exporter = RedisSpanExporter(redis_url, Keyspace(), max_spans=10, retention_s=600)
    try:
        exporter.export(make_spans(wf_id, 14))
    finally:
        exporter.shutdown()
    key = Keyspace().spans(wf_id)
    with redis.Redis.from_url(redis_url) as client:
        assert client.llen(key) == 10
        assert 0 < client.ttl(key) <= 600
        assert client.keys("flow:wf:*:spans") == [key.encode()]  # the span of no workflow went nowhere
    names = [s["name"] for s in (await api.get(f"/v1/workflows/{wf_id}/spans")).json()["items"]]
    # The ten that finished last (the steps ended from s13 down to s0, then the root), in start order.
    assert names == ["workflow w"] + [f"step s{i}" for i in range(9)]
    assert (await api.delete(f"/v1/workflows/{wf_id}")).status_code == 204
    with redis.Redis.from_url(redis_url) as client:
        assert not client.exists(key)


async def test_unknown_workflow_is_404(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/workflows/wf-nope/spans")
    assert r.status_code == 404 and r.json()["field"] == "workflow_id"
