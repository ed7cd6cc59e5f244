"""A plan as Redis commands, and the server-side script that commits them only on the snapshot they came from.

:func:`plan_commands` turns a :class:`~flowcore.engine.Plan` into the list of commands that commit it:
step and task records, state changes, status indexes, leases, queued entries, the arq jobs of the
tasks it dispatches, events, log lines and a wake-up for idle workers. The same list goes either into
a caller's ``MULTI`` (:func:`queue_commands`, used when a trigger fire creates and starts a workflow in
one transaction) or into :data:`COMMIT_SCRIPT`, which runs it only if the workflow's ``version`` and
the state values the decision read are still what they were (ADR 010). Either way it is atomic: the
commit and its jobs exist together, or neither does (ADR 001).
"""

from __future__ import annotations

import json
import time
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import serialize_job
from redis.asyncio.client import Pipeline

from flowcore import fairness
from flowcore.counters import counter_commands
from flowcore.engine import Plan
from flowcore.keyspace import Keyspace, parse_lease_member
from flowcore.logstream import LOG_STREAM_MAXLEN
from flowcore.records import Snapshot
from flowcore.state import encode_changes
from flowcore.waitcommits import wait_commands

RUN_TASK = "run_task"
WORKFLOW_DEADLINE = "workflow_deadline"
EVENTS_MAXLEN = 2000
GLOBAL_EVENTS_MAXLEN = 20000
JOB_EXPIRES_MS = 7 * 86400 * 1000
WAKE_MAX = 64  # wake-up tokens kept for idle workers; each one makes one worker poll once
PRIORITY_STEP_MS = 1000  # how far ahead one point of priority moves a ready task in the queue
CHUNK = 500  # field/value pairs per HSET: a script unpacks at most a few thousand arguments at once

Command = tuple[Any, ...]

# KEYS[1]: the workflow hash. ARGV: expected version, number of guards, then per guard (key, field,
# expected value or "" for absent, "1" if it must be absent else "0"), then the commands, each as its
# argument count followed by its arguments. Returns 1 when committed, 0 when the snapshot was stale.
COMMIT_SCRIPT = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  version = '0'
end
if version ~= ARGV[1] then return 0 end
local guards = tonumber(ARGV[2])
local i = 3
for _ = 1, guards do
  local current = redis.call('HGET', ARGV[i], ARGV[i + 1])
  if ARGV[i + 3] == '1' then
    if current then return 0 end
  elseif current ~= ARGV[i + 2] then
    return 0
  end
  i = i + 4
end
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""


def job_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(raw)
    return result


def task_job_id(wf_id: str, step_id: str, index: int, token: str) -> str:
    return f"task:{wf_id}:{step_id}:{index}:{token}"


def _hset(key: str, mapping: dict[str, str]) -> list[Command]:
    pairs = list(mapping.items())
    out: list[Command] = []
    for start in range(0, len(pairs), CHUNK):
        flat: list[str] = []
        for field, value in pairs[start : start + CHUNK]:
            flat += [field, value]
        out.append(("HSET", key, *flat))
    return out


def _enqueue(keys: Keyspace, job_id: str, function: str, kwargs: dict[str, Any], score: int, now_ms: int) -> list[Command]:
    payload = serialize_job(function, (), kwargs, None, now_ms, serializer=job_serializer)
    return [
        ("PSETEX", job_key_prefix + job_id, max(score - now_ms, 0) + JOB_EXPIRES_MS, payload),
        ("ZADD", keys.queue, score, job_id),
    ]


def task_head_start_ms(snap: Snapshot) -> int:
    """Priority of queued tasks (ADR 013): a ready task of a run with priority ``p > 0`` enters the queue
    as if enqueued ``p`` seconds earlier, so workers, which take the lowest score first, take it ahead
    of the tasks of lower priorities queued in that time. The order is the queue's own (a sorted set:
    O(log n) per job). A negative priority orders waiting starts only: moving its tasks later would
    make them wait on an idle machine (the queue would hold them as deferred jobs)."""
    priority = (snap.flow or {}).get("priority", snap.definition.config.priority)
    return max(int(priority), 0) * PRIORITY_STEP_MS if isinstance(priority, int) else 0


def plan_commands(keys: Keyspace, plan: Plan) -> list[Command]:
    """The commands that commit ``plan``, in order."""
    snap, k, wf_id = plan.snap, keys, plan.snap.wf_id
    now_ms = int(time.time() * 1000)
    cmds: list[Command] = []
    record: dict[str, str] = {"version": str(snap.version + 1)}
    if plan.dirty_record:
        record["status"] = snap.status.value
        record["started_at"] = repr(snap.started_at) if snap.started_at else ""
        record["finished_at"] = repr(snap.finished_at) if snap.finished_at else ""
        record["error"] = snap.error or ""
    cmds += _hset(k.workflow(wf_id), record)
    if snap.status != plan.old_status:
        score = int(snap.created_at * 1000)
        cmds.append(("ZREM", k.by_status(plan.old_status.value), wf_id))
        cmds.append(("ZADD", k.by_status(snap.status.value), score, wf_id))
    for step_id, items in plan.new_items.items():
        cmds += _hset(k.items(wf_id), {f"{step_id}:{i}": json.dumps(item) for i, item in enumerate(items)})
    if plan.dirty_steps:
        steps = {
            s: snap.steps[s].model_dump_json(exclude={"items"} if s in plan.new_items else None)
            for s in sorted(plan.dirty_steps)
        }
        cmds += _hset(k.steps(wf_id), steps)
    if plan.dirty_tasks:
        cmds += _hset(k.tasks(wf_id), {t: snap.tasks[t].model_dump_json() for t in sorted(plan.dirty_tasks)})
    sets, dels = encode_changes(plan.state_changes)
    if sets:
        cmds += _hset(k.state(wf_id), sets)
    if dels:
        cmds.append(("HDEL", k.state(wf_id), *dels))
    if plan.lease_remove:
        cmds.append(("ZREM", k.leases, *plan.lease_remove))
    for member, expiry in plan.lease_add.items():
        cmds.append(("ZADD", k.leases, expiry, member))
    if plan.queued_remove:
        cmds.append(("ZREM", k.queued, *plan.queued_remove))
    for member, since in plan.queued_add.items():
        cmds.append(("ZADD", k.queued, since, member))
    for member in plan.drop_jobs:  # the abandoned job of a task taken over: no worker polls it again
        job_id = task_job_id(*parse_lease_member(member))
        cmds.append(("DEL", job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id))
        cmds.append(("ZREM", k.queue, job_id))
    jobs = 0
    # Fair shares (ADR 018): a workflow with many tasks in flight queues its new ones behind others'.
    ahead = fairness.ahead_of_each(fairness.in_flight(snap.steps.values()), len(plan.dispatch)) if plan.dispatch else []
    for d, n_ahead in zip(plan.dispatch, ahead, strict=True):
        score = int(d.run_at * 1000) if d.run_at else fairness.queue_score_ms(now_ms, task_head_start_ms(snap), n_ahead)
        job_kwargs: dict[str, Any] = {"workflow_id": wf_id, "step_id": d.step_id, "index": d.index, "token": d.token}
        if snap.trace:
            job_kwargs["traceparent"] = snap.trace  # the step span's parent (flowcore.tracing)
        cmds += _enqueue(k, task_job_id(wf_id, d.step_id, d.index, d.token), RUN_TASK, job_kwargs, score, now_ms)
        jobs += 1
    wait_cmds, wait_jobs = wait_commands(k, plan, now_ms, _enqueue)  # durable waits (ADR 012)
    cmds += wait_cmds
    jobs += wait_jobs
    if plan.deadline_at is not None:
        score = int(plan.deadline_at * 1000) + 50
        cmds += _enqueue(k, f"deadline:{wf_id}", WORKFLOW_DEADLINE, {"workflow_id": wf_id}, score, now_ms)
        jobs += 1
    if jobs:  # idle workers block on this list instead of polling the queue (workers.wakeup)
        cmds.append(("LPUSH", k.wake, *(["1"] * min(jobs, WAKE_MAX))))
        cmds.append(("LTRIM", k.wake, 0, WAKE_MAX - 1))
    for line in plan.log_lines:
        fields = [x for pair in line.to_fields().items() for x in pair]
        cmds.append(("XADD", k.logs(wf_id), "MAXLEN", "~", LOG_STREAM_MAXLEN, "*", *fields))
    for event in plan.events:
        data = json.dumps(event, default=str)
        cmds.append(("XADD", k.events(wf_id), "MAXLEN", "~", EVENTS_MAXLEN, "*", "data", data))
        cmds.append(("XADD", k.global_events, "MAXLEN", "~", GLOBAL_EVENTS_MAXLEN, "*", "data", data))
    # Monotonic metrics (ADR 020): HINCRBYs of what this commit finishes (tasks, steps, the workflow),
    # one per distinct field, and a ZADD NX of the name when the workflow finishes. Same commit, no read.
    cmds += counter_commands(k.metric_counters, k.metric_names, plan, now_ms)
    return cmds


def queue_commands(pipe: Pipeline, cmds: list[Command]) -> None:
    """Queue ``cmds`` on a pipeline (inside the caller's MULTI)."""
    for cmd in cmds:
        pipe.execute_command(*cmd)


def script_args(expected_version: int, guards: list[tuple[str, str, str | None]], cmds: list[Command]) -> list[Any]:
    """ARGV of :data:`COMMIT_SCRIPT`; a guard's expected value None means the field must be absent."""
    args: list[Any] = [str(expected_version), len(guards)]
    for key, field, expected in guards:
        args += [key, field, expected or "", "1" if expected is None else "0"]
    for cmd in cmds:
        args.append(len(cmd))
        args.extend(cmd)
    return args
