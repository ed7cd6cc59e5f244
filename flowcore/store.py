"""Workflow records in Redis: create, read, list, delete, and the engine's atomic commits.

:meth:`WorkflowStore.transact` reads one workflow's keys under WATCH, lets a pure engine function
decide, and writes the resulting :class:`~flowcore.engine.Plan` in one MULTI/EXEC — step and task
records, state changes, status indexes, leases, events *and* the arq jobs of the tasks it
dispatches. A crash between deciding and enqueueing is therefore impossible: either the commit and
its jobs exist, or neither does. A concurrent change to the workflow aborts and retries the commit.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from flowcore.engine import Plan
from flowcore.errors import Conflict, NotFound, ServiceUnavailable
from flowcore.keyspace import Keyspace, parse_lease_member
from flowcore.logstream import LOG_STREAM_MAXLEN
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin, Snapshot, StepRecord, TaskRecord
from flowcore.state import encode_changes

RUN_TASK = "run_task"
WORKFLOW_DEADLINE = "workflow_deadline"
EVENTS_MAXLEN = 2000
GLOBAL_EVENTS_MAXLEN = 20000
JOB_EXPIRES_MS = 7 * 86400 * 1000
MAX_COMMIT_RETRIES = 200


def job_serializer(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(raw)
    return result


def task_job_id(wf_id: str, step_id: str, index: int, token: str) -> str:
    return f"task:{wf_id}:{step_id}:{index}:{token}"


def new_workflow_id() -> str:
    # Sortable by creation time, unguessable after it: ms timestamp then random.
    return f"wf-{int(time.time() * 1000):x}-{secrets.token_hex(5)}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WorkflowStore:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys

    # ---- create / read -----------------------------------------------------------------------
    async def create(
        self, definition: WorkflowDefinition, *, origin: Origin | None = None, trace: str | None = None
    ) -> str:
        wf_id = new_workflow_id()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                self.write_new(pipe, wf_id, definition, origin or Origin(), time.time(), trace=trace)
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return wf_id

    def write_new(
        self,
        pipe: Pipeline,
        wf_id: str,
        definition: WorkflowDefinition,
        origin: Origin,
        now: float,
        *,
        trace: str | None = None,
    ) -> None:
        """Queue the commands that create a pending workflow record (inside the caller's MULTI).

        ``trace`` is the traceparent of the workflow's root span (:class:`flowcore.tracing.WorkflowRoot`).
        """
        record = {
            "definition": definition.model_dump_json(by_alias=True),
            "status": WorkflowStatus.PENDING.value,
            "created_at": repr(now),
            "origin": origin.model_dump_json(),
            "version": "0",
        }
        if trace:
            record["trace"] = trace
        score = int(now * 1000)
        pipe.hset(self.keys.workflow(wf_id), mapping=record)
        pipe.zadd(self.keys.all_workflows, {wf_id: score})
        pipe.zadd(self.keys.by_status(WorkflowStatus.PENDING.value), {wf_id: score})
        event = {"type": "workflow", "workflow_id": wf_id, "status": "pending", "ts": now}
        pipe.xadd(self.keys.global_events, {"data": json.dumps(event)}, maxlen=GLOBAL_EVENTS_MAXLEN, approximate=True)

    def _watched(self, wf_id: str) -> list[str]:
        k = self.keys
        return [k.workflow(wf_id), k.steps(wf_id), k.tasks(wf_id), k.state(wf_id)]

    async def _read_record(self, conn: Redis | Pipeline, wf_id: str) -> Snapshot:
        """The workflow record alone: no step, task or state records."""
        raw = await conn.hgetall(self.keys.workflow(wf_id))
        if not raw:
            raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
        rec = {_s(a): _s(b) for a, b in raw.items()}
        definition = WorkflowDefinition.model_validate_json(rec["definition"])
        return Snapshot(
            wf_id=wf_id,
            definition=definition,
            status=WorkflowStatus(rec["status"]),
            input=definition.input,
            created_at=float(rec["created_at"]),
            started_at=float(rec["started_at"]) if rec.get("started_at") else None,
            finished_at=float(rec["finished_at"]) if rec.get("finished_at") else None,
            error=rec.get("error") or None,
            origin=Origin.model_validate_json(rec["origin"]) if rec.get("origin") else Origin(),
            version=int(rec.get("version", "0")),
            trace=rec.get("trace") or None,
        )

    async def _read(self, conn: Redis | Pipeline, wf_id: str) -> Snapshot:
        k = self.keys
        snap = await self._read_record(conn, wf_id)
        steps = await conn.hgetall(k.steps(wf_id))
        tasks = await conn.hgetall(k.tasks(wf_id))
        state = await conn.hgetall(k.state(wf_id))
        snap.steps = {_s(a): StepRecord.model_validate_json(b) for a, b in steps.items()}
        snap.tasks = {_s(a): TaskRecord.model_validate_json(b) for a, b in tasks.items()}
        snap.state = {_s(a): json.loads(b) for a, b in state.items()}
        return snap

    async def load(self, wf_id: str) -> Snapshot:
        try:
            return await self._read(self.redis, wf_id)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

    async def load_summary(self, wf_id: str) -> Snapshot:
        """The record without steps, tasks or state: what a listing shows, in one read."""
        try:
            return await self._read_record(self.redis, wf_id)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

    async def list_ids(self, status: WorkflowStatus | None, offset: int, limit: int) -> tuple[list[str], int]:
        key = self.keys.by_status(status.value) if status else self.keys.all_workflows
        total = await self.redis.zcard(key)
        ids = await self.redis.zrevrange(key, offset, offset + limit - 1)
        return [_s(i) for i in ids], int(total)

    async def delete(self, wf_id: str) -> None:
        snap = await self.load(wf_id)
        if not snap.status.finished and snap.status != WorkflowStatus.PENDING:
            raise Conflict(f"workflow {wf_id!r} is {snap.status.value}; cancel it before deleting it")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self.keys.workflow_keys(wf_id))
            pipe.zrem(self.keys.all_workflows, wf_id)
            for status in WorkflowStatus:
                pipe.zrem(self.keys.by_status(status.value), wf_id)
            await pipe.execute()

    # ---- the engine's commits ----------------------------------------------------------------
    async def transact(self, wf_id: str, decide: Callable[[Snapshot], Plan]) -> Plan:
        """Run ``decide`` on a consistent snapshot and commit its plan atomically (retrying on races)."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_COMMIT_RETRIES):
                    try:
                        await pipe.watch(*self._watched(wf_id))
                        snap = await self._read(pipe, wf_id)
                        plan = decide(snap)
                        if plan.empty:
                            await pipe.reset()
                            return plan
                        pipe.multi()
                        self.write_plan(pipe, plan)
                        await pipe.execute()
                        return plan
                    except WatchError:
                        continue
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        raise ServiceUnavailable(f"workflow {wf_id!r} is too contended to commit")

    def write_plan(self, pipe: Pipeline, plan: Plan) -> None:
        """Queue the commands that commit ``plan`` (inside the caller's MULTI)."""
        snap, k, wf_id = plan.snap, self.keys, plan.snap.wf_id
        now_ms = int(time.time() * 1000)
        record: dict[str, str] = {"version": str(snap.version + 1)}
        if plan.dirty_record:
            record["status"] = snap.status.value
            record["started_at"] = repr(snap.started_at) if snap.started_at else ""
            record["finished_at"] = repr(snap.finished_at) if snap.finished_at else ""
            record["error"] = snap.error or ""
        pipe.hset(k.workflow(wf_id), mapping=record)
        if snap.status != plan.old_status:
            score = int(snap.created_at * 1000)
            pipe.zrem(k.by_status(plan.old_status.value), wf_id)
            pipe.zadd(k.by_status(snap.status.value), {wf_id: score})
        if plan.dirty_steps:
            pipe.hset(k.steps(wf_id), mapping={s: snap.steps[s].model_dump_json() for s in plan.dirty_steps})
        if plan.dirty_tasks:
            pipe.hset(k.tasks(wf_id), mapping={t: snap.tasks[t].model_dump_json() for t in plan.dirty_tasks})
        sets, dels = encode_changes(plan.state_changes)
        if sets:
            pipe.hset(k.state(wf_id), mapping=sets)
        if dels:
            pipe.hdel(k.state(wf_id), *dels)
        if plan.lease_remove:
            pipe.zrem(k.leases, *plan.lease_remove)
        if plan.lease_add:
            pipe.zadd(k.leases, plan.lease_add)
        if plan.queued_remove:
            pipe.zrem(k.queued, *plan.queued_remove)
        if plan.queued_add:
            pipe.zadd(k.queued, plan.queued_add)
        for member in plan.drop_jobs:  # the abandoned job of a task taken over: no worker polls it again
            job_id = task_job_id(*parse_lease_member(member))
            pipe.delete(job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id)
            pipe.zrem(k.queue, job_id)
        for d in plan.dispatch:
            score = int(d.run_at * 1000) if d.run_at else now_ms
            job_kwargs: dict[str, Any] = {"workflow_id": wf_id, "step_id": d.step_id, "index": d.index, "token": d.token}
            if snap.trace:
                job_kwargs["traceparent"] = snap.trace  # the step span's parent (flowcore.tracing)
            self._enqueue(pipe, task_job_id(wf_id, d.step_id, d.index, d.token), RUN_TASK, job_kwargs, score, now_ms)
        if plan.deadline_at is not None:
            score = int(plan.deadline_at * 1000) + 50
            self._enqueue(pipe, f"deadline:{wf_id}", WORKFLOW_DEADLINE, {"workflow_id": wf_id}, score, now_ms)
        for line in plan.log_lines:
            pipe.xadd(k.logs(wf_id), line.to_fields(), maxlen=LOG_STREAM_MAXLEN, approximate=True)
        for event in plan.events:
            data = {"data": json.dumps(event, default=str)}
            pipe.xadd(k.events(wf_id), data, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.xadd(k.global_events, data, maxlen=GLOBAL_EVENTS_MAXLEN, approximate=True)

    def _enqueue(
        self, pipe: Pipeline, job_id: str, function: str, kwargs: dict[str, Any], score: int, now_ms: int
    ) -> None:
        payload = serialize_job(function, (), kwargs, None, now_ms, serializer=job_serializer)
        pipe.psetex(job_key_prefix + job_id, max(score - now_ms, 0) + JOB_EXPIRES_MS, payload)
        pipe.zadd(self.keys.queue, {job_id: score})
