"""Durable waits in Redis (ADR 012): publishing an event to the runs waiting for it, reading the recent
events of a type, and starting a child run exactly once.

Publishing (:func:`publish`) is one optimistic transaction: it ``WATCH``es the waiters of the event's
type, reads those the event may match (:mod:`flowcore.waitindex`: the ones whose filter pins a field
to the event's value of it, and the ones no index covers), matches each one's resolved filter in Python, and in one ``MULTI`` appends the
event to the type's log and enqueues a delivery job for every match. So an event is logged and its
deliveries queued together or not at all; a waiter that registers meanwhile makes the transaction
retry. A wait that begins *after* an event was published finds it in the log: its check job
(:func:`recent_events`) runs after the wait's own commit registered the waiter, so every event is
either in the log before the check reads it, or published after the waiter was visible.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from flowcore import engine, waitindex, waitrules
from flowcore.admission_store import FlowControl
from flowcore.commits import _enqueue
from flowcore.errors import InvalidInput, NotFound, ServiceUnavailable
from flowcore.flowcontrol import run_slots
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus, WorkflowStep
from flowcore.plan import EngineEnv, WaitJob
from flowcore.policy import check_definition
from flowcore.records import Origin, Snapshot
from flowcore.settings import TaskPolicySection
from flowcore.store import WorkflowStore
from flowcore.triggers import merge_input
from flowcore.waitcommits import WAIT_JOB, job_kwargs
from flowcore.waitsteps import parse_waiter_member

MAX_RETRIES = 50
MAX_CHILD_DEPTH = 10  # a child of a child ... at most this deep: a loop of templates cannot run away
WAKE_MAX = 64


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def publish(redis: Redis, keys: Keyspace, event_type: str, event_id: str, payload: Any,
                  now: float | None = None) -> int:
    """Log the event and queue its delivery to every run waiting for it; returns how many it woke."""
    now = time.time() if now is None else now
    event = {"id": event_id, "payload": payload, "ts": now}
    raw = json.dumps(event, default=str)
    waiters_key, log_key = keys.waiters(event_type), keys.event_log(event_type)
    now_ms = int(now * 1000)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(waiters_key, keys.watched_event_types)
                    waiters = await _candidates(pipe, keys, event_type, payload)
                    until = await pipe.zscore(keys.watched_event_types, event_type)
                    watched = until is not None and until >= now_ms  # a workflow may wait for this type
                    matched: list[tuple[str, str, str]] = []
                    for member, value in waiters.items():
                        entry = json.loads(_s(value))
                        if waitrules.first_match(entry.get("filter") or {}, float(entry.get("since", 0)), [event]):
                            matched.append(parse_waiter_member(_s(member)))
                    pipe.multi()
                    if watched and len(raw) <= waitrules.EVENT_LOG_ENTRY_MAX_BYTES:  # bounded: EVENT_LOG_*
                        pipe.xadd(log_key, {"data": raw}, maxlen=waitrules.EVENT_LOG_MAX, approximate=True)
                        pipe.expire(log_key, int(waitrules.EVENT_LOG_AGE_S))
                    for wf_id, step_id, token in matched:
                        job = WaitJob("event", wf_id, step_id, token, data=event)
                        for cmd in _enqueue(keys, f"{job.job_id}:{event_id}", WAIT_JOB, job_kwargs(job), now_ms, now_ms):
                            pipe.execute_command(*cmd)
                    pipe.zremrangebyscore(keys.watched_event_types, "-inf", f"({now_ms}")  # types no wait needs
                    if matched:
                        pipe.lpush(keys.wake, *(["1"] * min(len(matched), WAKE_MAX)))
                        pipe.ltrim(keys.wake, 0, WAKE_MAX - 1)
                    await pipe.execute()
                    return len(matched)
                except WatchError:
                    continue
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    raise ServiceUnavailable("too many concurrent waits on this event type; retry")


async def _candidates(pipe: Any, keys: Keyspace, event_type: str, payload: Any) -> dict[Any, Any]:
    """The waiters of ``event_type`` the event may match (member -> entry), read under the caller's
    WATCH: those filed under the event's values of the indexed paths and those no index covers
    (:mod:`flowcore.waitindex`), or every waiter when some were registered without the index."""
    waiters_key = keys.waiters(event_type)
    filed = {_s(path): int(count) for path, count in (await pipe.hgetall(keys.waiters_paths(event_type))).items()}
    scan = {_s(m) for m in await pipe.smembers(keys.waiters_scan(event_type))}
    if waitindex.all_needed(int(await pipe.hlen(waiters_key)), len(scan), filed):
        found: dict[Any, Any] = await pipe.hgetall(waiters_key)
        return found
    members = set(scan)
    paths = sorted(path for path, count in filed.items() if count > 0)
    for path, canon in waitindex.lookup_entries(paths, payload):
        bucket = keys.waiters_index(waitindex.digest(event_type, path, canon))
        members |= {_s(m) for m in await pipe.smembers(bucket)}
    if not members:
        return {}
    ordered = sorted(members)
    values = await pipe.hmget(waiters_key, ordered)
    return {m: v for m, v in zip(ordered, values, strict=True) if v is not None}


async def recent_events(redis: Redis, keys: Keyspace, event_type: str, since: float) -> list[dict[str, Any]]:
    """The logged events of a type published at or after ``since``, oldest first (at most the log's cap)."""
    start_ms = max(int(since * 1000) - 1000, 0)  # stream ids are Redis's clock: a second of slack
    entries = await redis.xrange(keys.event_log(event_type), min=f"{start_ms}-0", max="+",
                                 count=waitrules.EVENT_LOG_MAX)
    events: list[dict[str, Any]] = []
    for _id, fields in entries:
        data = fields.get(b"data") or fields.get("data")
        if data is not None:
            event = json.loads(_s(data))
            if float(event.get("ts", 0)) >= since:
                events.append(event)
    return events


class ChildRefused(Exception):
    """A child run that must not start (too deep); its step fails with this message."""


async def check_templates(store: WorkflowStore, definition: WorkflowDefinition, policy: TaskPolicySection) -> None:
    """Every ``workflow`` step names an existing workflow whose definition the operator's policy allows:
    422 naming the step otherwise (a definition is checked when it is submitted, not when it runs)."""
    for index, step in enumerate(definition.steps):
        if not isinstance(step, WorkflowStep):
            continue
        try:
            template = (await store.load_summary(step.workflow)).definition
        except NotFound:
            raise InvalidInput(f"step {step.id!r}: workflow {step.workflow!r} not found",
                               field=f"steps[{index}].workflow") from None
        check_definition(template, policy)


async def start_child(store: WorkflowStore, parent: Snapshot, step_id: str, token: str) -> str | None:
    """Create and start the child run of ``parent``'s waiting ``workflow`` step, once: its id is derived
    from the wait, so a job run twice (a worker died after creating it) finds it and creates nothing.
    Returns the child's id, or None when the step no longer waits under ``token``."""
    rec = parent.steps.get(step_id)
    wait = rec.wait if rec is not None else None
    if parent.status != WorkflowStatus.RUNNING or rec is None or wait is None or wait.get("token") != token:
        return None
    if rec.status.finished:
        return None
    child_id = str(wait["child_id"])
    depth = parent.origin.depth + 1
    if depth > MAX_CHILD_DEPTH:
        raise ChildRefused(f"child runs nest at most {MAX_CHILD_DEPTH} deep")
    template: WorkflowDefinition = (await store.load_summary(str(wait["template"]))).definition
    definition = template.model_copy(update={"input": merge_input(template.input, wait.get("input"), None)})
    now = time.time()
    origin = Origin(kind="workflow", template_id=str(wait["template"]), parent_id=parent.wf_id,
                    parent_step=step_id, parent_token=token, fired_at=now, depth=depth)
    # The template's flow control applies to its child runs as to any start (ADR 019): a queued record
    # with its slots, then admission. A template's debounce does not merge children (each has its own id).
    run = run_slots(definition.name, definition.config, definition.input)
    control = FlowControl(store)
    redis, key = store.redis, store.keys.workflow(child_id)
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(MAX_RETRIES):
            try:
                parent_key = store.keys.workflow(parent.wf_id)
                await pipe.watch(key, parent_key)  # a parent cancelled meanwhile creates no child
                if await pipe.exists(key):
                    return child_id  # created by an earlier run of this job (a queued one: the sweep admits it)
                if _s(await pipe.hget(parent_key, "status") or b"") != WorkflowStatus.RUNNING.value:
                    return None
                pipe.multi()
                if run is not None:
                    control.write_queued(pipe, child_id, definition, origin, now, run)
                else:
                    store.write_new(pipe, child_id, definition, origin, now)
                    snap = Snapshot(wf_id=child_id, definition=definition, status=WorkflowStatus.PENDING,
                                    input=definition.input, created_at=now, origin=origin)
                    store.write_plan(pipe, engine.start(snap, EngineEnv(now=now)))
                await pipe.execute()
                break
            except WatchError:
                continue
        else:
            raise ServiceUnavailable(f"child {child_id} is too contended to create")
    if run is not None:
        admitted = await control.admit(child_id)
        if admitted.outcome == "refuse":  # cancel_newest, or a trigger's buffer: the step fails saying why
            raise ChildRefused(f"child workflow {child_id} was not started: {admitted.reason}")
    return child_id


def child_outcome(child: Snapshot) -> tuple[str, dict[str, Any], str | None]:
    """What a finished child gives its parent: status, each step's output, the error."""
    outputs = {sid: rec.output for sid, rec in child.steps.items()}
    return child.status.value, outputs, child.error
