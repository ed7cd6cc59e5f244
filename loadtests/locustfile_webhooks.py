"""Webhook burst: GitHub-signed deliveries as fast as the gateway takes them; one in ten is a replay
of an accepted delivery (must start nothing new), one in ten carries a bad signature (must be 401
and start nothing). The template finishes in the engine (a branch skips its one step), so what is measured is intake: signature check, the
fire's transaction and the answer.

    locust -f loadtests/locustfile_webhooks.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8081
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from locust import FastHttpUser, events, task
from locust.env import Environment

from flowcore.signatures import SignaturePreset, WebhookAuth, sign
from loadtests.common import ENGINE_ONLY, Ledger, api, create_template, create_trigger, delivery_body

SECRET = "loadtest-webhook-secret"
AUTH = WebhookAuth(SignaturePreset.GITHUB, SECRET)
WRONG = WebhookAuth(SignaturePreset.GITHUB, "not-the-secret")
LEDGER = Ledger("webhooks")
_counter = itertools.count()


@events.test_start.add_listener
def _setup(environment: Environment, **_: Any) -> None:
    with api() as client:
        wf_id = create_template(client, "loadtest-webhooks", ENGINE_ONLY)
        trigger = create_trigger(client, wf_id, {"type": "webhook", "config": {"signature": "github", "secret": SECRET}})
    LEDGER.setup = {"template_id": wf_id, "trigger_id": trigger["id"], "url": trigger["webhook_url"]}


@events.test_stop.add_listener
def _teardown(environment: Environment, **_: Any) -> None:
    print(f"webhooks ledger: {LEDGER.write()}")
    with api() as client:  # disabled, not deleted: the count check reads its run count
        client.post(f"/v1/triggers/{LEDGER.setup['trigger_id']}/disable")


def _delivery(delivery_id: str, auth: WebhookAuth) -> tuple[bytes, dict[str, str]]:
    body = delivery_body(delivery_id)
    headers = {"content-type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery_id,
               **sign(auth, body)}
    return body, headers


class WebhookSender(FastHttpUser):
    @task(8)
    def fresh(self) -> None:
        delivery_id = f"d-{LEDGER.started_at:.0f}-{next(_counter)}"
        body, headers = _delivery(delivery_id, AUTH)
        with self.client.post(LEDGER.setup["url"], data=body, headers=headers, name="webhook (fresh)",
                              catch_response=True) as r:
            if r.status_code == 202 and r.json().get("status") == "started":
                with LEDGER.lock:
                    LEDGER.accepted[delivery_id] = r.json()["workflow_id"]
                r.success()
            else:
                LEDGER.errors.append(f"fresh {delivery_id}: {r.status_code} {r.text[:200]}")
                r.failure(f"expected 202 started, got {r.status_code}")

    @task(1)
    def replay(self) -> None:
        with LEDGER.lock:
            if not LEDGER.accepted:
                return
            delivery_id, wf_id = random.choice(list(LEDGER.accepted.items())[-500:])
        body, headers = _delivery(delivery_id, AUTH)
        with self.client.post(LEDGER.setup["url"], data=body, headers=headers, name="webhook (replay)",
                              catch_response=True) as r:
            answer = r.json() if r.status_code == 202 else {}
            if answer.get("duplicate") is True and answer.get("workflow_id") == wf_id:
                with LEDGER.lock:
                    LEDGER.duplicates += 1
                r.success()
            else:
                LEDGER.duplicate_mismatches.append(f"{delivery_id}: {r.status_code} {r.text[:200]}")
                r.failure("a replay was not answered as a duplicate of the first delivery")

    @task(1)
    def bad_signature(self) -> None:
        delivery_id = f"bad-{LEDGER.started_at:.0f}-{next(_counter)}"
        body, headers = _delivery(delivery_id, WRONG)
        with self.client.post(LEDGER.setup["url"], data=body, headers=headers, name="webhook (bad signature)",
                              catch_response=True) as r:
            with LEDGER.lock:
                LEDGER.rejected.append(delivery_id)
            if r.status_code == 401:
                r.success()
            else:
                r.failure(f"a bad signature was answered {r.status_code}")
