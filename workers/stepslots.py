"""A worker's side of step-level concurrency keys (ADR 019): claim under a key, park, release.

:func:`claim` claims a task as :func:`flowcore.engine.claim` does; when the task's step has a
concurrency key, the claim asks for a slot first (:class:`~flowcore.stepkeys.SlotNeeded`): the slot
is taken in Redis and the claim made again holding it, or, with the key full, the task is parked
(it waits without a job and without this worker) and the job ends. :func:`release` lets the slot go
once the attempt's result is committed. A worker killed in between leaves a hold whose attempt is
over: the flow-control sweep releases it (:meth:`flowcore.stepkey_store.StepKeys.sweep_once`).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from flowcore import engine, stepkey_engine
from flowcore.engine import EngineEnv, Plan
from flowcore.errors import ServiceUnavailable
from flowcore.records import Snapshot
from flowcore.stepkey_store import Held, StepKeys
from flowcore.stepkeys import SlotNeeded, Verdict

if TYPE_CHECKING:
    from workers.runner import TaskRunner

log = logging.getLogger(__name__)

MAX_KEY_CHANGES = 3  # a key read from state may change between two claims; give up after this


def _claim(snap: Snapshot, env: EngineEnv, *, step_id: str, index: int, token: str, held_key: str | None) -> Plan:
    return engine.claim(snap, env, step_id, index, token, held_key=held_key)


def _park(snap: Snapshot, env: EngineEnv, *, step_id: str, index: int, token: str, reason: str) -> Plan:
    return stepkey_engine.park(snap, env, step_id, index, token, reason)


async def claim(
    runner: TaskRunner, slots: StepKeys, wf_id: str, step_id: str, index: int, token: str
) -> tuple[Plan | None, Held | None]:
    """Claim the task; with a concurrency key, holding a slot of it (returned) or parked (no plan)."""
    held: Held | None = None
    for _ in range(MAX_KEY_CHANGES):
        held_key = held.key if held is not None else None
        try:
            plan = await runner.transact(
                wf_id, functools.partial(_claim, step_id=step_id, index=index, token=token, held_key=held_key),
                (step_id, index),
            )
        except SlotNeeded as need:
            if held is not None:
                await release(slots, held)
                held = None
            decision = await slots.acquire(need, token)
            if decision.verdict == Verdict.WAIT:
                await runner.transact(
                    wf_id, functools.partial(_park, step_id=step_id, index=index, token=token, reason=decision.reason),
                    (step_id, index),
                )
                return None, None
            held = Held(need.key, need.holder, token)
            continue
        if held is not None and (plan is None or plan.request is None):
            await release(slots, held)  # stale: cancelled, finished or claimed by another job meanwhile
            held = None
        return plan, held
    if held is not None:
        await release(slots, held)
    log.warning("task %s/%s[%d]: its concurrency key kept changing; left for its next job", wf_id, step_id, index)
    return None, None


async def release(slots: StepKeys, held: Held) -> None:
    """Free the slot of an attempt that ended; a failure is left to the sweep (the hold outlives its task)."""
    try:
        await slots.release(held)
    except ServiceUnavailable as exc:
        log.warning("release of concurrency key %s failed (%s); the sweep will do it", held.key, exc)
