"""The metrics routes in-process (httpx ASGI transport) on a real Redis: per workflow, history, aggregates
and the Prometheus text. Workflows are moved on by tests.integration.driver (the worker's transactions,
no pool), so every number is known."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from gateway.routes import metrics as metrics_routes
from tests.integration.driver import Worker, failed, ok
from tests.unit.test_exposition import check_exposition, samples

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
KEYS = Keyspace()


# `conn` and `api` (pool service on a closed port: /metrics must report it down) come from conftest.


async def create(api: httpx.AsyncClient, name: str, steps: list[dict[str, Any]], start: bool = True) -> str:
    r = await api.post("/v1/workflows", params={"start": str(start).lower()}, json={"name": name, "steps": steps})
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


def chain(**second: Any) -> list[dict[str, Any]]:
    return [{"id": "a", **STEP}, {"id": "b", "depends_on": ["a"], **STEP, **second}]


async def test_empty_window_is_all_zeros_and_nulls(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/metrics/aggregate", params={"duration": "1h"})
    assert r.status_code == 200
    doc = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in {r.text}"))
    assert doc["window"] == "1h" and doc["window_s"] == 3600 and doc["total_workflows"] == 0
    assert doc["success_rate"] == 0.0 and doc["pool_efficiency"] == 0.0 and doc["throughput_per_min"] == 0.0
    assert doc["avg_duration"] is None and doc["p50_duration"] is None and doc["p95_duration"] is None
    assert doc["scanned"] == 0 and doc["truncated"] is False
    history = (await api.get("/v1/metrics/history", params={"duration": "24h"})).json()
    assert history["items"] == [] and history["truncated"] is False


async def test_workflow_metrics_of_pooled_cold_retried_and_failing_runs(api: httpx.AsyncClient, conn: Redis) -> None:
    worker = Worker(conn)
    mixed = await create(api, "mixed", chain(mode="cold", retry={"max_attempts": 2, "initial_delay_s": 0}))
    await worker.run(mixed, "a", ok("c1", cpu_time_s=0.25, peak_memory_bytes=12_000_000))
    await worker.run(mixed, "b", failed("flaky", container="c2", pooled=False))
    await worker.run(mixed, "b", ok("c3", pooled=False))
    doc = (await api.get(f"/v1/workflows/{mixed}/metrics")).json()
    assert doc["status"] == "completed" and doc["name"] == "mixed" and doc["duration"] >= 0
    a, b = doc["step_metrics"]["a"], doc["step_metrics"]["b"]
    assert a["agent_pooled"] is True and a["container_id"] == "c1" and a["attempts"] == 1
    assert b["agent_pooled"] is False and b["attempts"] == 2 and b["retries"] == 1 and b["cold_dispatches"] == 2
    assert doc["resource_usage"] == {"cpu_time_s": 0.25, "peak_memory_bytes": 12_000_000, "containers_started": 2,
                                     "containers_used": 3, "dispatches": 3, "warm_dispatches": 1,
                                     "cold_dispatches": 2, "pool_efficiency": 33.33}
    assert [e["message"] for e in doc["error_details"]] == ["flaky"] and doc["errors"] == []

    broken = await create(api, "broken", chain())
    await worker.run(broken, "a", failed("disk on fire"))
    doc = (await api.get(f"/v1/workflows/{broken}/metrics")).json()
    assert doc["status"] == "failed" and doc["errors"] == ["a: disk on fire"]
    assert doc["step_metrics"]["b"]["status"] == "skipped"

    running = await create(api, "running", chain())
    await worker.claim(running, "a")
    doc = (await api.get(f"/v1/workflows/{running}/metrics")).json()
    assert doc["status"] == "running" and doc["end_time"] is None and doc["duration"] >= 0
    assert list(doc["step_metrics"]) == ["a"] and doc["step_metrics"]["a"]["status"] == "running"

    r = await api.get("/v1/workflows/wf-nope/metrics")
    assert r.status_code == 404 and r.json()["field"] == "workflow_id"


async def test_history_and_aggregate_over_a_window(api: httpx.AsyncClient, conn: Redis) -> None:
    worker = Worker(conn)
    done = await create(api, "done", chain())
    await worker.run(done, "a", ok("c1"))
    await worker.run(done, "b", ok("c2", pooled=False))
    bad = await create(api, "bad", chain())
    await worker.run(bad, "a", failed())
    live = await create(api, "live", chain())
    pending = await create(api, "pending", chain(), start=False)
    old = await create(api, "old", chain(), start=False)
    # Make `old` two days old, as the store would have written it then.
    two_days_ago = time.time() - 2 * 86400
    await conn.hset(KEYS.workflow(old), "created_at", repr(two_days_ago))
    for key in (KEYS.all_workflows, KEYS.by_status("pending")):
        await conn.zadd(key, {old: int(two_days_ago * 1000)})

    history = (await api.get("/v1/metrics/history", params={"duration": "1h"})).json()
    assert [i["workflow_id"] for i in history["items"]] == [pending, live, bad, done]
    item = history["items"][1]
    assert item["status"] == "running" and item["start_time"].endswith("Z") and item["duration"] >= 0
    assert history["items"][0]["start_time"] is None and history["items"][0]["duration"] is None
    week = (await api.get("/v1/metrics/history", params={"duration": "7d", "limit": 10})).json()
    assert week["items"][-1]["workflow_id"] == old
    limited = (await api.get("/v1/metrics/history", params={"duration": "7d", "limit": 2})).json()
    assert len(limited["items"]) == 2 and limited["truncated"] is True
    failed_only = (await api.get("/v1/metrics/history", params={"duration": "1h", "status": "failed"})).json()
    assert [i["workflow_id"] for i in failed_only["items"]] == [bad]

    agg = (await api.get("/v1/metrics/aggregate", params={"duration": "1h"})).json()
    assert agg["total_workflows"] == 4 and agg["finished_workflows"] == 2
    assert agg["by_status"] == {"pending": 1, "queued": 0, "running": 1, "completed": 1, "failed": 1, "cancelled": 0}
    assert agg["success_rate"] == 50.0 and agg["avg_duration"] is not None and agg["p95_duration"] >= agg["p50_duration"]
    assert (agg["dispatches"], agg["warm_dispatches"], agg["cold_dispatches"]) == (3, 2, 1)
    assert agg["pool_efficiency"] == 66.67 and agg["truncated"] is False and agg["scanned"] == 4
    week_agg = (await api.get("/v1/metrics/aggregate", params={"duration": "7d"})).json()
    assert week_agg["total_workflows"] == 5

    # The dashboard's charts: the same window in buckets, computed with the aggregate's definitions.
    series = (await api.get("/v1/metrics/series", params={"duration": "1h", "buckets": "4"})).json()
    assert len(series["buckets"]) == 4 and series["scanned"] == 4 and series["truncated"] is False
    newest = series["buckets"][-1]
    assert newest["created"] == {"completed": 1, "failed": 1, "cancelled": 0, "active": 2}
    assert newest["p95_duration"] == agg["p95_duration"] and newest["success_rate"] == agg["success_rate"]


async def test_aggregate_says_when_the_scan_was_capped(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        await create(api, f"w{i}", chain(), start=False)
    monkeypatch.setattr(metrics_routes, "MAX_SCAN", 2)
    agg = (await api.get("/v1/metrics/aggregate", params={"duration": "1h"})).json()
    assert agg["scanned"] == 2 and agg["truncated"] is True and agg["total_workflows"] == 2


async def test_aggregate_reads_task_records_within_a_budget(
    api: httpx.AsyncClient, conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(conn)
    older = await create(api, "older", [{"id": "a", **STEP}])
    await worker.run(older, "a", ok("c1"))
    newer = await create(api, "newer", chain())
    await worker.run(newer, "a", ok("c2"))
    await worker.run(newer, "b", ok("c3", pooled=False))
    monkeypatch.setattr(metrics_routes, "MAX_TASKS", 2)  # newer's two tasks fit, older's one does not
    agg = (await api.get("/v1/metrics/aggregate", params={"duration": "1h"})).json()
    assert agg["total_workflows"] == 2 and agg["dispatches"] == 2 and agg["dispatches_truncated"] is True
    monkeypatch.setattr(metrics_routes, "MAX_TASKS", 3)
    agg = (await api.get("/v1/metrics/aggregate", params={"duration": "1h"})).json()
    assert agg["dispatches"] == 3 and agg["dispatches_truncated"] is False


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/metrics/aggregate", {"duration": "soon"}, "duration"),
        ("/v1/metrics/aggregate", {"duration": "0s"}, "duration"),
        ("/v1/metrics/aggregate", {"duration": "-5m"}, "duration"),
        ("/v1/metrics/aggregate", {"duration": "400d"}, "duration"),
        ("/v1/metrics/history", {"duration": ""}, "duration"),
        ("/v1/metrics/history", {"duration": "1h", "limit": "0"}, "limit"),
        ("/v1/metrics/history", {"duration": "1h", "limit": "many"}, "limit"),
        ("/v1/metrics/history", {"duration": "1h", "status": "sleeping"}, "status"),
        ("/v1/metrics/series", {"duration": "1h", "buckets": "0"}, "buckets"),
        ("/v1/metrics/series", {"duration": "1h", "buckets": "201"}, "buckets"),
        ("/v1/metrics/series", {"duration": "soon"}, "duration"),
    ],
)
async def test_bad_parameters_are_422_naming_them(api: httpx.AsyncClient, path: str, params: dict[str, str], field: str) -> None:
    r = await api.get(path, params=params)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


async def test_prometheus_text(api: httpx.AsyncClient, conn: Redis) -> None:
    worker = Worker(conn)
    done = await create(api, "done", chain())
    await worker.run(done, "a", ok("c1"))
    await worker.run(done, "b", ok("c2"))
    await create(api, "queued", chain())  # its first task waits in the queue (no worker here)
    await create(api, "pending", chain(), start=False)
    # A registered pool service that does not answer, and one whose heartbeat is stale.
    await conn.hset(KEYS.pool_services, mapping={"dead": json.dumps({"id": "dead", "url": "http://127.0.0.1:9"}),
                                                 "stale": json.dumps({"id": "stale", "url": "http://127.0.0.1:9"})})
    await conn.zadd(KEYS.pool_heartbeats, {"dead": int(time.time() * 1000), "stale": 1000})

    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    types = check_exposition(r.text)
    assert types["flow_workflows"] == "gauge" and types["flow_step_duration_seconds"] == "histogram"
    v = samples(r.text)
    assert v[("flow_workflows", (("status", "completed"),))] == 1 and v[("flow_workflows", (("status", "running"),))] == 1
    assert v[("flow_workflows", (("status", "pending"),))] == 1 and v[("flow_workflows", (("status", "failed"),))] == 0
    # the driver never takes jobs off the arq queue: all three dispatches are still there
    queued = await conn.zcard(KEYS.queue)
    assert queued == 3 and v[("flow_queue_depth", ())] == queued and v[("flow_queue_ready", ())] == queued
    assert v[("flow_tasks_running", ())] == 0
    assert v[("flow_step_duration_seconds_count", (("type", "sequential"),))] == 2
    assert v[("flow_tasks_total", (("outcome", "succeeded"), ("type", "sequential")))] == 2
    assert v[("flow_workflows_finished_total", (("status", "completed"), ("workflow", "done")))] == 1
    assert v[("flow_pool_service_up", (("service", "dead"),))] == 0 and v[("flow_pool_service_up", (("service", "stale"),))] == 0
    assert (await api.get("/metrics", headers={"Authorization": ""})).status_code == 401


async def test_prometheus_without_registered_pools_reports_the_configured_one(api: httpx.AsyncClient) -> None:
    r = await api.get("/metrics")
    v = samples(r.text)
    assert r.status_code == 200 and v[("flow_pool_service_up", (("service", "default"),))] == 0
    assert v[("flow_step_duration_seconds_count", (("type", "sequential"),))] == 0
