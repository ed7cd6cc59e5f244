"""The SDK's step-level concurrency keys (ADR 019): ``@step(concurrency=...)`` lands in the step's
definition, which the server's model accepts; bad values raise at once; a waiting task says why."""

from __future__ import annotations

from typing import Any

import pytest

from agentainer_flow import ValidationError, definition_of, step, workflow
from agentainer_flow.models import Step
from flowcore.models import WorkflowDefinition

IMG = "agentainer-flow/python:3.11"


@workflow("charge")
class Charge:
    @step(image=IMG, concurrency={"key": "payments:{input.customer}", "limit": 2})
    def pay(self, ctx: Any) -> None: ...

    @step(image=IMG, type="map", items="input.customers", depends_on=["pay"],
          concurrency={"key": "refunds:{item}"})
    def refund(self, ctx: Any) -> None: ...


def test_the_option_becomes_the_steps_concurrency() -> None:
    defn = definition_of(Charge)
    by_id = {s["id"]: s for s in defn["steps"]}
    assert by_id["pay"]["concurrency"] == {"key": "payments:{input.customer}", "limit": 2}
    assert by_id["refund"]["concurrency"] == {"key": "refunds:{item}"}
    parsed = WorkflowDefinition.model_validate(defn)
    assert parsed.step("refund").concurrency.limit == 1


@pytest.mark.parametrize(
    "value",
    ["input.customer", {"limit": 2}, {"key": ""}, {"key": "input.c", "limit": 0}, {"key": "input.c", "limit": "2"},
     {"key": "input.c", "limit": True}],
)
def test_bad_values_raise_at_once(value: Any) -> None:
    with pytest.raises(ValidationError):
        step(image=IMG, concurrency=value)


def test_a_waiting_task_says_why() -> None:
    body = {"id": "pay", "tasks": [{"index": 0, "status": "queued",
                                    "waiting_on": "waiting for concurrency key payments:c1 (2/2 in use)"}],
            "waiting_on": "waiting for concurrency key payments:c1 (2/2 in use)"}
    parsed = Step.read(body)
    assert parsed.waiting_on is not None and parsed.tasks[0].waiting_on == parsed.waiting_on
