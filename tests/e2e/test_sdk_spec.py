"""Every snippet of sdk-client-api.md whose server routes exist, run against the real stack.

The snippets are kept as written in the spec, adapted only in image names (``python:3.9`` and the
like become ``agentainer-flow/python:3.11``, the one image here) and in where ids come from. The
Scheduling and Triggers snippets run against the stack in tests/e2e/test_triggers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentainer_flow import (
    ClientError,
    MapReduceConfig,
    WorkflowClient,
    WorkflowError,
    WorkflowStatus,
    step,
    workflow,
)
from tests.e2e.conftest import Stack

IMAGE = "agentainer-flow/python:3.11"


@workflow("my-workflow")
class MyWorkflow:
    @step(image=IMAGE)
    async def process(self, ctx):
        pass


@workflow("spec-failing")
class FailingWorkflow:
    @step(image=IMAGE)
    def first(self, ctx):
        return {"ok": True}

    @step(image=IMAGE, depends_on=["first"])
    def explode(self, ctx):
        raise RuntimeError("disk on fire")


@pytest.fixture
async def client(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WorkflowClient]:
    monkeypatch.setenv("FLOW_URL", stack.url)
    monkeypatch.setenv("FLOW_TOKEN", stack.token)
    async with WorkflowClient() as c:
        yield c


async def test_client_initialization(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", stack.url)
    # Using default settings
    async with WorkflowClient() as client:
        # Use client
        pass
    # Custom configuration
    client = WorkflowClient(base_url=stack.url, token=stack.token, timeout=60.0)
    assert (await client.health())["status"] == "ok"
    await client.aclose()


async def test_creating_workflows(client: WorkflowClient) -> None:
    workflow_instance = MyWorkflow()
    execution = await client.run_workflow(workflow_instance, input_data={"key": "value"})
    # Create workflow manually
    workflow = await client.create_workflow(
        name="manual-workflow", description="Created via API", config={"max_parallel": 5, "timeout": "1h"}
    )
    assert workflow.status == WorkflowStatus.PENDING
    result = await execution.wait_for_completion(timeout=120)
    assert result.status == WorkflowStatus.COMPLETED and result.step("process").output is None


async def test_listing_and_details(client: WorkflowClient) -> None:
    created = await client.create_workflow(name="listed")
    workflow_id = created.id
    # List all workflows
    workflows = await client.list_workflows()
    assert workflow_id in [w.id for w in workflows]
    # Filter by status
    from agentainer_flow import WorkflowStatus

    running_workflows = await client.list_workflows(status=WorkflowStatus.RUNNING)
    assert all(w.status == WorkflowStatus.RUNNING for w in running_workflows)
    workflow = await client.get_workflow(workflow_id)
    print(f"Status: {workflow.status}")
    print(f"Created: {workflow.created_at}")
    assert f"{workflow.status}" == "pending"


async def test_starting_monitoring_and_jobs(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = await client.create_workflow(
        name="started", steps=[{"id": "a", "image": IMAGE, "command": ["python3", "-c", "print(42)"]}]
    )
    workflow_id = workflow.id
    # Start a created workflow
    await client.start_workflow(workflow.id)
    # Run decorator-based workflow (creates and starts)
    workflow_instance = MyWorkflow()
    execution = await client.run_workflow(workflow_instance, input_data={"param": "value"})

    # Wait for completion
    result = await execution.wait_for_completion(timeout=300)
    # Check status
    if execution.status == WorkflowStatus.COMPLETED:
        print("Success!")
    # Get execution metrics
    metrics = await execution.get_metrics()
    print(f"Duration: {metrics['duration']}")
    print(f"Steps completed: {len(metrics['step_metrics'])}")

    # Monitor with callback
    def on_update(workflow, metrics):
        print(f"Status: {workflow.status}")
        print(f"Progress: {len(metrics['step_metrics'])} steps")

    await execution.monitor(callback=on_update, interval=2.0)
    out = capsys.readouterr().out
    assert "Success!" in out and "Steps completed: 1" in out and "Status: completed" in out
    assert result.status == WorkflowStatus.COMPLETED and metrics["duration"] > 0

    # Get all agents deployed for a workflow
    await client.execution(workflow_id).wait_for_completion(timeout=120)
    jobs = await client.get_workflow_jobs(workflow_id)
    for job in jobs:
        print(f"Agent {job.name}: {job.status}")
    assert len(jobs) == 1 and jobs[0].status == "succeeded"


async def test_state_management(client: WorkflowClient) -> None:
    workflow_id = (await client.create_workflow(name="stateful")).id
    updates = {"a": 1, "b": [1, 2]}
    # Update single key
    await client.update_workflow_state(workflow_id, key="status", value="processing")
    # Update multiple keys
    for key, value in updates.items():
        await client.update_workflow_state(workflow_id, key, value)
    # Get entire workflow state
    state = await client.get_workflow_state(workflow_id)
    # Get specific key
    value = await client.get_workflow_state(workflow_id, key="status")
    assert state == {"status": "processing", "a": 1, "b": [1, 2]} and value == "processing"


async def test_simple_mapreduce(client: WorkflowClient) -> None:
    config = MapReduceConfig(
        name="data-analysis",
        mapper_image=IMAGE,
        reducer_image=IMAGE,
        max_parallel=20,
        pool_size=15,
        timeout="30m",
    )
    execution = await client.run_mapreduce(config)
    result = await execution.wait_for_completion()
    assert result.status == WorkflowStatus.COMPLETED and result.step("reduce").output == []
    with_items = MapReduceConfig(name="identity", mapper_image=IMAGE, items=[1, "two", {"three": 3}])
    result = await (await client.run_mapreduce(with_items)).wait_for_completion(timeout=120)
    assert result.step("reduce").output == [1, "two", {"three": 3}]


async def test_workflow_metrics(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    execution = await client.run_workflow(MyWorkflow())
    await execution.wait_for_completion(timeout=120)
    workflow_id = execution.id
    # Get metrics for specific workflow
    metrics = await client.get_workflow_metrics(workflow_id)
    print(f"Status: {metrics['status']}")
    print(f"Duration: {metrics.get('duration')}")
    print(f"Resource usage: {metrics.get('resource_usage')}")
    # Step-level metrics
    for step_id, step_metrics in metrics["step_metrics"].items():
        print(f"Step {step_id}: {step_metrics['status']}")
        if step_metrics.get("agent_pooled"):
            print("  Used pooled agent")
    out = capsys.readouterr().out
    assert "Status: completed" in out and "Step process: succeeded" in out and "Used pooled agent" in out


async def test_historical_metrics(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    execution = await client.run_workflow(MyWorkflow())
    await execution.wait_for_completion(timeout=120)
    # Get workflow history for last 24 hours
    history = await client.get_workflow_history(duration="24h")

    for workflow in history:  # noqa: F402 - as in the spec
        print(f"{workflow['workflow_id']}: {workflow['status']}")
        print(f"  Started: {workflow['start_time']}")
        print(f"  Duration: {workflow.get('duration')}")
    out = capsys.readouterr().out
    assert history[0]["workflow_id"] == execution.id and f"{execution.id}: completed" in out


async def test_aggregate_metrics(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    await (await client.run_workflow(MyWorkflow())).wait_for_completion(timeout=120)
    # Get aggregate metrics for last hour
    aggregates = await client.get_aggregate_metrics(duration="1h")

    print(f"Total workflows: {aggregates['total_workflows']}")
    print(f"Success rate: {aggregates['success_rate']:.1f}%")
    print(f"Average duration: {aggregates['avg_duration']}")
    print(f"Pool efficiency: {aggregates['pool_efficiency']:.1f}%")
    out = capsys.readouterr().out
    assert aggregates["total_workflows"] >= 1 and "Success rate: " in out and "Pool efficiency: " in out
    # The same snippet on an empty window (nothing was created in the last millisecond) prints zeros.
    aggregates = await client.get_aggregate_metrics(duration="1ms")
    print(f"Success rate: {aggregates['success_rate']:.1f}%")
    print(f"Pool efficiency: {aggregates['pool_efficiency']:.1f}%")
    assert capsys.readouterr().out == "Success rate: 0.0%\nPool efficiency: 0.0%\n"


async def test_error_handling(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    workflow_id = "wf-does-not-exist"
    try:
        workflow = await client.get_workflow(workflow_id)  # noqa: F841 - as in the spec
    except ClientError as e:
        print(f"API error: {e}")
    except Exception as e:
        print(f"Unexpected error: {e}")

    # Handle workflow execution errors
    workflow_instance = FailingWorkflow()
    caught: list[WorkflowError] = []
    try:
        execution = await client.run_workflow(workflow_instance)
        result = await execution.wait_for_completion(timeout=300)  # noqa: F841 - as in the spec
    except WorkflowError as e:
        caught.append(e)
        print(f"Workflow failed: {e}")
        # Get detailed metrics to debug
        metrics = await execution.get_metrics()
        for error in metrics.get("errors", []):
            print(f"  Error: {error}")
    out = capsys.readouterr().out
    assert "API error: 404" in out
    assert caught and set(caught[0].failed_steps) == {"explode"}
    assert "disk on fire" in caught[0].failed_steps["explode"]
    assert "  Error: explode:" in out and "disk on fire" in out


async def test_custom_request_headers(client: WorkflowClient) -> None:
    # Add custom headers to requests
    client.session.headers.update({"X-Custom-Header": "value"})
    seen: dict[str, Any] = {}
    original = client.session.send

    async def spy(request, **kwargs):
        seen["header"] = request.headers.get("x-custom-header")
        return await original(request, **kwargs)

    client.session.send = spy  # type: ignore[method-assign]
    await client.list_workflows(limit=1)
    assert seen["header"] == "value"


async def test_agent_management(client: WorkflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = await client.create_workflow(name="agents-host", description="owns agents")
    workflow_id = workflow.id
    step_id = "worker"

    # Deploying Agents
    agent = await client.deploy_agent(
        name="worker-1",
        image=IMAGE,
        env_vars={
            "TASK_TYPE": "process",
            "BATCH_SIZE": "100"
        },
        cpu_limit=2000000000,  # 2 CPU cores
        memory_limit=4294967296,  # 4GB
        workflow_id=workflow_id,  # Associate with workflow
        step_id=step_id,
        command=["python3", "-c", "import os,time\nwhile True:\n    print(os.environ['TASK_TYPE'], flush=True); time.sleep(0.1)"],
    )

    print(f"Deployed agent: {agent.id}")
    try:
        # Managing Agents
        await client.start_agent(agent.id)
        agent = await client.get_agent(agent.id)
        print(f"Status: {agent.status}")
        assert agent.status == "running"
        # The pool never gives env values back (they may be secrets): the names, masked.
        assert set(agent.env_vars) == {"TASK_TYPE", "BATCH_SIZE"} and "100" not in agent.env_vars.values()
        assert agent.cpu_limit == 2000000000

        # Streaming Logs (follow=True gives lines that keep their newline)
        logs = await client.get_agent_logs(agent.id, follow=True)
        lines = []
        async for line in logs:
            print(line, end="")
            lines.append(line)
            if len(lines) == 3:
                break
        assert lines == ["process\n"] * 3

        logs_text = await client.get_agent_logs(agent.id, follow=False)
        assert "process\n" in logs_text

        await client.stop_agent(agent.id)
        assert (await client.get_agent(agent.id)).status != "running"
    finally:
        await client.remove_agent(agent.id)
    assert f"Deployed agent: {agent.id}" in capsys.readouterr().out


async def test_batch_deploy_agents(client: WorkflowClient) -> None:
    import asyncio

    workflow = await client.create_workflow(name="batch-agents")
    workflow_id = workflow.id

    async def deploy_agents(count):
        tasks = []
        for i in range(count):
            task = client.deploy_agent(
                name=f"worker-{i}",
                image=IMAGE,
                workflow_id=workflow_id,
                command=["python3", "-c", "import time; time.sleep(60)"],
            )
            tasks.append(task)

        agents = await asyncio.gather(*tasks)
        return agents

    agents = await deploy_agents(3)
    try:
        assert len({a.id for a in agents}) == 3
        listed = await client.list_agents(workflow_id=workflow_id)
        assert {a.id for a in listed} == {a.id for a in agents}
    finally:
        for a in agents:
            await client.remove_agent(a.id)
