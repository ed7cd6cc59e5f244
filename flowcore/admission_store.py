"""Flow control in Redis: admitting, queueing, refusing and releasing starts atomically (ADR 013).

A flow-controlled start is written as a ``queued`` workflow record together with its slots
(``{p}:fc:run:{wf}``) and an entry in ``{p}:fc:pending``, in one MULTI. :meth:`FlowControl.admit`
then reads the run's slots under ``WATCH`` (the record, each slot's active set, rate window and
queue), lets :func:`flowcore.flowcontrol.decide` choose, and commits in one MULTI: admit (take the
slots; the engine then starts the run), queue (wait on the blocking slot, the reason and the
estimated start on the record) or refuse (the record becomes ``cancelled`` with its reason). Two
gateways admitting one key at the same instant: one EXEC fails on the WATCH and decides again on
fresh data, so a limit is never exceeded.

When a run finishes, whichever process committed the finish calls :func:`release_after_finish`
(from :meth:`flowcore.store.WorkflowStore.transact`): the run leaves its slots and each slot's queue
is pumped (its head admitted while there is room). Every crash window is covered by
:meth:`FlowControl.sweep_once`, which workers run periodically: pending entries never admitted,
admitted runs never started, finished runs still holding a slot, evictions not yet cancelled, rate
queues whose window reopened.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from flowcore import engine
from flowcore.engine import EngineEnv, Plan
from flowcore.errors import Conflict, NotFound, ServiceUnavailable
from flowcore.flowcontrol import (
    Decision,
    Outcome,
    RunSlots,
    Slot,
    SlotKind,
    SlotState,
    decide,
    eviction_reason,
    queue_score,
)
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin, Snapshot

if TYPE_CHECKING:
    from flowcore.store import WorkflowStore

log = logging.getLogger(__name__)

MAX_RETRIES = 100
PUMP_BATCH = 100  # waiting runs admitted per slot per pump at most
GRACE_S = 5.0  # how long the sweep leaves an admission or a start to the process doing it


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class AdmitResult:
    outcome: str  # admit | queue | refuse | gone
    reason: str = ""
    evicted: tuple[str, ...] = ()
    fresh_slot: str | None = None  # a first admission queued behind waiting runs on this slot (it may have room)


def start_queued(snap: Snapshot, env: EngineEnv) -> Plan:
    """The engine's start of an admitted run (``queued`` → ``running``)."""
    if snap.status != WorkflowStatus.QUEUED:
        raise Conflict(f"workflow {snap.wf_id!r} is {snap.status.value}, not queued")
    snap.status = WorkflowStatus.PENDING
    plan = engine.start(snap, env)
    plan.old_status = WorkflowStatus.QUEUED
    return plan


class FlowControl:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    # ---- creating a queued start --------------------------------------------------------------
    def write_queued(
        self, pipe: Pipeline, wf_id: str, definition: WorkflowDefinition, origin: Origin, now: float,
        run: RunSlots, *, trace: str | None = None,
    ) -> None:
        """Queue (in the caller's MULTI) the record of a start awaiting admission, with its slots."""
        flow = {"priority": run.priority, "queued_reason": "awaiting admission", "slots": [s.id for s in run.slots]}
        self.store.write_new(pipe, wf_id, definition, origin, now, trace=trace, status=WorkflowStatus.QUEUED, flow=flow)
        pipe.set(self.keys.fc_run(wf_id), run.dumps())
        pipe.zadd(self.keys.fc_pending, {wf_id: int(now * 1000)})

    async def create_queued(
        self, wf_id: str, definition: WorkflowDefinition, origin: Origin, run: RunSlots, *, trace: str | None = None
    ) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                self.write_queued(pipe, wf_id, definition, origin, time.time(), run, trace=trace)
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

    async def enqueue_pending(self, wf_id: str, run: RunSlots) -> None:
        """A created (``pending``) workflow is started: it becomes ``queued``, awaiting admission."""
        k = self.keys
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_RETRIES):
                    try:
                        await pipe.watch(k.workflow(wf_id))
                        status, created = await pipe.hmget(k.workflow(wf_id), ["status", "created_at"])
                        if status is None:
                            raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
                        if _s(status) != WorkflowStatus.PENDING.value:
                            raise Conflict(f"workflow {wf_id!r} is {_s(status)}, it can start only once")
                        flow = {"priority": run.priority, "queued_reason": "awaiting admission",
                                "slots": [s.id for s in run.slots]}
                        pipe.multi()
                        pipe.hset(k.workflow(wf_id), mapping={"status": WorkflowStatus.QUEUED.value, "flow": json.dumps(flow)})
                        pipe.hincrby(k.workflow(wf_id), "version", 1)
                        score = int(float(_s(created)) * 1000) if created else int(time.time() * 1000)
                        pipe.zrem(k.by_status(WorkflowStatus.PENDING.value), wf_id)
                        pipe.zadd(k.by_status(WorkflowStatus.QUEUED.value), {wf_id: score})
                        pipe.set(k.fc_run(wf_id), run.dumps())
                        pipe.zadd(k.fc_pending, {wf_id: int(time.time() * 1000)})
                        await pipe.execute()
                        return
                    except WatchError:
                        continue
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        raise ServiceUnavailable(f"workflow {wf_id!r} is too contended to start")

    # ---- admission -------------------------------------------------------------------------------
    async def admit(self, wf_id: str, *, now: float | None = None) -> AdmitResult:
        """Admit, queue or refuse one queued run, atomically; an admitted run is started, the runs it
        evicts (``cancel_in_progress``) are cancelled."""
        try:
            result = await self._admit(wf_id, now)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        if result.outcome == Outcome.ADMIT.value:
            await self._start(wf_id)
        for victim in result.evicted:
            await self._evict(victim)
        if result.outcome == Outcome.QUEUE.value and result.fresh_slot:
            await self.pump(result.fresh_slot, now=now)  # it may have queued behind runs about to leave
        return result

    async def _admit(self, wf_id: str, now: float | None) -> AdmitResult:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.workflow(wf_id), k.fc_run(wf_id))
                    status, flow_raw = await pipe.hmget(k.workflow(wf_id), ["status", "flow"])
                    raw_run = await pipe.get(k.fc_run(wf_id))
                    if status is None or _s(status) != WorkflowStatus.QUEUED.value or raw_run is None:
                        pipe.multi()
                        pipe.zrem(k.fc_pending, wf_id)
                        await pipe.execute()
                        return AdmitResult("gone")
                    run = RunSlots.loads(_s(raw_run))
                    flow: dict[str, Any] = json.loads(flow_raw) if flow_raw else {}
                    fresh = "score" not in flow
                    slot_keys = [key for s in run.slots for key in self._slot_keys(s)]
                    if slot_keys:
                        await pipe.watch(*slot_keys)
                    states = {s.id: await self._slot_state(pipe, s, wf_id) for s in run.slots}
                    at = time.time() if now is None else now
                    decision = decide(run, states, at, fresh=fresh)
                    seq = int(await pipe.incr(k.fc_seq)) if decision.outcome == Outcome.QUEUE and fresh else None
                    pipe.multi()
                    self._commit(pipe, wf_id, run, flow, decision, at, seq, fresh)
                    await pipe.execute()
                    return AdmitResult(
                        decision.outcome.value, decision.reason, tuple(v for v, _ in decision.evict),
                        decision.slot.id if fresh and decision.behind and decision.slot is not None else None,
                    )
                except WatchError:
                    continue
        raise ServiceUnavailable(f"admission of {wf_id!r} is too contended; it stays pending for the sweep")

    def _slot_keys(self, slot: Slot) -> list[str]:
        k = self.keys
        main = k.fc_window(slot.id) if slot.kind == SlotKind.RATE else k.fc_active(slot.id)
        return [main, k.fc_queue(slot.id)]

    async def _slot_state(self, pipe: Pipeline, slot: Slot, wf_id: str) -> SlotState:
        k = self.keys
        queue = await pipe.zrange(k.fc_queue(slot.id), 0, 0)
        head_is_me = bool(queue) and _s(queue[0]) == wf_id
        queued = int(await pipe.zcard(k.fc_queue(slot.id))) - (1 if head_is_me else 0)
        if slot.kind == SlotKind.RATE:
            window = await pipe.zrange(k.fc_window(slot.id), 0, -1, withscores=True)
            return SlotState(window=[score / 1000 for _, score in window], queued=queued)
        count = int(await pipe.zcard(k.fc_active(slot.id)))
        oldest = await pipe.zrange(k.fc_active(slot.id), 0, 0, withscores=True)
        active = [(_s(m), sc / 1000) for m, sc in oldest] + [("", 0.0)] * max(count - len(oldest), 0)
        return SlotState(active=active, queued=queued)

    def _commit(
        self, pipe: Pipeline, wf_id: str, run: RunSlots, flow: dict[str, Any], decision: Decision,
        now: float, seq: int | None, fresh: bool,
    ) -> None:
        k, now_ms = self.keys, int(now * 1000)
        name = self._name(run)
        pipe.zrem(k.fc_pending, wf_id)
        for slot in run.slots:
            pipe.zrem(k.fc_queue(slot.id), wf_id)
        if decision.outcome == Outcome.ADMIT:
            for slot in run.slots:
                if slot.kind == SlotKind.RATE:
                    pipe.zremrangebyscore(k.fc_window(slot.id), "-inf", now_ms - int(slot.period_s * 1000))
                    pipe.zadd(k.fc_window(slot.id), {wf_id: now_ms})
                    pipe.pexpire(k.fc_window(slot.id), int(slot.period_s * 1000) + 1000)
                else:
                    pipe.zadd(k.fc_active(slot.id), {wf_id: now_ms})
                pipe.zadd(k.fc_slots, {slot.id: now_ms + int(GRACE_S * 1000)})
            by_id = {s.id: s for s in run.slots}
            for victim, slot_id in decision.evict:
                pipe.zrem(k.fc_active(slot_id), victim)
                pipe.hset(k.fc_evict, victim, eviction_reason(wf_id, by_id[slot_id]))
                self._count(pipe, "evicted", name)
            pipe.zadd(k.fc_admitted, {wf_id: now_ms})
            flow.update(admitted_at=now, queued_reason=None, estimated_start=None)
            pipe.hset(k.workflow(wf_id), "flow", json.dumps(flow))
            self._count(pipe, "admitted", name)
            return
        if decision.outcome == Outcome.REFUSE:
            flow.update(queued_reason=decision.reason, refused_at=now)
            self._cancel_record(pipe, wf_id, decision.reason, now, flow)
            pipe.delete(k.fc_run(wf_id))
            self._count(pipe, decision.counter, name)
            return
        assert decision.slot is not None
        score = queue_score(run.priority, seq) if seq is not None else float(flow.get("score", 0))
        pipe.zadd(k.fc_queue(decision.slot.id), {wf_id: score})
        visit_at = decision.estimated_start if decision.estimated_start is not None else now + GRACE_S
        pipe.zadd(k.fc_slots, {decision.slot.id: int(visit_at * 1000)})
        flow.update(score=score, queued_reason=decision.reason, estimated_start=decision.estimated_start,
                    waiting_on=decision.slot.id)
        pipe.hset(k.workflow(wf_id), "flow", json.dumps(flow))
        if fresh:
            self._count(pipe, decision.counter, name)

    @staticmethod
    def _name(run: RunSlots) -> str:
        for slot in run.slots:
            if slot.id.startswith(("c|", "r|", "g|")):
                return slot.id.split("|")[1]
        return ""

    def _count(self, pipe: Pipeline, counter: str, name: str) -> None:
        pipe.hincrby(self.keys.fc_counts, counter, 1)
        if name:
            pipe.hincrby(self.keys.fc_counts, f"{counter}:{name}", 1)

    def _cancel_record(self, pipe: Pipeline, wf_id: str, reason: str, now: float, flow: dict[str, Any]) -> None:
        """A refused start: its record, never started, becomes cancelled with the reason (in the MULTI)."""
        k = self.keys
        pipe.hset(k.workflow(wf_id), mapping={
            "status": WorkflowStatus.CANCELLED.value, "finished_at": repr(now), "error": reason, "flow": json.dumps(flow),
        })
        pipe.hincrby(k.workflow(wf_id), "version", 1)
        created_ms = int(wf_id.split("-")[1], 16) if wf_id.count("-") >= 2 else int(now * 1000)
        pipe.zrem(k.by_status(WorkflowStatus.QUEUED.value), wf_id)
        pipe.zadd(k.by_status(WorkflowStatus.CANCELLED.value), {wf_id: created_ms})
        event = json.dumps({"type": "workflow", "workflow_id": wf_id, "status": "cancelled", "error": reason, "ts": now})
        pipe.xadd(k.events(wf_id), {"data": event}, maxlen=2000, approximate=True)
        pipe.xadd(k.global_events, {"data": event}, maxlen=20000, approximate=True)

    async def _start(self, wf_id: str) -> None:
        try:
            await self.store.transact(wf_id, lambda snap: start_queued(snap, EngineEnv()))
        except (Conflict, NotFound):
            pass  # started meanwhile (the sweep), cancelled or deleted
        await self.redis.zrem(self.keys.fc_admitted, wf_id)

    async def _evict(self, victim: str) -> None:
        reason = await self.redis.hget(self.keys.fc_evict, victim)
        if reason is not None:
            try:
                await self.store.transact(victim, lambda snap: engine.cancel(snap, EngineEnv(), _s(reason)))
            except (Conflict, NotFound):
                pass  # finished meanwhile
        await self.redis.hdel(self.keys.fc_evict, victim)

    # ---- release ---------------------------------------------------------------------------------
    async def release(self, wf_id: str) -> list[str]:
        """A run finished: it leaves its slots, and the queues of its slots are pumped."""
        k = self.keys
        raw = await self.redis.get(k.fc_run(wf_id))
        if raw is None:
            return []
        run = RunSlots.loads(_s(raw))
        async with self.redis.pipeline(transaction=True) as pipe:
            for slot in run.slots:
                if slot.kind == SlotKind.CONCURRENCY:
                    pipe.zrem(k.fc_active(slot.id), wf_id)
                pipe.zrem(k.fc_queue(slot.id), wf_id)
            pipe.delete(k.fc_run(wf_id))
            pipe.zrem(k.fc_pending, wf_id)
            await pipe.execute()
        admitted: list[str] = []
        for slot in run.slots:
            admitted += await self.pump(slot.id)
        return admitted

    async def pump(self, slot_id: str, *, now: float | None = None) -> list[str]:
        """Admit the runs waiting on ``slot_id`` while there is room; returns those admitted."""
        k = self.keys
        admitted: list[str] = []
        for _ in range(PUMP_BATCH):
            head = await self.redis.zrange(k.fc_queue(slot_id), 0, 0)
            if not head:
                break
            wf_id = _s(head[0])
            result = await self.admit(wf_id, now=now)
            if result.outcome == "gone":
                await self.redis.zrem(k.fc_queue(slot_id), wf_id)
                continue
            if result.outcome == Outcome.ADMIT.value:
                admitted.append(wf_id)
                continue
            if result.outcome == Outcome.QUEUE.value:
                again = await self.redis.zrange(k.fc_queue(slot_id), 0, 0)
                if again and _s(again[0]) == wf_id:
                    break  # still blocked here: the slot is full
        return admitted

    # ---- the sweep ---------------------------------------------------------------------------------
    async def sweep_once(self, *, now: float | None = None, grace_s: float = GRACE_S) -> dict[str, int]:
        """Finish what crashed processes left half-done; returns what it did, by kind."""
        k = self.keys
        at = time.time() if now is None else now
        before_ms = int((at - grace_s) * 1000)
        done = {"admitted": 0, "started": 0, "evicted": 0, "released": 0, "pumped": 0}
        for raw in await self.redis.zrangebyscore(k.fc_pending, 0, before_ms, start=0, num=PUMP_BATCH):
            await self.admit(_s(raw), now=now)
            done["admitted"] += 1
        for raw in await self.redis.zrangebyscore(k.fc_admitted, 0, before_ms, start=0, num=PUMP_BATCH):
            await self._start(_s(raw))
            done["started"] += 1
        for raw in list(await self.redis.hkeys(k.fc_evict))[:PUMP_BATCH]:
            await self._evict(_s(raw))
            done["evicted"] += 1
        for raw in await self.redis.zrangebyscore(k.fc_slots, 0, int(at * 1000), start=0, num=PUMP_BATCH):
            slot_id = _s(raw)
            if not slot_id.startswith("r|"):
                done["released"] += await self._release_finished(slot_id, before_ms)
            done["pumped"] += len(await self.pump(slot_id, now=now))
            await self._revisit(slot_id, at, grace_s)
        return done

    async def _release_finished(self, slot_id: str, before_ms: int) -> int:
        """Runs that hold ``slot_id`` although they finished (the process finishing them died)."""
        k = self.keys
        members = await self.redis.zrangebyscore(k.fc_active(slot_id), 0, before_ms)
        released = 0
        for raw in members:
            wf_id = _s(raw)
            status = await self.redis.hget(k.workflow(wf_id), "status")
            if status is not None and not WorkflowStatus(_s(status)).finished:
                continue
            if await self.redis.exists(k.fc_run(wf_id)):
                await self.release(wf_id)
            else:
                await self.redis.zrem(k.fc_active(slot_id), wf_id)
            released += 1
        return released

    async def _revisit(self, slot_id: str, now: float, grace_s: float) -> None:
        """When the sweep looks at ``slot_id`` again: next pass for a waiting rate queue, after the grace
        for a busy concurrency slot; never for an empty slot (forgotten, under WATCH)."""
        k = self.keys
        main = k.fc_window(slot_id) if slot_id.startswith("r|") else k.fc_active(slot_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(main, k.fc_queue(slot_id))
                    queued = int(await pipe.zcard(k.fc_queue(slot_id)))
                    held = int(await pipe.zcard(main))
                    pipe.multi()
                    if queued and slot_id.startswith("r|"):
                        pipe.zadd(k.fc_slots, {slot_id: int(now * 1000)})
                    elif queued or (held and not slot_id.startswith("r|")):
                        pipe.zadd(k.fc_slots, {slot_id: int((now + grace_s) * 1000)})
                    else:
                        pipe.zrem(k.fc_slots, slot_id)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.fc_counts)
        return {_s(a): int(b) for a, b in raw.items()}


async def release_after_finish(store: WorkflowStore, snap: Snapshot) -> None:
    """Called by the store once a commit finished ``snap``'s run: release its slots (flow-controlled
    runs only: they carry ``flow``). A failure is logged; the sweep releases it later."""
    if snap.flow is None:
        return
    try:
        await FlowControl(store).release(snap.wf_id)
    except (RedisError, ServiceUnavailable) as exc:
        log.warning("release of %s after its finish failed (%s); the sweep will do it", snap.wf_id, exc)
