"""The word counter as a full DAG: list -> map -> reduce -> branch, over the bundled texts.

The same image and step programs as :mod:`examples.wordcount.wordcount`, plus a ``branch`` the engine
evaluates on the reduce step's output: corpora over ``threshold`` words get the ``long-summary`` step,
the others ``short-summary`` (both run ``steps/summary.py``); the step not taken is skipped.

    scripts/build_example_images.sh                      # once: agentainer-flow/wordcount, offline
    .venv/bin/python -m examples.wordcount.pipeline      # against a running stack (make up)
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentainer_flow import Workflow, WorkflowClient
from examples.wordcount.wordcount import IMAGE, TOP, documents, program

REDUCED = {"$path": "steps.reduce.output"}  # the summary steps' input: what the reduce step produced


def definition(threshold: int = 1000, max_parallel: int = 4) -> dict[str, Any]:
    container = {"image": IMAGE, "pool": {"min_size": 0, "max_size": max_parallel}, "timeout": 60}
    return {
        "name": "wordcount-dag",
        "description": "list -> map -> reduce -> branch over the bundled texts",
        "input": {"documents": documents(), "top": TOP},
        "config": {"max_parallel": max_parallel, "timeout": "5m"},
        "steps": [
            {"id": "list", "command": program("list_documents"), **container},
            {
                "id": "count",
                "type": "map",
                "items": "steps.list.output",
                "depends_on": ["list"],
                "command": program("count_words"),
                "retry": {"max_attempts": 2, "initial_delay_s": 0.2},
                **container,
            },
            {"id": "reduce", "type": "reduce", "depends_on": ["count"], "command": program("top_words"), **container},
            {
                "id": "size",
                "type": "branch",
                "depends_on": ["reduce"],
                "condition": {"field": "steps.reduce.output.total_words", "op": ">", "value": threshold},
                "then": ["long-summary"],
                "else": ["short-summary"],
            },
            {"id": "long-summary", "command": program("summary"), "input": REDUCED, **container},
            {"id": "short-summary", "command": program("summary"), "input": REDUCED, **container},
        ],
    }


async def run(client: WorkflowClient, threshold: int = 1000, timeout_s: float = 120) -> Workflow:
    execution = await client.run_workflow(definition(threshold))
    return await execution.wait_for_completion(timeout=timeout_s)


def report(wf: Workflow) -> str:
    taken = next(s for s in ("long-summary", "short-summary") if wf.step(s).status == "succeeded")
    skipped = "short-summary" if taken == "long-summary" else "long-summary"
    counted = wf.step("count").output
    return (
        f"{wf.name}: {len(counted)} documents mapped, branch took {taken!r} ({skipped!r} skipped)\n"
        f"  {wf.step(taken).output}"
    )


async def main() -> None:
    async with WorkflowClient() as client:
        print(report(await run(client)))


if __name__ == "__main__":
    asyncio.run(main())
