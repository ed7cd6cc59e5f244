"""The workflow engine: pure transitions over a :class:`~flowcore.records.Snapshot`.

Every change to a running workflow is one call here — :func:`start`, :func:`claim`,
:func:`complete`, :func:`lost`, :func:`unclaimed`, :func:`cancel`, :func:`deadline` — that
mutates the snapshot it is given and returns a :class:`Plan` of what changed. :mod:`flowcore.store`
reads the snapshot and commits the plan in one Redis transaction, enqueueing exactly the tasks the
plan dispatches (and recording each as queued, awaiting its claim). No
I/O happens here; time, randomness and tokens come in through :class:`EngineEnv`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowcore import conditions, dag, paths, retry
from flowcore.errors import Conflict
from flowcore.keyspace import lease_member
from flowcore.logstream import LogLine
from flowcore.models import (
    BranchStep,
    DecisionStep,
    FailureStrategy,
    MapStep,
    ParallelStep,
    StepStatus,
    WorkflowStatus,
)
from flowcore.pool_api import INFRASTRUCTURE_KINDS, ErrorKind, StateOp, TaskError, TaskRequest, TaskResult
from flowcore.records import AttemptSummary, Snapshot, StepRecord, TaskRecord, TaskStatus
from flowcore.state import apply_state_ops
from flowcore.taskinput import build_view, task_request


@dataclass
class EngineEnv:
    """What the engine may not compute itself: the time, randomness, tokens and limits."""

    now: float = field(default_factory=time.time)
    rand: Callable[[], float] = field(default=lambda: secrets.randbelow(1_000_000) / 1_000_000)
    new_token: Callable[[], str] = field(default=lambda: secrets.token_hex(4))
    lease_ttl_s: float = 5.0
    max_takeovers: int = 5


@dataclass
class Dispatch:
    step_id: str
    index: int
    token: str
    run_at: float | None = None


@dataclass
class Plan:
    """What one transition changed; committed atomically by the store."""

    snap: Snapshot
    old_status: WorkflowStatus
    dirty_steps: set[str] = field(default_factory=set)
    dirty_tasks: set[str] = field(default_factory=set)
    dirty_record: bool = False
    dispatch: list[Dispatch] = field(default_factory=list)
    lease_add: dict[str, float] = field(default_factory=dict)
    lease_remove: list[str] = field(default_factory=list)
    # Queued tasks awaiting their claim (``{p}:queued``, scored by when they became runnable, ms):
    # a worker that dies between taking the job and claiming leaves one here, and a reaper re-dispatches it.
    queued_add: dict[str, float] = field(default_factory=dict)
    queued_remove: list[str] = field(default_factory=list)
    # Lease members of tasks whose arq job was abandoned (taken over): the store deletes those jobs.
    drop_jobs: list[str] = field(default_factory=list)
    state_changes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    cancelled_tasks: list[TaskRecord] = field(default_factory=list)
    deadline_at: float | None = None
    request: TaskRequest | None = None
    log_lines: list[LogLine] = field(default_factory=list)  # for the workflow's log stream
    note: str = ""

    @property
    def empty(self) -> bool:
        return not (
            self.dirty_steps
            or self.dirty_tasks
            or self.dirty_record
            or self.dispatch
            or self.lease_add
            or self.lease_remove
            or self.queued_add
            or self.queued_remove
            or self.drop_jobs
            or self.state_changes
        )


class _Transition:
    def __init__(self, snap: Snapshot, env: EngineEnv) -> None:
        self.snap = snap
        self.env = env
        self.defn = snap.definition
        self.plan = Plan(snap=snap, old_status=snap.status)
        self.deps = dag.effective_deps(self.defn)
        self.targets = dag.control_targets(self.defn)
        self.order = dag.topological_order(self.defn)

    # ---- bookkeeping -------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        self.plan.events.append({"type": kind, "ts": self.env.now, "workflow_id": self.snap.wf_id, **fields})

    def set_status(self, status: WorkflowStatus, error: str | None = None) -> None:
        if self.snap.status == status:
            return
        self.snap.status = status
        if status == WorkflowStatus.RUNNING:
            self.snap.started_at = self.env.now
        if status.finished:
            self.snap.finished_at = self.env.now
        if error is not None:
            self.snap.error = error
        self.plan.dirty_record = True
        self.event("workflow", status=status.value, error=error)

    def step_rec(self, step_id: str) -> StepRecord:
        return self.snap.steps[step_id]

    def touch_step(self, rec: StepRecord, status: StepStatus | None = None, **info: Any) -> None:
        if status is not None and rec.status != status:
            rec.status = status
            if status == StepStatus.RUNNING:
                rec.started_at = self.env.now
            elif status.finished:
                rec.finished_at = self.env.now
            self.event("step", step_id=rec.id, status=status.value, **info)
        self.plan.dirty_steps.add(rec.id)

    def touch_task(self, task: TaskRecord) -> None:
        self.plan.dirty_tasks.add(task.key)

    def lease(self, task: TaskRecord) -> str:
        return lease_member(self.snap.wf_id, task.step_id, task.index, task.token)

    def active_tasks(self, step_id: str | None = None) -> list[TaskRecord]:
        return [
            t
            for t in self.snap.tasks.values()
            if t.status.active and (step_id is None or t.step_id == step_id)
        ]

    def enqueue(self, task: TaskRecord, run_at: float | None = None) -> None:
        task.token = self.env.new_token()
        task.status = TaskStatus.QUEUED
        task.enqueued_at = self.env.now
        task.run_at = run_at
        self.touch_task(task)
        self.plan.dispatch.append(Dispatch(task.step_id, task.index, task.token, run_at))
        self.plan.queued_add[self.lease(task)] = (run_at or self.env.now) * 1000

    def take_over(self, task: TaskRecord, how: str) -> None:
        """Its worker was lost: dispatch the same attempt again under a new token, or fail it as lost."""
        self.plan.drop_jobs.append(self.lease(task))
        task.takeovers += 1
        self.event("task", step_id=task.step_id, index=task.index, status=how, takeovers=task.takeovers)
        if task.takeovers > self.env.max_takeovers:
            message = f"the worker running this task was lost {task.takeovers} times"
            task.error = TaskError(kind=ErrorKind.WORKER_LOST, message=message)
            task.status = TaskStatus.FAILED
            task.finished_at = self.env.now
            self.touch_task(task)
            self.task_finished(task)
        else:
            self.enqueue(task)

    def cancel_task(self, task: TaskRecord, reason: str) -> None:
        if task.status == TaskStatus.RUNNING:
            self.plan.lease_remove.append(self.lease(task))
            self.plan.cancelled_tasks.append(task)
        elif task.status == TaskStatus.QUEUED:
            self.plan.queued_remove.append(self.lease(task))
        task.status = TaskStatus.CANCELLED
        task.finished_at = self.env.now
        task.error = TaskError(kind=ErrorKind.CANCELLED, message=reason)
        self.touch_task(task)

    # ---- workflow level ----------------------------------------------------------------------
    def start(self) -> None:
        if self.snap.status != WorkflowStatus.PENDING:
            raise Conflict(f"workflow {self.snap.wf_id!r} is {self.snap.status.value}, it can start only once")
        for step in self.defn.steps:
            if step.id not in self.snap.steps:
                self.snap.steps[step.id] = StepRecord(id=step.id, type=step.type)
                self.plan.dirty_steps.add(step.id)
        self.set_status(WorkflowStatus.RUNNING)
        if self.defn.config.timeout_s is not None:
            self.plan.deadline_at = self.env.now + self.defn.config.timeout_s
        self.progress()

    def fail_workflow(self, error: str) -> None:
        for task in self.active_tasks():
            self.cancel_task(task, f"workflow failed: {error}")
        for rec in self.snap.steps.values():
            if rec.status == StepStatus.RUNNING:
                self.touch_step(rec, StepStatus.CANCELLED)
                rec.reason = "workflow failed"
            elif rec.status == StepStatus.PENDING:
                rec.skip_cause = "failure"
                rec.reason = "workflow failed"
                self.touch_step(rec, StepStatus.SKIPPED, reason=rec.reason)
        self.set_status(WorkflowStatus.FAILED, error)

    def cancel(self, reason: str) -> None:
        if self.snap.status.finished:
            raise Conflict(f"workflow {self.snap.wf_id!r} is already {self.snap.status.value}")
        for task in self.active_tasks():
            self.cancel_task(task, reason)
        for rec in self.snap.steps.values():
            if not rec.status.finished:
                rec.reason = reason
                rec.skip_cause = "cancel"
                self.touch_step(rec, StepStatus.CANCELLED, reason=reason)
        self.set_status(WorkflowStatus.CANCELLED, reason)

    def check_deadline(self) -> bool:
        timeout_s = self.defn.config.timeout_s
        if (
            self.snap.status == WorkflowStatus.RUNNING
            and timeout_s is not None
            and self.snap.started_at is not None
            and self.env.now >= self.snap.started_at + timeout_s
        ):
            self.fail_workflow(f"workflow timed out after {timeout_s:g}s")
            return True
        return False

    # ---- readiness ---------------------------------------------------------------------------
    def blocked_reason(self, step_id: str) -> tuple[str, str] | bool | None:
        """False: wait. None: ready. (cause, reason): skip it."""
        deps = self.deps[step_id]
        recs = [self.step_rec(d) for d in deps]
        if any(not r.status.finished for r in recs):
            return False
        for r in recs:
            if r.status == StepStatus.FAILED and not self.defn.step(r.id).continue_on_error:
                return ("failure", f"dependency {r.id!r} failed")
            if r.status == StepStatus.CANCELLED:
                return ("failure", f"dependency {r.id!r} was cancelled")
            if r.status == StepStatus.SKIPPED and r.skip_cause == "failure":
                return ("failure", f"dependency {r.id!r} was skipped after a failure")
        controllers = self.targets.get(step_id, frozenset())
        if controllers:
            chosen_by = [c for c in controllers if step_id in (self.step_rec(c).chosen or [])]
            if not chosen_by:
                names = ", ".join(sorted(controllers))
                return ("branch", f"not chosen by {names}")
        if recs and all(r.status == StepStatus.SKIPPED for r in recs):
            return ("branch", "every dependency was skipped")
        return None

    def progress(self) -> None:
        if self.snap.status != WorkflowStatus.RUNNING or self.check_deadline():
            return
        changed = True
        while changed and self.snap.status == WorkflowStatus.RUNNING:
            changed = False
            for step_id in self.order:
                rec = self.step_rec(step_id)
                if rec.status != StepStatus.PENDING:
                    continue
                verdict = self.blocked_reason(step_id)
                if verdict is False:
                    continue
                changed = True
                if isinstance(verdict, tuple):
                    rec.skip_cause, rec.reason = verdict
                    self.touch_step(rec, StepStatus.SKIPPED, reason=rec.reason)
                else:
                    self.begin_step(rec)
        if self.snap.status == WorkflowStatus.RUNNING:
            self.dispatch_waiting()
            self.maybe_finish()

    def begin_step(self, rec: StepRecord) -> None:
        step = self.defn.step(rec.id)
        view = build_view(self.snap)
        if isinstance(step, BranchStep):
            result = conditions.evaluate(step.condition, view)
            rec.chosen = list(step.then if result else step.else_)
            rec.output = {"result": result, "chosen": rec.chosen}
            self.touch_step(rec, StepStatus.RUNNING)
            self.touch_step(rec, StepStatus.SUCCEEDED)
            return
        if isinstance(step, DecisionStep):
            rec.chosen = list(step.default)
            case: int | str = "default"
            for i, c in enumerate(step.cases):
                if conditions.evaluate(c.condition, view):
                    rec.chosen, case = list(c.targets), i
                    break
            rec.output = {"case": case, "chosen": rec.chosen}
            self.touch_step(rec, StepStatus.RUNNING)
            self.touch_step(rec, StepStatus.SUCCEEDED)
            return
        self.touch_step(rec, StepStatus.RUNNING)
        if isinstance(step, MapStep):
            try:
                items = paths.resolve(view, step.items)
            except paths.PathMissing as exc:
                self.step_failed(rec, f"map source {step.items!r} not found: {exc.message}")
                return
            if not isinstance(items, list):
                self.step_failed(rec, f"map source {step.items!r} is not an array (it is {type(items).__name__})")
                return
            rec.items = items
            rec.total = len(items)
        elif isinstance(step, ParallelStep):
            rec.total = step.replicas if step.replicas is not None else len(step.inputs or [])
        else:
            rec.total = 1
        if rec.total == 0:
            rec.output = []
            self.touch_step(rec, StepStatus.SUCCEEDED)

    def dispatch_waiting(self) -> None:
        free = self.defn.config.max_parallel - len(self.active_tasks())
        for step_id in self.order:
            if free <= 0:
                return
            rec = self.step_rec(step_id)
            if rec.status != StepStatus.RUNNING or rec.dispatched >= rec.total:
                continue
            step = self.defn.step(step_id)
            limit = getattr(step, "max_concurrency", None) or rec.total
            step_free = limit - len(self.active_tasks(step_id))
            while free > 0 and step_free > 0 and rec.dispatched < rec.total:
                task = TaskRecord(step_id=step_id, index=rec.dispatched)
                self.snap.tasks[task.key] = task
                self.enqueue(task)
                rec.dispatched += 1
                free -= 1
                step_free -= 1
                self.touch_step(rec)

    def maybe_finish(self) -> None:
        if not all(r.status.finished for r in self.snap.steps.values()):
            return
        failed = [
            r.id
            for r in self.snap.steps.values()
            if r.status == StepStatus.FAILED and not self.defn.step(r.id).continue_on_error
        ]
        if failed:
            self.set_status(WorkflowStatus.FAILED, f"failed steps: {', '.join(failed)}")
        else:
            self.set_status(WorkflowStatus.COMPLETED)

    # ---- step outcomes -----------------------------------------------------------------------
    def step_failed(self, rec: StepRecord, error: str) -> None:
        rec.error = error
        for task in self.active_tasks(rec.id):
            self.cancel_task(task, f"step {rec.id!r} failed")
        self.touch_step(rec, StepStatus.FAILED, error=error)
        step = self.defn.step(rec.id)
        if not step.continue_on_error and self.defn.config.failure_strategy == FailureStrategy.FAIL_FAST:
            self.fail_workflow(f"step {rec.id!r} failed: {error}")

    def tolerated(self, rec: StepRecord) -> int:
        step = self.defn.step(rec.id)
        count = int(getattr(step, "tolerated_failures", 0))
        percent = getattr(step, "tolerated_failure_percent", None)
        if percent is not None:
            count = max(count, math.floor(percent * rec.total / 100))
        return count

    def task_finished(self, task: TaskRecord) -> None:
        rec = self.step_rec(task.step_id)
        if task.status == TaskStatus.SUCCEEDED:
            rec.succeeded += 1
        else:
            rec.failed += 1
            error = task.error.message if task.error else "failed"
            rec.failures.append({"index": task.index, "error": error, "kind": task.error.kind.value if task.error else None})
        self.touch_step(rec)
        if rec.status != StepStatus.RUNNING:
            return
        if rec.failed > self.tolerated(rec):
            first = rec.failures[0]
            prefix = f"{rec.failed} of {rec.total} tasks failed; " if rec.total > 1 else ""
            self.step_failed(rec, f"{prefix}{first['error']}")
            return
        if rec.succeeded + rec.failed == rec.total:
            outputs = [self.snap.tasks[f"{rec.id}:{i}"] for i in range(rec.total)]
            step = self.defn.step(rec.id)
            if isinstance(step, MapStep | ParallelStep):
                rec.output = [t.output if t.status == TaskStatus.SUCCEEDED else None for t in outputs]
            else:
                rec.output = outputs[0].output
            self.touch_step(rec, StepStatus.SUCCEEDED)

    def record_attempt(self, task: TaskRecord) -> None:
        task.history.append(
            AttemptSummary(
                attempt=task.attempt,
                error=task.error,
                exit_code=task.exit_code,
                started_at=task.started_at,
                finished_at=self.env.now,
                container_id=task.container_id,
            )
        )

    def fail_or_retry(self, task: TaskRecord, error: TaskError) -> None:
        task.error = error
        step = self.defn.step(task.step_id)
        if retry.should_retry(step.retry, task.attempt, error.retriable):
            self.record_attempt(task)
            delay_s = retry.retry_delay_s(step.retry, task.attempt, self.env.rand())
            task.attempt += 1
            task.takeovers = 0
            self.event("task", step_id=task.step_id, index=task.index, status="retrying", error=error.message)
            self.enqueue(task, run_at=self.env.now + delay_s if delay_s > 0 else None)
            return
        task.status = TaskStatus.FAILED
        task.finished_at = self.env.now
        self.touch_task(task)
        self.task_finished(task)


def _find_task(snap: Snapshot, step_id: str, index: int, token: str) -> TaskRecord | None:
    task = snap.tasks.get(f"{step_id}:{index}")
    if task is None or task.token != token:
        return None
    return task


def start(snap: Snapshot, env: EngineEnv) -> Plan:
    t = _Transition(snap, env)
    t.start()
    return t.plan


def claim(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str) -> Plan:
    """A worker takes a queued task: it becomes running under a lease; ``plan.request`` says what to run.

    A stale token, a finished workflow or a task already claimed gives an empty plan without request.
    """
    t = _Transition(snap, env)
    task = _find_task(snap, step_id, index, token)
    if task is None or task.status != TaskStatus.QUEUED or snap.status != WorkflowStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.plan.queued_remove.append(t.lease(task))  # claimed: no longer awaiting a claim, whatever comes next
    if t.check_deadline():
        return t.plan
    try:
        request = task_request(snap, task, t.deps[step_id])
    except paths.PathMissing as exc:
        task.started_at = env.now
        t.fail_or_retry(task, TaskError(kind=ErrorKind.INPUT, message=f"step input: {exc.message}"))
        t.progress()
        return t.plan
    task.status = TaskStatus.RUNNING
    task.started_at = env.now
    t.touch_task(task)
    t.plan.lease_add[t.lease(task)] = (env.now + env.lease_ttl_s) * 1000
    t.event("task", step_id=step_id, index=index, status="running", attempt=task.attempt)
    t.plan.request = request
    return t.plan


def complete(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str, result: TaskResult) -> Plan:
    """Apply a task's result exactly once: a duplicate or late result (stale token) changes nothing."""
    t = _Transition(snap, env)
    task = _find_task(snap, step_id, index, token)
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
    t.plan.log_lines = [LogLine(step_id, index, task.attempt, x.stream, x.line, x.ts) for x in result.logs]
    t.touch_task(task)
    if snap.status != WorkflowStatus.RUNNING:
        return t.plan
    error = result.error
    if result.ok:
        try:
            t.plan.state_changes.update(_state_changes(snap, result.state_updates))
        except Exception as exc:  # an invalid update fails the task, it never half-applies
            error = TaskError(kind=ErrorKind.INVALID_OUTPUT, message=f"state update rejected: {exc}")
    if result.ok and error is None:
        task.status = TaskStatus.SUCCEEDED
        task.output = result.output
        task.error = None
        t.event("task", step_id=step_id, index=index, status="succeeded", attempt=task.attempt)
        t.task_finished(task)
    else:
        failure = error or TaskError(kind=ErrorKind.RUNTIME, message="task failed without an error")
        t.event("task", step_id=step_id, index=index, status="failed", error=failure.message)
        if failure.kind in INFRASTRUCTURE_KINDS and task.takeovers < env.max_takeovers:
            task.takeovers += 1
            task.error = failure
            t.enqueue(task)
        else:
            t.fail_or_retry(task, failure)
    t.progress()
    return t.plan


def _state_changes(snap: Snapshot, ops: list[StateOp]) -> dict[str, Any]:
    changes = apply_state_ops(snap.state, ops)
    for key, value in changes.items():
        snap.state[key] = value
    return changes


def lost(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str) -> Plan:
    """The lease of a running task lapsed (its worker died): hand the same attempt to another worker."""
    t = _Transition(snap, env)
    member = lease_member(snap.wf_id, step_id, index, token)
    t.plan.lease_remove.append(member)
    task = _find_task(snap, step_id, index, token)
    if task is None or task.status != TaskStatus.RUNNING or snap.status != WorkflowStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.take_over(task, "taken_over")
    t.progress()
    return t.plan


def unclaimed(snap: Snapshot, env: EngineEnv, step_id: str, index: int, token: str) -> Plan:
    """A queued task was not claimed in time although its job is no longer waiting in the queue: the
    worker that took the job died before claiming it (or the job was lost). Dispatch the same attempt
    again under a new token; the old job, should it ever run, is stale. A task claimed meanwhile, or
    finished, gives a plan that only forgets the old entry.
    """
    t = _Transition(snap, env)
    member = lease_member(snap.wf_id, step_id, index, token)
    t.plan.queued_remove.append(member)
    task = _find_task(snap, step_id, index, token)
    if task is None or task.status != TaskStatus.QUEUED or snap.status != WorkflowStatus.RUNNING:
        t.plan.note = "stale"
        return t.plan
    t.take_over(task, "requeued")
    t.progress()
    return t.plan


def cancel(snap: Snapshot, env: EngineEnv, reason: str = "cancelled by request") -> Plan:
    t = _Transition(snap, env)
    t.cancel(reason)
    return t.plan


def deadline(snap: Snapshot, env: EngineEnv) -> Plan:
    t = _Transition(snap, env)
    t.check_deadline()
    return t.plan
