"""The engine's entry points that end or advance durable waits (ADR 012); pure, like :mod:`flowcore.engine`.

Each takes a snapshot and an :class:`~flowcore.plan.EngineEnv` and returns a plan for the store to
commit: :func:`timer` (a due time passed: a sleep ends, a wait times out), :func:`deliver` (an event for
a ``wait_for_event`` step), :func:`decide` (an approval), :func:`child_finished` (a ``workflow`` step's
child ended). A wake-up that names another token, or a step no longer waiting, gives an empty plan.
"""

from __future__ import annotations

from typing import Any

from flowcore import retry, waitrules
from flowcore.errors import Conflict, NotFound
from flowcore.models import ApprovalStep, WaitForEventStep, WorkflowStatus, WorkflowStep
from flowcore.plan import EngineEnv, Plan, WaitJob
from flowcore.records import Snapshot, StepRecord
from flowcore.transition import Transition
from flowcore.waitsteps import finish, release, waiting


def _waiting_step(t: Transition, step_id: str, token: str) -> StepRecord | None:
    if t.snap.status != WorkflowStatus.RUNNING:
        return None
    rec = t.snap.steps.get(step_id)
    if rec is None or not waiting(rec, token):
        return None
    return rec


def timer(snap: Snapshot, env: EngineEnv, step_id: str, token: str) -> Plan:
    """A wait's timer fired: a sleep that is due ends; a wait whose timeout passed ends by its rule."""
    t = Transition(snap, env)
    if t.check_deadline():
        return t.plan
    rec = _waiting_step(t, step_id, token)
    if rec is None or rec.wait is None:
        t.plan.note = "stale"
        return t.plan
    wait, step, now = rec.wait, t.defn.step(step_id), env.now
    if wait["kind"] == "sleep":
        due_at = float(wait["due_at"])
        if not waitrules.is_due(now, due_at):  # fired early (another machine's clock): wait again
            rearms = int(wait.get("rearms", 0)) + 1  # another job id: this one is still running
            job = WaitJob("timer", snap.wf_id, step_id, token, run_at=max(due_at, now) + 0.001 * rearms)
            wait.update(rearms=rearms, timer_job=job.job_id)
            t.plan.wait_jobs.append(job)
            t.touch_step(rec)
            return t.plan
        finish(t, rec, waitrules.Outcome(ok=True, output={"slept_until": due_at, "woke_at": now}))
    else:
        timeout_at = wait.get("timeout_at")
        if not waitrules.is_due(now, timeout_at):
            t.plan.note = "early"
            return t.plan
        if isinstance(step, WaitForEventStep):
            outcome = waitrules.event_timeout(step.on_timeout, step.default_output, step.timeout_s)
        elif isinstance(step, ApprovalStep):
            outcome = waitrules.approval_timeout(step.on_timeout, step.on_reject, now, step.timeout_s)
        else:
            outcome = waitrules.Outcome(
                ok=False, output={"workflow_id": wait.get("child_id"), "timed_out": True},
                error=f"child workflow did not finish within {step.timeout_s or 0:g}s",
            )
            release(t, rec, cancel_child=f"step {step_id!r} of {snap.wf_id} timed out")
        finish(t, rec, outcome)
    t.progress()
    return t.plan


def deliver(snap: Snapshot, env: EngineEnv, step_id: str, token: str, event: dict[str, Any]) -> Plan:
    """An event (``{"id", "payload", "ts"}``) for a waiting ``wait_for_event`` step: it ends the wait
    when it matches the wait's resolved filter and was published since the workflow was created."""
    t = Transition(snap, env)
    rec = _waiting_step(t, step_id, token)
    if rec is None or rec.wait is None or rec.wait.get("kind") != "wait_for_event":
        t.plan.note = "stale"
        return t.plan
    if waitrules.first_match(rec.wait.get("filter") or {}, float(rec.wait.get("since", 0)), [event]) is None:
        t.plan.note = "no match"
        return t.plan
    finish(t, rec, waitrules.Outcome(ok=True, output=waitrules.event_output(event)))
    t.progress()
    return t.plan


def decide(
    snap: Snapshot, env: EngineEnv, step_id: str, decision: waitrules.Decision, *, by: str, comment: str | None
) -> Plan:
    """A person's decision on an approval step. NotFound: no such step; Conflict: not an approval
    step, or not waiting for a decision (not begun yet, decided already, timed out, workflow over)."""
    t = Transition(snap, env)
    try:
        step = t.defn.step(step_id)
    except KeyError:
        raise NotFound(f"workflow {snap.wf_id!r} has no step {step_id!r}", field="step_id") from None
    if not isinstance(step, ApprovalStep):
        raise Conflict(f"step {step_id!r} is a {step.type} step, not an approval step", field="step_id")
    rec = snap.steps.get(step_id)
    if snap.status != WorkflowStatus.RUNNING or rec is None or not waiting(rec):
        state = rec.status.value if rec is not None else "pending"
        raise Conflict(f"step {step_id!r} is not waiting for a decision (it is {state})", field="step_id")
    comment = waitrules.check_comment(comment)
    finish(t, rec, waitrules.approval_outcome(decision, step.on_reject, by=by, at=env.now, comment=comment))
    t.progress()
    return t.plan


def child_finished(
    snap: Snapshot,
    env: EngineEnv,
    step_id: str,
    token: str,
    *,
    child_id: str,
    status: str,
    outputs: dict[str, Any],
    error: str | None,
) -> Plan:
    """A ``workflow`` step's child run ended: its output becomes the step's; a failure fails the step,
    or starts a new child after the step's retry delay while its retry policy allows."""
    t = Transition(snap, env)
    rec = _waiting_step(t, step_id, token)
    step = t.defn.step(step_id) if rec is not None else None
    if rec is None or rec.wait is None or not isinstance(step, WorkflowStep) or rec.wait.get("child_id") != child_id:
        t.plan.note = "stale"
        return t.plan
    wait = rec.wait
    if status == WorkflowStatus.COMPLETED.value:
        output = waitrules.child_output(status, outputs, child_id, step.output_step)
        finish(t, rec, waitrules.Outcome(ok=True, output=output))
    else:
        attempt = int(wait.get("attempt", 1))
        message = f"child workflow {child_id} {status}" + (f": {error}" if error else "")
        if retry.should_retry(step.retry, attempt, True):
            release(t, rec)
            new_token = env.new_token()
            delay_s = retry.retry_delay_s(step.retry, attempt, env.rand())
            history = [*wait.get("children", []), {"child_id": child_id, "status": status, "error": error}]
            rec.wait = {
                **wait,
                "token": new_token,
                "attempt": attempt + 1,
                "child_id": waitrules.child_id_for(snap.wf_id, step_id, new_token),
                "children": history,
                "timer_job": None,
                "ended_at": None,
            }
            t.plan.wait_jobs.append(
                WaitJob("child_start", snap.wf_id, step_id, new_token, run_at=env.now + delay_s if delay_s > 0 else None)
            )
            if rec.wait.get("timeout_at") is not None:
                job = WaitJob("timer", snap.wf_id, step_id, new_token, run_at=float(rec.wait["timeout_at"]))
                rec.wait["timer_job"] = job.job_id
                t.plan.wait_jobs.append(job)
            t.event("wait", step_id=step_id, wait="workflow", status="retrying", error=message,
                    child_id=rec.wait["child_id"])
            t.touch_step(rec)
        else:
            finish(t, rec, waitrules.Outcome(ok=False, output={"workflow_id": child_id, "status": status}, error=message))
    t.progress()
    return t.plan
