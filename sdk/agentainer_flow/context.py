"""``ctx``: what a Python-function step receives, in its container and in :func:`run_locally`.

Stdlib only and Python 3.9-compatible: this file's source is shipped inside every generated step
module (see :mod:`agentainer_flow.shipping`), because step containers have neither this package nor
its dependencies. Inside a container the pool's agent hands over its own minimal context (ids, the
task's input document, a synchronous ``state`` over the agent channel, a logger); the generated entry
function wraps it with :meth:`StepContext.from_agent`. The local runner builds the same class with
:class:`MemoryState`, so a step sees one API in both places.

The API (all synchronous, also inside ``async def`` steps)::

    ctx.workflow_id, ctx.workflow_name, ctx.step_id, ctx.task_id, ctx.index, ctx.attempt
    ctx.input            the step's input (its ``input`` templates resolved, else the workflow input)
    ctx.workflow_input   the workflow's input
    ctx.item             map/parallel steps: this task's item (None otherwise)
    ctx.items            reduce steps: the outputs of its dependencies, list outputs concatenated
    ctx.deps             {dependency step id: its output}
    ctx.state.get(key, default=None) / set(key, value) / increment(key, by=1) / append(key, value)
    ctx.state.delete(key)
    ctx.log              a logging.Logger; its lines (and print()) end up in the step's log tail
    ctx.env              the task's environment variables
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any


class StepContext:
    """The ``ctx`` argument of a step method."""

    def __init__(
        self,
        *,
        workflow_id: str = "",
        workflow_name: str = "",
        step_id: str = "",
        task_id: str = "",
        index: int = 0,
        attempt: int = 1,
        input: Any = None,
        workflow_input: Any = None,
        item: Any = None,
        items: Any = None,
        deps: dict[str, Any] | None = None,
        state: Any = None,
        log: logging.Logger | None = None,
        env: dict[str, str] | None = None,
        traceparent: str | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.workflow_name = workflow_name
        self.step_id = step_id
        self.task_id = task_id
        self.index = index
        self.attempt = attempt
        self.input = input
        self.workflow_input = workflow_input
        self.item = item
        self.items = items
        self.deps: dict[str, Any] = dict(deps or {})
        self.state = state if state is not None else MemoryState()
        self.log = log if log is not None else logging.getLogger("flow.step." + step_id)
        self.env: dict[str, str] = dict(env or {})
        self.traceparent = traceparent

    @classmethod
    def from_agent(cls, raw: Any) -> StepContext:
        """Wrap the agent's context (its ``input`` is the task's input document)."""
        raw_input: Any = getattr(raw, "input", None)
        is_doc = isinstance(raw_input, dict) and "deps" in raw_input and "workflow_input" in raw_input
        doc: dict[str, Any] = raw_input if is_doc else {}
        workflow: dict[str, Any] = doc["workflow"] if isinstance(doc.get("workflow"), dict) else {}
        deps = doc.get("deps") if is_doc else getattr(raw, "deps", None)
        return cls(
            workflow_id=str(getattr(raw, "workflow_id", "") or workflow.get("id", "")),
            workflow_name=str(workflow.get("name", "")),
            step_id=str(getattr(raw, "step_id", "")),
            task_id=str(getattr(raw, "task_id", "")),
            index=int(getattr(raw, "index", 0) or 0),
            attempt=int(getattr(raw, "attempt", 1) or 1),
            input=doc.get("input") if is_doc else raw_input,
            workflow_input=doc.get("workflow_input"),
            item=doc.get("item") if is_doc else getattr(raw, "item", None),
            items=doc.get("items"),
            deps=deps if isinstance(deps, dict) else {},
            state=getattr(raw, "state", None),
            log=getattr(raw, "log", None),
            env=getattr(raw, "env", None),
            traceparent=getattr(raw, "traceparent", None),
        )

    def __repr__(self) -> str:
        return f"<StepContext workflow={self.workflow_id!r} step={self.step_id!r} index={self.index}>"


def _json_copy(value: Any) -> Any:
    """What a JSON round trip through the state store would give back (and a check it is JSON)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state values must be JSON: {exc}") from exc


class MemoryState:
    """Workflow state in a dict, with the semantics of the server's state operations."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = _json_copy(dict(initial or {}))

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> Any:
        self.data[key] = _json_copy(value)
        return copy.deepcopy(self.data[key])

    def increment(self, key: str, by: float = 1) -> Any:
        current = self.data.get(key, 0)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise ValueError(f"state key {key!r} holds {type(current).__name__}, not a number")
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise ValueError(f"increment needs a number, got {by!r}")
        self.data[key] = current + by
        return self.data[key]

    def append(self, key: str, value: Any) -> Any:
        current = self.data.get(key, [])
        if not isinstance(current, list):
            raise ValueError(f"state key {key!r} holds {type(current).__name__}, not a list")
        current.append(_json_copy(value))
        self.data[key] = current
        return copy.deepcopy(current)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)
