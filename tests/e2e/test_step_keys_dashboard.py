"""The dashboard shows why a task waits for its step's concurrency key (ADR 019), next to its step's
status on the workflow's page."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.e2e.chromium import Page
from tests.e2e.conftest import REPO, Stack
from tests.e2e.flowhttp import step

ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def test_a_task_waiting_for_its_key_shows_why(page: Page, stack: Stack) -> None:
    key = f"dash-sk-{uuid.uuid4().hex[:6]}"
    definition = {"name": key, "input": {"customer": "c1"}, "steps": [
        step("pay", "time.sleep(60)", network="none", concurrency={"key": key + ":{input.customer}", "limit": 1})]}
    expected = f"waiting for concurrency key {key}:c1 (1/1 in use)"
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as client:
        holder = client.post("/v1/workflows", params={"start": "true"}, json=definition).json()
        waiting = client.post("/v1/workflows", params={"start": "true"}, json=definition).json()
        try:
            for _ in range(600):  # the second task has found the key full and waits (bounded poll)
                if client.get(f"/v1/workflows/{waiting['id']}").json()["steps"][0]["waiting_on"] == expected:
                    break
                time.sleep(0.1)
            page.goto(stack.url + "/ui/")
            if page.evaluate("location.pathname") == "/ui/login":
                page.type("#token", stack.token)
                page.mark()
                page.click("#login-submit")
                page.wait_navigation()
            page.goto(stack.url + f"/ui/workflows/{waiting['id']}")
            page.wait_for(f"document.querySelector('#steps-body .waiting-on')?.title === {expected!r}",
                          "the waiting reason next to the step's status", timeout_s=60)
            page.screenshot(ARTIFACTS / "step-key-waiting.png")
            assert page.js_errors() == []
        finally:
            for wf in (waiting, holder):
                client.post(f"/v1/workflows/{wf['id']}/cancel")
