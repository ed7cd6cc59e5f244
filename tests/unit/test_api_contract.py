"""One typed contract (issue 14): what the gateway's views send is what the OpenAPI models declare, and
what the SDK reads is declared there too. A field added to a view without its model, or read by the
SDK under a name the API does not send, fails here (the fuzz pass checks live answers against the
same models: tests/integration/test_openapi_fuzz.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import BaseModel

from agentainer_flow import models as sdk
from agentainer_flow.secret_api import SecretInfo
from flowcore import engine
from flowcore.engine import EngineEnv
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import ErrorKind, TaskError, TaskResult
from flowcore.records import AttemptSummary, Origin, Snapshot
from flowcore.triggers import Trigger, TriggerSpec, trigger_view
from gateway import apimodels as api
from gateway.views import workflow_view

IMG = {"image": "agentainer-flow/python:3.11", "command": "true"}


def declared(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def undeclared(value: dict[str, Any], model: type[BaseModel], where: str) -> list[str]:
    """Keys of ``value`` (and of its nested documented objects) that ``model`` does not declare."""
    missing = [f"{where}.{key}" for key in value if key not in declared(model)]
    nested: dict[tuple[type[BaseModel], str], type[BaseModel]] = {
        (api.Workflow, "steps"): api.Step, (api.Workflow, "graph"): api.Graph, (api.Workflow, "origin"): Origin,
        (api.Step, "tasks"): api.Task, (api.Task, "attempts"): AttemptSummary, (api.Graph, "edges"): api.Edge,
    }
    for (parent, key), child in nested.items():
        if parent is not model or value.get(key) is None:
            continue
        items = value[key] if isinstance(value[key], list) else [value[key]]
        for i, item in enumerate(items):
            missing += undeclared(item, child, f"{where}.{key}[{i}]")
    return missing


def driven_snapshot() -> Snapshot:
    """A workflow with every kind of step record the views show: tasks done and failed, a map, a branch,
    a wait, retries with attempts in their history."""
    definition = WorkflowDefinition.model_validate({
        "name": "contract", "input": {"xs": [1, 2], "go": True}, "labels": {"team": "a"},
        "steps": [
            {"id": "a", **IMG, "retry": {"max_attempts": 2}},
            {"id": "m", "type": "map", "items": "input.xs", "depends_on": ["a"], **IMG},
            {"id": "b", "type": "branch", "condition": {"field": "input.go", "op": "==", "value": True},
             "then": ["w"], "else": ["z"], "depends_on": ["m"]},
            {"id": "w", "type": "wait_for_event", "event_type": "e", "timeout": "1h"},
            {"id": "z", **IMG},
        ],
    })
    snap = Snapshot(wf_id="wf-1", definition=definition, status=WorkflowStatus.PENDING, input=definition.input,
                    created_at=10.0, origin=Origin(kind="retry", template_id="wf-0", root_id="wf-0"))
    tokens = itertools.count()
    env = lambda now: EngineEnv(now=now, rand=lambda: 0.5, new_token=lambda: f"t{next(tokens)}")  # noqa: E731
    now = 20.0

    def run_all(plan: Any, ok: bool = True) -> None:
        nonlocal now
        for d in list(plan.dispatch):
            now += 1
            engine.claim(snap, env(now), d.step_id, d.index, d.token)
            result = TaskResult(task_id="t", ok=ok, exit_code=0 if ok else 1, output={"i": d.index},
                                error=None if ok else TaskError(kind=ErrorKind.EXIT_CODE, message="exit 1"))
            run_all(engine.complete(snap, env(now), d.step_id, d.index, d.token, result))

    plan = engine.start(snap, env(now))
    (first,) = plan.dispatch
    engine.claim(snap, env(21.0), "a", 0, first.token)
    failed = TaskResult(task_id="t", ok=False, exit_code=1, error=TaskError(kind=ErrorKind.EXIT_CODE, message="no"))
    retry = engine.complete(snap, env(22.0), "a", 0, first.token, failed)
    now = 30.0
    for d in retry.dispatch:  # the retry, after its backoff
        engine.claim(snap, env(now), d.step_id, d.index, d.token)
        done = engine.complete(snap, env(now + 1), d.step_id, d.index, d.token,
                               TaskResult(task_id="t", ok=True, exit_code=0, output=1))
        run_all(done)
    assert snap.steps["w"].wait is not None, "the run should wait for its event"
    return snap


@pytest.mark.parametrize("detail", [True, False])
def test_the_workflow_view_sends_only_declared_fields_of_declared_types(detail: bool) -> None:
    view = workflow_view(driven_snapshot(), detail=detail, now=100.0)
    assert undeclared(view, api.Workflow, "workflow") == []
    parsed = api.Workflow.model_validate(view)
    if detail:
        assert parsed.steps is not None and {s.id for s in parsed.steps} == {"a", "m", "b", "w", "z"}
        assert any(t.attempts for s in parsed.steps for t in s.tasks)  # a retried task's history
        assert parsed.graph is not None and parsed.graph.edges


def test_every_declared_workflow_field_is_sent() -> None:
    view = workflow_view(driven_snapshot(), detail=True, now=100.0)
    assert declared(api.Workflow) - set(view) == set()
    step = view["steps"][0]
    assert declared(api.Step) - set(step) == set()
    assert declared(api.Task) - set(step["tasks"][0]) == set()


def test_the_trigger_view_sends_only_declared_fields() -> None:
    for spec in ({"type": "schedule", "cron_expression": "0 * * * *", "timezone": "UTC"},
                 {"type": "webhook", "config": {"signature": "generic", "secret": "s" * 32}},
                 {"type": "event", "config": {"event_type": "e", "event_filter": {"a": 1}}}):
        trigger = Trigger(id="tr-1", workflow_id="wf-1", spec=TriggerSpec.model_validate(spec), created_at=1.0)
        view = trigger_view(trigger)
        assert undeclared(view, api.Trigger, "trigger") == []
        api.Trigger.model_validate(view)


@pytest.mark.parametrize(
    ("reader", "answer"),
    [(sdk.Workflow, api.Workflow), (sdk.Step, api.Step), (sdk.Task, api.Task), (sdk.Job, api.Job),
     (sdk.Trigger, api.Trigger), (SecretInfo, api.Secret)],
)
def test_the_sdk_reads_only_what_the_api_declares(reader: type[BaseModel], answer: type[BaseModel]) -> None:
    assert declared(reader) - declared(answer) == set()
