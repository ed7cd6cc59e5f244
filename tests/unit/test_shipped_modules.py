"""Python-function steps share their module source: the definition ships it once, in ``modules``, and
the steps refer to it by key (``function.source_ref``). The old inline form still works, bad references
are a 422 naming the problem, and every task request still carries the source inline for the pool."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from agentainer_flow import definition_of
from agentainer_flow.models import Workflow
from flowcore.models import (
    MAX_MODULE_SOURCE_CHARS,
    MAX_MODULES,
    FunctionRef,
    StepFunction,
    WorkflowDefinition,
    task_function,
)
from gateway.errors import validation_body
from tests.sdk_chain import LENGTH, Chain, step_id
from tests.unit.test_engine import Driver, ok

IMG = "agentainer-flow/python:3.11"
SOURCE = "def hello(ctx):\n    return 'hi'\n\ndef bye(ctx):\n    return 'bye'\n"


def fn_step(step_id: str, qualname: str, **function: Any) -> dict[str, Any]:
    return {"id": step_id, "image": IMG, "function": {"module": "greet", "qualname": qualname, **function}}


def shipped(**extra: Any) -> dict[str, Any]:
    return {
        "name": "greet",
        "modules": {"greet": SOURCE},
        "steps": [fn_step("a", "hello", source_ref="greet"), fn_step("b", "bye", source_ref="greet")],
        **extra,
    }


def problem(definition: dict[str, Any]) -> dict[str, Any]:
    """The 422 body the gateway answers for ``definition``."""
    with pytest.raises(ValidationError) as info:
        WorkflowDefinition.model_validate(definition)
    return validation_body(info.value)


def test_steps_refer_to_a_module_shipped_once() -> None:
    defn = WorkflowDefinition.model_validate(shipped())
    assert defn.modules == {"greet": SOURCE}
    refs = [task_function(s.function, defn.modules) for s in defn.steps]
    assert refs == [
        FunctionRef(module="greet", qualname="hello", source=SOURCE),
        FunctionRef(module="greet", qualname="bye", source=SOURCE),
    ]
    assert all(type(r) is FunctionRef for r in refs)  # the pool's type, without source_ref
    stored = json.loads(defn.model_dump_json(by_alias=True))
    assert json.dumps(stored).count("return 'hi'") == 1
    assert WorkflowDefinition.model_validate(stored) == defn  # what the store reads back


def test_the_inline_form_is_still_accepted() -> None:
    defn = WorkflowDefinition.model_validate(
        {"name": "old", "steps": [fn_step("a", "hello", source=SOURCE), fn_step("b", "bye")]}
    )
    assert defn.modules == {}
    assert task_function(defn.steps[0].function, defn.modules) == FunctionRef(
        module="greet", qualname="hello", source=SOURCE
    )
    # No source at all: the module is imported from the image, as before.
    assert task_function(defn.steps[1].function, defn.modules) == FunctionRef(module="greet", qualname="bye")
    assert task_function(None, defn.modules) is None


def test_a_task_request_carries_the_resolved_source() -> None:
    d = Driver(shipped())
    d.start()
    requests = {}
    for step, index, token in list(d.queue):
        plan = d.claim(step, index, token)
        assert plan.request is not None
        requests[step] = plan.request
        d.complete(step, index, token, ok("done"))
    assert {s: (r.function.qualname, r.function.source) for s, r in requests.items() if r.function} == {
        "a": ("hello", SOURCE),
        "b": ("bye", SOURCE),
    }
    assert "source_ref" not in requests["a"].model_dump()["function"]  # the pool's wire is unchanged


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["steps"][1]["function"].update(source_ref="gret"),
            "steps[1].function.source_ref: step 'b' refers to module 'gret', which is not in the definition's"
            " modules (known: greet)",
        ),
        (lambda d: d.pop("modules"), "steps[0].function.source_ref: step 'a' refers to module 'greet'"),
        (lambda d: d["modules"].update(extra="x = 1"), "modules.extra: no step's function.source_ref refers to it"),
        (
            lambda d: d["steps"][0]["function"].update(source="x = 1"),
            "a function has either source or source_ref, not both",
        ),
    ],
)
def test_bad_references_are_422_naming_them(change: Any, message: str) -> None:
    definition = shipped()
    change(definition)
    body = problem(definition)
    assert body["error"] == "invalid_input"
    assert message in body["message"]


def test_module_keys_and_sizes_are_bounded() -> None:
    bad_key = problem({"name": "x", "modules": {"../etc": SOURCE}, "steps": []})
    assert bad_key["field"] == "modules.../etc.[key]" and "pattern" in bad_key["message"]
    bad_ref = problem({"name": "x", "steps": [fn_step("a", "hello", source_ref="a b")]})
    assert bad_ref["field"] == "steps[0].function.source_ref"
    big = "#" * (MAX_MODULE_SOURCE_CHARS + 1)
    too_big = problem({**shipped(), "modules": {"greet": big}})
    assert too_big["field"] == "modules.greet" and "at most" in too_big["message"]
    many = {f"m{i}": SOURCE for i in range(MAX_MODULES + 1)}
    too_many = problem({"name": "x", "modules": many, "steps": []})
    assert too_many["field"] == "modules" and "at most" in too_many["message"]
    assert problem({**shipped(), "modules": {"greet": ""}})["field"] == "modules.greet"


def test_a_decorated_workflow_of_many_steps_ships_its_module_once() -> None:
    definition = definition_of(Chain)
    assert len(definition["steps"]) == LENGTH
    (key, source), = definition["modules"].items()
    assert all(s["function"] == {"module": key, "qualname": f"__flow_step_{s['id']}__", "source_ref": key}
               for s in definition["steps"])
    size = len(json.dumps(definition))
    assert size < len(source) + LENGTH * 300, size  # the source once, then a few hundred bytes per step
    defn = WorkflowDefinition.model_validate(definition)
    last = defn.step(step_id(LENGTH - 1))
    ref = task_function(last.function, defn.modules)
    assert ref is not None and ref.source == source and f"def __flow_step_{last.id}__(" in source


def test_reprs_are_short() -> None:
    defn = WorkflowDefinition.model_validate(definition_of(Chain))
    assert repr(defn).startswith("WorkflowDefinition(name='sdk-chain', steps=200, modules={'flowstep_tests_sdk_chain")
    assert len(repr(defn)) < 200
    function = StepFunction(module="m", qualname="f", source=SOURCE)
    assert repr(function) == f"StepFunction(module='m', qualname='f', source='<{len(SOURCE)} chars>', source_ref=None)"

    source = "x" * 30_000
    record = Workflow.read({
        "id": "wf_1", "name": "greet", "status": "failed", "error": {"kind": "function_error", "message": "boom"},
        "definition": {"modules": {"greet": source}}, "input": {"rows": list(range(1000))},
        "steps": [{"id": "a", "type": "map", "status": "failed", "output": source, "error": "exit 1",
                   "tasks": [{"index": 0, "status": "failed", "attempt": 2, "log_tail": source}]}],
    })
    assert repr(record) == "Workflow(id='wf_1', name='greet', status='failed', steps=1, error='function_error: boom')"
    assert str(record.steps[0]) == "id='a' type='map' status='failed' attempts=0 tasks=1 error='exit 1'"
    assert repr(record.steps[0].tasks[0]) == "Task(index=0, status='failed', attempt=2)"
    long_error = Workflow.read({"id": "wf_2", "name": "n", "error": "e" * 500})
    assert len(repr(long_error)) < 150
