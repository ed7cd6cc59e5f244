"""The SDK client against the in-process gateway (httpx.ASGITransport) on a real Redis.

No worker runs here: a started workflow stays running with its first tasks queued, which is enough
for every call but waiting for completion (the e2e tier covers that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from agentainer_flow import (
    ClientError,
    MapReduceConfig,
    TransportError,
    ValidationError,
    WorkflowClient,
    WorkflowStatus,
    WorkflowTimeoutError,
)
from examples.decorators.pipeline import SAMPLE_ORDERS, OrderPipeline
from flowcore.settings import GatewaySettings
from gateway.app import create_app

IMAGE = "agentainer-flow/python:3.11"
STEP = {"id": "a", "image": IMAGE, "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
async def app_transport(redis_url: str) -> AsyncIterator[httpx.ASGITransport]:
    conn = Redis.from_url(redis_url)
    app = create_app(GatewaySettings(redis={"url": redis_url}), redis=conn)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)
    await conn.aclose()


@pytest.fixture
async def client(app_transport: httpx.ASGITransport) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient("http://gw", transport=app_transport) as c:
        yield c


async def test_create_get_list_start_cancel_delete(client: WorkflowClient) -> None:
    wf = await client.create_workflow(
        name="manual-workflow", description="Created via API", config={"max_parallel": 5, "timeout": "1h"}
    )
    assert wf.status == WorkflowStatus.PENDING and wf.name == "manual-workflow"
    assert wf.config["max_parallel"] == 5 and wf.config["timeout"] == 3600
    got = await client.get_workflow(wf.id)
    assert got.created_at is not None and got.description == "Created via API"
    with_step = await client.create_workflow(name="one", steps=[STEP], input_data={"k": 1})
    execution = await client.start_workflow(with_step.id)
    assert execution.status == WorkflowStatus.RUNNING
    running = await client.list_workflows(status=WorkflowStatus.RUNNING)
    assert [w.id for w in running] == [with_step.id]
    assert {w.id for w in await client.list_workflows()} == {wf.id, with_step.id}
    assert len(await client.list_workflows(limit=1)) == 1
    with pytest.raises(ClientError) as info:
        await client.start_workflow(with_step.id)
    assert info.value.status_code == 409
    cancelled = await execution.cancel()
    assert cancelled.status == WorkflowStatus.CANCELLED
    assert (await execution.cancel()).status == WorkflowStatus.CANCELLED  # already finished: no error
    await client.delete_workflow(with_step.id)
    with pytest.raises(ClientError) as info:
        await client.get_workflow(with_step.id)
    assert info.value.status_code == 404 and info.value.code == "not_found"


async def test_run_workflow_sends_the_full_decorated_definition(client: WorkflowClient) -> None:
    execution = await client.run_workflow(OrderPipeline(), input_data={"orders": SAMPLE_ORDERS})
    wf = await client.get_workflow(execution.id)
    assert wf.status == WorkflowStatus.RUNNING and wf.input == {"orders": SAMPLE_ORDERS}
    assert [s.id for s in wf.steps][:3] == ["load", "price", "summarize"]
    assert wf.definition is not None
    steps = {s["id"]: s for s in wf.definition["steps"]}
    assert steps["price"]["type"] == "map" and steps["price"]["items"] == "steps.load.output"
    assert steps["route"]["then"] == ["big_day"] and steps["route"]["else"] == ["quiet_day"]
    assert steps["load"]["function"]["qualname"] == "__flow_step_load__"
    metrics = await execution.get_metrics()
    assert metrics["status"] == "running" and "source" not in metrics  # the gateway's metrics route answered
    assert set(metrics["step_metrics"]) <= {"load"} and metrics["resource_usage"]["dispatches"] == 0
    with pytest.raises(WorkflowTimeoutError) as info:
        await execution.wait_for_completion(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    await execution.cancel()


async def test_mapreduce_and_jobs(client: WorkflowClient) -> None:
    config = MapReduceConfig(
        name="data-analysis", mapper_image=IMAGE, reducer_image=IMAGE, max_parallel=20, pool_size=15, timeout="30m"
    )
    execution = await client.run_mapreduce(config)
    wf = await client.get_workflow(execution.id)
    assert [s.id for s in wf.steps] == ["list", "map", "reduce"]
    assert wf.config["timeout"] == 1800 and wf.config["max_parallel"] == 20
    assert await client.get_workflow_jobs(execution.id) == []
    await execution.cancel()


async def test_state_operations(client: WorkflowClient) -> None:
    wf = await client.create_workflow(name="stateful")
    assert await client.get_workflow_state(wf.id) == {}
    assert await client.update_workflow_state(wf.id, key="status", value="processing") == "processing"
    for key, value in {"a": 1, "b": [1, 2]}.items():
        await client.update_workflow_state(wf.id, key, value)
    assert await client.get_workflow_state(wf.id, key="status") == "processing"
    assert await client.increment_workflow_state(wf.id, "a", 2) == 3
    assert await client.append_workflow_state(wf.id, "b", 3) == [1, 2, 3]
    assert await client.compare_and_set_workflow_state(wf.id, "a", 3, 10) is True
    assert await client.compare_and_set_workflow_state(wf.id, "a", 3, 11) is False
    assert await client.compare_and_set_workflow_state(wf.id, "new", None, 1, expect_missing=True) is True
    await client.delete_workflow_state(wf.id, "new")
    assert await client.get_workflow_state(wf.id) == {"status": "processing", "a": 10, "b": [1, 2, 3]}
    with pytest.raises(ClientError) as info:
        await client.get_workflow_state(wf.id, key="missing")
    assert info.value.status_code == 404


async def test_bad_token_is_a_401_with_the_servers_message(app_transport: httpx.ASGITransport) -> None:
    async with WorkflowClient("http://gw", token="wrong", transport=app_transport) as bad:
        with pytest.raises(ClientError) as info:
            await bad.list_workflows()
    assert info.value.status_code == 401 and info.value.message == "invalid token"
    assert "wrong" not in str(info.value)


async def test_invalid_definition_names_the_field(client: WorkflowClient) -> None:
    with pytest.raises(ClientError) as info:
        await client.create_workflow(name="bad", steps=[{"id": "a", "image": IMAGE}])
    assert info.value.status_code == 422 and "command or a function" in info.value.message
    assert info.value.field == "steps[0]"
    with pytest.raises(ClientError) as info:
        await client.create_workflow(name="bad", steps=[{**STEP, "depends_on": ["ghost"]}])
    assert info.value.status_code == 422 and "ghost" in info.value.message
    assert info.value.field == "steps[0].depends_on"
    with pytest.raises(ClientError) as info:
        await client.create_workflow(name="bad", config={"max_parallel": 0})
    assert info.value.field == "config.max_parallel"


async def test_custom_headers_reach_the_server(client: WorkflowClient) -> None:
    seen: list[str | None] = []
    original = client.session.send

    async def spy(request: httpx.Request, **kwargs: object) -> httpx.Response:
        seen.append(request.headers.get("x-custom-header"))
        return await original(request, **kwargs)  # type: ignore[arg-type]

    client.session.send = spy  # type: ignore[method-assign]
    client.session.headers.update({"X-Custom-Header": "value"})
    await client.list_workflows()
    assert seen == ["value"]


async def test_yaml_definitions_are_sent_as_they_are(client: WorkflowClient) -> None:
    text = f"name: from-yaml\nsteps:\n  - id: a\n    image: {IMAGE}\n    command: [python3, -c, 'print(1)']\n"
    wf = await client.submit(text, start=False)
    assert wf.name == "from-yaml" and wf.steps[0].id == "a"


async def test_local_argument_errors_raise_before_sending(client: WorkflowClient) -> None:
    with pytest.raises(ValidationError):
        await client.list_workflows(status="sleeping")
    execution = client.execution("anything")
    with pytest.raises(ValidationError) as info:
        await execution.wait_for_completion(timeout=-1)
    assert "must not be negative" in str(info.value) and isinstance(info.value, ClientError)


async def test_unreachable_server_is_a_transport_error() -> None:
    async with WorkflowClient("http://127.0.0.1:9", timeout=2) as c:
        with pytest.raises(TransportError) as info:
            await c.list_workflows()
    assert isinstance(info.value, ConnectionError) and isinstance(info.value.__cause__, httpx.HTTPError)
