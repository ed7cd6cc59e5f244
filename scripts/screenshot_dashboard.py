#!/usr/bin/env python3
"""Take the README's screenshot of the dashboard's workflow page (docs/img/dashboard-workflow.png).

Against a running stack (``make up``): submits a small demo DAG (list -> map -> reduce -> branch,
with a step that publishes for a while), opens its page in headless Chromium (logging in through
the form, as a user would), waits until the publishing step is running with a few log lines shown
and the steps before it have finished, and saves the page. The demo workflow is cancelled afterwards.

    .venv/bin/python scripts/screenshot_dashboard.py [--url http://127.0.0.1:8081] [--out PATH]
    .venv/bin/python scripts/screenshot_dashboard.py --agents   # docs/img/dashboard-agents.png: the
        # multi-agent example (examples/agents) run to its end, with the review step's log

The token comes from ``FLOW_TOKEN`` (default: the dev stack's ``default-token``), never from the
command line. ``make screenshot`` runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.chromium import Browser, find_chromium  # noqa: E402
from tests.e2e.flowhttp import IMAGE, py  # noqa: E402

PUBLISH = """
for i in range(1, 41):
    print(f"publishing batch {i}/40 to {os.environ['TARGET']}", flush=True)
    time.sleep(1)
with open(os.environ["FLOW_OUTPUT_PATH"], "w") as out:
    json.dump({"published": 40}, out)
"""


def demo_definition() -> dict[str, object]:
    def step(step_id: str, code: str, **extra: object) -> dict[str, object]:
        return {"id": step_id, "image": IMAGE, "command": py(code), **extra}

    return {
        "name": "nightly-report",
        "input": {"docs": ["alpha beta", "beta gamma delta", "alpha", "gamma gamma"]},
        "config": {"max_parallel": 4},
        "labels": {"team": "data"},
        "steps": [
            step("list", "print(json.dumps({'docs': doc['input']['docs']}))"),
            step("count", "print(json.dumps(len(doc['item'].split())))", type="map",
                 items="steps.list.output.docs", depends_on=["list"]),
            step("audit", "print(json.dumps({'replica': doc['item']}))", type="parallel", replicas=2,
                 depends_on=["list"]),
            step("total", "print(json.dumps({'words': sum(doc['items'])}))", type="reduce", depends_on=["count"]),
            {"id": "check", "type": "branch", "depends_on": ["total", "audit"],
             "condition": {"field": "steps.total.output.words", "op": ">=", "value": 5},
             "then": ["publish"], "else": ["alert"]},
            step("publish", PUBLISH, env={"TARGET": "s3://reports/nightly", "API_TOKEN": "not-shown"}),
            step("alert", "print(json.dumps('too few words'))"),
            step("notify", "print(json.dumps('sent'))", depends_on=["publish"]),
        ],
    }


def login(page: Any, token: str) -> None:
    if page.evaluate("location.pathname") == "/ui/login":
        page.type("#token", token)
        page.mark()
        page.click("#login-submit")
        page.wait_navigation()


def agents_screenshot(binary: str, url: str, token: str, out: Path, timeout_s: float) -> int:
    """The multi-agent example (examples/agents) once it has finished: its DAG (the review step
    retried once, the decision taking ``publish``) with the review step's log."""
    from agentainer_flow import WorkflowClient
    from examples.agents import run as agents

    built = subprocess.run([str(REPO / "scripts" / "build_example_images.sh")], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        print(f"cannot build the example images:\n{built.stderr}", file=sys.stderr)
        return 1

    async def run_example() -> str:
        async with WorkflowClient(url, token, timeout=60) as client:
            wf, _ = await agents.run(client)
            return wf.id

    wf_id = asyncio.run(run_example())
    with tempfile.TemporaryDirectory(prefix="flow-screenshot-") as tmp:
        browser = Browser(binary, Path(tmp), width=1440, height=1180).start()
        try:
            page = browser.new_page()
            page.goto(f"{url}/ui/workflows/{wf_id}")
            login(page, token)
            node = "document.querySelector('g.dag-node[data-step-id=\"{}\"]')?.dataset.status"
            page.wait_for(f"{node.format('publish')} === 'succeeded'", "publish to finish", timeout_s)
            deadline = time.monotonic() + timeout_s
            while True:  # the page may still be redrawing the graph when the first click lands
                page.click("g.dag-node[data-step-id='review']")
                try:
                    page.wait_for(
                        "/round 2: accepted/.test(document.querySelector('#log-view')?.innerText || '')",
                        "the review step's log", 3.0,
                    )
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.5)  # let the last frame paint: this is a picture, not a test
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.screenshot(out, full_page=False)
        finally:
            browser.close()
    print(out)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("FLOW_URL", "http://127.0.0.1:8081"))
    parser.add_argument("--out", type=Path, default=None, help="default: docs/img/dashboard-workflow.png "
                        "(dashboard-agents.png with --agents)")
    parser.add_argument("--agents", action="store_true", help="the multi-agent example's page instead")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the page's state")
    args = parser.parse_args()
    token = os.environ.get("FLOW_TOKEN", "default-token")
    binary = find_chromium()
    if binary is None:
        print("chromium is not installed: run `make bootstrap`", file=sys.stderr)
        return 1
    url = args.url.rstrip("/")
    if args.agents:
        return agents_screenshot(binary, url, token, args.out or REPO / "docs" / "img" / "dashboard-agents.png", args.timeout)
    args.out = args.out or REPO / "docs" / "img" / "dashboard-workflow.png"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        r = client.post("/v1/workflows", params={"start": "true"}, json=demo_definition())
        if r.status_code != 201:
            print(f"cannot submit the demo workflow: {r.status_code} {r.text}", file=sys.stderr)
            return 1
        wf_id = r.json()["id"]
        with tempfile.TemporaryDirectory(prefix="flow-screenshot-") as tmp:
            browser = Browser(binary, Path(tmp), width=1440, height=1180).start()
            try:
                page = browser.new_page()
                page.goto(f"{url}/ui/workflows/{wf_id}")
                login(page, token)
                node = "document.querySelector('g.dag-node[data-step-id=\"{}\"]')?.dataset.status"
                page.wait_for(f"{node.format('publish')} === 'running'", "publish to run", args.timeout)
                page.click("g.dag-node[data-step-id='publish']")
                page.wait_for(
                    "(document.querySelector('#log-view')?.innerText.match(/publishing batch/g) || []).length >= 4",
                    "a few log lines",
                    args.timeout,
                )
                page.wait_for(f"{node.format('audit')} === 'succeeded'", "audit to finish", args.timeout)
                time.sleep(0.5)  # let the last frame paint: this is a picture, not a test
                page.evaluate("document.activeElement && document.activeElement.blur()")
                page.screenshot(args.out, full_page=False)
            finally:
                browser.close()
        client.post(f"/v1/workflows/{wf_id}/cancel")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
