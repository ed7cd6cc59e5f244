"""Durable waits through the SDK and the CLI on the real stack (ADR 012): a decorated workflow with
wait steps, ``publish_event`` waking it, ``approve``/``reject`` from the client and ``flow approve``/
``flow reject`` from the command line."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentainer_flow import WorkflowClient, approval, ref, step, wait_for_event, workflow
from agentainer_flow.cli import main
from agentainer_flow.errors import ClientError
from tests.e2e.conftest import Stack

IMAGE = "agentainer-flow/python:3.11"


async def _until_waiting(client: WorkflowClient, wf_id: str, step_id: str) -> None:
    for _ in range(600):
        wf = await client.get_workflow(wf_id)
        if any(s.id == step_id and s.status.value == "running" for s in wf.steps):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} of {wf_id} never waited")


def test_publish_event_wakes_a_decorated_workflow_and_the_client_approves(stack: Stack) -> None:
    kind = f"payment.{uuid.uuid4().hex[:6]}"

    @workflow("sdk-waits", image=IMAGE)
    class Order:
        paid = wait_for_event(kind, filter={"order": ref("input.order")}, timeout="5m")
        ok = approval("ship?", depends_on=["paid"])

        @step(depends_on=["ok", "paid"])
        def ship(self, ctx: Any) -> Any:
            return {"amount": ctx.deps["paid"]["payload"]["amount"], "by": ctx.deps["ok"]["by"]}

    async def scenario() -> None:
        async with WorkflowClient(stack.url, stack.token, timeout=60) as client:
            execution = await client.run_workflow(Order, {"order": "o-5"})
            wf_id = execution.id
            await _until_waiting(client, wf_id, "paid")
            published = await client.publish_event(kind, {"order": "o-5", "amount": 12})
            assert published["woke"] == 1
            await _until_waiting(client, wf_id, "ok")
            wf = await client.approve(wf_id, "ok", comment="fine")
            assert next(s for s in wf.steps if s.id == "ok").output["comment"] == "fine"
            with pytest.raises(ClientError) as twice:
                await client.approve(wf_id, "ok")
            assert twice.value.status_code == 409
            result = await execution.wait_for_completion(timeout=90)
            assert result.status.value == "completed"
            ship = next(s for s in result.steps if s.id == "ship")
            assert ship.output == {"amount": 12, "by": "token:" + ship.output["by"].split(":", 1)[1]}

    asyncio.run(scenario())


def test_flow_approve_and_flow_reject(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    definition = {"name": "cli-approval", "steps": [{"id": "ok", "type": "approval", "on_reject": "continue"}]}

    async def start() -> list[str]:
        async with WorkflowClient(stack.url, stack.token) as client:
            ids = [(await client.submit(definition)).id for _ in range(2)]
            for wf_id in ids:
                await _until_waiting(client, wf_id, "ok")
            return ids

    first, second = asyncio.run(start())
    base = ["--url", stack.url, "--token", stack.token]
    assert main([*base, "approve", first, "ok", "--comment", "ship it"]) == 0
    assert "ok succeeded (approved)" in capsys.readouterr().out
    assert main([*base, "--json", "reject", second, "ok", "-m", "no"]) == 0
    out = capsys.readouterr().out
    assert '"decision": "reject"' in out and '"comment": "no"' in out
    assert main([*base, "approve", second, "ok"]) != 0  # decided already: 409
    assert main([*base, "approve", first, "nope"]) != 0  # unknown step: 404

    async def outputs() -> list[Any]:
        async with WorkflowClient(stack.url, stack.token) as client:
            return [next(s for s in (await client.get_workflow(w)).steps if s.id == "ok").output for w in (first, second)]

    approved, rejected = asyncio.run(outputs())
    assert approved["approved"] is True and approved["comment"] == "ship it"
    assert rejected["approved"] is False and rejected["comment"] == "no"
