"""The ``<!-- runs: stack -->`` code blocks of docs/sdk.md against the real stack."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Stack
from tests.unit.test_sdk_docs import blocks, run_blocks


async def test_stack_blocks_of_the_sdk_doc_run(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", stack.url)
    monkeypatch.setenv("FLOW_TOKEN", stack.token)
    await run_blocks(blocks("stack"), {"__name__": "sdk_doc"})
