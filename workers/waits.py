"""The worker's side of durable waits (ADR 012): the one arq function every wait job runs.

Jobs are short (a read and one engine commit) and hold nothing while a run waits. Each names its
wait's token, so running one twice — arq re-runs a job whose worker died — decides nothing twice:
the second finds a finished step or another token. Kinds:

``timer``        a sleep's due time or a wait's timeout passed (:func:`flowcore.waitengine.timer`)
``check``        a wait_for_event step began: the recent events of its type may already hold its event
``event``        a published event matched a waiting step (queued by :func:`flowcore.waitstore.publish`)
``child_start``  create and start a workflow step's child run (once: its id comes from the wait)
``child_done``   a child run finished: its parent's step takes its outcome
``child_cancel`` the parent ended: the child is cancelled
"""

from __future__ import annotations

import logging
from typing import Any

from flowcore import engine, waitengine, waitrules, waitstore
from flowcore.errors import Conflict, NotFound
from flowcore.plan import EngineEnv, Plan
from flowcore.records import Snapshot, StepRecord
from workers.runner import TaskRunner

log = logging.getLogger(__name__)


async def _step(runner: TaskRunner, wf_id: str, step_id: str) -> StepRecord | None:
    raw = await runner.redis.hget(runner.keys.steps(wf_id), step_id)
    return None if raw is None else StepRecord.model_validate_json(raw)


async def _check(runner: TaskRunner, wf_id: str, step_id: str, token: str) -> str:
    rec = await _step(runner, wf_id, step_id)
    if rec is None or rec.wait is None or rec.wait.get("token") != token or rec.status.finished:
        return "stale"
    wait = rec.wait
    events = await waitstore.recent_events(runner.redis, runner.keys, str(wait["event_type"]), float(wait["since"]))
    event = waitrules.first_match(wait.get("filter") or {}, float(wait["since"]), events)
    if event is None:
        return "waiting"
    await runner.transact(wf_id, lambda s, e: waitengine.deliver(s, e, step_id, token, event))
    return "delivered"


async def _child_start(runner: TaskRunner, wf_id: str, step_id: str, token: str) -> str:
    parent = await runner.store.load(wf_id)
    try:
        child_id = await waitstore.start_child(runner.store, parent, step_id, token)
    except (NotFound, waitstore.ChildRefused) as exc:  # the step fails (its retry policy may try again)
        rec = parent.steps.get(step_id)
        child = str(rec.wait.get("child_id")) if rec is not None and rec.wait else ""
        message = f"template: {exc.message}" if isinstance(exc, NotFound) else str(exc)

        def failed(s: Snapshot, e: EngineEnv) -> Plan:
            return waitengine.child_finished(s, e, step_id, token, child_id=child, status="failed", outputs={},
                                             error=message)

        await runner.transact(wf_id, failed)
        return "refused"
    return "stale" if child_id is None else "started"


async def _child_done(runner: TaskRunner, wf_id: str, step_id: str, token: str, child_id: str) -> str:
    child = await runner.store.load(child_id)
    status, outputs, error = waitstore.child_outcome(child)

    def done(s: Snapshot, e: EngineEnv) -> Plan:
        return waitengine.child_finished(s, e, step_id, token, child_id=child_id, status=status, outputs=outputs,
                                         error=error)

    await runner.transact(wf_id, done)
    return "done"


async def _child_cancel(runner: TaskRunner, child_id: str, reason: str) -> str:
    try:
        await runner.store.transact(child_id, lambda s: engine.cancel(s, runner.env(), reason))
    except Conflict:
        return "finished already"
    return "cancelled"


async def wait_wake(
    ctx: dict[str, Any], kind: str, workflow_id: str, step_id: str, token: str, data: Any = None
) -> str:
    runner: TaskRunner = ctx["runner"]
    try:
        if kind == "timer":
            await runner.transact(workflow_id, lambda s, e: waitengine.timer(s, e, step_id, token))
            return "timer"
        if kind == "check":
            return await _check(runner, workflow_id, step_id, token)
        if kind == "event":
            await runner.transact(workflow_id, lambda s, e: waitengine.deliver(s, e, step_id, token, data))
            return "event"
        if kind == "child_start":
            return await _child_start(runner, workflow_id, step_id, token)
        if kind == "child_done":
            return await _child_done(runner, workflow_id, step_id, token, str(data["child_id"]))
        if kind == "child_cancel":
            return await _child_cancel(runner, str(data["child_id"]), str(data.get("reason", "parent ended")))
    except NotFound:
        log.info("wait job %s of %s: the workflow is gone", kind, workflow_id)
        return "gone"
    log.warning("unknown wait job kind %r", kind)
    return "unknown"
