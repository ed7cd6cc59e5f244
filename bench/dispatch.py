"""Dispatch latency of one trivial task through the pool service's ``/v1/tasks``, as a worker makes it.

Four ways: a cold ``docker run`` (create, start, wait, remove), ``docker exec`` into a warm container,
and the in-container agent running a command or a Python function. The first two calls of each warm
the pool and are not counted.
"""

from __future__ import annotations

import statistics
import time
import uuid

import httpx

from bench.workflows import IMAGE

KINDS = ("cold `docker run`", "`docker exec` (warm container)", "agent, command", "agent, Python function")


def dispatch_latency_ms(pool_url: str, headers: dict[str, str], mode: str, n: int, function: bool = False) -> list[float]:
    out: list[float] = []
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=pool_url, timeout=120, headers=headers) as pool:
        for i in range(n + 2):
            body: dict[str, object] = {
                "task_id": f"bench-{tag}-{mode}-{i}",
                "workflow_id": f"bench-{tag}",
                "step_id": "s",
                "image": IMAGE,
                "mode": mode,
                "input": {"i": i},
            }
            if function:
                body["function"] = {
                    "module": "bench_fn",
                    "qualname": "run",
                    "source": "def run(ctx):\n    return {'i': ctx.input['i']}\n",
                }
            else:
                body["command"] = "true"
            if mode != "cold":
                body["pool"] = {"min_size": 1, "max_size": 2}
            started = time.perf_counter()
            r = pool.post("/v1/tasks", json=body)
            elapsed_ms = (time.perf_counter() - started) * 1000
            r.raise_for_status()
            if not r.json()["ok"]:
                raise RuntimeError(f"bench task failed: {r.json()}")
            if i >= 2:
                out.append(elapsed_ms)
    return out


def measure_all(pool_url: str, headers: dict[str, str], n: int) -> dict[str, list[float]]:
    """Latencies (ms) of each kind of dispatch; cold is measured fewer times (it is slow)."""
    return {
        KINDS[0]: dispatch_latency_ms(pool_url, headers, "cold", max(n // 3, 10)),
        KINDS[1]: dispatch_latency_ms(pool_url, headers, "exec", n),
        KINDS[2]: dispatch_latency_ms(pool_url, headers, "agent", n),
        KINDS[3]: dispatch_latency_ms(pool_url, headers, "agent", n, function=True),
    }


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
