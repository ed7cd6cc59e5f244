"""The workflow engine: pure transitions over a :class:`~flowcore.records.Snapshot`.

Every change to a running workflow is one call here — :func:`start`, :func:`claim`,
:func:`complete`, :func:`lost`, :func:`unclaimed`, :func:`cancel`, :func:`deadline` — that
mutates the snapshot it is given and returns a :class:`Plan` of what changed. :mod:`flowcore.store`
reads the snapshot and commits the plan in one Redis transaction, enqueueing exactly the tasks the
plan dispatches (and recording each as queued, awaiting its claim). No
I/O happens here; time, randomness and tokens come in through :class:`EngineEnv`.

A transition costs O(1) in the number of tasks (ADR 010): the snapshot may hold only the task records
a decision concerns (``Snapshot.loaded``); counts come from the step records' counters, and a decision
that needs more task records (a step's outputs once all its tasks finished, the tasks to cancel)
raises :class:`NeedReads` naming them: the store reads them and decides again on a fresh snapshot.
"""

from __future__ import annotations

from typing import Any

from flowcore import paths, stepkey_engine
from flowcore.keyspace import lease_member
from flowcore.logstream import LogLine
from flowcore.models import MapStep, WorkflowStatus
from flowcore.plan import Dispatch, EngineEnv, NeedReads, Plan
from flowcore.pool_api import INFRASTRUCTURE_KINDS, ErrorKind, StateOp, TaskError, TaskResult
from flowcore.records import Snapshot, TaskRecord, TaskStatus
from flowcore.state import apply_state_ops
from flowcore.taskinput import task_request
from flowcore.transition import Transition

POOL_BACKOFF_FIRST_S = 0.5
POOL_BACKOFF_MAX_S = 10.0

__all__ = [
    "Dispatch",
    "EngineEnv",
    "NeedReads",
    "Plan",
    "cancel",
    "claim",
    "complete",
    "deadline",
    "lost",
    "start",
    "unclaimed",
]


def _find_task(t: Transition, step_id: str, index: int, token: str) -> TaskRecord | None:
    task = t.task_at(step_id, index)
    if task is None or task.token != token:
        return None
    return task


def start(snap: Snapshot, env: EngineEnv) -> Plan:
    t = Transition(snap, env)
    t.start()
    return t.plan


def claim(
    snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str, *, held_key: str | None = None
) -> Plan:
    """A worker takes a queued task: it becomes running under a lease; ``plan.request`` says what to run.

    A stale token, a finished workflow or a task already claimed gives an empty plan without request.
    A task whose step has a concurrency key raises :class:`~flowcore.stepkeys.SlotNeeded` unless the
    worker holds that key (``held_key``, ADR 019).
    """
    t = Transition(snap, env)
    task = _find_task(t, step_id, index, token)
    if task is None or task.status != TaskStatus.QUEUED or snap.status != WorkflowStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.plan.queued_remove.append(t.lease(task))  # claimed: no longer awaiting a claim, whatever comes next
    if t.check_deadline():
        return t.plan
    item_key = f"{step_id}:{index}"
    step = t.defn.step(step_id)
    if isinstance(step, MapStep) and snap.steps[step_id].items is None and item_key not in snap.items:
        raise NeedReads(items=[item_key])
    if getattr(step, "concurrency", None) is not None:
        stepkey_engine.check_claim(t, task, step.concurrency, held_key)
    try:
        request = task_request(snap, task, t.deps[step_id])
    except paths.PathMissing as exc:
        task.started_at = env.now
        t.fail_or_retry(task, TaskError(kind=ErrorKind.INPUT, message=f"step input: {exc.message}"))
        t.progress()
        return t.plan
    t.run(task)
    t.plan.request = request
    return t.plan


def complete(
    snap: Snapshot,
    env: EngineEnv,
    step_id: str,
    index: int,
    token: str,
    result: TaskResult,
    *,
    claim_next: bool = False,
) -> Plan:
    """Apply a task's result exactly once: a duplicate or late result (stale token) changes nothing.

    ``claim_next``: also claim one task this completion made runnable (``plan.claimed``, ``plan.request``),
    for the worker that commits it to run next.
    """
    t = Transition(snap, env)
    task = _find_task(t, step_id, index, token)
    if task is None or task.status != TaskStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.plan.lease_remove.append(t.lease(task))
    task.finished_at = env.now
    task.exit_code = result.exit_code
    task.log_tail = result.log_tail[-4096:]
    task.container_id = result.container_id
    task.pooled = result.pooled
    task.mode = result.mode.value
    task.pool_key = result.pool_key
    task.pool_service = result.pool_service
    task.acquire_ms = result.timings.acquire_ms
    task.exec_ms = result.timings.exec_ms
    task.cpu_time_s = result.cpu_time_s
    task.peak_memory_bytes = result.peak_memory_bytes
    task.pool_hit = result.pool_hit
    task.output_truncated = result.output_truncated
    t.plan.log_lines = [LogLine(step_id, index, task.attempt, x.stream, x.line, x.ts) for x in result.logs]
    t.touch_task(task)
    if snap.status != WorkflowStatus.RUNNING:
        return t.plan
    error = result.error
    if result.ok:
        try:
            t.plan.state_changes.update(_state_changes(snap, result.state_updates, env.max_state_value_bytes))
        except Exception as exc:  # an invalid update fails the task, it never half-applies
            error = TaskError(kind=ErrorKind.INVALID_OUTPUT, message=f"state update rejected: {exc}")
    if error is None or error.kind != ErrorKind.POOL_UNAVAILABLE:
        task.unavailable_since, task.unavailable_retries = None, 0  # a pool service answered
    if result.ok and error is None:
        task.status = TaskStatus.SUCCEEDED
        task.output = result.output
        task.error = None
        t.event("task", step_id=step_id, index=index, status="succeeded", attempt=task.attempt)
        t.task_finished(task)
    else:
        failure = error or TaskError(kind=ErrorKind.RUNTIME, message="task failed without an error")
        t.event("task", step_id=step_id, index=index, status="failed", error=failure.message)
        if failure.kind == ErrorKind.POOL_UNAVAILABLE and _wait_for_pool(t, task, failure, env):
            pass  # dispatched again after a backoff
        elif failure.kind in INFRASTRUCTURE_KINDS and task.takeovers < env.max_takeovers:
            task.takeovers += 1
            task.error = failure
            t.enqueue(task)
        else:
            t.fail_or_retry(task, failure)
    t.progress()
    if claim_next:
        t.claim_successor()
    return t.plan


def _wait_for_pool(t: Transition, task: TaskRecord, failure: TaskError, env: EngineEnv) -> bool:
    """No pool service could be reached: dispatch the same attempt again after a backoff (0.5 s
    doubling to 10 s), for up to ``env.pool_grace_s`` since the first miss; False once it has passed."""
    since = task.unavailable_since if task.unavailable_since is not None else env.now
    if env.now - since >= env.pool_grace_s:
        return False
    task.unavailable_since = since
    task.unavailable_retries += 1
    task.error = failure
    delay_s = min(POOL_BACKOFF_FIRST_S * 2 ** (task.unavailable_retries - 1), POOL_BACKOFF_MAX_S)
    t.enqueue(task, run_at=env.now + delay_s)
    return True


def _state_changes(snap: Snapshot, ops: list[StateOp], max_value_bytes: int) -> dict[str, Any]:
    changes = apply_state_ops(snap.state, ops, max_value_bytes)
    for key, value in changes.items():
        snap.state[key] = value
    return changes


def lost(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str) -> Plan:
    """The lease of a running task lapsed (its worker died): hand the same attempt to another worker."""
    return _hand_over(snap, env, step_id, index, token, expected=TaskStatus.RUNNING, how="taken_over")


def unclaimed(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str) -> Plan:
    """A queued task was not claimed in time although its job is no longer waiting in the queue: the
    worker that took the job died before claiming it (or the job was lost). Dispatch the same attempt
    again under a new token; the old job, should it ever run, is stale. A task claimed meanwhile, or
    finished, gives a plan that only forgets the old entry.
    """
    return _hand_over(snap, env, step_id, index, token, expected=TaskStatus.QUEUED, how="requeued")


def _hand_over(
    snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str, *, expected: TaskStatus, how: str
) -> Plan:
    """The same attempt again under a new token, when the task is still ``expected`` (running: its
    lease entry goes; queued: its queued entry goes); else a plan that only forgets the entry."""
    t = Transition(snap, env)
    member = lease_member(snap.wf_id, step_id, index, token)
    (t.plan.lease_remove if expected == TaskStatus.RUNNING else t.plan.queued_remove).append(member)
    task = _find_task(t, step_id, index, token)
    if task is None or task.status != expected or snap.status != WorkflowStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.take_over(task, how)
    t.progress()
    return t.plan


def cancel(snap: Snapshot, env: EngineEnv, reason: str = "cancelled by request") -> Plan:
    t = Transition(snap, env)
    t.cancel(reason)
    return t.plan


def deadline(snap: Snapshot, env: EngineEnv) -> Plan:
    t = Transition(snap, env)
    t.check_deadline()
    return t.plan
