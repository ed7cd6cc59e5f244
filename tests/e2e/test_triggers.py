"""Triggers on the real stack (gateway, worker, pool and two scheduler processes): the spec's SDK
trigger snippets, schedules fired once by two schedulers, events and signed webhooks whose
workflows run to completion in containers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentainer_flow import ClientError, TriggerConfig, TriggerType, WorkflowClient, WorkflowStatus
from flowcore.signatures import SignaturePreset, WebhookAuth, sign
from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, step, wait


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient(base_url=stack.url, token=stack.token) as c:
        yield c


async def template(client: WorkflowClient, name: str) -> str:
    """A template whose one step echoes its input document as output."""
    wf = await client.create_workflow(
        name=name, steps=[step("echo", "print(json.dumps(doc['input']))", output="json")], input_data={"from": "template"}
    )
    return wf.id


async def test_spec_trigger_snippets(client: WorkflowClient) -> None:
    workflow_id = await template(client, "spec-triggers")
    # Schedule workflow to run every hour
    trigger = await client.schedule_workflow(
        workflow_id, cron_expression="0 * * * *", timezone="UTC", input_data={"scheduled": True}
    )
    print(f"Created trigger: {trigger.id}")
    print(f"Next run: {trigger.next_run}")
    assert trigger.next_run is not None and trigger.next_run.minute == 0 and trigger.next_run.timestamp() > time.time()

    # List triggers for a workflow
    triggers = await client.list_triggers(workflow_id)
    assert [t.id for t in triggers] == [trigger.id]
    # Enable/disable triggers
    await client.enable_trigger(trigger.id)
    await client.disable_trigger(trigger.id)
    assert (await client.get_trigger(trigger.id)).enabled is False
    # Manually trigger workflow
    execution_id = await client.trigger_workflow(workflow_id)
    result = await client.execution(execution_id).wait_for_completion(timeout=120)
    assert result.status == WorkflowStatus.COMPLETED and result.step("echo").output == {"from": "template"}

    config = TriggerConfig(event_type="data_uploaded", event_filter={"bucket": "input-data"}, skip_if_running=True)
    trigger = await client.create_trigger(workflow_id, TriggerType.EVENT, config)
    assert trigger.type == TriggerType.EVENT and trigger.config["skip_if_running"] is True

    answer = await client.publish_event("data_uploaded", {"bucket": "input-data", "key": "a.csv"}, event_id="up-1")
    assert answer["started"] == 1, answer
    new_id = answer["fires"][0]["workflow_id"]
    done = await client.execution(new_id).wait_for_completion(timeout=120)
    assert done.step("echo").output == {"from": "template", "bucket": "input-data", "key": "a.csv"}
    again = await client.publish_event("data_uploaded", {"bucket": "input-data", "key": "a.csv"}, event_id="up-1")
    assert again["duplicate"] is True and again["started"] == 0
    other = await client.publish_event("data_uploaded", {"bucket": "elsewhere"})
    assert other["matched"] == 0

    with pytest.raises(ClientError) as info:
        await client.schedule_workflow(workflow_id, cron_expression="0 25 * * *")
    assert info.value.status_code == 422 and "hour 25" in str(info.value)
    with pytest.raises(ClientError) as info:
        await client.schedule_workflow(workflow_id, cron_expression="@daily", timezone="Atlantis/Lost")
    assert info.value.status_code == 422 and "timezone" in str(info.value)


async def test_two_scheduler_processes_fire_each_time_once(client: WorkflowClient, stack: Stack) -> None:
    workflow_id = await template(client, "every-second")
    trigger = await client.schedule_workflow(workflow_id, cron_expression="@every 1s", input_data={"tick": True})
    deadline = time.monotonic() + 60
    while (await client.get_trigger(trigger.id)).run_count < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await client.disable_trigger(trigger.id)
    await asyncio.sleep(1.5)  # a fire already being committed lands now; nothing after
    final = await client.get_trigger(trigger.id)
    assert final.run_count >= 4, stack.logs()
    async with httpx.AsyncClient(base_url=stack.url, headers=stack.headers()) as http:
        runs = (await http.get(f"/v1/triggers/{trigger.id}/runs", params={"limit": 1000})).json()["items"]
        assert len(runs) == final.run_count
        scheduled = []
        for run in runs:
            body = (await http.get(f"/v1/workflows/{run['workflow_id']}")).json()
            assert body["origin"]["trigger_id"] == trigger.id and body["origin"]["kind"] == "schedule"
            scheduled.append(body["origin"]["scheduled_for"])
    assert len(set(scheduled)) == len(scheduled), f"a due time fired twice: {sorted(scheduled)}"
    for run in runs:
        done = await client.execution(run["workflow_id"]).wait_for_completion(timeout=120)
        assert done.step("echo").output == {"from": "template", "tick": True}


def test_signed_github_webhook_runs_a_workflow(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as api:
        wf = api.post("/v1/workflows", json={"name": "on-push", "steps": [
            step("echo", "print(json.dumps(doc['input']))", output="json")]}).json()["id"]
        tr = api.post(f"/v1/workflows/{wf}/triggers", json={
            "type": "webhook", "config": {"signature": "github", "secret": "gh-secret-123"}}).json()
        body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()
        auth = WebhookAuth(SignaturePreset.GITHUB, "gh-secret-123")
        headers = {"content-type": "application/json", "X-GitHub-Delivery": "gh-1", "X-GitHub-Event": "push",
                   **sign(auth, body)}
        with httpx.Client(base_url=stack.url, timeout=30) as hook:  # no bearer token: the signature is enough
            bad = hook.post(tr["webhook_url"], content=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"})
            assert bad.status_code == 401
            ok = hook.post(tr["webhook_url"], content=body, headers=headers)
            assert ok.status_code == 202, ok.text
            replay = hook.post(tr["webhook_url"], content=body, headers=headers)
            assert replay.json()["duplicate"] is True
        result = wait(api, ok.json()["workflow_id"], timeout_s=120)
        assert result["status"] == "completed", brief(result)
        out: Any = {s["id"]: s for s in result["steps"]}["echo"]["output"]
        assert out == {"ref": "refs/heads/main", "commits": [{"id": "abc"}]}
        assert api.get(f"/v1/triggers/{tr['id']}").json()["run_count"] == 1


async def test_docs_triggers_python_example(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import re
    import textwrap
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```\n<!-- runs: stack -->", doc, re.S)
    assert len(blocks) == 1, "docs/triggers.md lost its Python example"
    monkeypatch.setenv("FLOW_URL", stack.url)
    monkeypatch.setenv("FLOW_TOKEN", stack.token)
    namespace: dict[str, Any] = {}
    exec("async def _example():\n" + textwrap.indent(blocks[0], "    "), namespace)
    await namespace["_example"]()
    out = capsys.readouterr().out
    assert "next run: " in out and "['schedule', 'event', 'webhook']" in out
