"""One transition of one workflow: the decisions :mod:`flowcore.engine`'s entry points are made of.

:class:`Transition` mutates the snapshot it is given and records every change in its
:class:`~flowcore.plan.Plan`: readiness, fan-out, step outcomes, retries, takeovers, cancels. It reads
task records through :meth:`Transition.task_at` / :meth:`Transition.tasks_of`, which ask for the
ones a partial snapshot lacks (:class:`~flowcore.plan.NeedReads`), and counts queued or running
tasks from the step counters (ADR 010). No I/O happens here.
"""

from __future__ import annotations

import math
from typing import Any

from flowcore import conditions, paths, retry, waitsteps
from flowcore.defcache import shape_of
from flowcore.errors import Conflict
from flowcore.keyspace import lease_member
from flowcore.models import (
    WAIT_STEP_TYPES,
    BranchStep,
    DecisionStep,
    FailureStrategy,
    MapStep,
    ParallelStep,
    StepStatus,
    WorkflowStatus,
)
from flowcore.plan import Dispatch, EngineEnv, NeedReads, Plan
from flowcore.pool_api import ErrorKind, TaskError
from flowcore.records import AttemptSummary, Snapshot, StepRecord, TaskRecord, TaskStatus
from flowcore.taskinput import build_view, task_request


class Transition:
    def __init__(self, snap: Snapshot, env: EngineEnv) -> None:
        self.snap = snap
        self.env = env
        self.defn = snap.definition
        self.plan = Plan(snap=snap, old_status=snap.status)
        shape = snap.shape or shape_of(self.defn)
        self.deps = shape.deps
        self.targets = shape.targets
        self.order = shape.order

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

    def task_at(self, step_id: str, index: int) -> TaskRecord | None:
        key = f"{step_id}:{index}"
        if self.snap.loaded is not None and key not in self.snap.loaded:
            raise NeedReads(tasks=[key])
        return self.snap.tasks.get(key)

    def tasks_of(self, step_id: str) -> list[TaskRecord]:
        """Every task record of a step (read on demand: only when a step finishes or is cancelled)."""
        keys = [f"{step_id}:{i}" for i in range(self.step_rec(step_id).dispatched)]
        loaded = self.snap.loaded
        if loaded is not None:
            missing = [k for k in keys if k not in loaded]
            if missing:
                raise NeedReads(tasks=missing)
        return [self.snap.tasks[k] for k in keys if k in self.snap.tasks]

    def active_count(self, rec: StepRecord) -> int:
        """Queued or running tasks of a step, from its counters: only a running step has any."""
        if rec.status != StepStatus.RUNNING:
            return 0
        return rec.dispatched - rec.succeeded - rec.failed

    def active_tasks(self, step_id: str | None = None) -> list[TaskRecord]:
        ids = [step_id] if step_id is not None else list(self.snap.steps)
        found: list[TaskRecord] = []
        for sid in ids:
            rec = self.step_rec(sid)
            if self.active_count(rec) > 0:
                found.extend(t for t in self.tasks_of(sid) if t.status.active)
        return found

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

    def run(self, task: TaskRecord) -> None:
        """The task becomes running under a lease (claimed)."""
        task.status = TaskStatus.RUNNING
        task.started_at = self.env.now
        self.touch_task(task)
        self.plan.lease_add[self.lease(task)] = (self.env.now + self.env.lease_ttl_s) * 1000
        self.event("task", step_id=task.step_id, index=task.index, status="running", attempt=task.attempt)

    def claim_successor(self) -> None:
        """Claim one task this transition dispatched, runnable now, for the committing worker to run
        next: it gets no arq job and no ``{p}:queued`` entry, only its lease (which is what a takeover
        needs should that worker die)."""
        if self.snap.status != WorkflowStatus.RUNNING:
            return
        for d in self.plan.dispatch:
            if d.run_at is not None:
                continue
            key = f"{d.step_id}:{d.index}"
            task = self.snap.tasks[key]
            step = self.defn.step(d.step_id)
            if getattr(step, "concurrency", None) is not None:
                continue  # its claim needs a slot of its key first (ADR 019): left to its job
            if isinstance(step, MapStep) and self.step_rec(d.step_id).items is None and key not in self.snap.items:
                raise NeedReads(items=[key])
            try:
                self.plan.request = task_request(self.snap, task, self.deps[d.step_id])
            except paths.PathMissing:
                continue  # left to its job: the claim fails it as an input error
            self.plan.dispatch.remove(d)
            del self.plan.queued_add[self.lease(task)]
            self.plan.claimed = d
            self.run(task)
            return

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
        waitsteps.release_all(self, f"workflow failed: {error}")
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
        waitsteps.release_all(self, reason)
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
        if isinstance(step, WAIT_STEP_TYPES):  # durable waits: parked, no container (ADR 012)
            waitsteps.begin(self, rec, step, view)
            return
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
            if len(items) > self.env.max_map_items:
                self.step_failed(
                    rec, f"map source {step.items!r} has {len(items)} items; the limit is {self.env.max_map_items}:"
                    " map over batches of items instead",
                )
                return
            rec.items = items
            self.plan.new_items[rec.id] = items
            rec.total = len(items)
        elif isinstance(step, ParallelStep):
            rec.total = step.replicas if step.replicas is not None else len(step.inputs or [])
        else:
            rec.total = 1
        if rec.total == 0:
            rec.output = []
            self.touch_step(rec, StepStatus.SUCCEEDED)

    def dispatch_waiting(self) -> None:
        free = self.defn.config.max_parallel - sum(self.active_count(r) for r in self.snap.steps.values())
        for step_id in self.order:
            if free <= 0:
                return
            rec = self.step_rec(step_id)
            if rec.status != StepStatus.RUNNING or rec.dispatched >= rec.total:
                continue
            step = self.defn.step(step_id)
            limit = getattr(step, "max_concurrency", None) or rec.total
            step_free = limit - self.active_count(rec)
            while free > 0 and step_free > 0 and rec.dispatched < rec.total:
                task = TaskRecord(step_id=step_id, index=rec.dispatched)
                self.snap.tasks[task.key] = task
                if self.snap.loaded is not None:
                    self.snap.loaded.add(task.key)
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
            outputs = self.tasks_of(rec.id)
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
