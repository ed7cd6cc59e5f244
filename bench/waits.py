"""Event -> resumed step latency of a waiting run (ADR 012): ``python -m bench.waits [--n 30]``.

Against a running stack (gateway, worker, pool): ``--n`` workflows each park on a ``wait_for_event``
step (no container, no worker held) followed by a one-line command step (warm pool: scope image).
Once all of them wait, the bench publishes one event per run, one after another, and reads from the
records, per run:

- *event -> wait ended*: from just before ``POST /v1/events`` to the wait step's ``finished_at`` (the
  worker's commit of the delivery job: publish transaction, arq job, wake-up, engine commit);
- *event -> next task started*: to the following step's first task start (its dispatch and claim too).

p50 and p95 of each, in milliseconds, go to the ``waits`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.sections import upsert

IMAGE = "agentainer-flow/python:3.11"


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait_all(client: httpx.Client, ids: list[str], ok: Any, timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    bodies: dict[str, dict[str, Any]] = {}
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for wf_id in list(pending):
            body = client.get(f"/v1/workflows/{wf_id}").json()
            if ok(body):
                bodies[wf_id] = body
                pending.discard(wf_id)
        time.sleep(0.05)
    if pending:
        raise RuntimeError(f"{len(pending)} runs did not get there in {timeout_s:.0f}s")
    return bodies


def _steps(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in body["steps"]}


def measure(url: str, token: str, n: int) -> dict[str, list[float]]:
    kind = f"bench.wait.{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        ids: list[str] = []
        for i in range(n):
            definition = {"name": "bench-waits", "input": {"run": i}, "steps": [
                {"id": "wait", "type": "wait_for_event", "event_type": kind, "filter": {"run": {"$path": "input.run"}},
                 "timeout": "10m"},
                # Warm, as the other benches' steps: this measures the resume, not a container start.
                {"id": "next", "image": IMAGE, "command": ["true"], "depends_on": ["wait"],
                 "pool": {"scope": "image"}},
            ]}
            r = client.post("/v1/workflows", params={"start": "true"}, json=definition)
            r.raise_for_status()
            ids.append(r.json()["id"])
        _wait_all(client, ids, lambda b: _steps(b)["wait"]["status"] == "running", 120)
        time.sleep(0.5)  # their check jobs have run: the bench measures delivery, not the start
        sent: dict[str, float] = {}
        for i, wf_id in enumerate(ids):
            sent[wf_id] = time.time()
            client.post("/v1/events", json={"type": kind, "payload": {"run": i}}).raise_for_status()
            time.sleep(0.05)  # one at a time: latency, not throughput
        done = _wait_all(client, ids, lambda b: b["status"] in ("completed", "failed", "cancelled"), 300)
    ended, started = [], []
    for wf_id, body in done.items():
        steps = _steps(body)
        wait_end = _ts(steps["wait"]["finished_at"])
        first = _ts(steps["next"].get("first_task_started_at"))
        if wait_end is not None:
            ended.append((wait_end - sent[wf_id]) * 1000)
        if first is not None:
            started.append((first - sent[wf_id]) * 1000)
    return {"event -> wait ended": ended, "event -> next task started": started}


def render(results: dict[str, list[float]], n: int) -> str:
    lines = [
        "## Durable waits (ADR 012)",
        "",
        f"`python -m bench.waits`: {n} runs parked on a `wait_for_event` step, then one event per run,"
        " published one at a time; milliseconds from just before `POST /v1/events` to the wait step's end"
        " (the delivery's engine commit) and to the next step's first task start.",
        "",
        "| latency | p50 ms | p95 ms | runs |",
        "|---|---|---|---|",
    ]
    for label, values in results.items():
        if values:
            lines.append(f"| {label} | {_pct(values, 0.5):.1f} | {_pct(values, 0.95):.1f} | {len(values)} |")
    return "\n".join(lines) + "\n"


def run(url: str, token: str, n: int = 30, out: str | None = "BENCHMARKS.md") -> str:
    text = render(measure(url, token, n), n)
    if out:
        upsert(Path(out), "waits", text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("FLOW_URL", "http://127.0.0.1:8081"))
    p.add_argument("--token", default=os.environ.get("FLOW_TOKEN", "default-token"))
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--out", default="BENCHMARKS.md", help="'' to only print")
    args = p.parse_args()
    print(run(args.url, args.token, args.n, args.out or None))


if __name__ == "__main__":
    main()
