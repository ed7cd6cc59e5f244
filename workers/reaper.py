"""Takes over tasks whose worker died.

A running task's lease lives in the ``{p}:leases`` sorted set, scored by its expiry and renewed by
the worker running it. Every worker runs this loop: a lapsed lease means its worker is gone, and
the engine's :func:`~flowcore.engine.lost` hands the same attempt to a fresh job. The engine's
token check makes concurrent reapers harmless: only one takeover commits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from flowcore import engine
from flowcore.engine import EngineEnv, Plan
from flowcore.keyspace import parse_lease_member
from flowcore.records import Snapshot
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
        plan = await runner.transact(wf_id, functools.partial(_lost, step_id=step_id, index=index, token=token))
        if plan is None:
            await runner.redis.zrem(runner.keys.leases, member)
        elif plan.dispatch or plan.dirty_tasks:
            taken += 1
            log.warning("took over %s/%s[%d]: its worker stopped renewing the lease", wf_id, step_id, index)
    return taken


async def reap_forever(runner: TaskRunner, interval_s: float) -> None:
    while True:
        try:
            await reap_once(runner)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep reaping whatever one pass met
            log.exception("reaper pass failed")
        await asyncio.sleep(interval_s)
