"""Workflow-level measurements against a running stack, over HTTP (no timing assertions anywhere)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

IMAGE = "agentainer-flow/python:3.11"
TRIVIAL = "echo 1"


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class RunResult:
    label: str
    wall_s: float
    tasks: int
    status: str
    exec_ms: list[float]
    acquire_ms: list[float]
    hop_ms: list[float]
    pooled: int

    @property
    def per_task_overhead_ms(self) -> float:
        return (self.wall_s * 1000 - sum(self.exec_ms)) / max(self.tasks, 1)


def run_workflow(client: httpx.Client, definition: dict[str, Any], label: str, timeout_s: float = 900) -> RunResult:
    started = time.perf_counter()
    r = client.post("/v1/workflows", params={"start": "true"}, json=definition)
    r.raise_for_status()
    wf_id = r.json()["id"]
    body: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    wall_s = time.perf_counter() - started
    tasks = [t for s in body["steps"] for t in s.get("tasks", [])]
    return RunResult(
        label=label,
        wall_s=wall_s,
        tasks=len(tasks),
        status=body["status"],
        exec_ms=[t["exec_ms"] or 0.0 for t in tasks],
        acquire_ms=[t["acquire_ms"] or 0.0 for t in tasks],
        hop_ms=[_hop_ms(t) for t in tasks if t.get("queued_at") and t.get("started_at")],
        pooled=sum(1 for t in tasks if t["pooled"]),
    )


def chain(n: int, mode: str) -> dict[str, Any]:
    steps = []
    for i in range(n):
        s: dict[str, Any] = {"id": f"s{i}", "image": IMAGE, "command": TRIVIAL, "mode": mode}
        if i:
            s["depends_on"] = [f"s{i - 1}"]
        if mode != "cold":
            s["pool"] = {"min_size": 1, "max_size": 4}
        steps.append(s)
    return {"name": f"bench-chain-{mode}", "config": {"max_parallel": 10}, "steps": steps}


def fan_map(n: int, mode: str, concurrency: int) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": "m",
        "type": "map",
        "items": "input.items",
        "image": IMAGE,
        "command": ["python3", "-c", "import json,sys; print(json.load(sys.stdin)['item'] * 2)"],
        "mode": mode,
        "max_concurrency": concurrency,
    }
    if mode != "cold":
        step["pool"] = {"min_size": concurrency, "max_size": concurrency}
    return {
        "name": f"bench-map-{mode}",
        "input": {"items": list(range(n))},
        "config": {"max_parallel": concurrency},
        "steps": [step],
    }


def _hop_ms(task: dict[str, Any]) -> float:
    """Queue wait of a task: committed as queued (or its retry time) -> claimed by a worker."""
    ready = max(_ts(task["queued_at"]) or 0.0, _ts(task.get("run_at")) or 0.0)
    return ((_ts(task["started_at"]) or 0.0) - ready) * 1000


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.1f} / p95 {pct(values, 95):.1f}"
