"""Small HTTP helpers for end-to-end tests (the SDK has its own tests)."""

from __future__ import annotations

import time
from typing import Any

import httpx

IMAGE = "agentainer-flow/python:3.11"
FINISHED = {"completed", "failed", "cancelled"}


def py(code: str) -> list[str]:
    """A command running ``code`` with python3; ``doc`` is the task's input document."""
    prelude = "import json,sys,os,time\ndoc=json.load(sys.stdin)\n"
    return ["python3", "-c", prelude + code]


def step(step_id: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "image": IMAGE, "command": py(code), **extra}


def submit(client: httpx.Client, definition: dict[str, Any], start: bool = True) -> str:
    r = client.post("/v1/workflows", params={"start": str(start).lower()}, json=definition)
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


def wait(client: httpx.Client, wf_id: str, timeout_s: float = 90, until: set[str] | None = None) -> dict[str, Any]:
    until = until or FINISHED
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        if body["status"] in until:
            return body
        time.sleep(0.1)
    raise AssertionError(f"workflow {wf_id} still {body.get('status')} after {timeout_s}s: {body}")


def steps_by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in body["steps"]}


def brief(body: dict[str, Any]) -> str:
    """A failure message that says what each step did."""
    lines = [f"workflow {body.get('id')} {body.get('status')}: {body.get('error')}"]
    for s in body.get("steps", []):
        lines.append(f"  {s['id']}: {s['status']} {s.get('error') or ''} {s.get('reason') or ''}")
        for t in s.get("tasks", [])[:3]:
            lines.append(f"    [{t['index']}] {t['status']} {t.get('error')} mode={t.get('mode')} log={t.get('log_tail', '')[-300:]!r}")
    return "\n".join(lines)
