"""The dashboard in real headless Chromium against the real stack (gateway, worker, pool, scheduler).

A user logs in through the form, watches a running workflow's DAG change state live, opens a step's
logs, output and env (secrets masked), cancels a run and retries it with the buttons, and toggles a
trigger. The step that is watched waits for a state key that the test sets (it reads it from the
gateway over the host network), so "running" lasts exactly as long as the test needs: no guessed
sleeps, only bounded polling. Screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.chromium import Browser, Page
from tests.e2e.conftest import REPO, Stack
from tests.e2e.flowhttp import FINISHED, IMAGE, brief, py, step, submit, wait

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
MASK = "••••••••"

pytestmark = pytest.mark.timeout(300)

# Waits until the workflow's state key "release" exists (read over the gateway's API with the token
# from its env), logging as it goes; its output is the released value.
GATED = """
import urllib.request, urllib.error
url = os.environ["GATEWAY_URL"] + "/v1/workflows/" + os.environ["FLOW_WORKFLOW_ID"] + "/state/release"
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + os.environ["API_TOKEN"]})
print("waiting for the release key", flush=True)
deadline = time.time() + 240
while True:
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            value = json.load(answer)["value"]
        break
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    if time.time() > deadline:
        sys.exit("never released")
    time.sleep(0.2)
print("released with", json.dumps(value), flush=True)
with open(os.environ["FLOW_OUTPUT_PATH"], "w") as f:
    json.dump({"released": value}, f)
"""


def gated_step(stack: Stack, step_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "image": IMAGE,
        "command": py(GATED),
        "network": "host",  # the step reads the gateway at 127.0.0.1
        "env": {"GATEWAY_URL": stack.url, "API_TOKEN": stack.token, "MODE": "demo"},
        **extra,
    }


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    tab = browser.new_page()
    try:
        yield tab
    finally:
        try:  # the last state of every test, for whoever reads the artefacts
            tab.screenshot(ARTIFACTS / f"{request.node.name}-last.png")
        except Exception:
            pass
        tab.close()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as c:
        yield c


def log_in(page: Page, stack: Stack, path: str = "/ui/") -> None:
    """Open ``path``; when the login form shows, log in through it."""
    page.goto(stack.url + path)
    if page.evaluate("location.pathname") == "/ui/login":
        page.type("#token", stack.token)
        page.mark()
        page.click("#login-submit")
        page.wait_navigation()
    assert page.evaluate("location.pathname") != "/ui/login", page.text("body")


def wait_step(client: httpx.Client, wf_id: str, step_id: str, status: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        if {s["id"]: s["status"] for s in body["steps"]}.get(step_id) == status:
            return
        if body["status"] in FINISHED:
            break
        time.sleep(0.1)
    raise AssertionError(f"{step_id} never became {status}:\n{brief(body)}")


def node_status(step_id: str) -> str:
    return f"(document.querySelector('g.dag-node[data-step-id=\"{step_id}\"]') || {{dataset: {{}}}}).dataset.status"


def test_login_refuses_a_bad_token_then_sets_an_httponly_cookie(page: Page, stack: Stack) -> None:
    page.goto(stack.url + "/ui/")
    assert page.evaluate("location.pathname") == "/ui/login"
    page.type("#token", "not-the-token")
    page.mark()
    page.click("#login-submit")
    page.wait_navigation()
    assert "invalid token" in page.text("#login-error")
    assert not [c for c in page.cookies(stack.url) if c["name"] == "flow_session"]
    page.screenshot(ARTIFACTS / "login-refused.png")

    page.type("#token", stack.token)
    page.mark()
    page.click("#login-submit")
    page.wait_navigation()
    assert page.evaluate("location.pathname") == "/ui/"
    assert stack.token not in page.evaluate("location.href")
    cookies = {c["name"]: c for c in page.cookies(stack.url)}
    session = cookies["flow_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["value"] != stack.token
    assert "flow_session" not in page.evaluate("document.cookie"), "scripts cannot read the session cookie"
    page.wait_for("!!document.querySelector('#count-all .count')", "the status counts")
    page.screenshot(ARTIFACTS / "workflows.png")
    assert page.js_errors() == []


def test_the_workflow_list_updates_live_and_filters(page: Page, stack: Stack, client: httpx.Client) -> None:
    log_in(page, stack, "/ui/")
    page.wait_for("!!document.querySelector('#count-all .count')", "the status counts")
    page.evaluate("window.__sameDocument = true")
    name = f"dash-list-{time.monotonic_ns()}"
    wf_id = submit(client, {"name": name, "steps": [step("one", "print(json.dumps(1))")]})
    row = f"#workflows-body tr[data-workflow-id='{wf_id}']"
    page.wait_for(f"!!document.querySelector(\"{row}\")", "the new workflow's row (from /v1/events)")
    assert wait(client, wf_id)["status"] == "completed"
    page.wait_for(f"document.querySelector(\"{row}\")?.dataset.status === 'completed'", "the row to show completed")
    assert page.evaluate("window.__sameDocument === true"), "the list reloaded the page instead of updating"
    total = client.get("/v1/workflows", params={"limit": 1}).json()["total"]
    page.wait_for(f"document.querySelector('#count-all .count')?.textContent === '{total}'", "the live total count")

    page.type("#name-filter", name)
    page.wait_for(
        f"[...document.querySelectorAll('#workflows-body tr[data-workflow-id]')].map((r) => r.dataset.workflowId).join() === '{wf_id}'",
        "the name filter to keep only the new workflow",
    )
    page.click("#count-failed")
    page.wait_for("location.search.includes('status=failed')", "the status filter in the URL")
    page.wait_for(f"!document.querySelector(\"{row}\")", "the completed workflow to be filtered out")
    page.click("#count-completed")
    page.wait_for(f"!!document.querySelector(\"{row}\")", "the completed filter to show it")
    page.screenshot(ARTIFACTS / "workflows-filtered.png")
    assert page.js_errors() == []


def test_a_running_workflows_dag_changes_state_live_and_its_logs_show(
    page: Page, stack: Stack, client: httpx.Client
) -> None:
    definition = {
        "name": "dashboard-live",
        "input": {"n": 2},
        "steps": [
            step("prepare", "print('preparing', file=sys.stderr, flush=True)\nprint(json.dumps({'n': doc['input']['n']}))"),
            gated_step(stack, "work", depends_on=["prepare"]),
            step("fan", "print(json.dumps(doc['item']))", type="parallel", replicas=2, depends_on=["prepare"]),
            step("report", "print(json.dumps(sorted(doc['deps'])))", depends_on=["work", "fan"]),
            # No depends_on: it waits for prepare because its input reads prepare's output.
            step("double", "print(json.dumps(doc['input'] * 2))", input={"$path": "steps.prepare.output.n"}),
        ],
    }
    wf_id = submit(client, definition)
    wait_step(client, wf_id, "work", "running")
    log_in(page, stack, f"/ui/workflows/{wf_id}")
    assert page.evaluate("location.pathname") == f"/ui/workflows/{wf_id}"
    # The graph is the engine's (issue 14): the $path read is an edge, drawn as data.
    page.wait_for(
        "!!document.querySelector('path.dag-edge.data[data-from=\"prepare\"][data-to=\"double\"]')",
        "the data edge prepare -> double",
    )
    page.wait_for(f"{node_status('work')} === 'running'", "the work node to show running")
    page.wait_for(f"{node_status('prepare')} === 'succeeded'", "the prepare node to show succeeded")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads: updates must come live

    page.click("g.dag-node[data-step-id='work']")
    page.wait_for("document.querySelector('#selected-step')?.textContent === 'work'", "the work step to be selected")
    page.wait_for(
        "(document.querySelector('#log-view')?.innerText || '').includes('waiting for the release key')",
        "the running step's log line",
    )
    page.screenshot(ARTIFACTS / "workflow-running.png")

    r = client.put(f"/v1/workflows/{wf_id}/state/release", json={"value": "go"})
    assert r.status_code == 200, r.text
    page.wait_for(f"{node_status('work')} === 'succeeded'", "the work node to turn succeeded")
    page.wait_for(f"{node_status('report')} === 'succeeded'", "the report node to turn succeeded")
    page.wait_for("document.querySelector('#wf-status')?.dataset.status === 'completed'", "the workflow badge")
    header = page.text("#wf-status") + " " + page.text("#wf-sub")
    assert "null" not in header and "[object" not in header and "undefined" not in header, header
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating live"
    page.wait_for(
        "(document.querySelector('#log-view')?.innerText || '').includes('released with \"go\"')",
        "the log line printed after the release",
    )
    page.click("#tab-output")
    page.wait_for("(document.querySelector('#step-output')?.innerText || '').includes('released')", "the output")
    page.click("#tab-env")
    env_text = page.text("#step-env")
    assert "GATEWAY_URL" in env_text and stack.url in env_text and "demo" in env_text
    assert MASK in env_text
    assert stack.token not in page.evaluate("document.body.innerText"), "the token in the step env is masked"
    page.screenshot(ARTIFACTS / "workflow-completed.png")

    body = client.get(f"/v1/workflows/{wf_id}").json()
    assert body["status"] == "completed"
    assert {s["id"]: s["output"] for s in body["steps"]}["work"] == {"released": "go"}
    assert page.js_errors() == []


def test_cancel_and_retry_buttons(page: Page, stack: Stack, client: httpx.Client) -> None:
    wf_id = submit(client, {"name": "dashboard-cancel", "input": {"k": "v"}, "steps": [gated_step(stack, "wait")]})
    wait_step(client, wf_id, "wait", "running")
    log_in(page, stack, f"/ui/workflows/{wf_id}")
    page.wait_for(f"{node_status('wait')} === 'running'", "the wait node to show running")
    page.click("#cancel-btn")
    page.wait_for("document.querySelector('#confirm-dialog')?.open === true", "the confirmation dialog")
    page.click("#confirm-yes")
    page.wait_for("document.querySelector('#wf-status')?.dataset.status === 'cancelled'", "the cancelled badge")
    page.wait_for(f"{node_status('wait')} === 'cancelled'", "the wait node to show cancelled")
    page.screenshot(ARTIFACTS / "workflow-cancelled.png")
    body = wait(client, wf_id, 60)
    assert body["status"] == "cancelled"

    page.wait_for("document.querySelector('#retry-btn')?.disabled === false", "the retry button to be enabled")
    page.mark()
    page.click("#retry-btn")
    page.wait_navigation()
    new_path = str(page.evaluate("location.pathname"))
    assert new_path.startswith("/ui/workflows/") and not new_path.endswith(wf_id)
    new_id = new_path.rsplit("/", 1)[1]
    retried = client.get(f"/v1/workflows/{new_id}").json()
    assert retried["origin"]["kind"] == "retry" and retried["origin"]["template_id"] == wf_id
    assert retried["input"] == {"k": "v"} and retried["name"] == "dashboard-cancel"
    page.wait_for("!!document.querySelector('g.dag-node[data-step-id=\"wait\"]')", "the retried run's graph")
    assert client.post(f"/v1/workflows/{new_id}/cancel").status_code == 202
    page.wait_for("document.querySelector('#wf-status')?.dataset.status === 'cancelled'", "the retried run cancelled")
    assert page.js_errors() == []


def test_pools_triggers_and_metrics_pages(page: Page, stack: Stack, client: httpx.Client) -> None:
    template = submit(client, {"name": "dashboard-trigger", "steps": [step("one", "print(json.dumps(1))")]})
    assert wait(client, template)["status"] == "completed"
    r = client.post(
        f"/v1/workflows/{template}/triggers",
        json={"type": "schedule", "name": "nightly-dash", "cron_expression": "0 3 * * *", "timezone": "Europe/Paris"},
    )
    assert r.status_code == 201, r.text
    trigger_id = r.json()["id"]

    log_in(page, stack, "/ui/triggers")
    row = f"#triggers-body tr[data-trigger-id='{trigger_id}']"
    page.wait_for(f"document.querySelector(\"{row}\")?.dataset.enabled === 'true'", "the trigger row")
    assert "0 3 * * *" in page.text(row) and "Europe/Paris" in page.text(row)
    page.screenshot(ARTIFACTS / "triggers.png")
    page.click(f"{row} button.toggle-trigger")
    page.wait_for(f"document.querySelector(\"{row}\")?.dataset.enabled === 'false'", "the trigger to show disabled")
    assert client.get(f"/v1/triggers/{trigger_id}").json()["enabled"] is False
    page.click(f"{row} button.toggle-trigger")
    page.wait_for(f"document.querySelector(\"{row}\")?.dataset.enabled === 'true'", "the trigger to show enabled")
    assert client.get(f"/v1/triggers/{trigger_id}").json()["enabled"] is True

    page.goto(stack.url + "/ui/pools")
    page.wait_for("!!document.querySelector('#pool-warm-hits')", "the pool counters")
    page.wait_for("document.querySelectorAll('#pools-body tr[data-key]').length > 0", "a warm pool row")
    page.screenshot(ARTIFACTS / "pools.png")

    page.goto(stack.url + "/ui/metrics?window=1h")
    page.wait_for("!!document.querySelector('#metric-total')", "the aggregate cards")
    page.wait_for(
        "['#chart-throughput', '#chart-duration', '#chart-success', '#chart-pool']"
        ".every((id) => document.querySelector(id + ' svg'))",
        "the four charts",
    )
    total = page.text("#metric-total .value")
    assert total.replace(",", "").isdigit() and int(total.replace(",", "")) >= 1
    # The charts draw the server's buckets (one percentile definition), not numbers of their own.
    page.wait_for(
        "performance.getEntriesByType('resource').some((e) => e.name.includes('/v1/metrics/series'))",
        "the charts to read /v1/metrics/series",
    )
    page.screenshot(ARTIFACTS / "metrics.png")
    assert page.js_errors() == []
    assert client.delete(f"/v1/triggers/{trigger_id}").status_code == 204


def test_the_docs_curl_session_flow_runs(stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    """docs/dashboard.md's curl example, run as written against the test stack."""
    doc = (REPO / "docs" / "dashboard.md").read_text()
    block = re.search(r"```bash\n(# the same flow with curl.*?)```", doc, re.S)
    assert block is not None, "docs/dashboard.md lost its curl example"
    wf_id = submit(client, {"name": "dashboard-doc", "steps": [gated_step(stack, "wait")]})
    wait_step(client, wf_id, "wait", "running")
    script = block.group(1).replace("http://127.0.0.1:8081", stack.url).replace("WF_ID", wf_id)
    script = script.replace("token=default-token", f"token={stack.token}")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"status":"cancelled"' in out.stdout.replace(" ", ""), out.stdout
    assert wait(client, wf_id, 60)["status"] == "cancelled"
