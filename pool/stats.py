"""Counters and latency windows of the pools (in memory; reported by ``GET /v1/pools``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pool.sizing import percentile, utilisation

WINDOW = 1024


@dataclass
class PoolStats:
    warm_hits: int = 0
    cold_starts: int = 0  # misses: a task waited for a new container (growth or one-shot fallback)
    queue_waits: int = 0
    exhausted: int = 0
    tasks: int = 0
    failures: int = 0
    replaced: int = 0  # containers found dead or unhealthy and replaced
    retired: int = 0  # containers that reached max_uses
    reaped: int = 0  # idle containers removed after idle_timeout_s
    evicted: int = 0  # idle containers removed to make room for another pool (max_containers)
    acquire_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    exec_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def record_acquire(self, ms: float, *, hit: bool, waited: bool) -> None:
        self.acquire_ms.append(ms)
        if hit:
            self.warm_hits += 1
        else:
            self.cold_starts += 1
        if waited:
            self.queue_waits += 1

    def record_task(self, exec_ms: float, ok: bool) -> None:
        self.tasks += 1
        self.exec_ms.append(exec_ms)
        if not ok:
            self.failures += 1

    def report(self, *, busy: int, idle: int, starting: int = 0, waiting: int = 0) -> dict[str, Any]:
        acquire = list(self.acquire_ms)
        execs = list(self.exec_ms)
        dispatches = self.warm_hits + self.cold_starts
        return {
            "warm_hits": self.warm_hits,
            "cold_starts": self.cold_starts,
            "queue_waits": self.queue_waits,
            "exhausted": self.exhausted,
            "tasks": self.tasks,
            "failures": self.failures,
            "replaced": self.replaced,
            "retired": self.retired,
            "reaped": self.reaped,
            "evicted": self.evicted,
            "hit_ratio": round(self.warm_hits / dispatches, 4) if dispatches else 0.0,
            "acquire_ms_p50": round(percentile(acquire, 50), 3),
            "acquire_ms_p95": round(percentile(acquire, 95), 3),
            "exec_ms_p50": round(percentile(execs, 50), 3),
            "exec_ms_p95": round(percentile(execs, 95), 3),
            "busy": busy,
            "idle": idle,
            "starting": starting,
            "waiting": waiting,
            "utilisation": utilisation(busy, busy + idle),
        }


def merge(stats: list[PoolStats]) -> PoolStats:
    total = PoolStats()
    for s in stats:
        total.warm_hits += s.warm_hits
        total.cold_starts += s.cold_starts
        total.queue_waits += s.queue_waits
        total.exhausted += s.exhausted
        total.tasks += s.tasks
        total.failures += s.failures
        total.replaced += s.replaced
        total.retired += s.retired
        total.reaped += s.reaped
        total.evicted += s.evicted
        total.acquire_ms.extend(s.acquire_ms)
        total.exec_ms.extend(s.exec_ms)
    return total
