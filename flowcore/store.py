"""Workflow records in Redis: create, read, list, delete, and the engine's atomic commits.

:meth:`WorkflowStore.transact` reads what one transition concerns in one round trip (the record
without its definition, which a per-process cache holds; the step records; the state; the task
records and map items the transition names), lets a pure engine function decide, and commits the
resulting :class:`~flowcore.engine.Plan` with one server-side script (:mod:`flowcore.commits`) that
applies it only if the workflow's ``version`` is still the one read: step and task records, state
changes, status indexes, leases, events *and* the arq jobs of the tasks it dispatches. A crash
between deciding and enqueueing is therefore impossible: either the commit and its jobs exist, or
neither does. A commit that lost a race decides again on fresh data; within one process the
transitions of one workflow take turns, so such races come only from other processes (ADR 010).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from flowcore import waitrules
from flowcore.commits import (
    COMMIT_SCRIPT,
    EVENTS_MAXLEN,
    GLOBAL_EVENTS_MAXLEN,
    JOB_EXPIRES_MS,
    RUN_TASK,
    WORKFLOW_DEADLINE,
    job_deserializer,
    job_serializer,
    plan_commands,
    queue_commands,
    script_args,
    task_job_id,
)
from flowcore.defcache import DefinitionCache, Parsed, digest
from flowcore.engine import NeedReads, Plan
from flowcore.errors import Conflict, NotFound, ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin, Snapshot, StepRecord, TaskRecord

__all__ = [
    "EVENTS_MAXLEN",
    "GLOBAL_EVENTS_MAXLEN",
    "JOB_EXPIRES_MS",
    "RUN_TASK",
    "WORKFLOW_DEADLINE",
    "WorkflowStore",
    "job_deserializer",
    "job_serializer",
    "new_workflow_id",
    "task_job_id",
]

MAX_COMMIT_RETRIES = 200
RECORD_FIELDS = (
    "status", "created_at", "started_at", "finished_at", "error", "origin", "version", "trace", "definition_digest",
    "flow",  # flow control (ADR 013): JSON of why the run waits, its estimated start, its priority
)
DEFINITIONS = DefinitionCache()  # per process: definitions never change after submission


def new_workflow_id() -> str:
    # Sortable by creation time, unguessable after it: ms timestamp then random.
    return f"wf-{int(time.time() * 1000):x}-{secrets.token_hex(5)}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WorkflowStore:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys
        self._commit = redis.register_script(COMMIT_SCRIPT)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.conflicts = 0  # commits that lost a race and decided again (for tests and benchmarks)

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
        status: WorkflowStatus = WorkflowStatus.PENDING,
        flow: dict[str, Any] | None = None,
    ) -> None:
        """Queue the commands that create a pending workflow record (inside the caller's MULTI).

        ``trace`` is the traceparent of the workflow's root span (:class:`flowcore.tracing.WorkflowRoot`).
        ``status`` is ``queued`` for a start awaiting admission (``flow`` says why, ADR 013).
        """
        raw = definition.model_dump_json(by_alias=True)
        record = {
            "definition": raw,
            "definition_digest": digest(raw),
            "status": status.value,
            "created_at": repr(now),
            "origin": origin.model_dump_json(),
            "version": "0",
        }
        if trace:
            record["trace"] = trace
        if flow is not None:
            record["flow"] = json.dumps(flow)
        score = int(now * 1000)
        pipe.hset(self.keys.workflow(wf_id), mapping=record)
        watched = waitrules.watched_types(definition.steps)
        if watched:  # its waits count events from now on: log their types (flowcore.waitstore.publish)
            until_ms = int((now + waitrules.EVENT_LOG_AGE_S) * 1000)
            pipe.zadd(self.keys.watched_event_types, dict.fromkeys(watched, until_ms), gt=True)
        pipe.zadd(self.keys.all_workflows, {wf_id: score})
        pipe.zadd(self.keys.by_status(status.value), {wf_id: score})
        event = {"type": "workflow", "workflow_id": wf_id, "status": status.value, "ts": now}
        pipe.xadd(self.keys.global_events, {"data": json.dumps(event)}, maxlen=GLOBAL_EVENTS_MAXLEN, approximate=True)

    async def _definition(self, wf_id: str, key: str) -> Parsed:
        """The parsed definition, from this process's cache or (once) from the record."""
        cached = DEFINITIONS.get(wf_id, key)
        if cached is not None:
            return cached
        raw = await self.redis.hget(self.keys.workflow(wf_id), "definition")
        if raw is None:
            raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
        return DEFINITIONS.put(wf_id, key, _s(raw))

    async def _snapshot(self, wf_id: str, values: list[Any]) -> Snapshot:
        """A snapshot from the HMGET of :data:`RECORD_FIELDS` (no steps, tasks or state yet)."""
        rec = dict(zip(RECORD_FIELDS, (None if v is None else _s(v) for v in values), strict=True))
        if rec["status"] is None:
            raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
        parsed = await self._definition(wf_id, rec["definition_digest"] or "")
        return Snapshot(
            wf_id=wf_id,
            definition=parsed.definition,
            shape=parsed.shape,
            status=WorkflowStatus(rec["status"]),
            input=parsed.definition.input,
            created_at=float(rec["created_at"] or 0),
            started_at=float(rec["started_at"]) if rec["started_at"] else None,
            finished_at=float(rec["finished_at"]) if rec["finished_at"] else None,
            error=rec["error"] or None,
            origin=Origin.model_validate_json(rec["origin"]) if rec["origin"] else Origin(),
            version=int(rec["version"] or "0"),
            trace=rec["trace"] or None,
            flow=json.loads(rec["flow"]) if rec["flow"] else None,
        )

    async def _read_record(self, conn: Redis | Pipeline, wf_id: str) -> Snapshot:
        """The workflow record alone: no step, task or state records."""
        return await self._snapshot(wf_id, await conn.hmget(self.keys.workflow(wf_id), list(RECORD_FIELDS)))

    async def _read(self, wf_id: str) -> Snapshot:
        """Everything: the record with every step, task and state record (for the API, not for transitions)."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(k.workflow(wf_id), list(RECORD_FIELDS))
            pipe.hgetall(k.steps(wf_id))
            pipe.hgetall(k.tasks(wf_id))
            pipe.hgetall(k.state(wf_id))
            values, steps, tasks, state = await pipe.execute()
        snap = await self._snapshot(wf_id, values)
        snap.steps = {_s(a): StepRecord.model_validate_json(b) for a, b in steps.items()}
        snap.tasks = {_s(a): TaskRecord.model_validate_json(b) for a, b in tasks.items()}
        snap.state = {_s(a): json.loads(b) for a, b in state.items()}
        return snap

    async def _read_for(self, wf_id: str, tasks: set[str], items: set[str]) -> tuple[Snapshot, dict[str, str]]:
        """What one transition reads, in one consistent round trip: the record, the step records, the
        state and the named task records and map items. Returns the snapshot and the raw state."""
        k = self.keys
        task_keys, item_keys = sorted(tasks), sorted(items)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(k.workflow(wf_id), list(RECORD_FIELDS))
            pipe.hgetall(k.steps(wf_id))
            pipe.hgetall(k.state(wf_id))
            if task_keys:
                pipe.hmget(k.tasks(wf_id), task_keys)
            if item_keys:
                pipe.hmget(k.items(wf_id), item_keys)
            results = await pipe.execute()
        snap = await self._snapshot(wf_id, results[0])
        snap.steps = {_s(a): StepRecord.model_validate_json(b) for a, b in results[1].items()}
        raw_state = {_s(a): _s(b) for a, b in results[2].items()}
        snap.state = {a: json.loads(b) for a, b in raw_state.items()}
        rest = results[3:]
        snap.loaded = set(task_keys)
        if task_keys:
            found = rest.pop(0)
            snap.tasks = {key: TaskRecord.model_validate_json(raw) for key, raw in zip(task_keys, found, strict=True) if raw}
        if item_keys:
            found = rest.pop(0)
            snap.items = {key: json.loads(raw) for key, raw in zip(item_keys, found, strict=True) if raw is not None}
        return snap, raw_state

    async def load(self, wf_id: str) -> Snapshot:
        try:
            return await self._read(wf_id)
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
        snap = await self.load_summary(wf_id)
        if not snap.status.finished and snap.status != WorkflowStatus.PENDING:
            raise Conflict(f"workflow {wf_id!r} is {snap.status.value}; cancel it before deleting it")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self.keys.workflow_keys(wf_id))
            pipe.zrem(self.keys.all_workflows, wf_id)
            for status in WorkflowStatus:
                pipe.zrem(self.keys.by_status(status.value), wf_id)
            await pipe.execute()

    # ---- the engine's commits ----------------------------------------------------------------
    @asynccontextmanager
    async def _turn(self, wf_id: str) -> AsyncIterator[None]:
        """This process's transitions of one workflow take turns: racing each other would only make
        them decide again. Correctness never rests on it (the commit script checks the version)."""
        lock, users = self._locks.get(wf_id) or (asyncio.Lock(), 0)
        self._locks[wf_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[wf_id]
            if users <= 1:
                del self._locks[wf_id]
            else:
                self._locks[wf_id] = (lock, users - 1)

    async def transact(
        self,
        wf_id: str,
        decide: Callable[[Snapshot], Plan],
        *,
        tasks: tuple[str, ...] = (),
        items: tuple[str, ...] = (),
    ) -> Plan:
        """:meth:`_transact`, then, when the plan finished a flow-controlled run, release what it held
        (admitting the starts that waited for it, ADR 013); a release that fails is the sweep's to redo."""
        plan = await self._transact(wf_id, decide, tasks=tasks, items=items)
        if plan.snap.status.finished and plan.old_status != plan.snap.status and not plan.empty:
            from flowcore.admission_store import release_after_finish  # it starts runs through this store

            await release_after_finish(self, plan.snap)
        return plan

    async def _transact(
        self,
        wf_id: str,
        decide: Callable[[Snapshot], Plan],
        *,
        tasks: tuple[str, ...] = (),
        items: tuple[str, ...] = (),
    ) -> Plan:
        """Run ``decide`` on a consistent snapshot and commit its plan atomically (deciding again on races).

        ``tasks`` / ``items`` name the task records (``{step}:{index}``) and map items the decision
        concerns, read up front; whatever else it needs it asks for (:class:`~flowcore.engine.NeedReads`).
        """
        want_tasks, want_items = set(tasks), set(items)
        try:
            async with self._turn(wf_id):
                for _ in range(MAX_COMMIT_RETRIES):
                    snap, raw_state = await self._read_for(wf_id, want_tasks, want_items)
                    try:
                        plan = decide(snap)
                    except NeedReads as need:
                        want_tasks.update(need.tasks)
                        want_items.update(need.items)
                        continue
                    if plan.empty:
                        return plan
                    guards = [(self.keys.state(wf_id), key, raw_state.get(key)) for key in sorted(plan.state_changes)]
                    args = script_args(snap.version, guards, plan_commands(self.keys, plan))
                    if await self._commit(keys=[self.keys.workflow(wf_id)], args=args):
                        return plan
                    self.conflicts += 1
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        raise ServiceUnavailable(f"workflow {wf_id!r} is too contended to commit")

    def write_plan(self, pipe: Pipeline, plan: Plan) -> None:
        """Queue the commands that commit ``plan`` (inside the caller's MULTI)."""
        queue_commands(pipe, plan_commands(self.keys, plan))
