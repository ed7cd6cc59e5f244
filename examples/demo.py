"""``make demo``: run the examples against the stack at ``$FLOW_URL`` (default http://127.0.0.1:8081).

Prints each example's result and a timing table: per workflow, its steps, the wall time from submission
to completion, and the mean step duration.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentainer_flow import AgentainerError, Workflow, WorkflowClient
from examples.agents import run as agents
from examples.decorators import run as decorators
from examples.wordcount import pipeline, wordcount

DEFAULT_URL = "http://127.0.0.1:8081"


def timing_row(label: str, wf: Workflow, wall_s: float) -> list[str]:
    durations = [s.duration_s for s in wf.steps if s.duration_s is not None]
    mean = sum(durations) / len(durations) if durations else 0.0
    pooled = sum(1 for s in wf.steps for t in s.tasks if t.pooled)
    tasks = sum(len(s.tasks) for s in wf.steps)
    return [label, str(len(wf.steps)), str(tasks), f"{pooled}/{tasks}", f"{wall_s:.2f}s", f"{mean * 1000:.0f} ms"]


def print_table(rows: list[list[str]]) -> None:
    header = ["workflow", "steps", "tasks", "pooled", "wall time", "mean step"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


async def timed(coro: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await coro()
    return result, time.perf_counter() - started


async def main() -> int:
    url = os.environ.get("FLOW_URL", DEFAULT_URL)
    rows: list[list[str]] = []
    async with WorkflowClient(url) as client:
        try:
            await client.health()
            wf, wall = await timed(lambda: pipeline.run(client))
            print(pipeline.report(wf), end="\n\n")
            rows.append(timing_row("wordcount-dag (map, reduce, branch)", wf, wall))
            wf, wall = await timed(lambda: wordcount.run(client))
            print(wordcount.report(wf), end="\n\n")
            rows.append(timing_row("wordcount", wf, wall))
            wf, wall = await timed(lambda: wordcount.run(client, urls=True))
            print(wordcount.report(wf), end="\n\n")
            rows.append(timing_row("wordcount (urls)", wf, wall))
            (wf, state), wall = await timed(lambda: decorators.run(client))
            print(f"{wf.name}: report {wf.step('report').output}\n  state {state}\n")
            rows.append(timing_row("order-pipeline", wf, wall))
            (wf, logs), wall = await timed(lambda: agents.run(client))
            print(agents.report(wf, logs), end="\n\n")
            rows.append(timing_row("agents-review (4 agents, retry, decision)", wf, wall))
        except AgentainerError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
