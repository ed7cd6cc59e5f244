"""Metrics documents computed from workflow records: per workflow, history and aggregates.

Pure functions over :class:`~flowcore.records.Snapshot` (per workflow) and :class:`RunSummary`
(many workflows, read cheaply): no I/O, the time comes in as ``now``. Every number they return is
finite; a quantity with nothing to measure is ``None`` (durations) or ``0`` (counts, rates), never NaN.

Definitions (docs/api.md repeats them):

- *duration*: ``finished_at - started_at`` in seconds; a running workflow or step counts up to ``now``;
  ``None`` for one that never started (pending, or cancelled before it started). Clock skew between
  hosts never makes it negative.
- *dispatch*: one attempt of one task whose result came back from a container (retried attempts
  included; a running attempt counts once its result is recorded). A *warm* dispatch ran in a pooled
  container; a *cold* one started a one-shot container. When the task record says whether the pool
  had an idle container (``pool_hit``), a pooled dispatch that had to start a new container is cold.
  Past attempts of a retried task are warm when their container served a pooled task of the workflow.
- *pool_efficiency*: ``warm / dispatches * 100``; ``0.0`` when there was no dispatch.
- *success_rate*: ``completed / finished * 100`` where finished = completed + failed + cancelled;
  pending and running workflows are left out; ``0.0`` when none finished (``finished_workflows`` says so).
- *avg/p50/p95_duration*: over the durations of the finished workflows that started; ``None`` when
  there are none. Percentiles use the nearest rank: the value at rank ``ceil(q / 100 * n)`` of the
  sorted durations (always one of the observed values).
- *throughput_per_min*: finished workflows of the window per minute of the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowcore.models import StepStatus, WorkflowStatus
from flowcore.pool_api import ErrorKind
from flowcore.records import Snapshot, StepRecord, TaskRecord, TaskStatus, first_task_start

FINISHED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)
# A task that ended with one of these never got a result from a container in its last attempt.
_NO_DISPATCH = frozenset({ErrorKind.INPUT, ErrorKind.WORKER_LOST, ErrorKind.CANCELLED})


@dataclass(frozen=True)
class RunSummary:
    """What the history and the aggregates need of one workflow (no definition, state or outputs)."""

    wf_id: str
    name: str
    status: WorkflowStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    origin: str = "api"
    tasks: tuple[TaskRecord, ...] = ()
    steps: tuple[StepRecord, ...] = ()

    @classmethod
    def of(cls, snap: Snapshot) -> RunSummary:
        return cls(
            wf_id=snap.wf_id,
            name=snap.definition.name,
            status=snap.status,
            created_at=snap.created_at,
            started_at=snap.started_at,
            finished_at=snap.finished_at,
            error=snap.error,
            origin=snap.origin.kind,
            tasks=tuple(snap.tasks.values()),
            steps=tuple(snap.steps.values()),
        )


# ---- small helpers ----------------------------------------------------------------------------
def finite(value: Any) -> float | None:
    """A real, finite number as float; anything else (None, NaN, inf, bool, text) is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def iso(ts: float | None) -> str | None:
    ts = finite(ts)
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def duration_s(start: float | None, end: float | None, now: float) -> float | None:
    """Seconds from ``start`` to ``end`` (or ``now`` when unfinished), never negative."""
    begin = finite(start)
    if begin is None:
        return None
    stop = finite(end)
    return round(max((stop if stop is not None else now) - begin, 0.0), 6)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def percent(part: int | float, whole: int | float) -> float:
    """``part / whole * 100`` rounded to 2 decimals, clamped to 0..100; 0.0 when ``whole`` is 0."""
    if whole <= 0:
        return 0.0
    return round(min(max(part / whole * 100.0, 0.0), 100.0), 2)


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 6) if known else None


# ---- dispatches -------------------------------------------------------------------------------
@dataclass
class Dispatches:
    warm: int = 0
    cold: int = 0
    containers: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return self.warm + self.cold

    def add(self, other: Dispatches) -> None:
        self.warm += other.warm
        self.cold += other.cold
        self.containers |= other.containers


def _current_attempt_dispatched(task: TaskRecord) -> bool:
    if task.status not in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) or task.container_id is None:
        return False
    return task.error is None or task.error.kind not in _NO_DISPATCH


def _warm(pooled: bool, pool_hit: Any) -> bool:
    return pooled and pool_hit is not False


def pooled_containers(tasks: Iterable[TaskRecord]) -> set[str]:
    return {t.container_id for t in tasks if t.pooled and t.container_id and _current_attempt_dispatched(t)}


def task_dispatches(task: TaskRecord, pooled_ids: set[str]) -> Dispatches:
    """The dispatches of one task: its retried attempts (history) and its last one."""
    out = Dispatches()
    for past in task.history:
        if not past.container_id:
            continue
        out.containers.add(past.container_id)
        pooled = getattr(past, "pooled", None)
        warm = _warm(pooled, getattr(past, "pool_hit", None)) if isinstance(pooled, bool) else past.container_id in pooled_ids
        if warm:
            out.warm += 1
        else:
            out.cold += 1
    if _current_attempt_dispatched(task):
        assert task.container_id is not None
        out.containers.add(task.container_id)
        if _warm(task.pooled, getattr(task, "pool_hit", None)):
            out.warm += 1
        else:
            out.cold += 1
    return out


def run_dispatches(tasks: Iterable[TaskRecord]) -> Dispatches:
    tasks = list(tasks)
    pooled_ids = pooled_containers(tasks)
    total = Dispatches()
    for task in tasks:
        total.add(task_dispatches(task, pooled_ids))
    return total


# ---- one workflow -----------------------------------------------------------------------------
def _queue_wait_s(task: TaskRecord) -> float | None:
    ready = finite(task.run_at) or finite(task.enqueued_at)
    started = finite(task.started_at)
    if ready is None or started is None:
        return None
    return max(started - ready, 0.0)


def _ms_to_s(ms: float | None) -> float | None:
    value = finite(ms)
    return value / 1000.0 if value is not None else None


def _cpu_s(task: TaskRecord) -> float | None:
    value = finite(getattr(task, "cpu_time_s", None))
    return max(value, 0.0) if value is not None else None


def _peak_bytes(task: TaskRecord) -> int | None:
    value = finite(getattr(task, "peak_memory_bytes", None))
    return int(max(value, 0.0)) if value is not None else None


def _max_int(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def step_metrics(rec: StepRecord, tasks: Sequence[TaskRecord], pooled_ids: set[str], now: float) -> dict[str, Any]:
    """The metrics of one step from its record and its tasks (sorted by index)."""
    dispatches = Dispatches()
    for task in tasks:
        dispatches.add(task_dispatches(task, pooled_ids))
    done = [t for t in tasks if _current_attempt_dispatched(t)]
    modes = {t.mode for t in done if t.mode}
    last_container = next((t.container_id for t in reversed(tasks) if t.container_id), None)
    first = first_task_start(tasks)
    return {
        "type": rec.type,
        "status": rec.status.value,
        "start_time": iso(rec.started_at),
        "end_time": iso(rec.finished_at),
        "duration": duration_s(rec.started_at, rec.finished_at, now)
        if rec.status != StepStatus.SKIPPED
        else None,
        "first_task_start_time": iso(first),
        "run_duration": duration_s(first, rec.finished_at, now) if first is not None else None,
        "attempts": max((t.attempt for t in tasks), default=0),
        "retries": sum(max(t.attempt - 1, 0) for t in tasks),
        "tasks": len(tasks),
        "tasks_succeeded": sum(1 for t in tasks if t.status == TaskStatus.SUCCEEDED),
        "tasks_failed": sum(1 for t in tasks if t.status == TaskStatus.FAILED),
        "agent_pooled": bool(done) and all(t.pooled for t in done),
        "pooled_tasks": sum(1 for t in done if t.pooled),
        "mode": modes.pop() if len(modes) == 1 else ("mixed" if modes else None),
        "container_id": last_container,
        "containers": len(dispatches.containers),
        "warm_dispatches": dispatches.warm,
        "cold_dispatches": dispatches.cold,
        "queue_wait_s": _sum(_queue_wait_s(t) for t in tasks),
        "acquire_s": _sum(_ms_to_s(t.acquire_ms) for t in done),
        "execution_s": _sum(_ms_to_s(t.exec_ms) for t in done),
        "cpu_time_s": _sum(_cpu_s(t) for t in tasks),
        "peak_memory_bytes": _max_int(_peak_bytes(t) for t in tasks),
        "error": rec.error,
        "reason": rec.reason,
    }


def _error_details(snap: Snapshot) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    for task in sorted(snap.tasks.values(), key=lambda t: (t.step_id, t.index)):
        for past in task.history:
            if past.error is not None:
                details.append(
                    {"step_id": task.step_id, "index": task.index, "attempt": past.attempt,
                     "kind": past.error.kind.value, "message": past.error.message, "retried": True}
                )
        if task.status == TaskStatus.FAILED and task.error is not None:
            details.append(
                {"step_id": task.step_id, "index": task.index, "attempt": task.attempt,
                 "kind": task.error.kind.value, "message": task.error.message, "retried": False}
            )
    return details


def workflow_metrics(snap: Snapshot, now: float) -> dict[str, Any]:
    """``GET /v1/workflows/{id}/metrics``: the workflow, its started steps and its resource usage.

    ``step_metrics`` holds the steps that have left ``pending`` (so its length grows as the workflow
    progresses), in definition order; ``errors`` is ``"step: message"`` per failed step, or the
    workflow's own error when no step failed; ``error_details`` lists every failed attempt.
    """
    by_step: dict[str, list[TaskRecord]] = {}
    for task in snap.tasks.values():
        by_step.setdefault(task.step_id, []).append(task)
    for tasks in by_step.values():
        tasks.sort(key=lambda t: t.index)
    pooled_ids = pooled_containers(snap.tasks.values())
    steps: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for step in snap.definition.steps:
        rec = snap.steps.get(step.id)
        if rec is None or rec.status == StepStatus.PENDING:
            continue
        steps[step.id] = step_metrics(rec, by_step.get(step.id, []), pooled_ids, now)
        if rec.status == StepStatus.FAILED:
            errors.append(f"{step.id}: {rec.error or 'failed'}")
    if snap.error and not errors:
        errors.append(snap.error)
    dispatches = run_dispatches(snap.tasks.values())
    tasks = list(snap.tasks.values())
    return {
        "workflow_id": snap.wf_id,
        "name": snap.definition.name,
        "status": snap.status.value,
        "created_time": iso(snap.created_at),
        "start_time": iso(snap.started_at),
        "end_time": iso(snap.finished_at),
        "duration": duration_s(snap.started_at, snap.finished_at, now),
        "steps_total": len(snap.definition.steps),
        "steps_finished": sum(1 for r in snap.steps.values() if r.status.finished),
        "step_metrics": steps,
        "resource_usage": {
            "cpu_time_s": _sum(_cpu_s(t) for t in tasks),
            "peak_memory_bytes": _max_int(_peak_bytes(t) for t in tasks),
            "containers_started": dispatches.cold,
            "containers_used": len(dispatches.containers),
            "dispatches": dispatches.total,
            "warm_dispatches": dispatches.warm,
            "cold_dispatches": dispatches.cold,
            "pool_efficiency": percent(dispatches.warm, dispatches.total),
        },
        "errors": errors,
        "error_details": _error_details(snap),
    }


# ---- many workflows ---------------------------------------------------------------------------
def in_window(runs: Iterable[RunSummary], now: float, window_s: float) -> list[RunSummary]:
    """The runs created in ``[now - window_s, now]``, newest first."""
    since = now - window_s
    return sorted((r for r in runs if since <= r.created_at <= now), key=lambda r: r.created_at, reverse=True)


def history_item(run: RunSummary, now: float) -> dict[str, Any]:
    return {
        "workflow_id": run.wf_id,
        "name": run.name,
        "status": run.status.value,
        "created_time": iso(run.created_at),
        "start_time": iso(run.started_at),
        "end_time": iso(run.finished_at),
        "duration": duration_s(run.started_at, run.finished_at, now),
        "error": run.error,
        "origin": run.origin,
    }


def history(runs: Iterable[RunSummary], now: float, window_s: float, limit: int) -> list[dict[str, Any]]:
    """``GET /v1/metrics/history``: the window's workflows, running ones included, newest first."""
    return [history_item(r, now) for r in in_window(runs, now, window_s)[:limit]]


def aggregate(runs: Iterable[RunSummary], now: float, window_s: float) -> dict[str, Any]:
    """``GET /v1/metrics/aggregate`` over the workflows created in the window (see the definitions)."""
    window = in_window(runs, now, window_s)
    counts = {s.value: 0 for s in WorkflowStatus}
    for run in window:
        counts[run.status.value] += 1
    finished = [r for r in window if r.status in FINISHED]
    durations = [
        d for d in (duration_s(r.started_at, r.finished_at, now) for r in finished if r.finished_at) if d is not None
    ]
    dispatches = Dispatches()
    for run in window:
        dispatches.add(run_dispatches(run.tasks))
    minutes = window_s / 60.0
    avg = round(sum(durations) / len(durations), 6) if durations else None
    return {
        "window_s": window_s,
        "from_time": iso(now - window_s),
        "to_time": iso(now),
        "total_workflows": len(window),
        "by_status": counts,
        **counts,
        "finished_workflows": len(finished),
        "success_rate": percent(counts[WorkflowStatus.COMPLETED.value], len(finished)),
        "avg_duration": avg,
        "p50_duration": percentile(durations, 50),
        "p95_duration": percentile(durations, 95),
        "max_duration": max(durations) if durations else None,
        "dispatches": dispatches.total,
        "warm_dispatches": dispatches.warm,
        "cold_dispatches": dispatches.cold,
        "pool_efficiency": percent(dispatches.warm, dispatches.total),
        "throughput_per_min": round(len(finished) / minutes, 4) if minutes > 0 else 0.0,
    }


def step_durations(runs: Iterable[RunSummary], now: float) -> dict[str, list[float]]:
    """Durations of the finished steps of ``runs`` that ran containers, by step type (for /metrics)."""
    out: dict[str, list[float]] = {}
    for run in runs:
        for rec in run.steps:
            if rec.status not in (StepStatus.SUCCEEDED, StepStatus.FAILED) or rec.type in ("branch", "decision"):
                continue
            value = duration_s(rec.started_at, rec.finished_at, now)
            if value is not None and rec.finished_at is not None:
                out.setdefault(rec.type, []).append(value)
    return out
