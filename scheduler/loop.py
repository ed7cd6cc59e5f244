"""The scheduler: fires schedule triggers at their time, once each, however many schedulers run.

Every look (:meth:`Scheduler.tick`) reads the schedule triggers due by now from
``{p}:triggers:due``, decides with :func:`flowcore.triggers.plan_schedule` what each one does (run
the due time, count missed times, run once to catch up) and commits that with
:class:`flowcore.firing.Firing`. The commit WATCHes the trigger, so of two schedulers looking at
the same due time one commits and the other finds ``next_run`` moved and does nothing. Between looks
the scheduler sleeps until the earliest due time, at most ``tick_s``.

The clock is injected (``clock``) so tests drive days of schedules, DST changes included, in
milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.errors import FlowError, NotFound
from flowcore.firing import Fire, FireOutcome, FireResult, Firing
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition
from flowcore.records import Origin
from flowcore.retention import Reaper
from flowcore.triggers import Trigger, TriggerType, plan_schedule
from flowcore.triggerstore import TriggerStore

log = logging.getLogger("scheduler")

MIN_SLEEP_S = 0.005


@dataclass(frozen=True)
class Fired:
    trigger_id: str
    due_at: float
    result: FireResult


class Scheduler:
    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        *,
        tick_s: float = 0.5,
        batch: int = 100,
        retention_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
        workflow_retention_s: float = 0.0,
        retention_sweep_s: float = 60.0,
        retention_batch: int = 500,
    ) -> None:
        self.triggers = TriggerStore(redis, keys)
        self.firing = Firing(redis, keys)
        self.keys = keys
        self.tick_s = tick_s
        self.batch = batch
        self.retention_s = retention_s
        self.clock = clock
        # Workflow retention (flowcore.retention): 0 keeps finished workflows forever.
        self.reaper = Reaper(redis, keys)
        self.workflow_retention_s = workflow_retention_s
        self.retention_sweep_s = retention_sweep_s
        self.retention_batch = retention_batch
        self._next_sweep = 0.0

    async def sweep_if_due(self, now: float) -> int:
        """Delete workflows past their retention, at most every ``retention_sweep_s``; how many went."""
        if self.workflow_retention_s <= 0 or now < self._next_sweep:
            return 0
        self._next_sweep = now + self.retention_sweep_s
        outcome = await self.reaper.sweep(now, self.workflow_retention_s, batch=self.retention_batch)
        if outcome.more:  # a backlog: come back at the next look rather than in a minute
            self._next_sweep = now
        return len(outcome.deleted)

    async def tick(self, now: float | None = None) -> list[Fired]:
        """Handle every trigger due by ``now``; returns what each fire did."""
        now = self.clock() if now is None else now
        out: list[Fired] = []
        for trigger_id, due_at in await self.triggers.due(now, self.batch):
            try:
                result = await self._handle(trigger_id, due_at, now)
            except FlowError as exc:  # one bad trigger must not stop the others
                log.warning("trigger %s due at %.3f not fired: %s", trigger_id, due_at, exc)
                continue
            if result is not None:
                out.append(Fired(trigger_id, due_at, result))
        return out

    async def _handle(self, trigger_id: str, due_at: float, now: float) -> FireResult | None:
        redis = self.triggers.redis
        try:
            trigger = await self.triggers.get(trigger_id)
        except NotFound:
            await redis.zrem(self.keys.triggers_due, trigger_id)
            return None
        if not trigger.enabled or trigger.type != TriggerType.SCHEDULE:
            await redis.zrem(self.keys.triggers_due, trigger_id)
            return None
        try:
            template = await self.firing.template(trigger.workflow_id)
        except NotFound:
            log.warning("trigger %s: template workflow %s is gone; deleting the trigger", trigger_id, trigger.workflow_id)
            await self.triggers.delete(trigger_id)
            return None
        return await self.firing.fire(self._fire(trigger, template, due_at, now))

    def _fire(self, trigger: Trigger, template: WorkflowDefinition, due_at: float, now: float) -> Fire:
        # The zset holds whole milliseconds; next_run holds the exact time: compare with the latter.
        exact_due = trigger.next_run if trigger.next_run is not None and abs(trigger.next_run - due_at) < 0.0015 else due_at
        decision = plan_schedule(trigger, exact_due, now)
        fire_at = decision.fire_at
        return Fire(
            template_id=trigger.workflow_id,
            template=template,
            origin=Origin(
                kind="schedule", trigger_id=trigger.id, template_id=trigger.workflow_id, fired_at=now,
                scheduled_for=fire_at,
            ),
            now=now,
            trigger=trigger,
            fire_key=f"cron:{int(fire_at * 1000)}" if fire_at is not None else None,
            retention_s=self.retention_s,
            due_at=exact_due,
            next_run=decision.next_run,
            missed=decision.missed,
            run=fire_at is not None,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Look at due triggers until ``stop`` is set; Redis outages are waited out, not fatal."""
        log.info("scheduler running (tick %.2fs)", self.tick_s)
        while not stop.is_set():
            try:
                fired = await self.tick()
                for f in fired:
                    if f.result.outcome == FireOutcome.STARTED:
                        log.info("trigger %s fired: workflow %s", f.trigger_id, f.result.workflow_id)
                next_due = await self.triggers.next_due()
                await self.sweep_if_due(self.clock())
            except (RedisError, FlowError, OSError) as exc:
                log.warning("scheduler look failed (%s); retrying", exc)
                next_due = None
            now = self.clock()
            sleep_s = self.tick_s if next_due is None else min(self.tick_s, max(next_due - now, MIN_SLEEP_S))
            try:
                await asyncio.wait_for(stop.wait(), timeout=sleep_s)
            except TimeoutError:
                pass
        log.info("scheduler stopped")
