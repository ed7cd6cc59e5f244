"""The multi-agent example with its optional model (examples/agents/model.py) on the real stack: the planner
and the reviewer consult a deterministic chat-completions server on 127.0.0.1 through the workflow's
state and the host-side relay; the agents keep network none, and the run goes as without a model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentainer_flow import StepStatus, WorkflowClient, WorkflowStatus
from examples.agents import run as agents
from examples.agents.model import ModelEndpoint
from tests.e2e.conftest import Stack
from tests.model_server import model_server

pytestmark = pytest.mark.usefixtures("example_images")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient(stack.url, stack.token, timeout=60) as c:
        yield c


async def test_the_planner_and_reviewer_consult_the_model(client: WorkflowClient) -> None:
    with model_server() as server:
        endpoint = ModelEndpoint(url=server.url, model="tiny", timeout_s=10)
        wf, logs = await agents.run(client, model=endpoint)
    assert wf.status == WorkflowStatus.COMPLETED, [(s.id, s.status, s.error) for s in wf.steps]
    assert wf.step("publish").status == StepStatus.SUCCEEDED  # the code decides, as without a model
    state = await client.get_workflow_state(wf.id)
    assert state["plan"]["model_note"].startswith("PLAN-NOTE")
    assert [state[f"verdict.{n}"]["model_opinion"] for n in (1, 2)] == ["REVIEW-NOTE: the summaries read well."] * 2
    assert [r["purpose"] for r in state["model_requests"]] == ["plan", "review", "review"]
    sent = [r["body"] for r in server.requests]
    assert len(sent) == 3 and all(b["model"] == "tiny" for b in sent)
    assert "Lighthouse" in sent[0]["messages"][1]["content"] or "lighthouse" in sent[0]["messages"][1]["content"]
    assert "the model on the plan: PLAN-NOTE" in logs["planner"]
    assert "the model says: REVIEW-NOTE" in logs["reviewer"]


async def test_an_unreachable_model_leaves_the_run_as_it_was(client: WorkflowClient) -> None:
    with model_server() as server:
        server.fail_with = 500
        wf, _logs = await agents.run(client, model=ModelEndpoint(url=server.url, timeout_s=5))
    assert wf.status == WorkflowStatus.COMPLETED and wf.step("publish").status == StepStatus.SUCCEEDED
    state = await client.get_workflow_state(wf.id)
    assert "model_note" not in state["plan"] and "model_opinion" not in state["verdict.2"]
    assert all("500" in state[f"model_reply_{r['id']}"]["error"] for r in state["model_requests"])
