"""``await ctx.state.aget(...)`` and the other awaitable state operations: in the local runner (over
``MemoryState``) and over a blocking backend such as the agent's channel (``ThreadedState``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agentainer_flow import (
    MemoryState,
    StepContext,
    WorkflowState,
    WorkflowStatus,
    run_locally,
    step,
    workflow,
)
from agentainer_flow.context import ThreadedState

IMG = "agentainer-flow/python:3.11"


@workflow("async-counters", image=IMG, max_parallel=4)
class AsyncCounters:
    @step(type="parallel", replicas=3)
    async def bump(self, ctx: Any) -> dict[str, Any]:
        pending = asyncio.ensure_future(ctx.state.aincrement("hits"))
        await asyncio.sleep(0)
        in_flight = not pending.done()
        await asyncio.gather(*(ctx.state.aappend("seen", f"{ctx.index}.{n}") for n in range(3)))
        return {"in_flight": in_flight, "hits": await pending}

    @step(depends_on=["bump"])
    async def read(self, ctx: Any) -> dict[str, Any]:
        await ctx.state.aset("scratch", {"a": [1]})
        scratch = await ctx.state.aget("scratch")
        await ctx.state.adelete("scratch")
        return {
            "hits": await ctx.state.aget("hits"),
            "scratch": scratch,
            "after_delete": await ctx.state.aget("scratch", "gone"),
            "sync_too": ctx.state.get("hits"),
        }


async def test_async_steps_await_the_state_in_the_local_runner() -> None:
    run = await run_locally(AsyncCounters(), state={"hits": 10})
    assert run.status == WorkflowStatus.COMPLETED, run.failed_steps()
    assert sorted(o["hits"] for o in run.outputs["bump"]) == [11, 12, 13]
    # The local state yields once per operation, like a round trip: a started one is still in flight.
    assert all(o["in_flight"] for o in run.outputs["bump"])
    assert run.outputs["read"] == {"hits": 13, "scratch": {"a": [1]}, "after_delete": "gone", "sync_too": 13}
    assert sorted(run.state["seen"]) == [f"{i}.{n}" for i in range(3) for n in range(3)]
    assert "scratch" not in run.state


async def test_memory_state_awaitables_keep_the_servers_semantics() -> None:
    state = MemoryState({"n": 1, "xs": []})
    assert await state.aincrement("n", 2) == 3 and await state.aincrement("fresh") == 1
    assert await state.aappend("xs", (1, 2)) == [[1, 2]]
    assert await state.aset("k", {"t": (1,)}) == {"t": [1]}
    assert await state.aget("missing", "d") == "d"
    assert await state.adelete("k") is None and "k" not in state.snapshot()
    with pytest.raises(ValueError, match="not a number"):
        await state.aincrement("xs")
    with pytest.raises(ValueError, match="must be JSON"):
        await state.aset("bad", object())


async def test_a_failing_awaited_operation_fails_the_step_locally() -> None:
    run = await run_locally(Appender(), state={"log": "not a list"})
    assert run.status == WorkflowStatus.FAILED
    assert run.failed_steps() == {"add": "ValueError: state key 'log' holds str, not a list"}


@workflow("appender", image=IMG)
class Appender:
    @step()
    async def add(self, ctx: Any) -> Any:
        return await ctx.state.aappend("log", 1)


class GatedBackend:
    """A synchronous state backend whose ``get`` blocks until the test releases it, as the agent's
    channel blocks until the pool answers."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"k": "v"}
        self.release = threading.Event()
        self.threads: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.threads.add(threading.current_thread().name)
        if not self.release.wait(10):
            raise RuntimeError("never released: the event loop was blocked")
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> Any:
        self.data[key] = value
        return value

    def increment(self, key: str, by: float = 1) -> Any:
        self.data[key] = self.data.get(key, 0) + by
        return self.data[key]

    def append(self, key: str, value: Any) -> Any:
        self.data.setdefault(key, []).append(value)
        return self.data[key]

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


async def test_a_blocking_backend_is_awaited_without_blocking_the_event_loop() -> None:
    backend = GatedBackend()
    state = ThreadedState(backend)
    pending = asyncio.ensure_future(state.aget("k"))
    await asyncio.sleep(0)
    assert not pending.done()
    # Only reachable while ``get`` blocks if the loop is free: the release comes from this coroutine.
    backend.release.set()
    assert await pending == "v"
    assert threading.current_thread().name not in backend.threads
    assert state.get("missing", 0) == 0  # the synchronous form calls the backend directly
    assert await state.aincrement("n", 5) == 5 and await state.aappend("xs", 1) == [1]
    assert await state.aset("k", 2) == 2 and await state.adelete("k") is None and "k" not in backend.data


async def test_a_backend_with_its_own_awaitables_is_awaited_directly() -> None:
    class NativeAsync(GatedBackend):
        async def aget(self, key: str, default: Any = None) -> Any:
            return ("native", key, default)

    state = ThreadedState(NativeAsync())
    assert await state.aget("k", 1) == ("native", "k", 1)


def test_the_context_wraps_a_foreign_state_and_keeps_a_workflow_state() -> None:
    backend = GatedBackend()
    backend.release.set()
    ctx = StepContext(step_id="s", state=backend)
    assert isinstance(ctx.state, ThreadedState) and ctx.state.backend is backend
    assert ctx.state.get("k") == "v"
    memory = MemoryState()
    assert StepContext(state=memory).state is memory
    assert isinstance(StepContext().state, MemoryState)
    assert isinstance(ctx.state, WorkflowState) and isinstance(memory, WorkflowState)
