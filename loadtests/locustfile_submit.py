"""Workflow submission through to completion: each user submits a one-step workflow (a real
container task, served warm by the pool) and polls it until it finishes. Locust reports the
submission call and, as ``workflow (submit -> completed)``, the whole run.

    locust -f loadtests/locustfile_submit.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8081
"""

from __future__ import annotations

import time
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment

from loadtests.common import IMAGE, Ledger

LEDGER = Ledger("submit")
FINISHED = {"completed", "failed", "cancelled"}
POLL_S = 0.05
RUN_TIMEOUT_S = 120.0

DEFINITION = {
    "name": "loadtest-submit",
    "labels": {"loadtest": "submit"},
    "steps": [{"id": "work", "image": IMAGE, "command": ["python3", "-c", "print(sum(range(1000)))"],
               "pool": {"min_size": 2, "max_size": 8, "scope": "image"}}],
}


@events.test_stop.add_listener
def _teardown(environment: Environment, **_: Any) -> None:
    print(f"submit ledger: {LEDGER.write()}")


class Submitter(FastHttpUser):
    wait_time = between(0.0, 0.1)

    def on_start(self) -> None:
        self.client.headers = {"Authorization": "Bearer default-token"}  # type: ignore[assignment]

    @task
    def submit_and_wait(self) -> None:
        started = time.perf_counter()
        with self.client.post("/v1/workflows?start=true", json=DEFINITION, name="submit", catch_response=True,
                              headers={"Authorization": "Bearer default-token"}) as r:
            if r.status_code != 201:
                r.failure(f"submit answered {r.status_code}: {r.text[:200]}")
                return
            wf_id = r.json()["id"]
        with LEDGER.lock:
            LEDGER.submitted.append(wf_id)
        status = "running"
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            got = self.client.get(f"/v1/workflows/{wf_id}", name="poll", headers={"Authorization": "Bearer default-token"})
            status = got.json().get("status", "?") if got.status_code == 200 else "?"
            if status in FINISHED:
                break
            time.sleep(POLL_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
        events.request.fire(
            request_type="FLOW", name="workflow (submit -> completed)", response_time=elapsed_ms, response_length=0,
            exception=None if status == "completed" else RuntimeError(f"workflow {wf_id} ended {status}"),
            context={},
        )
