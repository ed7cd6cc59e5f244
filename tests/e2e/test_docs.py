"""Runs the workflow examples of docs/workflows.md on the real stack and checks the noted outcome.

Under each example a comment ``<!-- doc-example: NAME STATUS step=expected ... -->`` says what must
happen: the workflow status, then per step its output (JSON) or its status (a status word).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, steps_by_id, submit, wait

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"
BLOCK = re.compile(r"```yaml\n(.*?)```\n<!-- doc-example: (.*?) -->", re.S)
STATUSES = {"succeeded", "failed", "skipped", "cancelled"}


def examples() -> list[tuple[str, str, str]]:
    found = BLOCK.findall(DOC.read_text())
    assert len(found) >= 4, "docs/workflows.md lost its examples"
    return [(spec.split()[0], body, spec) for body, spec in found]


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as c:
        yield c


@pytest.mark.parametrize(("name", "body", "spec"), examples(), ids=[e[0] for e in examples()])
def test_doc_example(client: httpx.Client, name: str, body: str, spec: str) -> None:
    definition = yaml.safe_load(body)
    assert definition["name"] == name
    result = wait(client, submit(client, definition))
    _, status, *checks = shlex.split(spec)
    assert result["status"] == status, brief(result)
    steps = steps_by_id(result)
    for check in checks:
        step_id, expected = check.split("=", 1)
        if expected in STATUSES:
            assert steps[step_id]["status"] == expected, brief(result)
        else:
            try:
                value = json.loads(expected)
            except json.JSONDecodeError:  # a quoted string in the spec: compare as text
                value = expected
            assert steps[step_id]["output"] == value, brief(result)
