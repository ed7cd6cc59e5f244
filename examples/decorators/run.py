"""Run the order pipeline: in-process with ``run_locally``, then on the stack at ``$FLOW_URL``.

::

    .venv/bin/python -m examples.decorators.run
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentainer_flow import Workflow, WorkflowClient, run_locally
from examples.decorators.pipeline import SAMPLE_ORDERS, OrderPipeline


async def run(client: WorkflowClient, orders: list[dict[str, Any]] | None = None, timeout_s: float = 120) -> tuple[Workflow, dict[str, Any]]:
    """Run the pipeline on the stack; returns the finished workflow and its final state."""
    execution = await client.run_workflow(OrderPipeline(), input_data={"orders": orders or SAMPLE_ORDERS})
    wf = await execution.wait_for_completion(timeout=timeout_s)
    return wf, await client.get_workflow_state(wf.id)


async def main() -> None:
    local = await run_locally(OrderPipeline(), input_data={"orders": SAMPLE_ORDERS})
    print(f"locally: {local.status.value}, report {local.outputs['report']}")
    async with WorkflowClient() as client:
        wf, state = await run(client)
    print(f"on the stack: {wf.status.value} in {wf.duration_s:.2f}s, report {wf.step('report').output}")
    print(f"state: {state}")


if __name__ == "__main__":
    asyncio.run(main())
