"""A mixed, SDK-like load: list and read workflows, use workflow state, publish events (one in five
is a re-delivery of an earlier event id), fire a template by hand with an Idempotency-Key (one in
five reuses a key), and submit small workflows.

    locust -f loadtests/locustfile_mixed.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8081
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment

from loadtests.common import ENGINE_ONLY, IMAGE, Ledger, api, create_template, create_trigger

LEDGER = Ledger("mixed")
AUTH = {"Authorization": "Bearer default-token"}
EVENT_TYPE = f"loadtest.mixed.{int(LEDGER.started_at)}"  # this run's own type: earlier runs' triggers never match
_counter = itertools.count()


@events.test_start.add_listener
def _setup(environment: Environment, **_: Any) -> None:
    with api() as client:
        wf_id = create_template(client, "loadtest-mixed", ENGINE_ONLY)
        trigger = create_trigger(client, wf_id, {"type": "event", "config": {"event_type": EVENT_TYPE}})
        state_wf = create_template(client, "loadtest-mixed-state")
    LEDGER.setup = {"template_id": wf_id, "trigger_id": trigger["id"], "state_workflow": state_wf}


@events.test_stop.add_listener
def _teardown(environment: Environment, **_: Any) -> None:
    print(f"mixed ledger: {LEDGER.write()}")
    with api() as client:  # disabled, not deleted: the count check reads its run count
        client.post(f"/v1/triggers/{LEDGER.setup['trigger_id']}/disable")


class SdkLikeUser(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def _record(self, key: str, answer: dict[str, Any], started: bool) -> bool:
        """Remember what an accepted fire started; a repeat must name the same workflow."""
        wf_id = answer.get("workflow_id")
        with LEDGER.lock:
            if started:
                LEDGER.accepted[key] = str(wf_id)
                return True
            LEDGER.duplicates += 1
            if LEDGER.accepted.get(key) not in (None, wf_id):
                LEDGER.duplicate_mismatches.append(f"{key}: {wf_id} != {LEDGER.accepted.get(key)}")
                return False
        return True

    @task(4)
    def list_and_get(self) -> None:
        listing = self.client.get("/v1/workflows?limit=20", name="list workflows", headers=AUTH)
        items = listing.json().get("items", []) if listing.status_code == 200 else []
        if items:
            self.client.get(f"/v1/workflows/{random.choice(items)['id']}", name="get workflow", headers=AUTH)

    @task(3)
    def state(self) -> None:
        wf_id = LEDGER.setup["state_workflow"]
        self.client.post(f"/v1/workflows/{wf_id}/state/counter/increment", json={"by": 1}, name="state increment",
                         headers=AUTH)
        self.client.get(f"/v1/workflows/{wf_id}/state", name="state get", headers=AUTH)

    @task(3)
    def publish(self) -> None:
        with LEDGER.lock:
            known = [k for k in LEDGER.accepted if k.startswith("event:")]
        if known and random.random() < 0.2:
            event_id = random.choice(known[-200:]).removeprefix("event:")
        else:
            event_id = f"e-{LEDGER.started_at:.0f}-{next(_counter)}"
        body = {"type": EVENT_TYPE, "id": event_id, "payload": {"n": event_id}}
        with self.client.post("/v1/events", json=body, name="publish event", headers=AUTH, catch_response=True) as r:
            answer = r.json() if r.status_code == 202 else {}
            fires = answer.get("fires", [])
            if len(fires) != 1:
                r.failure(f"expected one fire, got {r.status_code} {r.text[:200]}")
            elif not self._record(f"event:{event_id}", fires[0], fires[0]["status"] == "started"):
                r.failure("a re-delivered event named another workflow")

    @task(2)
    def manual(self) -> None:
        with LEDGER.lock:
            known = [k for k in LEDGER.accepted if k.startswith("manual:")]
        if known and random.random() < 0.2:
            key = random.choice(known[-200:]).removeprefix("manual:")
        else:
            key = f"m-{LEDGER.started_at:.0f}-{next(_counter)}"
        wf_id = LEDGER.setup["template_id"]
        with self.client.post(f"/v1/workflows/{wf_id}/trigger", json={}, name="trigger workflow",
                              headers={**AUTH, "Idempotency-Key": key}, catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(f"manual fire answered {r.status_code}: {r.text[:200]}")
            elif not self._record(f"manual:{key}", r.json(), r.status_code == 201):
                r.failure("a repeated Idempotency-Key named another workflow")

    @task(1)
    def submit(self) -> None:
        definition = {"name": "loadtest-mixed-run", "labels": {"loadtest": "mixed"},
                      "steps": [{"id": "s", "image": IMAGE, "command": ["true"], "pool": {"scope": "image"}}]}
        r = self.client.post("/v1/workflows?start=true", json=definition, name="submit workflow", headers=AUTH)
        if r.status_code == 201:
            with LEDGER.lock:
                LEDGER.submitted.append(r.json()["id"])
