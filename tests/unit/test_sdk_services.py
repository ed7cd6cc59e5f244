"""Client methods whose gateway routes come later (agents, triggers, metrics), the execution helpers and
the error wrapping, against httpx.MockTransport answering the documented shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agentainer_flow import (
    ClientError,
    TransportError,
    TriggerConfig,
    TriggerType,
    ValidationError,
    WorkflowClient,
    WorkflowError,
    WorkflowStatus,
    WorkflowTimeoutError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kwargs: Any) -> WorkflowClient:
    return WorkflowClient("http://gw", transport=httpx.MockTransport(handler), **kwargs)


def wf_body(status: str = "running", steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": "wf-1", "name": "w", "status": status, "created_at": "2026-01-02T03:04:05Z", "duration_s": 1.5,
            "config": {}, "steps": steps or []}


def step_body(sid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "type": "sequential", "status": status, "attempts": 1, "duration_s": 0.25, "tasks": [
        {"index": 0, "status": status, "pooled": True, "container_id": "c1", "log_tail": "hi\n"}], **extra}


async def test_agents_routes_and_bodies() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.url.path.endswith("/logs"):
            return httpx.Response(200, text="one\ntwo\n")
        if request.method == "GET" and request.url.path == "/v1/agents":
            return httpx.Response(200, json={"agents": [{"id": "ag-1", "name": "worker-1", "status": "running"}]})
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(
            200,
            json={"id": "ag-1", "name": "worker-1", "image": "i", "status": "running", "env": {"A": "1"},
                  "cpu": 2.0, "memory_mb": 4096},
        )

    async with client_for(handler) as client:
        agent = await client.deploy_agent(
            name="worker-1", image="i", env_vars={"TASK_TYPE": "process"}, cpu_limit=2000000000,
            memory_limit=4294967296, workflow_id="wf-1", step_id="s",
        )
        assert agent.id == "ag-1" and agent.status == "running"
        assert agent.env_vars == {"A": "1"} and agent.cpu_limit == 2_000_000_000
        assert agent.memory_limit == 4096 * 1_048_576
        await client.start_agent(agent.id)
        await client.stop_agent(agent.id)
        assert (await client.get_agent(agent.id)).name == "worker-1"
        assert await client.get_agent_logs(agent.id, follow=False) == "one\ntwo\n"
        assert [a.id for a in await client.list_agents()] == ["ag-1"]
        await client.remove_agent(agent.id)
        with pytest.raises(ValidationError, match="cpu_limit"):
            await client.deploy_agent("x", "i", cpu_limit=-1)
    assert seen[0] == ("POST", "/v1/agents", {
        "name": "worker-1", "image": "i", "env": {"TASK_TYPE": "process"}, "cpu": 2.0,
        "memory_mb": 4096, "workflow_id": "wf-1", "step_id": "s"})
    assert [(m, p) for m, p, _ in seen[1:]] == [
        ("POST", "/v1/agents/ag-1/start"), ("POST", "/v1/agents/ag-1/stop"), ("GET", "/v1/agents/ag-1"),
        ("GET", "/v1/agents/ag-1/logs"), ("GET", "/v1/agents"), ("DELETE", "/v1/agents/ag-1")]


async def test_following_logs_yields_lines_with_their_newlines() -> None:
    chunks = [b"first li", b"ne\nsecond\nthi", b"rd"]

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            for c in chunks:
                yield c

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["follow"] == "true"
        return httpx.Response(200, stream=Body(), headers={"content-type": "text/plain"})

    async with client_for(handler) as client:
        logs = await client.get_agent_logs("ag-1", follow=True)
        lines = [line async for line in logs]
    assert lines == ["first line\n", "second\n", "third"]


async def test_triggers_routes_and_bodies() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.url.path.endswith("/trigger"):
            return httpx.Response(201, json={"workflow_id": "wf-2"})
        if request.method == "GET" and request.url.path.endswith("/triggers"):
            return httpx.Response(200, json={"items": [{"id": "tr-1", "type": "schedule"}]})
        if request.url.path.endswith(("/enable", "/disable")):
            return httpx.Response(200, json={"id": "tr-1", "type": "schedule", "enabled": "enable" in request.url.path})
        return httpx.Response(201, json={"id": "tr-1", "type": (body or {}).get("type", "schedule"),
                                         "next_run": "2026-01-02T04:00:00Z", "cron_expression": "0 * * * *"})

    async with client_for(handler) as client:
        trigger = await client.schedule_workflow("wf-1", cron_expression="0 * * * *", timezone="UTC",
                                                 input_data={"scheduled": True})
        assert trigger.id == "tr-1" and trigger.next_run is not None and trigger.next_run.hour == 4
        assert [t.id for t in await client.list_triggers("wf-1")] == ["tr-1"]
        assert (await client.disable_trigger("tr-1")).enabled is False  # type: ignore[union-attr]
        assert (await client.enable_trigger("tr-1")).enabled is True  # type: ignore[union-attr]
        assert await client.trigger_workflow("wf-1") == "wf-2"
        config = TriggerConfig(event_type="data_uploaded", event_filter={"bucket": "input-data"}, skip_if_running=True)
        event = await client.create_trigger("wf-1", TriggerType.EVENT, config)
        assert event.type == TriggerType.EVENT
        with pytest.raises(ValidationError, match="unknown trigger type"):
            await client.create_trigger("wf-1", "sometimes")
    assert seen[0] == ("POST", "/v1/workflows/wf-1/triggers", {
        "type": "schedule", "config": {}, "enabled": True,
        "cron_expression": "0 * * * *", "timezone": "UTC", "input_data": {"scheduled": True}})
    assert seen[-1][2]["config"] == {"event_type": "data_uploaded", "event_filter": {"bucket": "input-data"},
                                     "skip_if_running": True}
    assert [(m, p) for m, p, _ in seen[1:5]] == [
        ("GET", "/v1/workflows/wf-1/triggers"), ("POST", "/v1/triggers/tr-1/disable"),
        ("POST", "/v1/triggers/tr-1/enable"), ("POST", "/v1/workflows/wf-1/trigger")]


async def test_a_bad_cron_comes_back_with_the_servers_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": "invalid_input", "message": "cannot parse cron 'every hour'",
                                         "field": "cron_expression"})

    async with client_for(handler) as client:
        with pytest.raises(ClientError) as info:
            await client.schedule_workflow("wf-1", cron_expression="every hour")
    assert info.value.status_code == 422 and info.value.field == "cron_expression"
    assert info.value.message == "cannot parse cron 'every hour'"


async def test_metrics_use_the_server_route_when_it_exists() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/workflows/wf-1/metrics":
            return httpx.Response(200, json={"status": "completed", "duration": 2.0, "step_metrics": {}, "errors": []})
        if path == "/v1/metrics/history":
            assert request.url.params["duration"] == "24h"
            return httpx.Response(200, json={"items": [{"workflow_id": "wf-1", "status": "completed",
                                                        "start_time": "2026-01-01T00:00:00Z", "duration": 2.0}]})
        assert path == "/v1/metrics/aggregate" and request.url.params["duration"] == "1h"
        return httpx.Response(200, json={"total_workflows": 1, "success_rate": 100.0, "avg_duration": 2.0,
                                         "pool_efficiency": 50.0})

    async with client_for(handler) as client:
        assert (await client.get_workflow_metrics("wf-1"))["duration"] == 2.0
        history = await client.get_workflow_history(duration="24h")
        assert history[0]["workflow_id"] == "wf-1"
        aggregates = await client.get_aggregate_metrics(duration="1h")
        assert f"{aggregates['success_rate']:.1f}%" == "100.0%"
        with pytest.raises(ValidationError):
            await client.get_aggregate_metrics(duration="")


async def test_metrics_fall_back_to_the_workflow_record_without_the_route() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics"):
            return httpx.Response(404, json={"error": "not_found", "message": "no route GET /v1/workflows/wf-1/metrics"})
        steps = [step_body("a", "succeeded"), step_body("b", "failed", error={"kind": "exit_code", "message": "exit 3"}),
                 step_body("c", "pending")]
        return httpx.Response(200, json=wf_body("failed", steps))

    async with client_for(handler) as client:
        metrics = await client.get_workflow_metrics("wf-1")
    assert metrics["source"] == "client" and metrics["status"] == "failed" and metrics["duration"] == 1.5
    assert set(metrics["step_metrics"]) == {"a", "b"}
    expected = {"status": "succeeded", "duration": 0.25, "attempts": 1, "agent_pooled": True, "container_id": "c1"}
    assert {k: metrics["step_metrics"]["a"][k] for k in expected} == expected
    assert metrics["errors"] == ["b: exit_code: exit 3"]


async def test_waiting_monitoring_and_failures() -> None:
    answers = iter([wf_body("running", [step_body("a", "running")]), wf_body("running"),
                    wf_body("failed", [step_body("a", "failed", error="boom")])])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json=wf_body("running"))
        if request.url.path.endswith("/events"):  # a gateway without the live stream: monitor() polls
            return httpx.Response(404, json={"error": "not_found", "message": "no route"})
        return httpx.Response(200, json=next(answers))

    async with client_for(handler) as client:
        execution = await client.run_workflow({"name": "w", "steps": []})
        assert execution.id == "wf-1" and execution.status == WorkflowStatus.RUNNING
        with pytest.raises(WorkflowError) as info:
            await execution.wait_for_completion(timeout=5, poll_interval=0.01)
        assert info.value.failed_steps == {"a": "boom"} and execution.status == WorkflowStatus.FAILED
        assert "a: boom" in str(info.value)

    seen: list[tuple[str, int]] = []

    async def on_update(workflow: Any, metrics: dict[str, Any]) -> None:
        seen.append((workflow.status.value, len(metrics["step_metrics"])))

    answers = iter([wf_body("running", [step_body("a", "running")]), wf_body("completed", [step_body("a", "succeeded")])])
    async with client_for(handler) as client:
        final = await client.execution("wf-1").monitor(callback=on_update, interval=0.01)
    assert final.status == WorkflowStatus.COMPLETED and seen == [("running", 1), ("completed", 1)]


async def test_timeouts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=wf_body("running"))

    async with client_for(handler) as client:
        with pytest.raises(WorkflowTimeoutError, match=r"still running after 0\.05s"):
            await client.execution("wf-1").wait_for_completion(timeout=0.05)
        with pytest.raises(ValidationError, match="timeout must not be negative"):
            await client.execution("wf-1").wait_for_completion(timeout=-1)
    with pytest.raises(ValidationError, match="timeout must not be negative"):
        WorkflowClient(timeout=-3)
    with pytest.raises(ValidationError, match="base_url"):
        WorkflowClient("localhost:8081")


async def test_errors_never_leak_httpx_or_pydantic() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/workflows/html":
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.path == "/v1/workflows/shape":
            return httpx.Response(200, json={"id": 1})
        if request.url.path == "/v1/workflows/text":
            return httpx.Response(200, text="not json")
        raise httpx.ReadTimeout("slow", request=request)

    async with client_for(handler) as client:
        with pytest.raises(ClientError) as info:
            await client.get_workflow("html")
        assert info.value.status_code == 502 and "bad gateway" in info.value.message
        with pytest.raises(ClientError, match="unexpected Workflow"):
            await client.get_workflow("shape")
        with pytest.raises(ClientError, match="not JSON"):
            await client.get_workflow("text")
        with pytest.raises(TransportError, match="no answer"):
            await client.get_workflow("slow")
        with pytest.raises(ValidationError):
            await client.get_workflow("")


def test_environment_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", "http://flow.example:9000/")
    monkeypatch.setenv("FLOW_TOKEN", "secret-token")
    client = WorkflowClient()
    assert client.base_url == "http://flow.example:9000"
    assert client.session.headers["authorization"] == "Bearer secret-token"
    assert "secret-token" not in repr(client)
    explicit = WorkflowClient("http://other:1", token="t2")
    assert explicit.session.headers["authorization"] == "Bearer t2"
