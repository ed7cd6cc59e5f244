"""Event intake to first step, at a steady rate: ``python -m loadtests.latency [--rate 100] [--seconds 10]``.

Publishes events at ``rate`` per second to an event trigger whose template has one step (a warm,
pooled container), then reads from Redis when each new workflow's first task started: the worker
claimed it (``started_at``) and the pool handed it a container (``+ acquire_ms``). Prints and returns
p50/p95 of send -> step started, and of the intake answer itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
import redis

from flowcore.keyspace import Keyspace
from loadtests.check import redis_url
from loadtests.common import IMAGE, api, create_template, create_trigger, gateway_url, token


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _publish(rate: float, seconds: float, tag: str, event_type: str) -> list[tuple[str, float, float, str | None]]:
    """(event id, sent at, answer ms, workflow id) for each event, paced at ``rate``."""
    out: list[tuple[str, float, float, str | None]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=gateway_url(), headers={"Authorization": f"Bearer {token()}"},
                                 limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            event_id = f"{tag}-{i}"
            sent = time.time()
            r = await client.post("/v1/events", json={"type": event_type, "id": event_id, "payload": {"i": i}})
            answer_ms = (time.time() - sent) * 1000
            fires = r.json().get("fires", []) if r.status_code == 202 else []
            out.append((event_id, sent, answer_ms, fires[0].get("workflow_id") if fires else None))

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return out


def measure(rate: float = 100, seconds: float = 10) -> dict[str, Any]:
    event_type = f"loadtest.latency.{int(time.time())}"  # this run's own type
    with api() as client:
        wf_id = create_template(client, "loadtest-latency", steps=[
            {"id": "first", "image": IMAGE, "command": ["true"], "pool": {"min_size": 4, "max_size": 8, "scope": "image"}}])
        trigger = create_trigger(client, wf_id, {"type": "event", "config": {"event_type": event_type}})
        # Warm the pool once so the run measures warm starts, as a stack in service would have them.
        warm = client.post(f"/v1/workflows/{wf_id}/trigger").json()["workflow_id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/workflows/{warm}").json()["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
    sent = asyncio.run(_publish(rate, seconds, f"lat-{int(time.time())}", event_type))
    with api() as client:
        client.post(f"/v1/triggers/{trigger['id']}/disable")
    conn = redis.Redis.from_url(redis_url())
    keys = Keyspace("flow")
    deadline = time.monotonic() + 180
    starts: list[float] = []
    claims: list[float] = []
    pending = [s for s in sent if s[3]]
    while pending and time.monotonic() < deadline:
        still = []
        for event_id, sent_at, answer_ms, wf in pending:
            raw = conn.hget(keys.tasks(str(wf)), "first:0")
            task = json.loads(raw) if raw else {}
            if task.get("status") in ("succeeded", "failed") and task.get("started_at"):
                claims.append((task["started_at"] - sent_at) * 1000)
                starts.append((task["started_at"] + (task.get("acquire_ms") or 0) / 1000 - sent_at) * 1000)
            else:
                still.append((event_id, sent_at, answer_ms, wf))
        pending = still
        if pending:
            time.sleep(0.5)
    answers = [s[2] for s in sent]
    result = {
        "rate_per_s": rate, "events": len(sent), "started": len(starts), "lost": len(pending) + sum(1 for s in sent if not s[3]),
        "intake_p50_ms": pct(answers, 50), "intake_p99_ms": pct(answers, 99),
        "to_claim_p50_ms": pct(claims, 50), "to_claim_p95_ms": pct(claims, 95),
        "to_step_p50_ms": pct(starts, 50), "to_step_p95_ms": pct(starts, 95),
    }
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    measure(args.rate, args.seconds)


if __name__ == "__main__":
    main()
