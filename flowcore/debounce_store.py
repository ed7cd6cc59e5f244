"""Debounced starts in Redis (ADR 013): one run per key after a quiet period, nothing accumulated lost.

The first start of a key opens a *window*: a ``queued`` workflow record (``queued_reason``
"debounced: ...", ``estimated_start`` the window's close) that the window's pointer
``{p}:fc:deb:{slot}`` names. Every start of that key while the window is open appends its input to
the run's list ``{p}:fc:debin:{wf}`` and moves the close to a quiet period later (never past
``max_wait`` after the first start), under ``WATCH`` of the pointer, in one MULTI.

The sweep (:func:`Debouncer.sweep_once`, run by every worker each second) closes due windows: one
MULTI deletes the pointer, so any later start opens the *next* window rather than joining a run that
is starting (nothing is lost in between), and marks the run closed. A second MULTI writes the run's
input (the last, or all of them as a list) into its definition and hands it to admission
(:mod:`flowcore.admission_store`: its other limits still apply). A crash between the two leaves the
run in ``{p}:fc:debclosed`` with its inputs still listed; the next sweep finishes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from flowcore.admission_store import GRACE_S, MAX_RETRIES, FlowControl
from flowcore.defcache import digest
from flowcore.errors import ServiceUnavailable
from flowcore.flowcontrol import DebounceConfig, RunSlots, debounce_due, debounce_slot, debounced_input
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin
from flowcore.store import WorkflowStore, new_workflow_id

log = logging.getLogger(__name__)

BATCH = 100
WAKE_KEEP = 8  # wake-up tokens kept for the debounce timers (workers/debounce_timer.py)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reason(cfg: DebounceConfig) -> str:
    wait = f", at most {cfg.max_wait_s:g}s after the first" if cfg.max_wait_s is not None else ""
    return f"debounced: starts {cfg.period_s:g}s after the last start of its key{wait}"


class Debouncer:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.control = FlowControl(store)

    async def submit(
        self,
        definition: WorkflowDefinition,
        origin: Origin,
        run: RunSlots,
        *,
        trace: str | None = None,
        once_key: str | None = None,
        retention_s: float = 86400.0,
        extra: Callable[[Pipeline, str], None] | None = None,
    ) -> tuple[str, bool]:
        """Join the key's open window or open one; returns the window's run id and whether it is new.

        ``once_key``: an idempotency key (a trigger fire's): a start already recorded under it joins
        nothing and answers the run it joined. ``extra`` queues more commands in the same MULTI."""
        try:
            return await self._submit(definition, origin, run, trace, once_key, retention_s, extra)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

    async def _submit(
        self, definition: WorkflowDefinition, origin: Origin, run: RunSlots, trace: str | None,
        once_key: str | None, retention_s: float, extra: Callable[[Pipeline, str], None] | None,
    ) -> tuple[str, bool]:
        k = self.keys
        cfg = definition.config.debounce
        assert cfg is not None
        pointer = k.fc_debounce_window(debounce_slot(definition.name, cfg, definition.input))
        value = json.dumps(definition.input)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(pointer, *([once_key] if once_key else []))
                    if once_key and (done := await pipe.get(once_key)) is not None:
                        await pipe.reset()
                        return _s(done), False
                    now = time.time()
                    window = {_s(a): _s(b) for a, b in (await pipe.hgetall(pointer)).items()}
                    wf_id = window.get("wf")
                    flow: dict[str, Any] | None = None
                    if wf_id:
                        await pipe.watch(k.workflow(wf_id))
                        status, raw_flow = await pipe.hmget(k.workflow(wf_id), ["status", "flow"])
                        if status is not None and _s(status) == WorkflowStatus.QUEUED.value and raw_flow:
                            flow = json.loads(raw_flow)
                    pipe.multi()
                    if wf_id and flow is not None:  # join the open window
                        due = debounce_due(cfg, float(window["first_at"]), now)
                        flow.update(estimated_start=due, debounced=int(flow.get("debounced", 1)) + 1)
                        pipe.hset(k.workflow(wf_id), "flow", json.dumps(flow))
                        created = False
                    else:  # open a window: its run, queued until the window closes
                        wf_id, due, created = new_workflow_id(), debounce_due(cfg, now, now), True
                        flow = {"priority": run.priority, "queued_reason": _reason(cfg), "estimated_start": due,
                                "debounced": 1, "slots": [s.id for s in run.slots], "debounce": pointer}
                        self.store.write_new(pipe, wf_id, definition, origin, now, trace=trace,
                                             status=WorkflowStatus.QUEUED, flow=flow)
                        pipe.set(k.fc_run(wf_id), run.dumps())
                        pipe.hset(pointer, mapping={"wf": wf_id, "first_at": repr(now)})
                    pipe.rpush(k.fc_debounce_inputs(wf_id), value)
                    pipe.zadd(k.fc_debounce_due, {wf_id: int(due * 1000)})
                    pipe.rpush(k.fc_debounce_wake, "1")  # a timer sleeping past the new close wakes up
                    pipe.ltrim(k.fc_debounce_wake, -WAKE_KEEP, -1)
                    pipe.hincrby(k.fc_counts, "debounced", 1)
                    pipe.hincrby(k.fc_counts, f"debounced:{definition.name}", 1)
                    if once_key:
                        pipe.set(once_key, wf_id, ex=int(retention_s))
                    if extra is not None:
                        extra(pipe, wf_id)
                    await pipe.execute()
                    return wf_id, created
                except WatchError:
                    continue
        raise ServiceUnavailable("the debounce window is too contended; retry")

    async def next_close(self) -> float | None:
        """When the earliest open window closes (epoch seconds, millisecond resolution); None: none open."""
        head = await self.redis.zrange(self.keys.fc_debounce_due, 0, 0, withscores=True)
        return float(head[0][1]) / 1000 if head else None

    # ---- closing windows (the sweep) ------------------------------------------------------------
    async def sweep_once(self, *, now: float | None = None, grace_s: float = GRACE_S) -> int:
        """Close the windows due by ``now`` and start their runs; finish closes a crash interrupted."""
        k = self.keys
        at = time.time() if now is None else now
        closed = 0
        for raw in await self.redis.zrangebyscore(k.fc_debounce_due, 0, int(at * 1000), start=0, num=BATCH):
            if await self._close(_s(raw), at):
                closed += 1
                await self._finish(_s(raw))
        before = int((at - grace_s) * 1000)
        for raw in await self.redis.zrangebyscore(k.fc_debounce_closed, 0, before, start=0, num=BATCH):
            await self._finish(_s(raw))
        return closed

    async def _close(self, wf_id: str, now: float) -> bool:
        """Close the window of ``wf_id`` if it is still due: later starts open the next window."""
        k = self.keys
        raw_flow = await self.redis.hget(k.workflow(wf_id), "flow")
        pointer = json.loads(raw_flow).get("debounce") if raw_flow else None
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.fc_debounce_due, *([pointer] if pointer else []))
                    due = await pipe.zscore(k.fc_debounce_due, wf_id)
                    if due is None or due > now * 1000:
                        await pipe.reset()
                        return False  # a start moved the close, or another sweeper closed it
                    owner = await pipe.hget(pointer, "wf") if pointer else None
                    pipe.multi()
                    if pointer and owner is not None and _s(owner) == wf_id:
                        pipe.delete(pointer)
                    pipe.zrem(k.fc_debounce_due, wf_id)
                    pipe.zadd(k.fc_debounce_closed, {wf_id: int(now * 1000)})
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
        return False

    async def _finish(self, wf_id: str) -> None:
        """Write a closed window's input into its run's definition and hand the run to admission."""
        k = self.keys
        admit = False
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.workflow(wf_id), k.fc_debounce_inputs(wf_id))
                    status, raw_def, raw_flow = await pipe.hmget(k.workflow(wf_id), ["status", "definition", "flow"])
                    inputs = [json.loads(x) for x in await pipe.lrange(k.fc_debounce_inputs(wf_id), 0, -1)]
                    pipe.multi()
                    pipe.zrem(k.fc_debounce_closed, wf_id)
                    pipe.delete(k.fc_debounce_inputs(wf_id))
                    if status is not None and _s(status) == WorkflowStatus.QUEUED.value and raw_def and inputs:
                        definition = WorkflowDefinition.model_validate_json(raw_def)
                        assert definition.config.debounce is not None
                        started = definition.model_copy(
                            update={"input": debounced_input(definition.config.debounce, inputs)}
                        )
                        raw = started.model_dump_json(by_alias=True)
                        flow = json.loads(raw_flow) if raw_flow else {}
                        flow.update(queued_reason="awaiting admission", estimated_start=None, debounced=len(inputs))
                        pipe.hset(k.workflow(wf_id), mapping={
                            "definition": raw, "definition_digest": digest(raw), "flow": json.dumps(flow),
                        })
                        pipe.zadd(k.fc_pending, {wf_id: int(time.time() * 1000)})
                        admit = True
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if admit:
            await self.control.admit(wf_id)
