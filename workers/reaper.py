"""Takes over tasks whose worker died, whenever it died.

A running task's lease lives in the ``{p}:leases`` sorted set, scored by its expiry and renewed by
the worker running it. Every worker runs this loop: a lapsed lease means its worker is gone, and
the engine's :func:`~flowcore.engine.lost` hands the same attempt to a fresh job.

A queued task has no lease yet: it waits in ``{p}:queued``, scored by when it became runnable, until
a worker claims it. If it is still unclaimed ``claim_timeout_s`` later, the reaper looks at its arq
job: still waiting in the queue for a free worker means all is well (it looks again later, less often
the longer the job waits); taken by a worker (arq's in-progress marker) or gone means the worker died
between taking the job and claiming the task, and :func:`~flowcore.engine.unclaimed` dispatches the
same attempt under a new token. Both takeovers delete the abandoned arq job, so crashes leave nothing
that workers keep polling.

The engine's token check makes concurrent reapers harmless: only one takeover commits, and a slow
worker that claims after all finds its token stale.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from arq.constants import in_progress_key_prefix, job_key_prefix

from flowcore import engine
from flowcore.engine import EngineEnv, Plan
from flowcore.keyspace import parse_lease_member
from flowcore.records import Snapshot
from flowcore.store import task_job_id
from workers.resilience import REDIS_DOWN
from workers.runner import TaskRunner

log = logging.getLogger(__name__)

BATCH = 100


def _lost(snap: Snapshot, env: EngineEnv, *, step_id: str, index: int, token: str) -> Plan:
    return engine.lost(snap, env, step_id, index, token)


async def reap_once(runner: TaskRunner) -> int:
    now_ms = time.time() * 1000
    raw = await runner.redis.zrangebyscore(runner.keys.leases, 0, now_ms, start=0, num=BATCH)
    taken = 0
    for item in raw:
        member = item.decode() if isinstance(item, bytes) else str(item)
        try:
            wf_id, step_id, index, token = parse_lease_member(member)
        except ValueError:
            await runner.redis.zrem(runner.keys.leases, member)
            continue
        plan = await runner.transact(
            wf_id, functools.partial(_lost, step_id=step_id, index=index, token=token), (step_id, index)
        )
        if plan is None:
            await runner.redis.zrem(runner.keys.leases, member)
        elif plan.dispatch or plan.dirty_tasks:
            taken += 1
            log.warning("took over %s/%s[%d]: its worker stopped renewing the lease", wf_id, step_id, index)
    return taken


def _unclaimed(snap: Snapshot, env: EngineEnv, *, step_id: str, index: int, token: str) -> Plan:
    return engine.unclaimed(snap, env, step_id, index, token)


async def requeue_unclaimed(runner: TaskRunner, claim_timeout_s: float) -> int:
    """Re-dispatch queued tasks whose job a worker took but never claimed; returns how many."""
    redis, keys = runner.redis, runner.keys
    now_ms = time.time() * 1000
    timeout_ms = claim_timeout_s * 1000
    raw = await redis.zrangebyscore(keys.queued, 0, now_ms - timeout_ms, start=0, num=BATCH, withscores=True)
    requeued = 0
    for item, since_ms in raw:
        member = item.decode() if isinstance(item, bytes) else str(item)
        try:
            wf_id, step_id, index, token = parse_lease_member(member)
        except ValueError:
            await redis.zrem(keys.queued, member)
            continue
        job_id = task_job_id(wf_id, step_id, index, token)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zscore(keys.queue, job_id)
            pipe.exists(job_key_prefix + job_id)
            pipe.exists(in_progress_key_prefix + job_id)
            in_queue, has_job, taken = await pipe.execute()
        if in_queue is not None and has_job and not taken:
            # Waiting for a free worker: fine. Look again after as long as it has waited already,
            # so a long backlog costs a few looks per task, not one per pass. XX: a claim may have
            # removed the entry meanwhile.
            waited_ms = max(now_ms - float(since_ms), timeout_ms)
            await redis.zadd(keys.queued, {member: now_ms + waited_ms - timeout_ms}, xx=True)
            continue
        plan = await runner.transact(
            wf_id, functools.partial(_unclaimed, step_id=step_id, index=index, token=token), (step_id, index)
        )
        if plan is None:
            await redis.zrem(keys.queued, member)
        elif plan.dispatch or plan.dirty_tasks:
            requeued += 1
            log.warning(
                "re-dispatched %s/%s[%d]: runnable for %.1fs, its job left the queue but nobody claimed the task "
                "(a worker died before claiming it)",
                wf_id, step_id, index, (now_ms - float(since_ms)) / 1000,
            )
    return requeued


async def reap_forever(runner: TaskRunner, interval_s: float, claim_timeout_s: float = 5.0) -> None:
    redis_down = False
    while True:
        try:
            await reap_once(runner)
            await requeue_unclaimed(runner, claim_timeout_s)
            redis_down = False
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:  # keep reaping through an outage; say so once
            if not redis_down:
                log.warning("reaper passes skipped while redis is unreachable (%s)", type(exc).__name__)
            redis_down = True
        except Exception:  # keep reaping whatever one pass met
            log.exception("reaper pass failed")
        await asyncio.sleep(interval_s)
