"""The Redis commands of a plan's durable waits (ADR 012), committed with the rest of the plan.

A wait's timer is an arq job deferred to its due time: arq's queue is a sorted set scored by time, so
parking costs one ``ZADD`` and a wake one pop, O(log n); it lives in Redis, so it survives the restart
of every process and runs on whichever worker is there when it falls due (idle workers already wake
for the earliest deferred job, :mod:`workers.wakeup`). Event checks, event deliveries and child runs
are jobs too, enqueued in the same commit as the decision that needs them (ADR 001).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

from flowcore import waitindex
from flowcore.keyspace import Keyspace
from flowcore.plan import Plan, WaitJob
from flowcore.waitrules import EVENT_LOG_AGE_S

WAIT_JOB = "wait_wake"  # the worker function every wait job runs (workers.waits)

Command = tuple[Any, ...]
Enqueue = Callable[[Keyspace, str, str, dict[str, Any], int, int], list[Command]]


def job_kwargs(job: WaitJob) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "kind": job.kind,
        "workflow_id": job.workflow_id,
        "step_id": job.step_id,
        "token": job.token,
    }
    if job.data is not None:
        kwargs["data"] = job.data
    return kwargs


def _file(keys: Keyspace, event_type: str, member: str, flt: dict[str, Any]) -> list[Command]:
    """File a waiter where publishing finds it (:mod:`flowcore.waitindex`): under its pinned field and
    value, or among those every publish of its type reads."""
    entry = waitindex.index_entry(flt)
    if entry is None:
        return [("SADD", keys.waiters_scan(event_type), member)]
    path, canon = entry
    return [("SADD", keys.waiters_index(waitindex.digest(event_type, path, canon)), member),
            ("HINCRBY", keys.waiters_paths(event_type), path, 1)]


def _unfile(keys: Keyspace, event_type: str, member: str, flt: dict[str, Any]) -> list[Command]:
    entry = waitindex.index_entry(flt)
    if entry is None:
        return [("SREM", keys.waiters_scan(event_type), member)]
    path, canon = entry
    return [("SREM", keys.waiters_index(waitindex.digest(event_type, path, canon)), member),
            ("HINCRBY", keys.waiters_paths(event_type), path, -1)]


def wait_commands(keys: Keyspace, plan: Plan, now_ms: int, enqueue: Enqueue) -> tuple[list[Command], int]:
    """The commands of the plan's waits and the number of jobs they enqueue."""
    cmds: list[Command] = []
    jobs = list(plan.wait_jobs)
    snap = plan.snap
    finished_now = snap.status.finished and not plan.old_status.finished
    if finished_now and snap.origin.parent_id and snap.origin.parent_step and snap.origin.parent_token:
        # A child run finished: its parent's workflow step learns it from a job committed with the finish.
        jobs.append(
            WaitJob("child_done", snap.origin.parent_id, snap.origin.parent_step, snap.origin.parent_token,
                    data={"child_id": snap.wf_id})
        )
    for event_type, member, flt in plan.waiters_remove:
        cmds.append(("HDEL", keys.waiters(event_type), member))
        cmds += _unfile(keys, event_type, member, flt)
    for member, (event_type, value) in plan.waiters_add.items():
        cmds.append(("HSET", keys.waiters(event_type), member, value))
        cmds += _file(keys, event_type, member, json.loads(value).get("filter") or {})
        # A wait that began keeps its type logged for as long as it may wait (a long-lived workflow).
        until_ms = now_ms + int(EVENT_LOG_AGE_S * 1000)
        cmds.append(("ZADD", keys.watched_event_types, "GT", until_ms, event_type))
    for job_id in plan.wait_drop_jobs:
        cmds.append(("DEL", job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id))
        cmds.append(("ZREM", keys.queue, job_id))
    for job in jobs:
        score = int(job.run_at * 1000) if job.run_at else now_ms
        cmds += enqueue(keys, job.job_id, WAIT_JOB, job_kwargs(job), score, now_ms)
    return cmds, len(jobs)
