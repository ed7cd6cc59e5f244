"""run_locally: the engine's rules in-process, with the same ctx API as in a container."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from agentainer_flow import (
    MemoryState,
    StepContext,
    StepStatus,
    WorkflowError,
    WorkflowStatus,
    branch,
    decision,
    run_locally,
    step,
    when,
    workflow,
)
from examples.decorators.pipeline import SAMPLE_ORDERS, OrderPipeline

IMG = "agentainer-flow/python:3.11"


async def test_the_example_pipeline_runs_locally() -> None:
    run = await run_locally(OrderPipeline(), input_data={"orders": SAMPLE_ORDERS})
    assert run.status == WorkflowStatus.COMPLETED
    assert run.outputs["summarize"] == {"orders": 4, "revenue": 141.0}
    assert run.steps["quiet_day"].status == StepStatus.SKIPPED and run.steps["quiet_day"].reason == "not chosen by route"
    assert run.outputs["report"] == {"verdict": "big", "orders_seen": 4, "priced": ["A-1", "A-2", "A-3", "A-4"],
                                     "revenue": 141.0}
    assert run.state["orders_seen"] == 4 and "loaded 4 orders" in run.steps["load"].logs
    assert run.order.index("load") < run.order.index("price") < run.order.index("summarize") < run.order.index("report")


@workflow("concurrent", image=IMG)
class Concurrent:
    @step()
    async def left(self, ctx: Any) -> str:
        await asyncio.sleep(0.2)
        return "l"

    @step()
    async def right(self, ctx: Any) -> str:
        await asyncio.sleep(0.2)
        return "r"

    @step(depends_on=["left", "right"])
    def join(self, ctx: Any) -> str:
        return ctx.deps["left"] + ctx.deps["right"]


async def test_independent_steps_run_concurrently_and_dependents_wait() -> None:
    started = time.perf_counter()
    run = await run_locally(Concurrent)
    assert time.perf_counter() - started < 0.35
    assert run.outputs["join"] == "lr" and run.order[-1] == "join"


@workflow("fan", image=IMG, failure_strategy="continue")
class Fan:
    @step(type="parallel", replicas=3)
    def replicas(self, ctx: Any) -> int:
        return ctx.item * 10 + ctx.index

    @step(type="map", items="input.words", tolerated_failures=1)
    def lengths(self, ctx: Any) -> int:
        if ctx.item == "boom":
            raise ValueError("no")
        return len(ctx.item)

    @step(type="reduce", depends_on=["replicas", "lengths"], input={"label": {"$path": "input.label"}})
    def total(self, ctx: Any) -> dict[str, Any]:
        return {"sum": sum(x for x in ctx.items if x is not None), "label": ctx.input["label"]}

    @step(retry=3)
    def flaky(self, ctx: Any) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return ctx.attempt

    @step()
    def broken(self, ctx: Any) -> object:
        return object()  # not JSON: fails as it would in a container

    @step(depends_on=["broken"])
    def after_broken(self, ctx: Any) -> None: ...


async def test_map_parallel_reduce_retries_and_continue() -> None:
    run = await run_locally(Fan, input_data={"words": ["ab", "boom", "cde"], "label": "L"})
    assert run.outputs["replicas"] == [0, 11, 22]
    assert run.outputs["lengths"] == [2, None, 3]
    assert run.outputs["total"] == {"sum": 38, "label": "L"}
    assert run.outputs["flaky"] == 3 and run.steps["flaky"].attempts == 3
    assert run.steps["broken"].status == StepStatus.FAILED and "JSON" in (run.steps["broken"].error or "")
    assert run.steps["after_broken"].status == StepStatus.SKIPPED
    assert run.status == WorkflowStatus.FAILED
    with pytest.raises(WorkflowError) as info:
        run.raise_for_status()
    assert set(info.value.failed_steps) == {"broken"}


@workflow("fast-fail", image=IMG)
class FastFail:
    @step()
    def bad(self, ctx: Any) -> None:
        raise RuntimeError("bad input")

    @step(depends_on=["bad"])
    def never(self, ctx: Any) -> None: ...


async def test_fail_fast_skips_the_rest() -> None:
    run = await run_locally(FastFail)
    assert run.status == WorkflowStatus.FAILED
    assert run.steps["bad"].error == "RuntimeError: bad input"
    assert run.steps["never"].status == StepStatus.SKIPPED


@workflow("route", image=IMG)
class Route:
    @step()
    def score(self, ctx: Any) -> int:
        return int(ctx.input["score"])

    pick = decision([(when("steps.score.output", ">=", 90), ["gold"]), (when("steps.score.output", ">=", 50), ["silver"])],
                    default=["none"])
    also = branch(when("input.flag", "exists"), then=["flagged"])

    @step()
    def gold(self, ctx: Any) -> str:
        return "gold"

    @step()
    def silver(self, ctx: Any) -> str:
        return "silver"

    @step()
    def none(self, ctx: Any) -> str:
        return "none"

    @step()
    def flagged(self, ctx: Any) -> bool:
        return True

    @step(depends_on=["gold", "silver", "none"])
    def medal(self, ctx: Any) -> list[str]:
        return sorted(v for v in ctx.deps.values() if v)


@pytest.mark.parametrize(("score", "chosen"), [(95, "gold"), (60, "silver"), ("10", "none")])
async def test_decisions_pick_one_target_and_skip_the_others(score: Any, chosen: str) -> None:
    run = await run_locally(Route, input_data={"score": score})
    ran = {k for k in ("gold", "silver", "none") if run.steps[k].status == StepStatus.SUCCEEDED}
    assert ran == {chosen} and run.outputs["medal"] == [chosen]
    assert run.steps["flagged"].status == StepStatus.SKIPPED


def test_memory_state_follows_the_servers_semantics() -> None:
    state = MemoryState({"n": 1})
    assert state.increment("n", 2) == 3 and state.increment("fresh") == 1
    assert state.append("xs", {"a": 1}) == [{"a": 1}] and state.get("missing", "d") == "d"
    assert state.set("k", (1, 2)) == [1, 2]
    state.delete("k")
    with pytest.raises(ValueError, match="not a number"):
        state.increment("xs")
    with pytest.raises(ValueError, match="not a list"):
        state.append("n", 1)
    with pytest.raises(ValueError, match="must be JSON"):
        state.set("bad", object())


def test_the_context_wraps_the_agents_context() -> None:
    class AgentCtx:
        workflow_id, step_id, task_id, index, attempt = "wf", "s", "t", 2, 1
        input: ClassVar[dict[str, Any]] = {"workflow": {"id": "wf", "name": "n"}, "input": {"a": 1}, "workflow_input": {"b": 2},
                 "deps": {"x": 1}, "item": "it", "items": [1]}
        state = MemoryState()
        log = None
        env: ClassVar[dict[str, str]] = {"E": "1"}

    ctx = StepContext.from_agent(AgentCtx())
    assert (ctx.workflow_id, ctx.workflow_name, ctx.index, ctx.input, ctx.workflow_input) == ("wf", "n", 2, {"a": 1}, {"b": 2})
    assert (ctx.item, ctx.items, ctx.deps, ctx.env) == ("it", [1], {"x": 1}, {"E": "1"})
    assert ctx.state is AgentCtx.state and ctx.log.name == "flow.step.s"
