"""Metrics over time: a window cut into equal buckets, each with the aggregate's own definitions.

``GET /v1/metrics/series`` answers with this document and the dashboard draws it as it comes, so a
chart and the aggregate card never disagree: the percentile is :func:`flowcore.metrics.percentile`
(nearest rank, always an observed value) in both. Pure: the runs and ``now`` come in.

A run belongs to the bucket of its creation time; buckets are ``[t0, t1)`` except the last, which
also holds ``now``. Durations are those of the bucket's finished workflows that started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowcore.metrics import FINISHED, RunSummary, duration_s, in_window, iso, percent, percentile
from flowcore.models import WorkflowStatus

MAX_BUCKETS = 200


def bucket_index(t: float, since: float, size_s: float, count: int) -> int:
    """The bucket holding time ``t`` of a window starting at ``since``; -1 when outside it."""
    if t < since or size_s <= 0:
        return -1
    index = int((t - since) // size_s)
    if index > count:
        return -1
    return min(index, count - 1)


def series(runs: Iterable[RunSummary], now: float, window_s: float, buckets: int) -> dict[str, Any]:
    """Per bucket: workflows created by status class, success rate, average, p50 and p95 duration."""
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}")
    since = now - window_s
    size_s = window_s / buckets
    created = {key: [0] * buckets for key in ("completed", "failed", "cancelled", "active")}
    durations: list[list[float]] = [[] for _ in range(buckets)]
    for run in in_window(runs, now, window_s):
        index = bucket_index(run.created_at, since, size_s, buckets)
        if index < 0:
            continue
        finished = run.status in FINISHED
        created[run.status.value if finished else "active"][index] += 1
        if finished and run.finished_at:
            took = duration_s(run.started_at, run.finished_at, now)
            if took is not None:
                durations[index].append(took)
    out: list[dict[str, Any]] = []
    for index in range(buckets):
        done = sum(created[s.value][index] for s in FINISHED)
        values = durations[index]
        out.append(
            {
                "from_time": iso(since + index * size_s),
                "to_time": iso(since + (index + 1) * size_s),
                "created": {key: counts[index] for key, counts in created.items()},
                "success_rate": percent(created[WorkflowStatus.COMPLETED.value][index], done) if done else None,
                "avg_duration": round(sum(values) / len(values), 6) if values else None,
                "p50_duration": percentile(values, 50),
                "p95_duration": percentile(values, 95),
            }
        )
    return {"window_s": window_s, "bucket_s": size_s, "buckets": out}
