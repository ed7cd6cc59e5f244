"""How records look over the API: plain JSON with ISO-8601 UTC times and durations in seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowcore import dag, waitrules
from flowcore.records import Snapshot, StepRecord, TaskRecord, TaskStatus, first_task_start


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def duration_s(start: float | None, end: float | None, now: float | None = None) -> float | None:
    if start is None:
        return None
    stop = end if end is not None else now
    return round(max(stop - start, 0.0), 6) if stop is not None else None


def task_view(task: TaskRecord) -> dict[str, Any]:
    return {
        "index": task.index,
        "status": task.status.value,
        "attempt": task.attempt,
        "takeovers": task.takeovers,
        "queued_at": iso(task.enqueued_at),
        "run_at": iso(task.run_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "duration_s": duration_s(task.started_at, task.finished_at),
        "exit_code": task.exit_code,
        "error": task.error.model_dump(mode="json") if task.error else None,
        "log_tail": task.log_tail,
        "container_id": task.container_id,
        "pooled": task.pooled,
        "mode": task.mode,
        "pool_key": task.pool_key,
        "pool_service": task.pool_service,
        "acquire_ms": task.acquire_ms,
        "exec_ms": task.exec_ms,
        "cpu_time_s": task.cpu_time_s,
        "peak_memory_bytes": task.peak_memory_bytes,
        "attempts": [a.model_dump(mode="json") for a in task.history],
        # a queued task waiting for a slot of its step's concurrency key, and why (ADR 019)
        "waiting_on": task.waiting_on if task.status == TaskStatus.QUEUED else None,
    }


def step_view(snap: Snapshot, rec: StepRecord, *, with_tasks: bool = True) -> dict[str, Any]:
    tasks = sorted((t for t in snap.tasks.values() if t.step_id == rec.id), key=lambda t: t.index)
    attempts = max((t.attempt for t in tasks), default=0)
    first = first_task_start(tasks)
    body: dict[str, Any] = {
        "id": rec.id,
        "type": rec.type,
        "status": rec.status.value,
        "attempts": attempts,
        "started_at": iso(rec.started_at),
        "finished_at": iso(rec.finished_at),
        "duration_s": duration_s(rec.started_at, rec.finished_at),
        # started_at is when the step became ready; first_task_started_at when a worker began its
        # first task (the gap is the wait for a worker and a slot); run_duration_s counts from there.
        "ready_at": iso(rec.started_at),
        "first_task_started_at": iso(first),
        "run_duration_s": duration_s(first, rec.finished_at),
        "output": rec.output,
        "error": rec.error,
        "reason": rec.reason,
        "total": rec.total,
        "succeeded": rec.succeeded,
        "failed": rec.failed,
        "failures": rec.failures,
        "chosen": rec.chosen,
        "wait": waitrules.wait_view(rec.wait),  # durable waits (ADR 012): what it waits for, until when
        # the first of its tasks that waits for a slot of its concurrency key, and why (ADR 019)
        "waiting_on": next((t.waiting_on for t in tasks if t.status == TaskStatus.QUEUED and t.waiting_on), None),
    }
    if with_tasks:
        body["tasks"] = [task_view(t) for t in tasks]
    return body


def flow_view(snap: Snapshot) -> dict[str, Any]:
    """Flow control (ADR 013): why a run waits or was refused, its estimated start, its priority."""
    flow = snap.flow or {}
    return {
        "queued_reason": flow.get("queued_reason"),
        "estimated_start": iso(flow.get("estimated_start")),
        "priority": flow.get("priority", snap.definition.config.priority),
        "admitted_at": iso(flow.get("admitted_at")),
    }


def workflow_view(snap: Snapshot, *, detail: bool = True, now: float | None = None) -> dict[str, Any]:
    d = snap.definition
    body: dict[str, Any] = {
        "id": snap.wf_id,
        "name": d.name,
        "description": d.description,
        "status": snap.status.value,
        "created_at": iso(snap.created_at),
        "started_at": iso(snap.started_at),
        "finished_at": iso(snap.finished_at),
        "duration_s": duration_s(snap.started_at, snap.finished_at, now),
        "error": snap.error,
        "config": d.config.model_dump(mode="json", by_alias=True),
        "labels": d.labels,
        "origin": snap.origin.model_dump(mode="json"),
        "step_count": len(d.steps),
        **flow_view(snap),
    }
    if detail:
        body["input"] = snap.input
        order = [s.id for s in d.steps]
        body["steps"] = [
            step_view(snap, snap.steps[sid]) if sid in snap.steps else _pending_step(snap, sid) for sid in order
        ]
        body["definition"] = d.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["graph"] = {"edges": dag.graph_edges(d)}
    return body


def _pending_step(snap: Snapshot, step_id: str) -> dict[str, Any]:
    step = snap.definition.step(step_id)
    return step_view(snap, StepRecord(id=step_id, type=step.type), with_tasks=True)
