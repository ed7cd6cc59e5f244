"""The ``<!-- runs: local -->`` code blocks of docs/sdk.md, run in order in one namespace (top-level
``await`` allowed), so the documentation cannot rot. The ``stack`` blocks run in tests/e2e."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
BLOCK = re.compile(r"```python\n(.*?)```\n<!-- runs: (local|stack) -->", re.S)


def blocks(kind: str) -> list[str]:
    found = [code for code, k in BLOCK.findall(DOC.read_text()) if k == kind]
    assert found, f"docs/sdk.md has no {kind} blocks"
    return found


async def run_blocks(codes: list[str], namespace: dict[str, Any]) -> None:
    for code in codes:
        compiled = compile(code, str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)
        if inspect.isawaitable(result):
            await result


async def test_local_blocks_of_the_sdk_doc_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOW_URL", raising=False)
    monkeypatch.delenv("FLOW_TOKEN", raising=False)
    assert len(blocks("local")) >= 5
    await run_blocks(blocks("local"), {"__name__": "sdk_doc"})
