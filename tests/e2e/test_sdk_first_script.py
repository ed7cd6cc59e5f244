"""A new user's first script through the real stack: docs/sdk.md's "A first script", saved to a file and
run with ``python``, unguarded ``asyncio.run(main())`` at the bottom included; and a workflow class
defined inside a test function, reading the test's variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from agentainer_flow import WorkflowClient, WorkflowStatus, step, workflow
from tests.e2e.conftest import Stack

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "sdk.md"
IMAGE = "agentainer-flow/python:3.11"


def first_script() -> str:
    # A ```py fence: the doc runners take the ```python blocks and run them in-process.
    match = re.search(r"```py\n(.*?)```\n<!-- runs: script -->", DOC.read_text(), re.S)
    assert match, "docs/sdk.md lost its first script"
    return match.group(1)


def test_the_first_script_of_the_sdk_doc_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "squares.py"
    script.write_text(first_script())
    assert script.read_text().rstrip().endswith("\nasyncio.run(main())")  # unguarded, as a new user writes it
    env = {**os.environ, "FLOW_URL": stack.url, "FLOW_TOKEN": stack.token, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    assert done.stdout.strip() == "14"


async def test_a_workflow_class_defined_in_a_test_function_runs(stack: Stack) -> None:
    factor = 10
    suffix = {"unit": "cm"}

    @workflow("defined-in-a-test", image=IMAGE)
    class InATest:
        @step()
        def scale(self, ctx):  # type: ignore[no-untyped-def]
            return [f"{v * factor}{suffix['unit']}" for v in ctx.input["values"]]

    async with WorkflowClient(stack.url, stack.token, timeout=60) as client:
        execution = await client.run_workflow(InATest(), input_data={"values": [1, 2]})
        run = await execution.wait_for_completion(timeout=180)
    assert run.status == WorkflowStatus.COMPLETED
    assert run.step("scale").output == ["10cm", "20cm"]
