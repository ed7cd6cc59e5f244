"""The dashboard shows why a run waits (ADR 013): a reason badge in the workflow list and on the
workflow's page, next to the ``queued`` status."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.chromium import Page
from tests.e2e.conftest import REPO, Stack
from tests.e2e.flowhttp import step

ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def test_a_queued_run_shows_its_reason_badge(page: Page, stack: Stack) -> None:
    name = f"dash-fc-{uuid.uuid4().hex[:6]}"
    definition = {"name": name, "config": {"concurrency": {"limit": 1}},
                  "steps": [step("hold", "time.sleep(60)", network="none")]}
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as client:
        holder = client.post("/v1/workflows", params={"start": "true"}, json=definition).json()
        waiting = client.post("/v1/workflows", params={"start": "true"}, json=definition).json()
        assert (holder["status"], waiting["status"]) == ("running", "queued")
        try:
            page.goto(stack.url + "/ui/")
            if page.evaluate("location.pathname") == "/ui/login":
                page.type("#token", stack.token)
                page.mark()
                page.click("#login-submit")
                page.wait_navigation()
            row = f"#workflows-body tr[data-workflow-id='{waiting['id']}']"
            page.wait_for(f"document.querySelector(\"{row} .badge.reason\")?.textContent === 'queued'",
                          "the reason badge of the queued run")
            title = page.evaluate(f"document.querySelector(\"{row} .badge.reason\").title")
            assert title == "queued: concurrency key '*' is at its limit of 1"
            page.wait_for("!!document.querySelector('#count-queued')", "the queued status count")
            page.screenshot(ARTIFACTS / "flow-control-queued.png")
            page.goto(stack.url + f"/ui/workflows/{waiting['id']}")
            page.wait_for("document.querySelector('#wf-status')?.dataset.status === 'queued'", "the queued status")
            page.wait_for("document.querySelector('#wf-status .badge.reason')?.textContent === 'queued'",
                          "the reason badge on the workflow page")
            assert page.js_errors() == []
        finally:
            for wf in (waiting, holder):
                client.post(f"/v1/workflows/{wf['id']}/cancel")
