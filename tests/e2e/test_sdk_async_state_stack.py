"""Awaitable ``ctx.state`` in ``async def`` steps, inside real containers (through the pool's agent and
its channel to the pool service), read back over the API; and the same workflow run locally."""

from __future__ import annotations

import asyncio
from typing import Any

from agentainer_flow import StepStatus, WorkflowClient, WorkflowStatus, run_locally, step, workflow
from tests.e2e.conftest import Stack

IMAGE = "agentainer-flow/python:3.11"


@workflow("async-state", max_parallel=4)
class AsyncState:
    @step(image=IMAGE, type="parallel", replicas=3, pool={"min_size": 0, "max_size": 3})
    async def bump(self, ctx: Any) -> dict[str, Any]:
        pending = asyncio.ensure_future(ctx.state.aincrement("hits"))
        await asyncio.sleep(0)
        # Not blocked: this coroutine runs again while the increment still waits for the state store.
        in_flight = not pending.done()
        lists = await asyncio.gather(*(ctx.state.aappend("seen", f"{ctx.index}.{n}") for n in range(3)))
        return {"in_flight": in_flight, "hits": await pending, "appended": all(isinstance(x, list) for x in lists)}

    @step(image=IMAGE, depends_on=["bump"])
    async def read(self, ctx: Any) -> dict[str, Any]:
        await ctx.state.aset("scratch", {"a": [1]})
        scratch = await ctx.state.aget("scratch")
        await ctx.state.adelete("scratch")
        await ctx.state.aset("done", True)
        return {
            "hits": await ctx.state.aget("hits"),
            "scratch": scratch,
            "after_delete": await ctx.state.aget("scratch", "gone"),
            "sync_too": ctx.state.get("hits"),
        }


async def test_async_steps_await_the_state_in_containers(stack: Stack) -> None:
    async with WorkflowClient(stack.url, stack.token, timeout=60) as client:
        execution = await client.run_workflow(AsyncState())
        wf = await execution.wait_for_completion(timeout=120)
        state = await client.get_workflow_state(wf.id)
        hits = await client.get_workflow_state(wf.id, key="hits")
    assert wf.status == WorkflowStatus.COMPLETED
    assert all(t.mode == "agent" for s in wf.steps for t in s.tasks), [t.mode for s in wf.steps for t in s.tasks]
    bumped = wf.step("bump").output
    assert [o["in_flight"] for o in bumped] == [True, True, True]
    assert sorted(o["hits"] for o in bumped) == [1, 2, 3] and all(o["appended"] for o in bumped)
    assert wf.step("read").output == {"hits": 3, "scratch": {"a": [1]}, "after_delete": "gone", "sync_too": 3}
    assert hits == 3
    assert {k: state[k] for k in ("hits", "done")} == {"hits": 3, "done": True} and "scratch" not in state
    assert sorted(state["seen"]) == [f"{i}.{n}" for i in range(3) for n in range(3)]

    local = await run_locally(AsyncState())
    assert local.steps["read"].status == StepStatus.SUCCEEDED
    assert local.outputs["read"] == wf.step("read").output
    assert local.state == {k: v for k, v in state.items() if k != "seen"} | {"seen": local.state["seen"]}
