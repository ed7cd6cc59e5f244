"""The dashboard's approval buttons and parent/child links in real headless Chromium (ADR 012): a
logged-in session approves a waiting step with a comment (POST with the session's CSRF token), the
decision is recorded as the session's, and a child run links back to its parent."""

from __future__ import annotations

import pytest

from tests.e2e.chromium import Page
from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, submit, wait
from tests.e2e.test_dashboard import ARTIFACTS, client, log_in, page, wait_step  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(300)


def test_approve_from_the_workflow_page(page: Page, stack: Stack, client) -> None:  # noqa: F811
    wf_id = submit(client, {"name": "dashboard-approval", "steps": [
        {"id": "sign-off", "type": "approval", "message": "release 2.0?"},
        {"id": "after", "type": "sleep", "duration": 0, "depends_on": ["sign-off"]},
    ]})
    wait_step(client, wf_id, "sign-off", "running")
    log_in(page, stack, f"/ui/workflows/{wf_id}")
    page.wait_for("!!document.querySelector('#approve-btn')", "the approve button")
    assert "release 2.0?" in page.text("#wait-box")
    page.type("#approval-comment", "ship it")
    page.screenshot(ARTIFACTS / "workflow-approval.png")
    page.click("#approve-btn")
    page.wait_for("document.querySelector('#wf-status')?.dataset.status === 'completed'", "the completed badge")
    body = wait(client, wf_id, 30)
    out = next(s for s in body["steps"] if s["id"] == "sign-off")["output"]
    assert body["status"] == "completed", brief(body)
    assert out["approved"] is True and out["comment"] == "ship it" and out["by"].startswith("session:")
    assert page.js_errors() == []


def test_a_live_update_does_not_take_the_comment_field_from_under_the_cursor(
    page: Page, stack: Stack, client  # noqa: F811
) -> None:
    """Another step finishes while someone types a comment: the page updates (the steps table), but the
    field keeps its focus and its text, and the decision carries the comment."""
    wf_id = submit(client, {"name": "dashboard-typing", "steps": [
        {"id": "sign-off", "type": "approval", "message": "go?"},
        {"id": "tick", "type": "sleep", "duration": 2},
    ]})
    wait_step(client, wf_id, "sign-off", "running")
    log_in(page, stack, f"/ui/workflows/{wf_id}")
    page.wait_for("!!document.querySelector('#approve-btn')", "the approve button")
    page.type("#approval-comment", "half a tho")
    page.wait_for("document.querySelector('tr[data-step-id=\"tick\"]')?.dataset.status === 'succeeded'",
                  "the other step's live update")
    assert page.evaluate("document.activeElement && document.activeElement.id") == "approval-comment"
    page.send("Input.insertText", {"text": "ught"})
    assert page.evaluate("document.querySelector('#approval-comment').value") == "half a thought"
    page.click("#approve-btn")
    body = wait(client, wf_id, 30)
    out = next(s for s in body["steps"] if s["id"] == "sign-off")["output"]
    assert out["comment"] == "half a thought", brief(body)
    assert page.js_errors() == []


def test_a_child_run_links_to_its_parent_and_back(page: Page, stack: Stack, client) -> None:  # noqa: F811
    tpl = submit(client, {"name": "dash-child", "steps": [{"id": "nap", "type": "sleep", "duration": 0}]}, start=False)
    parent = submit(client, {"name": "dash-parent", "steps": [{"id": "kid", "type": "workflow", "workflow": tpl}]})
    body = wait(client, parent, 60)
    assert body["status"] == "completed", brief(body)
    child_id = next(s for s in body["steps"] if s["id"] == "kid")["wait"]["child_id"]
    log_in(page, stack, f"/ui/workflows/{parent}")
    page.wait_for("!!document.querySelector('#wait-box a')", "the child link")
    assert child_id in page.text("#wait-box")
    page.goto(stack.url + f"/ui/workflows/{child_id}")
    page.wait_for(f"document.querySelector('#wf-sub')?.textContent.includes('{parent}')", "the parent link")
    assert page.js_errors() == []
