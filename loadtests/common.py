"""What the locust files share: the stack's address, setup over HTTP, and the outcome ledger.

Each scenario sets up its own template workflow and trigger when the test starts, records what the
server answered to every request it sent (accepted, duplicate, rejected) in a ledger, and writes the
ledger to ``loadtests/reports/{scenario}-ledger.json`` when the test stops. ``loadtests.check`` then
compares the ledger with what Redis holds. Locust runs in one process (no ``--processes``), so the
ledger is plain module state.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPORTS = Path(__file__).resolve().parent / "reports"
IMAGE = "agentainer-flow/python:3.11"


def gateway_url() -> str:
    url = os.environ.get("FLOW_URL", "http://127.0.0.1:8081").rstrip("/")
    host = httpx.URL(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"load tests only target loopback; FLOW_URL is {url}")
    return url


def token() -> str:
    return os.environ.get("FLOW_TOKEN", "default-token")


def api() -> httpx.Client:
    return httpx.Client(base_url=gateway_url(), headers={"Authorization": f"Bearer {token()}"}, timeout=30)


# A workflow the engine finishes by itself (its branch skips the one container step): what a trigger
# starts when intake, not container work, is measured. A workflow without steps cannot run.
ENGINE_ONLY: list[dict[str, Any]] = [
    {"id": "gate", "type": "branch", "condition": {"field": "input.never", "op": "exists"}, "then": ["never"]},
    {"id": "never", "image": "agentainer-flow/python:3.11", "command": "true"},
]


def delivery_body(delivery_id: str) -> bytes:
    """The body of the webhook load test's delivery ``delivery_id`` (its replays send the same bytes)."""
    return json.dumps({"delivery": delivery_id, "ref": "refs/heads/main", "commits": [{"id": delivery_id}]}).encode()


def create_template(client: httpx.Client, name: str, steps: list[dict[str, Any]] | None = None) -> str:
    r = client.post("/v1/workflows", json={"name": name, "steps": steps or [], "labels": {"loadtest": name}})
    r.raise_for_status()
    return str(r.json()["id"])


def create_trigger(client: httpx.Client, wf_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/v1/workflows/{wf_id}/triggers", json=body)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


@dataclass
class Ledger:
    """What one scenario sent and what the server answered, for ``loadtests.check``."""

    scenario: str
    started_at: float = field(default_factory=time.time)
    setup: dict[str, Any] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)  # fire key (delivery/event id) -> workflow id
    duplicates: int = 0
    duplicate_mismatches: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # ids sent with a bad signature (must start nothing)
    submitted: list[str] = field(default_factory=list)  # workflows created directly
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self) -> Path:
        REPORTS.mkdir(exist_ok=True)
        path = REPORTS / f"{self.scenario}-ledger.json"
        with self.lock:
            doc = {
                "scenario": self.scenario,
                "started_at": self.started_at,
                "stopped_at": time.time(),
                "setup": self.setup,
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "duplicate_mismatches": self.duplicate_mismatches[:100],
                "rejected": self.rejected,
                "submitted": self.submitted,
                "errors": self.errors[:100],
            }
        path.write_text(json.dumps(doc, indent=1))
        return path
