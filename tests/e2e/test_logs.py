"""Live task logs and per-task usage through the real processes: a step's lines are followed while it
runs (SDK and ``flow logs``), and the workflow view carries each task's CPU time and peak memory."""

from __future__ import annotations

import asyncio

import pytest

from agentainer_flow import WorkflowClient
from agentainer_flow.cli import main
from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import IMAGE, py

# The step prints a line, then waits for the test to set the state key "go": the first line must be
# readable while the step is still running.
SOURCE = """
import time

def talk(ctx):
    print("first line")
    while ctx.state.get("go") is None:
        time.sleep(0.02)
    print("second line")
    return 1
"""

DEFINITION = {
    "name": "live-logs",
    "input": {"xs": ["a", "b"]},
    "steps": [
        {"id": "talk", "image": IMAGE, "function": {"module": "live_steps", "qualname": "talk", "source": SOURCE}},
        {
            "id": "fan",
            "type": "map",
            "items": "input.xs",
            "depends_on": ["talk"],
            "image": IMAGE,
            "command": py("print('item', doc['item']); print('warn', doc['item'], file=sys.stderr)"),
            "output": "text",
        },
    ],
}


async def test_follow_a_running_workflow_and_read_its_usage(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with WorkflowClient(stack.url, stack.token) as client:
        wf = await client.submit(DEFINITION)
        stream = await client.get_workflow_logs(wf.id, follow=True)
        async with stream:
            lines = [await asyncio.wait_for(stream.__anext__(), 60)]
            assert lines == ["[talk] first line\n"]
            assert not (await client.get_workflow(wf.id)).status.finished
            await client.update_workflow_state(wf.id, "go", True)
            lines += [line async for line in stream]  # ends by itself when the workflow finishes
        assert lines[:2] == ["[talk] first line\n", "[talk] second line\n"]
        assert sorted(lines[2:]) == ["[fan#0] item a\n", "[fan#0] warn a\n", "[fan#1] item b\n", "[fan#1] warn b\n"]

        done = await client.get_workflow(wf.id)
        assert done.status.value == "completed"
        tasks = [t for s in done.steps for t in s.tasks]
        assert len(tasks) == 3
        for task in tasks:
            assert task.cpu_time_s is not None and task.cpu_time_s >= 0
            assert task.peak_memory_bytes is not None and task.peak_memory_bytes > 0

        only_fan = await client.get_workflow_logs(wf.id, "fan", index=1)
        assert sorted(only_fan.splitlines()) == ["[fan#1] item b", "[fan#1] warn b"]  # stdout is block-buffered

    base = ["--url", stack.url, "--token", stack.token]
    assert await asyncio.to_thread(main, [*base, "logs", wf.id, "talk"]) == 0
    assert capsys.readouterr().out == "[talk] first line\n[talk] second line\n"
    assert await asyncio.to_thread(main, [*base, "logs", wf.id, "--follow"]) == 0  # finished: prints, returns
    assert capsys.readouterr().out.count("\n") == 6
    assert await asyncio.to_thread(main, [*base, "logs", wf.id, "nope"]) == 2
    assert "has no step 'nope'" in capsys.readouterr().err
