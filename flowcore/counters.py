"""Monotonic counters and duration histograms, written in the commit that finishes what they count (ADR 020).

The metrics API recomputes its documents from the records (ADR 005), but records expire and get
deleted, so a count taken from them can go down, which Prometheus' ``rate()`` reads as a reset. These
counters live in one hash, ``{p}:metrics:counters``, that nothing but ``HINCRBY`` ever touches: they
only grow. :func:`counter_commands` turns a plan into those increments (pure); :func:`flowcore.commits.plan_commands`
appends them to the commit, so a counter moves exactly when, and only if, the transition it counts
is committed (a stale or duplicate completion commits nothing and counts nothing).

What is counted, from the plan's own events (each emitted once, on the status change):

* a task that finished for good (``succeeded``, or ``failed`` with no retry left): ``task|{type}|{outcome}``
  and its last attempt's duration (claimed to finished) in the task histogram; a failed attempt that
  the retry policy runs again: ``retry|{type}``;
* a container step that finished (``succeeded`` or ``failed``): the step histogram (ready to finished);
* a workflow that finished (``completed``, ``failed``, ``cancelled``): ``wf|{status}`` for all names and
  ``wf|{status}|{name}`` for its name, its duration (when it started) in the workflow histogram under
  both, and its name in ``{p}:metrics:names`` (``ZADD NX``, scored by that first finish).

Histograms are stored as per-bucket counts (``{hist}|b{i}``, bucket ``i`` holding the observations
``<= bounds[i]`` and ``> bounds[i-1]``; ``i = len(bounds)`` is ``+Inf``) and a sum in whole
milliseconds (``{hist}|sum_ms``), so that sums add up exactly; the reader cumulates them. Increments
of one commit are merged per field: a commit costs at most one command per distinct field, a number
bounded by the label sets below and independent of the workflow's size.

Workflow names are labels only for the first :data:`MAX_WORKFLOW_LABELS` names to finish; the reader
reports the rest as ``other`` = all names minus those, which never goes down (a name's counts are
zero until its first finish adds it to the registry).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowcore.plan import Plan
from flowcore.records import TaskStatus

Command = tuple[Any, ...]

CONTAINER_TYPES = ("sequential", "parallel", "map", "reduce")  # steps that run tasks: the `type` label
TASK_OUTCOMES = ("succeeded", "failed")
WORKFLOW_STATUSES = ("completed", "failed", "cancelled")
MAX_WORKFLOW_LABELS = 50  # workflow names with their own series; the others are `other`
OTHER = "other"

# Bucket upper bounds, seconds (fixed: changing them splits a histogram's history).
TASK_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
STEP_BOUNDS_S = TASK_BOUNDS_S
WORKFLOW_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def task_field(step_type: str, outcome: str) -> str:
    return f"task|{step_type}|{outcome}"


def retry_field(step_type: str) -> str:
    return f"retry|{step_type}"


def workflow_field(status: str, name: str | None = None) -> str:
    return f"wf|{status}" if name is None else f"wf|{status}|{name}"


def hist_prefix(kind: str, label: str | None = None) -> str:
    """``td|{type}`` (tasks), ``sd|{type}`` (steps), ``wd`` / ``wd|{name}`` (workflows)."""
    return kind if label is None else f"{kind}|{label}"


def bucket_index(value_s: float, bounds: Sequence[float]) -> int:
    """The bucket of an observation: the first bound ``>= value_s``; ``len(bounds)`` for +Inf."""
    return bisect.bisect_left(bounds, value_s)


def _observe(out: dict[str, int], prefix: str, value_s: float, bounds: Sequence[float]) -> None:
    value_s = max(value_s, 0.0)
    _add(out, f"{prefix}|b{bucket_index(value_s, bounds)}", 1)
    _add(out, f"{prefix}|sum_ms", round(value_s * 1000))


def _add(out: dict[str, int], field: str, n: int) -> None:
    out[field] = out.get(field, 0) + n


def _span_s(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None and end >= start else None


def increments(plan: Plan) -> dict[str, int]:
    """Field -> amount to add for what ``plan`` finishes (see the module docstring); pure."""
    snap = plan.snap
    out: dict[str, int] = {}
    for event in plan.events:
        kind, status = event.get("type"), event.get("status")
        step_id = event.get("step_id")
        step = snap.steps.get(step_id) if isinstance(step_id, str) else None
        if step is None or step.type not in CONTAINER_TYPES:
            continue
        if kind == "task" and status == "retrying":
            _add(out, retry_field(step.type), 1)
        elif kind == "task" and status in TASK_OUTCOMES:
            task = snap.tasks.get(f"{step_id}:{event.get('index', 0)}")
            if task is None:
                continue
            if status == "failed" and task.status != TaskStatus.FAILED:  # retried, re-dispatched or taken over
                continue
            _add(out, task_field(step.type, str(status)), 1)
            took = _span_s(task.started_at, task.finished_at)
            if took is not None:
                _observe(out, hist_prefix("td", step.type), took, TASK_BOUNDS_S)
        elif kind == "step" and status in ("succeeded", "failed"):
            took = _span_s(step.started_at, step.finished_at)
            if took is not None:
                _observe(out, hist_prefix("sd", step.type), took, STEP_BOUNDS_S)
    if snap.status != plan.old_status and snap.status.value in WORKFLOW_STATUSES:
        name = snap.definition.name
        _add(out, workflow_field(snap.status.value), 1)
        _add(out, workflow_field(snap.status.value, name), 1)
        took = _span_s(snap.started_at, snap.finished_at)
        if took is not None:
            _observe(out, hist_prefix("wd"), took, WORKFLOW_BOUNDS_S)
            _observe(out, hist_prefix("wd", name), took, WORKFLOW_BOUNDS_S)
    return out


def counter_commands(counters_key: str, names_key: str, plan: Plan, now_ms: int) -> list[Command]:
    """The commands that add ``plan``'s increments: one ``HINCRBY`` per field, plus the name's ``ZADD NX``
    when it finishes a workflow. Empty when the plan finishes nothing."""
    cmds: list[Command] = [("HINCRBY", counters_key, f, n) for f, n in sorted(increments(plan).items()) if n]
    snap = plan.snap
    if snap.status != plan.old_status and snap.status.value in WORKFLOW_STATUSES:
        cmds.append(("ZADD", names_key, "NX", now_ms, snap.definition.name))
    return cmds


# ---- the read side (the gateway's collectors) ----------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets ``[(upper bound, count)]`` ending with ``+Inf``, the sum (s) and the count."""

    buckets: list[tuple[float, int]]
    sum_s: float
    count: int


def decode(raw: Mapping[Any, Any]) -> dict[str, int]:
    """An ``HGETALL`` / ``HMGET`` answer as ``{field: int}`` (bytes or str, missing values dropped)."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        if value is None:
            continue
        out[key.decode() if isinstance(key, bytes) else str(key)] = int(value)
    return out


def histogram(values: Mapping[str, int], prefix: str, bounds: Sequence[float]) -> Histogram:
    running = 0
    buckets: list[tuple[float, int]] = []
    for i, bound in enumerate([*bounds, float("inf")]):
        running += values.get(f"{prefix}|b{i}", 0)
        buckets.append((bound, running))
    return Histogram(buckets, values.get(f"{prefix}|sum_ms", 0) / 1000, running)


def histogram_fields(prefix: str, bounds: Sequence[float]) -> list[str]:
    return [f"{prefix}|b{i}" for i in range(len(bounds) + 1)] + [f"{prefix}|sum_ms"]


def minus(whole: Histogram, parts: Sequence[Histogram]) -> Histogram:
    """``whole`` less ``parts`` bucket by bucket (``other`` = all names less the labelled ones)."""
    buckets = [(bound, n - sum(p.buckets[i][1] for p in parts)) for i, (bound, n) in enumerate(whole.buckets)]
    sum_ms = round(whole.sum_s * 1000) - sum(round(p.sum_s * 1000) for p in parts)
    return Histogram(buckets, sum_ms / 1000, whole.count - sum(p.count for p in parts))
