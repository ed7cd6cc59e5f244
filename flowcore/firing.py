"""Firing a trigger: one Redis transaction that creates and starts the new workflow, exactly once.

The transaction WATCHes the fire's idempotency key (cron time, event id or delivery id), the
trigger's run list when it skips overlapping runs, and, for schedules, the trigger itself. In one
MULTI/EXEC it then writes the idempotency key, the new workflow's record, the engine's start plan
(step records and the arq jobs of the first steps, see :mod:`flowcore.store`), the run list and the
trigger's counters. Two schedulers firing the same time, or a delivery replayed while the first is
still being handled, therefore start one workflow: the loser's EXEC aborts, and on its retry it finds
the key (or the moved ``next_run``) and starts nothing.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, WatchError

from flowcore import engine
from flowcore.admission_store import FlowControl
from flowcore.engine import EngineEnv
from flowcore.errors import ServiceUnavailable
from flowcore.flowcontrol import RunSlots, run_slots
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin, Snapshot
from flowcore.store import WorkflowStore, new_workflow_id
from flowcore.tracing import WorkflowRoot
from flowcore.triggers import Trigger, merge_input

RUNS_KEPT = 1000
MAX_RETRIES = 50
SKIP_PREFIX = "skip:"
LUA_MAX_ARGS = 4000

# One round trip for the common idempotent fire (an event or delivery id, no overlap check, not a
# schedule): if the fire key exists answer it, else set it and apply the queued commands, atomically.
_FIRE_ONCE = """
local old = redis.call('GET', KEYS[1])
if old then return old end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local commands = cjson.decode(ARGV[3])
for i = 1, #commands do redis.call(unpack(commands[i])) end
return false
"""


class FireOutcome(str, enum.Enum):
    STARTED = "started"
    DUPLICATE = "duplicate"  # this fire key was handled before: nothing new
    SKIPPED = "skipped"  # counted on the trigger with a reason (running, disabled)
    STALE = "stale"  # a schedule fire another scheduler already handled


@dataclass(frozen=True)
class FireResult:
    outcome: FireOutcome
    workflow_id: str | None = None
    reason: str | None = None

    def view(self) -> dict[str, Any]:
        return {"status": self.outcome.value, "workflow_id": self.workflow_id, "reason": self.reason}


@dataclass
class Fire:
    """One fire of ``trigger`` (``trigger`` is ``None`` for a manual fire of a bare workflow)."""

    template_id: str
    template: WorkflowDefinition
    origin: Origin
    now: float
    trigger: Trigger | None = None
    fire_key: str | None = None  # idempotency: cron time, event id, delivery id or Idempotency-Key
    payload: Any = None
    retention_s: float = 86400.0
    # schedules only: the due time this scheduler read, and what to set afterwards
    due_at: float | None = None
    next_run: float | None = None
    missed: int = 0
    run: bool = True  # False: only account missed fires and move next_run
    extra_skips: dict[str, int] = field(default_factory=dict)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


TEMPLATE_CACHE_SIZE = 1024


class Firing:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys
        self.store = WorkflowStore(redis, keys)
        # A workflow's definition never changes once created, so templates are cached by id.
        self._templates: dict[str, WorkflowDefinition] = {}
        self._script: AsyncScript | None = None

    async def template(self, workflow_id: str) -> WorkflowDefinition:
        """The definition of template workflow ``workflow_id`` (NotFound when it is gone)."""
        cached = self._templates.get(workflow_id)
        if cached is not None:
            return cached
        definition = (await self.store.load_summary(workflow_id)).definition
        if len(self._templates) >= TEMPLATE_CACHE_SIZE:
            self._templates.clear()
        self._templates[workflow_id] = definition
        return definition

    def forget(self, workflow_id: str) -> None:
        self._templates.pop(workflow_id, None)

    async def fire(self, fire: Fire) -> FireResult:
        if fire.due_at is None and fire.template.config.debounce is not None and fire.run:
            return await self._debounced(fire)
        result = await self._fire(fire)
        if result.outcome == FireOutcome.STARTED and result.workflow_id and self._run_slots(fire) is not None:
            # Flow control (ADR 013): the run was written queued; admit it now (or the sweep will).
            admitted = await FlowControl(self.store).admit(result.workflow_id)
            if admitted.outcome == "refuse":  # recorded cancelled with its reason; counted on the trigger too
                if fire.trigger is not None:
                    try:
                        await self.redis.hincrby(self.keys.trigger(fire.trigger.id), "skipped:overlap", 1)
                    except RedisError as exc:
                        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
                return FireResult(FireOutcome.SKIPPED, result.workflow_id, admitted.reason or None)
            if admitted.outcome != "admit":
                return FireResult(FireOutcome.STARTED, result.workflow_id, admitted.reason or None)
        return result

    async def _debounced(self, fire: Fire) -> FireResult:
        """A fire of a debounced template (events, webhooks, manual fires; not schedules): it joins the
        key's open window or opens one (:mod:`flowcore.debounce_store`)."""
        from flowcore.debounce_store import Debouncer  # it builds on this module's store

        trigger, run = fire.trigger, self._run_slots(fire)
        assert run is not None
        tid = trigger.id if trigger else f"wf:{fire.template_id}"
        once_key = self.keys.fire(tid, fire.fire_key) if fire.fire_key else None
        try:
            if once_key and (done := await self.redis.get(once_key)) is not None:
                return FireResult(FireOutcome.DUPLICATE, _s(done))
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

        def counters(pipe: Pipeline, wf_id: str) -> None:
            if trigger:
                self._counters(pipe, trigger, fire, wf_id)

        wf_id, _ = await Debouncer(self.store).submit(
            self._definition(fire), fire.origin, run, once_key=once_key, retention_s=fire.retention_s, extra=counters
        )
        return FireResult(FireOutcome.STARTED, wf_id, "debounced")

    def _definition(self, fire: Fire) -> WorkflowDefinition:
        trigger = fire.trigger
        merged = merge_input(fire.template.input, trigger.spec.input_data if trigger else None, fire.payload)
        return fire.template.model_copy(update={"input": merged})

    def _run_slots(self, fire: Fire) -> RunSlots | None:
        definition, trigger = self._definition(fire), fire.trigger
        return run_slots(
            definition.name, definition.config, definition.input,
            priority=trigger.spec.config.priority if trigger else None,
            trigger_id=trigger.id if trigger else None,
            overlap=trigger.spec.config.overlap if trigger else None,
        )

    async def _fire(self, fire: Fire) -> FireResult:
        trigger = fire.trigger
        simple = fire.fire_key and fire.due_at is None and not (trigger and trigger.spec.config.skips_running)
        try:
            if simple and (done := await self._fire_once(fire)) is not None:
                return done
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_RETRIES):
                    try:
                        return await self._attempt(pipe, fire)
                    except WatchError:
                        continue
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        raise ServiceUnavailable("the trigger is too contended to fire; retry")

    async def _fire_once(self, fire: Fire) -> FireResult | None:
        """The Lua path: the same writes as :meth:`_attempt`, committed by :data:`_FIRE_ONCE`;
        ``None`` when a command is too long for Lua (a template of thousands of steps)."""
        assert fire.fire_key is not None
        recorder = self.redis.pipeline(transaction=True)
        wf_id, root = self._start(recorder, fire)
        if fire.trigger:
            self._counters(recorder, fire.trigger, fire, wf_id)
        encoder = self.redis.connection_pool.get_encoder()
        commands = [[encoder.encode(a).decode() for a in args] for args, _ in recorder.command_stack]
        await recorder.reset()
        if any(len(c) > LUA_MAX_ARGS for c in commands):  # Lua's unpack() has a bounded stack
            return None
        tid = fire.trigger.id if fire.trigger else f"wf:{fire.template_id}"
        if self._script is None:
            self._script = self.redis.register_script(_FIRE_ONCE)
        old = await self._script(
            keys=[self.keys.fire(tid, fire.fire_key)],
            args=[wf_id, int(fire.retention_s), json.dumps(commands, separators=(",", ":"))],
        )
        if old is None:
            root.end(wf_id)
            return FireResult(FireOutcome.STARTED, wf_id)
        value = _s(old)
        if value.startswith(SKIP_PREFIX):
            return FireResult(FireOutcome.DUPLICATE, None, value[len(SKIP_PREFIX) :])
        return FireResult(FireOutcome.DUPLICATE, value)

    def _counters(self, pipe: Pipeline, trigger: Trigger, fire: Fire, wf_id: str) -> None:
        k = self.keys
        pipe.hincrby(k.trigger(trigger.id), "run_count", 1)
        pipe.hset(k.trigger(trigger.id), mapping={"last_run": repr(fire.now), "last_workflow_id": wf_id})
        pipe.zadd(k.trigger_runs(trigger.id), {wf_id: int(fire.now * 1000)})
        pipe.zremrangebyrank(k.trigger_runs(trigger.id), 0, -(RUNS_KEPT + 1))

    async def _attempt(self, pipe: Pipeline, fire: Fire) -> FireResult:
        k, trigger = self.keys, fire.trigger
        tid = trigger.id if trigger else f"wf:{fire.template_id}"
        watched: list[str] = []
        fire_key = k.fire(tid, fire.fire_key) if fire.fire_key else None
        if fire_key:
            watched.append(fire_key)
        skip_running = bool(trigger and trigger.spec.config.skips_running)
        if trigger and skip_running:
            watched.append(k.trigger_runs(trigger.id))
        if trigger and fire.due_at is not None:
            watched.append(k.trigger(trigger.id))
        if watched:
            await pipe.watch(*watched)
        if fire_key:
            done = await pipe.get(fire_key)
            if done is not None:
                await pipe.reset()
                value = _s(done)
                if value.startswith(SKIP_PREFIX):
                    return FireResult(FireOutcome.DUPLICATE, None, value[len(SKIP_PREFIX) :])
                return FireResult(FireOutcome.DUPLICATE, value)
        if trigger and fire.due_at is not None:
            current = await pipe.hmget(k.trigger(trigger.id), ["enabled", "next_run"])
            enabled, next_run = (_s(v) if v is not None else "" for v in current)
            if enabled != "1" or not next_run or abs(float(next_run) - fire.due_at) > 0.0015:
                await pipe.reset()
                return FireResult(FireOutcome.STALE, None, "handled by another scheduler or disabled")
        finished: list[str] = []
        active: str | None = None
        if trigger and skip_running:
            for run_id in [_s(r) for r in await pipe.zrange(k.trigger_runs(trigger.id), 0, -1)]:
                status = await pipe.hget(k.workflow(run_id), "status")
                if status is None or WorkflowStatus(_s(status)).finished:
                    finished.append(run_id)
                else:
                    active = run_id
        skip_reason = f"running ({active})" if active and fire.run else None
        pipe.multi()
        if trigger:
            self._account(pipe, fire, trigger, finished, skipped=skip_reason is not None)
        if not fire.run or skip_reason:
            if fire_key and skip_reason:
                pipe.set(fire_key, SKIP_PREFIX + "running", ex=int(fire.retention_s))
            await pipe.execute()
            if skip_reason:
                return FireResult(FireOutcome.SKIPPED, None, "running")
            return FireResult(FireOutcome.SKIPPED, None, "missed")
        wf_id, root = self._start(pipe, fire)
        if fire_key:
            pipe.set(fire_key, wf_id, ex=int(fire.retention_s))
        if trigger:
            self._counters(pipe, trigger, fire, wf_id)
        await pipe.execute()
        root.end(wf_id)
        return FireResult(FireOutcome.STARTED, wf_id)

    def _account(self, pipe: Pipeline, fire: Fire, trigger: Trigger, finished: list[str], *, skipped: bool) -> None:
        k = self.keys
        if finished:
            pipe.zrem(k.trigger_runs(trigger.id), *finished)
        skips = dict(fire.extra_skips)
        if fire.missed:
            skips["missed"] = skips.get("missed", 0) + fire.missed
        if skipped:
            skips["running"] = skips.get("running", 0) + 1
        for reason, count in skips.items():
            pipe.hincrby(k.trigger(trigger.id), f"skipped:{reason}", count)
        if fire.next_run is not None:
            pipe.hset(k.trigger(trigger.id), "next_run", repr(fire.next_run))
            pipe.zadd(k.triggers_due, {trigger.id: int(fire.next_run * 1000)})

    def _start(self, pipe: Pipeline, fire: Fire) -> tuple[str, WorkflowRoot]:
        """Queue the new workflow's record and its start plan; returns its id and its root span.

        The root span is ended (exported) only once the transaction committed.
        """
        definition = self._definition(fire)
        wf_id = new_workflow_id()
        root = WorkflowRoot(
            definition.name, origin_kind=fire.origin.kind, trigger_id=fire.origin.trigger_id, start_s=fire.now
        )
        run = self._run_slots(fire)
        if run is not None:  # flow control: written queued, admitted once this transaction committed
            FlowControl(self.store).write_queued(
                pipe, wf_id, definition, fire.origin, fire.now, run, trace=root.traceparent
            )
            return wf_id, root
        self.store.write_new(pipe, wf_id, definition, fire.origin, fire.now, trace=root.traceparent)
        snap = Snapshot(
            wf_id=wf_id,
            definition=definition,
            status=WorkflowStatus.PENDING,
            input=definition.input,
            created_at=fire.now,
            origin=fire.origin,
            trace=root.traceparent,
        )
        plan = engine.start(snap, EngineEnv(now=fire.now))
        self.store.write_plan(pipe, plan)
        return wf_id, root
