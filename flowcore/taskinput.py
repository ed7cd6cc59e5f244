"""What a task receives: the workflow view, the input document, and the pool request.

The *view* is the one read path of the design: conditions, map item sources and step inputs all
resolve their paths against it, with step outputs at ``steps.<id>.output``.
"""

from __future__ import annotations

from typing import Any

from flowcore import paths
from flowcore.models import MapStep, ParallelStep, ReduceStep, StepStatus, task_function
from flowcore.pool_api import DispatchMode, TaskRequest
from flowcore.records import Snapshot, TaskRecord


def build_view(snap: Snapshot, item: Any = None) -> dict[str, Any]:
    return {
        "input": snap.input,
        "state": snap.state,
        "steps": {
            sid: {
                "output": rec.output,
                "status": rec.status.value,
                "error": rec.error,
                "failures": rec.failures,
            }
            for sid, rec in snap.steps.items()
        },
        "workflow": {"id": snap.wf_id, "name": snap.definition.name},
        "item": item,
    }


def task_item(snap: Snapshot, step_id: str, index: int) -> Any:
    step = snap.definition.step(step_id)
    if isinstance(step, MapStep):
        items = snap.steps[step_id].items
        if items is None:  # stored apart from the step record: read for this transition
            return snap.items[f"{step_id}:{index}"]
        return items[index]
    if isinstance(step, ParallelStep):
        return step.inputs[index] if step.inputs is not None else index
    return None


def input_document(snap: Snapshot, task: TaskRecord, deps: frozenset[str]) -> dict[str, Any]:
    """The JSON document a task gets on stdin and at ``$FLOW_INPUT_PATH``.

    Raises :class:`flowcore.paths.PathMissing` when a ``$path`` template cannot be resolved.
    """
    step = snap.definition.step(task.step_id)
    item = task_item(snap, task.step_id, task.index)
    view = build_view(snap, item)
    step_input = paths.resolve_templates(step.input, view) if step.input is not None else snap.input
    dep_outputs = {d: snap.steps[d].output for d in sorted(deps) if d in snap.steps}
    doc: dict[str, Any] = {
        "workflow": {"id": snap.wf_id, "name": snap.definition.name},
        "step_id": task.step_id,
        "index": task.index,
        "attempt": task.attempt,
        "input": step_input,
        "workflow_input": snap.input,
        "deps": dep_outputs,
    }
    if isinstance(step, MapStep | ParallelStep):
        doc["item"] = item
    if isinstance(step, ReduceStep):
        items: list[Any] = []
        for d in sorted(deps):
            # Only what container steps produced: a branch's or decision's control output, and a step
            # the branch skipped, are not items.
            if d not in dep_outputs or not snap.definition.step(d).runs_container:
                continue
            if snap.steps[d].status == StepStatus.SKIPPED:
                continue
            out = dep_outputs[d]
            if isinstance(out, list):
                items.extend(out)
            else:
                items.append(out)
        doc["items"] = items
    return doc


def task_id(wf_id: str, task: TaskRecord) -> str:
    return f"{wf_id}.{task.step_id}.{task.index}.{task.attempt}.{task.token}"


def task_request(snap: Snapshot, task: TaskRecord, deps: frozenset[str]) -> TaskRequest:
    step = snap.definition.step(task.step_id)
    assert step.image is not None  # validated: container steps have an image
    return TaskRequest(
        task_id=task_id(snap.wf_id, task),
        workflow_id=snap.wf_id,
        step_id=task.step_id,
        index=task.index,
        attempt=task.attempt,
        image=step.image,
        command=step.command,
        function=task_function(step.function, snap.definition.modules),
        env=dict(step.env),
        workdir=step.workdir,
        input=input_document(snap, task, deps),
        output=step.output,
        output_overflow=step.output_overflow,
        execution_key=f"{snap.wf_id}/{step.id}/{task.index}",
        timeout_s=step.timeout_s,
        resources=step.resources,
        network=step.network,
        mode=DispatchMode(step.mode),
        pool=step.pool,
        user=step.user,
        read_only_root=step.read_only_root,
        cleanup=step.cleanup or snap.definition.config.cleanup_if_set,
    )
