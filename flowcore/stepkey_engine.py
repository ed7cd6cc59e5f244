"""Step-level concurrency keys inside engine transitions (ADR 019): the claim's check, park and unpark.

A claim of a task whose step declares ``concurrency`` needs a slot of its key first. The claim
computes the key from the task's view and, unless the worker says it holds that key
(``held_key``), raises :class:`~flowcore.stepkeys.SlotNeeded` instead of deciding: the worker takes
a slot in Redis (:mod:`flowcore.stepkey_store`) and claims again, or, when the key is full, *parks*
the task: it stays ``queued`` with ``waiting_on`` saying why, but leaves ``{p}:queued`` (no job, no
worker holds it, the reaper leaves it alone). When a slot frees, the key's pump reserves it for the
head of the key's queue and *unparks* that task: dispatched again under a new token, as a retry is.
A step without ``concurrency`` never comes here: its claim costs what it did (ADR 010).
"""

from __future__ import annotations

from flowcore.models import WorkflowStatus
from flowcore.plan import EngineEnv, Plan
from flowcore.records import Snapshot, TaskRecord, TaskStatus
from flowcore.stepkeys import SlotNeeded, StepConcurrency, evaluate_key, holder_of
from flowcore.taskinput import build_view, task_item
from flowcore.transition import Transition


def task_key(snap: Snapshot, task: TaskRecord, cfg: StepConcurrency) -> str:
    """The key value of ``task``: its step's expression against the view its input sees (with its item)."""
    return evaluate_key(cfg.key, build_view(snap, task_item(snap, task.step_id, task.index)))


def check_claim(t: Transition, task: TaskRecord, cfg: StepConcurrency, held_key: str | None) -> None:
    """Inside a claim: raise :class:`SlotNeeded` when the worker does not hold the task's key."""
    key = task_key(t.snap, task, cfg)
    if held_key != key:
        raise SlotNeeded(key, cfg.limit, holder_of(t.snap.wf_id, task.step_id, task.index))


def _queued_task(t: Transition, step_id: str, index: int) -> TaskRecord | None:
    task = t.task_at(step_id, index)
    if task is None or task.status != TaskStatus.QUEUED or t.snap.status != WorkflowStatus.RUNNING:
        return None
    return task


def park(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str, reason: str) -> Plan:
    """The key of this queued task is full: it waits in the key's queue, without a job or a worker."""
    t = Transition(snap, env)
    task = _queued_task(t, step_id, index)
    if task is None or task.token != token:
        t.plan.note = "stale"  # unparked by a pump meanwhile (new token), cancelled, or finished
        return t.plan
    t.plan.queued_remove.append(t.lease(task))
    task.waiting_on = reason
    t.touch_task(task)
    t.event("task", step_id=step_id, index=index, status="waiting", reason=reason)
    return t.plan


def unpark(snap: Snapshot, env: EngineEnv, step_id: str, index: int) -> Plan:
    """A slot of its key was reserved for this task: dispatch it again (a new token and job)."""
    t = Transition(snap, env)
    task = _queued_task(t, step_id, index)
    if task is None:
        t.plan.note = "stale"
        return t.plan
    if task.token:
        t.plan.queued_remove.append(t.lease(task))
        t.plan.drop_jobs.append(t.lease(task))
    task.waiting_on = None
    t.enqueue(task)
    return t.plan


def still_waiting(task: TaskRecord | None) -> bool:
    return task is not None and task.status == TaskStatus.QUEUED and task.waiting_on is not None
