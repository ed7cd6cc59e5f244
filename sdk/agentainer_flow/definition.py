"""From a ``@workflow`` class to the definition ``POST /v1/workflows`` accepts (a plain dict).

:func:`plan` collects the steps (``@step`` methods and :mod:`~agentainer_flow.branching` attributes,
subclasses overriding their bases), resolves every reference to a step id, orders the steps by their
effective dependencies and rejects unknown names and cycles with a :class:`ValidationError` naming
them. :func:`definition_of` turns the plan into the definition, with a generated module for the
Python-function steps (:mod:`agentainer_flow.shipping`), shipped once in its ``modules`` table. The
local runner executes the same plan.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from agentainer_flow.branching import _Control, branch, condition_paths, decision
from agentainer_flow.decorators import STEP_ATTR, StepSpec, WorkflowSpec, workflow_spec
from agentainer_flow.errors import ValidationError
from agentainer_flow.shipping import ship
from agentainer_flow.waits import _Wait


@dataclass
class PlannedStep:
    id: str
    method: str | None = None  # the method name of a @step
    spec: StepSpec | None = None
    control: _Control | None = None
    depends_on: list[str] = field(default_factory=list)
    waits_for: set[str] = field(default_factory=set)  # effective dependencies
    items: str | None = None
    targets: dict[str, Any] = field(default_factory=dict)  # then/else/cases/default, resolved


@dataclass
class Plan:
    cls: type
    spec: WorkflowSpec
    steps: list[PlannedStep]

    def step(self, step_id: str) -> PlannedStep:
        return next(s for s in self.steps if s.id == step_id)


def _members(cls: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if (callable(value) and isinstance(getattr(value, STEP_ATTR, None), StepSpec)) or isinstance(value, _Control):
                found[attr] = value
            elif attr in found:
                del found[attr]  # overridden by something that is not a step
    return found


def plan(obj: Any) -> Plan:
    cls, wf = workflow_spec(obj)
    members = _members(cls)
    if not members:
        raise ValidationError(f"workflow {wf.name!r} ({cls.__name__}) has no @step methods")
    ids: dict[str, str] = {}  # attribute name -> step id
    by_object: dict[int, str] = {}
    for attr, value in members.items():
        sid = (value.name if isinstance(value, _Control) else getattr(value, STEP_ATTR).name) or attr
        ids[attr] = sid
        by_object[id(value)] = sid
    known = set(ids.values())
    if len(known) != len(ids):
        raise ValidationError(f"workflow {wf.name!r} has two steps with the same name", field="name")

    def ref(value: Any, where: str) -> str:
        if isinstance(value, str):
            if value in ids:
                return ids[value]
            if value in known:
                return value
            raise ValidationError(
                f"{where}: unknown step {value!r}; steps are {', '.join(sorted(known))}", field=where
            )
        if id(value) in by_object:
            return by_object[id(value)]
        name = getattr(value, "__name__", None)
        if isinstance(name, str) and name in ids:
            return ids[name]
        raise ValidationError(f"{where}: {value!r} is not a step of {cls.__name__}", field=where)

    steps: list[PlannedStep] = []
    for attr, value in members.items():
        sid = ids[attr]
        if isinstance(value, _Control):
            ps = PlannedStep(sid, control=value, depends_on=[ref(d, f"{sid}.depends_on") for d in value.depends_on])
            if isinstance(value, branch):
                ps.targets = {
                    "then": [ref(t, f"{sid}.then") for t in value.then],
                    "else": [ref(t, f"{sid}.else") for t in value.else_],
                }
            elif isinstance(value, decision):
                ps.targets = {
                    "cases": [
                        {"condition": cond, "targets": [ref(t, f"{sid}.cases") for t in targets]}
                        for cond, targets in value.cases
                    ],
                    "default": [ref(t, f"{sid}.default") for t in value.default],
                }
            ps.waits_for = set(ps.depends_on) | {p.split(".")[1] for c in value.conditions() for p in condition_paths(c) if p.startswith("steps.") and p.count(".") >= 1}
            if isinstance(value, _Wait):  # a wait's filter or child input reads steps through paths
                ps.waits_for |= {p.split(".")[1] for p in value.read_paths() if p.startswith("steps.") and p.count(".") >= 1}
        else:
            spec: StepSpec = getattr(value, STEP_ATTR)
            ps = PlannedStep(sid, method=attr, spec=spec, depends_on=[ref(d, f"{sid}.depends_on") for d in spec.depends_on])
            ps.waits_for = set(ps.depends_on)
            if spec.type == "map":
                items = spec.items
                if isinstance(items, str) and ("." in items or items in ("input", "state")):
                    ps.items = items
                else:
                    ps.items = f"steps.{ref(items, f'{sid}.items')}.output"
                if ps.items.startswith("steps."):
                    ps.waits_for.add(ps.items.split(".")[1])
        steps.append(ps)
    by_id = {s.id: s for s in steps}
    for s in steps:
        for targets in _target_lists(s):
            for t in targets:
                by_id[t].waits_for.add(s.id)
        for dep in s.waits_for:
            if dep not in by_id:
                raise ValidationError(f"{s.id}: reads unknown step {dep!r}", field=f"{s.id}.depends_on")
    return Plan(cls, wf, _ordered(steps))


def _target_lists(s: PlannedStep) -> list[list[str]]:
    if "cases" in s.targets:
        return [c["targets"] for c in s.targets["cases"]] + [s.targets["default"]]
    return [s.targets.get("then", []), s.targets.get("else", [])] if s.targets else []


def _ordered(steps: list[PlannedStep]) -> list[PlannedStep]:
    """Topological order (ties by step id); a cycle is a ValidationError naming its steps."""
    by_id = {s.id: s for s in steps}
    waiting = {s.id: set(s.waits_for) for s in steps}
    ready = [sid for sid, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[PlannedStep] = []
    while ready:
        sid = heapq.heappop(ready)
        order.append(by_id[sid])
        for other, deps in waiting.items():
            if sid in deps:
                deps.discard(sid)
                if not deps:
                    heapq.heappush(ready, other)
    if len(order) != len(steps):
        stuck = sorted(sid for sid, deps in waiting.items() if deps)
        raise ValidationError(f"the steps {', '.join(stuck)} depend on each other in a cycle", field="depends_on")
    return order


def _step_body(ps: PlannedStep, wf: WorkflowSpec, function: dict[str, Any] | None) -> dict[str, Any]:
    if ps.control is not None:
        body: dict[str, Any] = {"id": ps.id, "type": ps.control.kind, "depends_on": ps.depends_on}
        if isinstance(ps.control, branch):
            body.update(condition=ps.control.condition, then=ps.targets["then"], **{"else": ps.targets["else"]})
        elif isinstance(ps.control, _Wait):
            body.update(ps.control.fields())
        else:
            body.update(cases=ps.targets["cases"], default=ps.targets["default"])
        return body
    spec = ps.spec
    assert spec is not None  # a planned step is either a control or a @step
    image = spec.image or wf.image
    if not image:
        raise ValidationError(f"step {ps.id!r} needs an image: @step(image=...) or @workflow(..., image=...)", field=f"{ps.id}.image")
    body = {"id": ps.id, "type": spec.type, "image": image, "depends_on": ps.depends_on}
    if spec.command is not None:
        body["command"] = spec.command
    else:
        body["function"] = function
    if ps.items is not None:
        body["items"] = ps.items
    if spec.type == "parallel" and (spec.replicas is None) == (spec.inputs is None):
        raise ValidationError(f"parallel step {ps.id!r} needs exactly one of replicas= or inputs=", field=f"{ps.id}.replicas")
    retry = {"max_attempts": spec.retry} if isinstance(spec.retry, int) else spec.retry
    pool = {} if spec.pool is True else (spec.pool or None)
    optional = {
        "replicas": spec.replicas, "inputs": spec.inputs, "max_concurrency": spec.max_concurrency,
        "tolerated_failures": spec.tolerated_failures, "tolerated_failure_percent": spec.tolerated_failure_percent,
        "retry": retry, "timeout": spec.timeout, "resources": spec.resources, "pool": pool, "env": spec.env,
        "input": spec.input, "output": spec.output, "network": spec.network, "mode": spec.mode,
        "workdir": spec.workdir, "concurrency": spec.concurrency,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if spec.continue_on_error:
        body["continue_on_error"] = True
    return body


def definition_of(obj: Any, input_data: Any = None) -> dict[str, Any]:
    """The full definition of a decorated workflow class or instance, ready for ``POST /v1/workflows``."""
    p = plan(obj)
    wf = p.spec
    modules, functions = ship(
        p.cls, {s.id: s.method for s in p.steps if s.spec is not None and s.spec.command is None and s.method}
    )
    config = {"max_parallel": wf.max_parallel, "timeout": wf.timeout, "failure_strategy": wf.failure_strategy,
              "concurrency": wf.concurrency, "max_concurrent_runs": wf.max_concurrent_runs,
              "rate_limit": wf.rate_limit, "priority": wf.priority, "debounce": wf.debounce}
    definition: dict[str, Any] = {
        "name": wf.name,
        "config": {k: v for k, v in config.items() if v is not None},
        "steps": [_step_body(s, wf, functions.get(s.id)) for s in p.steps],
    }
    if wf.description:
        definition["description"] = wf.description
    if wf.labels:
        definition["labels"] = wf.labels
    if input_data is not None:
        definition["input"] = input_data
    if modules:
        definition["modules"] = modules
    return definition
