"""A class-based workflow: state shared across steps, a map, a reduce and a branch.

Every step below is a Python-function step: its body runs inside an ``agentainer-flow/python:3.11``
container (python3 and its standard library only), through the pool's in-container agent. The class
is plain Python, so :func:`agentainer_flow.run_locally` runs it in-process for unit tests.

``load`` reads the orders from the workflow input, ``price`` (an ``async def`` step) prices each
order (a map: one task per order) and counts them in the shared state with ``await
ctx.state.aincrement(...)``, ``summarize`` (a reduce) adds them up, ``route`` (a
branch) picks ``big_day`` or ``quiet_day`` from the revenue, and ``report`` reads the state the
others wrote.
"""

from __future__ import annotations

from typing import Any

from agentainer_flow import branch, step, when, workflow

IMAGE = "agentainer-flow/python:3.11"
BIG_DAY_REVENUE = 100.0


@workflow("order-pipeline", description="Orders priced in parallel, shared state, a branch", max_parallel=4)
class OrderPipeline:
    @step(image=IMAGE)
    def load(self, ctx: Any) -> list[dict[str, Any]]:
        orders = list((ctx.input or {}).get("orders", []))
        ctx.state.set("orders_seen", 0)
        ctx.log.info("loaded %d orders", len(orders))
        return orders

    @step(image=IMAGE, type="map", items="load", depends_on=["load"], max_concurrency=4, retry=2)
    async def price(self, ctx: Any) -> dict[str, Any]:
        order = ctx.item
        total = round(order["qty"] * order["unit_price"], 2)
        # An async step awaits the state: the event loop runs on during each round trip.
        await ctx.state.aincrement("orders_seen")
        await ctx.state.aappend("priced", order["id"])
        return {"id": order["id"], "total": total}

    @step(image=IMAGE, type="reduce", depends_on=[price])
    def summarize(self, ctx: Any) -> dict[str, Any]:
        revenue = round(sum(line["total"] for line in ctx.items), 2)
        ctx.state.set("revenue", revenue)
        return {"orders": len(ctx.items), "revenue": revenue}

    route = branch(
        when("steps.summarize.output.revenue", ">=", BIG_DAY_REVENUE),
        then=["big_day"],
        else_=["quiet_day"],
        depends_on=["summarize"],
    )

    @step(image=IMAGE, depends_on=["summarize"])
    def big_day(self, ctx: Any) -> str:
        ctx.state.set("verdict", "big")
        return f"big day: {ctx.deps['summarize']['revenue']}"

    @step(image=IMAGE, depends_on=["summarize"])
    def quiet_day(self, ctx: Any) -> str:
        ctx.state.set("verdict", "quiet")
        return f"quiet day: {ctx.deps['summarize']['revenue']}"

    @step(image=IMAGE, depends_on=["big_day", "quiet_day"])
    def report(self, ctx: Any) -> dict[str, Any]:
        return {
            "verdict": ctx.state.get("verdict"),
            "orders_seen": ctx.state.get("orders_seen"),
            "priced": sorted(ctx.state.get("priced", [])),
            "revenue": ctx.state.get("revenue"),
        }


SAMPLE_ORDERS = [
    {"id": "A-1", "qty": 2, "unit_price": 19.5},
    {"id": "A-2", "qty": 1, "unit_price": 45.0},
    {"id": "A-3", "qty": 5, "unit_price": 4.2},
    {"id": "A-4", "qty": 3, "unit_price": 12.0},
]
