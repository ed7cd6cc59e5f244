"""Durable waits inside engine transitions (ADR 012): how a wait step begins, ends and is released.

``sleep``, ``wait_for_event``, ``approval`` and ``workflow`` steps are control steps (ADR 003): no
container and no worker while they wait. When one begins, the transition marks it running with a
``wait`` record (kind, a fresh token, due times, the resolved filter, the child's id) and plans what
wakes it: a deferred timer job, a waiter entry for its event type plus an immediate check of the
recent events of that type, or the job that starts the child run. Every wake-up names the wait's
token, so a late or duplicate one (a timer after the event came, a second event, a job run twice
after a worker died) finds another token or a finished step and changes nothing.

The entry points that end a wait are in :mod:`flowcore.waitengine`; this module holds the hooks the
transition calls (:func:`begin`, :func:`release_all`) and the shared :func:`finish`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flowcore import paths, waitrules
from flowcore.models import ApprovalStep, SleepStep, StepStatus, WaitForEventStep, WorkflowStep
from flowcore.plan import WaitJob
from flowcore.records import StepRecord

if TYPE_CHECKING:
    from flowcore.transition import Transition

WaitStepModel = SleepStep | WaitForEventStep | ApprovalStep | WorkflowStep


def waiter_member(wf_id: str, step_id: str, token: str) -> str:
    return f"{wf_id}|{step_id}|{token}"


def parse_waiter_member(member: str) -> tuple[str, str, str]:
    wf_id, step_id, token = member.split("|")
    return wf_id, step_id, token


def _timer(t: Transition, rec: StepRecord, due_at: float) -> None:
    wait = rec.wait or {}
    job = WaitJob("timer", t.snap.wf_id, rec.id, str(wait["token"]), run_at=due_at)
    wait["timer_job"] = job.job_id
    t.plan.wait_jobs.append(job)


def begin(t: Transition, rec: StepRecord, step: WaitStepModel, view: dict[str, Any]) -> None:
    """The step becomes running and parked; what will wake it is planned in the same commit."""
    now, wf_id = t.env.now, t.snap.wf_id
    token = t.env.new_token()
    wait: dict[str, Any] = {"kind": step.type, "token": token, "began_at": now}
    timeout_at = waitrules.timeout_due_at(now, step.timeout_s)
    if timeout_at is not None:
        wait["timeout_at"] = timeout_at
    if isinstance(step, WaitForEventStep):
        try:
            flt = waitrules.resolve_filter(step.filter_, view)
        except paths.PathMissing as exc:
            t.touch_step(rec, StepStatus.RUNNING)
            t.step_failed(rec, f"wait filter: {exc.message}")
            return
        wait.update(event_type=step.event_type, filter=flt, since=t.snap.created_at)
    elif isinstance(step, WorkflowStep):
        try:
            child_input = paths.resolve_templates(step.input, view)
        except paths.PathMissing as exc:
            t.touch_step(rec, StepStatus.RUNNING)
            t.step_failed(rec, f"step input: {exc.message}")
            return
        wait.update(template=step.workflow, input=child_input, attempt=1,
                    child_id=waitrules.child_id_for(wf_id, step.id, token))
    elif isinstance(step, ApprovalStep):
        wait["message"] = step.message
    rec.wait = wait
    t.touch_step(rec, StepStatus.RUNNING)
    if isinstance(step, SleepStep):
        due_at = waitrules.sleep_due_at(now, step.duration_s, step.until)
        wait["due_at"] = due_at
        _timer(t, rec, due_at)
    elif timeout_at is not None:
        _timer(t, rec, timeout_at)
    if isinstance(step, WaitForEventStep):
        member = waiter_member(wf_id, step.id, token)
        entry = json.dumps({"filter": wait["filter"], "since": wait["since"]})
        t.plan.waiters_add[member] = (step.event_type, entry)
        t.plan.wait_jobs.append(WaitJob("check", wf_id, step.id, token))
    elif isinstance(step, WorkflowStep):
        t.plan.wait_jobs.append(WaitJob("child_start", wf_id, step.id, token))
    t.event("wait", step_id=step.id, wait=step.type, due_at=wait.get("due_at"), timeout_at=timeout_at,
            child_id=wait.get("child_id"))


def waiting(rec: StepRecord, token: str | None = None) -> bool:
    """Whether ``rec`` is a wait still in progress (under ``token``, when given)."""
    if rec.status != StepStatus.RUNNING or rec.wait is None:
        return False
    return token is None or rec.wait.get("token") == token


def release(t: Transition, rec: StepRecord, *, cancel_child: str | None = None) -> None:
    """What kept the wait parked goes: its waiter entry and its timer (the job deleted with the commit).
    ``cancel_child``: the child run is cancelled too, with this reason."""
    wait = rec.wait
    if wait is None:
        return
    token = str(wait.get("token"))
    if wait.get("kind") == "wait_for_event":
        member = waiter_member(t.snap.wf_id, rec.id, token)
        t.plan.waiters_remove.append((str(wait["event_type"]), member, wait.get("filter") or {}))
    if wait.get("timer_job"):
        t.plan.wait_drop_jobs.append(str(wait["timer_job"]))
    if cancel_child is not None and wait.get("kind") == "workflow" and wait.get("child_id"):
        t.plan.wait_jobs.append(
            WaitJob("child_cancel", t.snap.wf_id, rec.id, token, data={"child_id": wait["child_id"], "reason": cancel_child})
        )
    wait["ended_at"] = t.env.now


def release_all(t: Transition, reason: str) -> None:
    """The workflow is cancelled or failed: every wait in progress is released, children cancelled."""
    for rec in t.snap.steps.values():
        if waiting(rec):
            release(t, rec, cancel_child=f"parent {t.snap.wf_id} ended: {reason}")


def finish(t: Transition, rec: StepRecord, outcome: waitrules.Outcome) -> None:
    """End a wait with ``outcome`` and let the workflow move on."""
    release(t, rec)
    rec.output = outcome.output
    if outcome.ok:
        t.touch_step(rec, StepStatus.SUCCEEDED)
    else:
        t.step_failed(rec, outcome.error or "wait failed")
