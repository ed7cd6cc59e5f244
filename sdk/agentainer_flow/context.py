"""``ctx``: what a Python-function step receives, in its container and in :func:`run_locally`.

Stdlib only and Python 3.9-compatible: this file's source is shipped inside every generated step
module (see :mod:`agentainer_flow.shipping`), because step containers have neither this package nor
its dependencies. Inside a container the pool's agent hands over its own minimal context (ids, the
task's input document, a synchronous ``state`` over the agent channel, a logger); the generated entry
function wraps it with :meth:`StepContext.from_agent`, and its state with :class:`ThreadedState`. The
local runner builds the same class with :class:`MemoryState`, so a step sees one API in both places.

The API::

    ctx.workflow_id, ctx.workflow_name, ctx.step_id, ctx.task_id, ctx.index, ctx.attempt
    ctx.input            the step's input (its ``input`` templates resolved, else the workflow input)
    ctx.workflow_input   the workflow's input
    ctx.item             map/parallel steps: this task's item (None otherwise)
    ctx.items            reduce steps: the outputs of its dependencies, list outputs concatenated
    ctx.deps             {dependency step id: its output}
    ctx.state.get(key, default=None) / set(key, value) / increment(key, by=1) / append(key, value)
    ctx.state.delete(key)
    await ctx.state.aget(...) / aset / aincrement / aappend / adelete
                         the same operations as awaitables, for ``async def`` steps: the event loop
                         keeps running while the round trip to the state store is in flight
    ctx.log              a logging.Logger; its lines (and print()) end up in the step's log tail
    ctx.env              the task's environment variables
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
from collections.abc import Callable
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
        self.state: WorkflowState = _as_state(state)
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


class WorkflowState:
    """``ctx.state``: the workflow's shared state, JSON values under string keys.

    Each operation comes twice: synchronous (``get``, ``set``, ``increment``, ``append``, ``delete``)
    and awaitable (``aget``, ``aset``, ``aincrement``, ``aappend``, ``adelete``). Each call is one
    atomic operation on the server; a read followed by a write is not (use ``increment`` or
    ``append`` for counters and lists that several tasks update).
    """

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when there is none."""
        raise NotImplementedError

    def set(self, key: str, value: Any) -> Any:
        """Store ``value`` (JSON) under ``key``; returns the stored value."""
        raise NotImplementedError

    def increment(self, key: str, by: float = 1) -> Any:
        """Add ``by`` to the number under ``key`` (missing: 0); returns the new number."""
        raise NotImplementedError

    def append(self, key: str, value: Any) -> Any:
        """Append ``value`` to the list under ``key`` (missing: []); returns the new list."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is missing)."""
        raise NotImplementedError

    async def _run(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run one synchronous operation for its awaitable form (overridden where it blocks)."""
        return op(*args)

    async def aget(self, key: str, default: Any = None) -> Any:
        """``await ctx.state.aget(key)``: :meth:`get` without blocking the event loop."""
        return await self._run(self.get, key, default)

    async def aset(self, key: str, value: Any) -> Any:
        """``await ctx.state.aset(key, value)``: :meth:`set` without blocking the event loop."""
        return await self._run(self.set, key, value)

    async def aincrement(self, key: str, by: float = 1) -> Any:
        """``await ctx.state.aincrement(key)``: :meth:`increment` without blocking the event loop."""
        return await self._run(self.increment, key, by)

    async def aappend(self, key: str, value: Any) -> Any:
        """``await ctx.state.aappend(key, value)``: :meth:`append` without blocking the event loop."""
        return await self._run(self.append, key, value)

    async def adelete(self, key: str) -> None:
        """``await ctx.state.adelete(key)``: :meth:`delete` without blocking the event loop."""
        await self._run(self.delete, key)


class ThreadedState(WorkflowState):
    """A :class:`WorkflowState` over a synchronous backend whose calls block (the agent's channel).

    The synchronous methods call the backend directly. The awaitable ones use the backend's own
    ``aget``/``aset``/... when it has them, and otherwise run the blocking call in the running loop's
    default executor, so other coroutines of the step go on while the state store answers.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def get(self, key: str, default: Any = None) -> Any:
        return self.backend.get(key, default)

    def set(self, key: str, value: Any) -> Any:
        return self.backend.set(key, value)

    def increment(self, key: str, by: float = 1) -> Any:
        return self.backend.increment(key, by)

    def append(self, key: str, value: Any) -> Any:
        return self.backend.append(key, value)

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    async def _run(self, op: Callable[..., Any], *args: Any) -> Any:
        native = getattr(self.backend, "a" + op.__name__, None)
        if native is not None and inspect.iscoroutinefunction(native):
            return await native(*args)
        return await asyncio.get_running_loop().run_in_executor(None, op, *args)

    def __repr__(self) -> str:
        return f"<ThreadedState over {type(self.backend).__name__}>"


def _as_state(state: Any) -> WorkflowState:
    if state is None:
        return MemoryState()
    return state if isinstance(state, WorkflowState) else ThreadedState(state)


class MemoryState(WorkflowState):
    """Workflow state in a dict, with the semantics of the server's state operations.

    Its awaitable forms yield to the event loop once before they act, as a real round trip would:
    concurrent tasks of a step interleave around them locally as they do in a container.
    """

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

    async def _run(self, op: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(0)
        return op(*args)
