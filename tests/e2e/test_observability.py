"""Metrics, history, aggregates, the Prometheus text and the live event stream of real workflows run by the
real processes (gateway, worker, pool) on real Redis and Docker: pooled and cold steps, a failing run, a
retried step, a running workflow followed over server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agentainer_flow import WorkflowClient
from agentainer_flow.events import ServerEvent, SSEParser
from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, step, submit, wait
from tests.unit.test_exposition import check_exposition
from tests.unit.test_exposition import samples as parse_samples


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as c:
        yield c


def metrics_of(client: httpx.Client, wf_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/workflows/{wf_id}/metrics")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def finished(client: httpx.Client, definition: dict[str, Any], status: str) -> tuple[str, dict[str, Any]]:
    wf_id = submit(client, definition)
    body = wait(client, wf_id)
    assert body["status"] == status, brief(body)
    return wf_id, metrics_of(client, wf_id)


def assert_usage_is_sane(usage: dict[str, Any]) -> None:
    assert usage["dispatches"] == usage["warm_dispatches"] + usage["cold_dispatches"]
    assert 0.0 <= usage["pool_efficiency"] <= 100.0
    assert usage["cpu_time_s"] is None or usage["cpu_time_s"] >= 0
    assert usage["peak_memory_bytes"] is None or usage["peak_memory_bytes"] >= 0


def test_pooled_cold_failing_and_retried_runs(client: httpx.Client) -> None:
    pooled_id, pooled = finished(client, {"name": "m-pooled", "steps": [
        step("a", "print(json.dumps(1))"), step("b", "print(json.dumps(2))", depends_on=["a"])]}, "completed")
    assert set(pooled["step_metrics"]) == {"a", "b"} and pooled["duration"] > 0 and pooled["end_time"]
    for s in pooled["step_metrics"].values():
        assert s["status"] == "succeeded" and s["agent_pooled"] is True and s["mode"] in ("agent", "exec")
        assert s["container_id"] and s["attempts"] == 1 and s["warm_dispatches"] + s["cold_dispatches"] == 1
        assert s["execution_s"] is not None and s["queue_wait_s"] is not None
    # The workflow's pool starts its container for a (cold, as the pool service counts it); b finds it warm.
    steps = pooled["step_metrics"]
    assert steps["a"]["cold_dispatches"] == 1 and steps["b"]["warm_dispatches"] == 1
    assert pooled["resource_usage"]["warm_dispatches"] == 1 and pooled["resource_usage"]["pool_efficiency"] == 50.0
    assert_usage_is_sane(pooled["resource_usage"])

    _, cold = finished(client, {"name": "m-cold", "steps": [step("c", "print(json.dumps(3))", mode="cold")]}, "completed")
    c = cold["step_metrics"]["c"]
    assert c["agent_pooled"] is False and c["mode"] == "cold" and c["cold_dispatches"] == 1
    assert cold["resource_usage"]["containers_started"] == 1 and cold["resource_usage"]["pool_efficiency"] == 0.0

    _, failing = finished(client, {"name": "m-failing", "steps": [
        step("ok", "print(json.dumps(1))"), step("boom", "sys.exit(3)", depends_on=["ok"]),
        step("after", "print(1)", depends_on=["boom"])]}, "failed")
    assert failing["errors"] and failing["errors"][0].startswith("boom:")
    assert failing["step_metrics"]["boom"]["status"] == "failed" and failing["step_metrics"]["after"]["status"] == "skipped"
    assert [d["step_id"] for d in failing["error_details"]] == ["boom"]

    retry = {"max_attempts": 3, "initial_delay_s": 0, "jitter": 0}
    _, retried = finished(client, {"name": "m-retried", "steps": [
        step("flaky", "sys.exit(1) if doc['attempt'] < 2 else print(json.dumps(doc['attempt']))", retry=retry)]},
        "completed")
    flaky = retried["step_metrics"]["flaky"]
    assert flaky["attempts"] == 2 and flaky["retries"] == 1 and flaky["warm_dispatches"] + flaky["cold_dispatches"] == 2
    assert [(d["attempt"], d["retried"]) for d in retried["error_details"]] == [(1, True)] and retried["errors"] == []
    assert_usage_is_sane(retried["resource_usage"])

    assert client.get("/v1/workflows/wf-missing/metrics").status_code == 404
    history = client.get("/v1/metrics/history", params={"duration": "1h", "limit": 1000}).json()["items"]
    ids = [i["workflow_id"] for i in history]
    # Newest first. An id starts with its creation time in ms; two created in the same ms may come in
    # either order (the history orders by the exact time, the ids' tails are random).
    created_ms = [wf_id.split("-")[1] for wf_id in ids]
    assert pooled_id in ids and created_ms == sorted(created_ms, reverse=True)


def test_history_includes_running_workflows_and_aggregates_add_up(client: httpx.Client) -> None:
    wf_id = submit(client, {"name": "m-running", "steps": [step("slow", "time.sleep(60)")]})
    wait(client, wf_id, until={"running"})
    try:
        items = client.get("/v1/metrics/history", params={"duration": "30m"}).json()["items"]
        mine = next(i for i in items if i["workflow_id"] == wf_id)
        assert mine["status"] == "running" and mine["end_time"] is None and mine["duration"] >= 0
        assert items[0]["workflow_id"] == wf_id  # newest first
        agg = client.get("/v1/metrics/aggregate", params={"duration": "1h"}).json()
        assert agg["total_workflows"] == sum(agg["by_status"].values()) and agg["by_status"]["running"] >= 1
        assert agg["finished_workflows"] == agg["completed"] + agg["failed"] + agg["cancelled"]
        assert 0.0 <= agg["success_rate"] <= 100.0 and 0.0 <= agg["pool_efficiency"] <= 100.0
        if agg["finished_workflows"]:
            assert agg["p50_duration"] <= agg["p95_duration"] <= agg["max_duration"]
    finally:
        assert client.post(f"/v1/workflows/{wf_id}/cancel").status_code == 202
    # Nothing was created in the last millisecond: the empty window is defined, without NaN.
    empty = client.get("/v1/metrics/aggregate", params={"duration": "1ms"})
    assert empty.status_code == 200 and "NaN" not in empty.text
    doc = empty.json()
    assert doc["total_workflows"] == 0 and doc["success_rate"] == 0.0 and doc["avg_duration"] is None
    bad = client.get("/v1/metrics/aggregate", params={"duration": "forever"})
    assert bad.status_code == 422 and bad.json()["field"] == "duration"


def test_prometheus_text_of_the_stack(client: httpx.Client, stack: Stack) -> None:
    def totals(text: str) -> dict[str, float]:  # counters summed over their labels (ADR 020)
        v = parse_samples(text)
        return {name: sum(x for (n, _), x in v.items() if n == name)
                for name in ("flow_workflows_finished_total", "flow_tasks_total", "flow_step_duration_seconds_count",
                             "flow_workflow_duration_seconds_count", "flow_task_duration_seconds_count")}

    before = totals(client.get("/metrics").text)
    finished(client, {"name": "m-prom", "steps": [step("p", "print(json.dumps(1))")]}, "completed")
    r = client.get("/metrics")
    after = totals(r.text)
    assert all(after[k] >= before[k] + 1 for k in before), (before, after)
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    check_exposition(r.text)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines() if not line.startswith("#")}
    service = f'service="{stack.service_id}"'
    assert samples[f"flow_pool_service_up{{{service}}}"] == 1
    assert samples[f"flow_pool_warm_hits_total{{{service}}}"] + samples[f"flow_pool_cold_starts_total{{{service}}}"] >= 1
    assert f"flow_pool_queue_waits_total{{{service}}}" in samples and "flow_queue_depth" in samples
    completed = client.get("/v1/workflows", params={"status": "completed", "limit": 1}).json()["total"]
    assert samples['flow_workflows{status="completed"}'] == completed
    assert samples['flow_step_duration_seconds_count{type="sequential"}'] >= 1
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


def read_events(stream: Iterator[str]) -> Iterator[ServerEvent]:
    parser = SSEParser()
    for line in stream:
        event = parser.feed(line)
        if event is not None:
            yield event


def test_events_of_a_running_workflow_arrive_in_order(client: httpx.Client) -> None:
    definition = {"name": "m-live", "steps": [
        step("a", "print('one', flush=True); time.sleep(2); print('two', flush=True); print(json.dumps(1))", output="text"),
        step("b", "print(json.dumps(2))", depends_on=["a"])]}
    wf_id = submit(client, definition)
    with client.stream("GET", f"/v1/workflows/{wf_id}/events", timeout=httpx.Timeout(30, read=60)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response.iter_lines()))  # the server ends the stream after the workflow
    data = [e.json() for e in events]
    assert events[0].event == "snapshot" and data[0]["status"] == "running"
    assert events[-1].event == "end" and data[-1]["status"] == "completed"
    marks = [(e.event, d.get("step_id"), d.get("status")) for e, d in zip(events, data, strict=True)]
    order = [("workflow", None, "running"), ("step", "a", "running"), ("task", "a", "running"),
             ("task", "a", "succeeded"), ("step", "a", "succeeded"), ("step", "b", "running"),
             ("task", "b", "running"), ("task", "b", "succeeded"), ("workflow", None, "completed"), ("end", None, "completed")]
    positions = [marks.index(m) for m in order]
    assert positions == sorted(positions), marks
    logs = [(i, d["line"]) for i, (e, d) in enumerate(zip(events, data, strict=True)) if e.event == "log" and d["step_id"] == "a"]
    # lines of a arrive while a runs: after its task started, before it succeeded
    assert [line for _, line in logs][:2] == ["one", "two"], marks
    assert all(positions[2] < i < positions[3] for i, _ in logs)


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient(stack.url, token=stack.token) as c:
        yield c


async def test_monitor_uses_the_live_stream(sdk: WorkflowClient) -> None:
    paths: list[str] = []
    original = sdk.session.send

    async def spy(request: httpx.Request, **kwargs: Any) -> httpx.Response:
        paths.append(request.url.path)
        return await original(request, **kwargs)

    sdk.session.send = spy  # type: ignore[method-assign]
    execution = await sdk.run_workflow({"name": "m-monitor", "steps": [step("s", "time.sleep(1); print(json.dumps(1))")]})
    seen: list[str] = []
    final = await execution.monitor(callback=lambda wf, m: seen.append(wf.status.value), interval=0.1)
    assert final.status.value == "completed" and seen[-1] == "completed"
    assert paths.count(f"/v1/workflows/{execution.id}/events") == 1
    # no polling loop: a refresh at the start, one per burst of changes, one at the end
    assert paths.count(f"/v1/workflows/{execution.id}") <= len(seen) + 1
