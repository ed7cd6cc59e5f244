"""Cleanup policy ``keep`` through the whole stack: docs/pool.md's example runs, its failed task's
container is listed by the SDK and ``flow kept``, inspected and copied out by ``flow inspect``, refused
bad asks, and removed with its workflow (ADR 014)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from agentainer_flow import KeptContainer, WorkflowClient
from agentainer_flow.cli import main
from tests.e2e.chromium import Browser
from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, submit, wait
from tests.e2e.test_dashboard import ARTIFACTS, log_in

DOC = Path(__file__).resolve().parents[2] / "docs" / "pool.md"


def cleanup_example() -> dict[str, object]:
    match = re.search(r"```yaml\n(.*?)```\n<!-- cleanup-example -->", DOC.read_text(), re.S)
    assert match, "docs/pool.md lost its cleanup policy example"
    definition: dict[str, object] = yaml.safe_load(match.group(1))
    return definition


async def _sdk_side(stack: Stack, wf_id: str) -> KeptContainer:
    async with WorkflowClient(stack.url, stack.token) as client:
        kept = await client.list_kept_containers(workflow_id=wf_id)
        assert len(kept) == 1, kept
        record = kept[0]
        assert record.step_id == "crunch" and record.outcome == "failed" and record.status == "paused"
        assert "exited with code 3" in record.reason
        assert (await client.get_kept_container(record.container_id[:12])).container_id == record.container_id
        assert isinstance(await client.get_kept_logs(record.container_id), str)
        return record


def test_kept_container_through_the_stack(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as http:
        wf_id = submit(http, cleanup_example())
        try:
            _check(stack, http, wf_id, tmp_path, capsys)
        finally:  # a kept container left behind would fail the stack's leak check
            http.delete("/v1/kept", params={"workflow_id": wf_id})


def _check(stack: Stack, http: httpx.Client, wf_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = wait(http, wf_id)
    assert result["status"] == "failed", brief(result)
    record = asyncio.run(_sdk_side(stack, wf_id))
    base = ["--url", stack.url, "--token", stack.token]
    capsys.readouterr()
    assert main([*base, "kept", wf_id]) == 0
    assert record.container_id[:12] in capsys.readouterr().out
    dest = tmp_path / "out"
    assert main([*base, "inspect", wf_id, "crunch", "--copy", "/flow/task", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert "exited with code 3" in printed and "copied" in printed
    found = list(dest.rglob("result.txt"))
    assert len(found) == 1 and found[0].read_text() == "partial\n"
    assert found[0].resolve().is_relative_to(dest.resolve())
    # Bad asks: 4xx, nothing changes.
    for path, status in (
        (f"/v1/kept/{record.container_id}/files?path=../../etc", 422),
        ("/v1/kept/" + "0" * 64, 404),
        ("/v1/kept/" + "0" * 64 + "/logs", 404),
        ("/v1/kept/bad..id", 422),
    ):
        answer = http.get(path)
        assert answer.status_code == status, (path, answer.text)
    assert main([*base, "kept", "rm"]) == 2
    assert main([*base, "inspect", wf_id, "no-such-step"]) == 2
    # Deleting the workflow removes its kept container.
    assert http.delete(f"/v1/workflows/{wf_id}").status_code == 204
    deadline = time.monotonic() + 30
    while http.get("/v1/kept", params={"workflow_id": wf_id}).json()["kept"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http.get("/v1/kept", params={"workflow_id": wf_id}).json() == {"kept": []}
    assert http.get(f"/v1/kept/{record.container_id}").status_code == 404


def test_removing_a_kept_container_needs_admin(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as http:
        assert http.delete("/v1/kept/" + "0" * 64).status_code == 404  # admin reaches the pool: unknown id
        assert http.get("/v1/kept", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_workflow_page_lists_its_kept_containers(browser: Browser, stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as http:
        wf_id = submit(http, cleanup_example())
        page = browser.new_page()
        try:
            assert wait(http, wf_id)["status"] == "failed"
            kept = http.get("/v1/kept", params={"workflow_id": wf_id}).json()["kept"]
            assert len(kept) == 1
            log_in(page, stack, f"/ui/workflows/{wf_id}")
            row = f"document.querySelector('#kept-body tr[data-container=\"{kept[0]['container_id']}\"]')"
            page.wait_for(f"!!{row}", "the kept container's row")
            text = page.text("#kept-panel")
            assert "crunch#0" in text and "exited with code 3" in text and "paused" in text
            page.screenshot(ARTIFACTS / "workflow-kept-containers.png")
            assert page.js_errors() == []
        finally:
            page.close()
            http.delete("/v1/kept", params={"workflow_id": wf_id})
