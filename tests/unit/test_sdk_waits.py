"""The SDK's wait steps (ADR 012): decorated workflows build definitions the server accepts, with the
steps a filter or child input reads ordered first; run_locally says a server-only wait needs the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentainer_flow import (
    ValidationError,
    approval,
    definition_of,
    ref,
    run_locally,
    sleep,
    step,
    subworkflow,
    wait_for_event,
    workflow,
)
from agentainer_flow.models import StepStatus, StepType
from flowcore import dag
from flowcore.models import WorkflowDefinition

IMAGE = "agentainer-flow/python:3.11"


@workflow("order", image=IMAGE)
class Order:
    @step
    def quote(self, ctx: Any) -> dict[str, int]:
        return {"total": 40}

    paid = wait_for_event("payment", filter={"order": ref("input.order"), "amount": {">=": ref("steps.quote.output.total")}},
                          timeout="1h", on_timeout="succeed", default_output={"late": True})
    ok = approval("ship it?", timeout="1d", on_timeout="reject", on_reject="continue", depends_on=["paid"])
    cool_off = sleep("30s", depends_on=["ok"])
    child = subworkflow("wf-tmpl", input={"n": ref("steps.quote.output.total")}, output_step="sum", retry=2,
                        depends_on=["cool_off"])

    @step(depends_on=["child"])
    def ship(self, ctx: Any) -> Any:
        return ctx.deps["paid"]


def test_a_decorated_workflow_with_waits_is_a_valid_definition() -> None:
    doc = definition_of(Order, {"order": "o-1"})
    by_id = {s["id"]: s for s in doc["steps"]}
    assert by_id["paid"] == {
        "id": "paid", "type": "wait_for_event", "depends_on": [], "timeout": "1h", "event_type": "payment",
        "filter": {"order": {"$path": "input.order"}, "amount": {">=": {"$path": "steps.quote.output.total"}}},
        "on_timeout": "succeed", "default_output": {"late": True},
    }
    assert by_id["ok"]["message"] == "ship it?" and by_id["ok"]["on_reject"] == "continue"
    assert by_id["cool_off"]["duration"] == "30s"
    assert by_id["child"]["workflow"] == "wf-tmpl" and by_id["child"]["retry"] == {"max_attempts": 2}
    order = [s["id"] for s in doc["steps"]]
    assert order.index("quote") < order.index("paid")  # the filter reads its output
    defn = WorkflowDefinition.model_validate(doc)
    dag.validate(defn)
    assert "quote" in dag.effective_deps(defn)["paid"]
    assert not any(s.runs_container for s in defn.steps if s.id in ("paid", "ok", "cool_off", "child"))


def test_wait_options_are_checked_in_the_sdk() -> None:
    with pytest.raises(ValidationError):
        sleep()
    with pytest.raises(ValidationError):
        sleep("1s", until="2030-01-01T00:00:00Z")
    with pytest.raises(ValidationError):
        wait_for_event("x", on_timeout="retry")
    with pytest.raises(ValidationError):
        approval(on_timeout="maybe")
    with pytest.raises(ValidationError):
        approval(on_reject="ignore")
    assert ref("input.x", default=3) == {"$path": "input.x", "default": 3}


def test_new_step_types_read_back() -> None:
    assert {StepType("sleep"), StepType("wait_for_event"), StepType("approval"), StepType("workflow")}


def test_run_locally_sleeps_through_and_refuses_server_only_waits() -> None:
    @workflow("nap", image=IMAGE)
    class Nap:
        nap = sleep(1)

        @step(depends_on=["nap"])
        def after(self, ctx: Any) -> int:
            return 1

    run = asyncio.run(run_locally(Nap))
    assert run.status.value == "completed"

    @workflow("ask", image=IMAGE)
    class Ask:
        ok = approval("?")

    run = asyncio.run(run_locally(Ask))
    assert run.steps["ok"].status == StepStatus.FAILED and "needs the server" in str(run.steps["ok"].error)
