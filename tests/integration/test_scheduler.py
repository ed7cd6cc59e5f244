"""The scheduler on a real Redis with a controlled clock: exactly-once fires, two schedulers, DST,
catch-up policies, disable and re-enable, skip-if-running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from flowcore.firing import FireOutcome
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition
from flowcore.store import WorkflowStore
from flowcore.triggers import TriggerSpec
from flowcore.triggerstore import TriggerStore
from scheduler.loop import Scheduler

KEYS = Keyspace("flow")
STEP = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["true"]}


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


async def setup(redis: Redis, body: dict[str, Any], created: float) -> tuple[str, str]:
    store = WorkflowStore(redis, KEYS)
    wf_id = await store.create(WorkflowDefinition.model_validate({"name": "tpl", "steps": [STEP]}))
    trigger = await TriggerStore(redis, KEYS).create(wf_id, TriggerSpec.model_validate(body), now=created)
    return wf_id, trigger.id


async def started(redis: Redis, trigger_id: str) -> list[dict[str, Any]]:
    """The workflows a trigger started, oldest first, with their origin."""
    store = WorkflowStore(redis, KEYS)
    ids = [i.decode() for i in await redis.zrange(KEYS.trigger_runs(trigger_id), 0, -1)]
    return [{"id": i, **(await store.load_summary(i)).origin.model_dump()} for i in ids]


async def test_fires_each_due_time_once_and_moves_next_run(redis: Redis) -> None:
    clock = Clock(ts(2026, 1, 1, 9, 59))
    _, tid = await setup(redis, {"type": "schedule", "cron_expression": "0 * * * *"}, clock.now)
    sched = Scheduler(redis, KEYS, clock=clock)
    assert await sched.tick() == []  # nothing due yet
    clock.now = ts(2026, 1, 1, 10, 0, 0, 200_000)
    fired = await sched.tick()
    assert [f.result.outcome for f in fired] == [FireOutcome.STARTED]
    assert await sched.tick() == []  # the same time never fires twice
    trigger = await sched.triggers.get(tid)
    assert trigger.run_count == 1 and trigger.next_run == ts(2026, 1, 1, 11)
    runs = await started(redis, tid)
    assert runs[0]["kind"] == "schedule" and runs[0]["scheduled_for"] == ts(2026, 1, 1, 10)
    wf = await WorkflowStore(redis, KEYS).load(runs[0]["id"])
    assert wf.status.value == "running" and list(wf.tasks) == ["a:0"]  # started, first task queued


async def test_two_schedulers_at_the_same_time_fire_once(redis: Redis) -> None:
    clock = Clock(ts(2026, 1, 1, 0, 0))
    tids = [(await setup(redis, {"type": "schedule", "cron_expression": "* * * * *"}, clock.now))[1] for _ in range(5)]
    a, b = Scheduler(redis, KEYS, clock=clock), Scheduler(redis, KEYS, clock=clock)
    for minute in range(1, 11):
        clock.now = ts(2026, 1, 1, 0, minute, 1)
        results = await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        outcomes = [f.result.outcome for r in results for f in r]
        assert outcomes.count(FireOutcome.STARTED) == 5, outcomes
    for tid in tids:
        runs = await started(redis, tid)
        assert len(runs) == 10
        assert sorted(r["scheduled_for"] for r in runs) == [ts(2026, 1, 1, 0, m) for m in range(1, 11)]


async def test_dst_spring_forward_and_fall_back_in_new_york(redis: Redis) -> None:
    clock = Clock(ts(2026, 3, 7, 12))
    _, spring = await setup(
        redis, {"type": "schedule", "cron_expression": "30 2 * * *", "timezone": "America/New_York"}, clock.now)
    _, autumn = await setup(
        redis, {"type": "schedule", "cron_expression": "30 1 * * *", "timezone": "America/New_York"}, clock.now)
    sched = Scheduler(redis, KEYS, clock=clock)
    # Walk the clock through both DST changes in 10-minute steps; every due time fires on time.
    t = clock.now
    while t < ts(2026, 11, 3, 12):
        nxt = await sched.triggers.next_due()
        assert nxt is not None
        t = clock.now = nxt + 1
        await sched.tick()
    spring_runs = [r["scheduled_for"] for r in await started(redis, spring)]
    assert ts(2026, 3, 8, 7, 0) in spring_runs  # 02:30 did not exist: 03:00 EDT
    assert ts(2026, 3, 9, 6, 30) in spring_runs  # 02:30 EDT
    autumn_runs = [r["scheduled_for"] for r in await started(redis, autumn)]
    nov1 = [x for x in autumn_runs if ts(2026, 11, 1) <= x < ts(2026, 11, 2)]
    assert nov1 == [ts(2026, 11, 1, 5, 30)]  # 01:30 happened twice, fired once (EDT)
    assert ts(2026, 11, 2, 6, 30) in autumn_runs  # 01:30 EST the next day
    trig = await sched.triggers.get(autumn)
    assert trig.run_count == len(autumn_runs) and trig.skipped == {}


@pytest.mark.parametrize(("policy", "runs", "missed"), [("skip", 0, 4), ("run_once", 1, 3)])
async def test_catch_up_after_downtime(redis: Redis, policy: str, runs: int, missed: int) -> None:
    clock = Clock(ts(2026, 1, 1, 9, 30))
    _, tid = await setup(redis, {"type": "schedule", "cron_expression": "0 * * * *",
                                 "config": {"catch_up": policy}}, clock.now)
    sched = Scheduler(redis, KEYS, clock=clock)
    clock.now = ts(2026, 1, 1, 13, 30)  # down through 10:00, 11:00, 12:00 and 13:00
    await sched.tick()
    trigger = await sched.triggers.get(tid)
    assert trigger.run_count == runs and trigger.skipped.get("missed", 0) == missed
    assert trigger.next_run == ts(2026, 1, 1, 14)
    if runs:
        assert [r["scheduled_for"] for r in await started(redis, tid)] == [ts(2026, 1, 1, 13)]


async def test_disabled_does_not_fire_and_reenable_resumes_from_the_next_future_time(redis: Redis) -> None:
    clock = Clock(ts(2026, 1, 1, 9, 30))
    _, tid = await setup(redis, {"type": "schedule", "cron_expression": "0 * * * *"}, clock.now)
    sched = Scheduler(redis, KEYS, clock=clock)
    await sched.triggers.set_enabled(tid, False, now=clock.now)
    clock.now = ts(2026, 1, 1, 12, 10)
    assert await sched.tick() == []
    trigger = await sched.triggers.set_enabled(tid, True, now=clock.now)
    assert trigger.next_run == ts(2026, 1, 1, 13)
    assert await sched.tick() == []
    clock.now = ts(2026, 1, 1, 13, 0, 1)
    assert [f.result.outcome for f in await sched.tick()] == [FireOutcome.STARTED]
    trigger = await sched.triggers.get(tid)
    assert trigger.run_count == 1 and trigger.skipped == {}


async def test_skip_if_running_on_a_schedule(redis: Redis) -> None:
    clock = Clock(ts(2026, 1, 1, 0, 0, 30))
    _, tid = await setup(redis, {"type": "schedule", "cron_expression": "* * * * *",
                                 "config": {"skip_if_running": True}}, clock.now)
    sched = Scheduler(redis, KEYS, clock=clock)
    outcomes = []
    for minute in (1, 2, 3):
        clock.now = ts(2026, 1, 1, 0, minute, 1)
        outcomes += [f.result.outcome for f in await sched.tick()]
    # The first run never finishes (no worker here): the next two fires are skipped and counted.
    assert outcomes == [FireOutcome.STARTED, FireOutcome.SKIPPED, FireOutcome.SKIPPED]
    trigger = await sched.triggers.get(tid)
    assert trigger.run_count == 1 and trigger.skipped == {"running": 2}
    assert trigger.next_run == ts(2026, 1, 1, 0, 4)


async def test_a_trigger_whose_template_vanished_is_removed(redis: Redis) -> None:
    clock = Clock(ts(2026, 1, 1, 0, 0))
    wf_id, tid = await setup(redis, {"type": "schedule", "cron_expression": "* * * * *"}, clock.now)
    await WorkflowStore(redis, KEYS).delete(wf_id)  # behind the gateway's back
    clock.now = ts(2026, 1, 1, 0, 1, 1)
    assert await Scheduler(redis, KEYS, clock=clock).tick() == []
    assert await redis.exists(KEYS.trigger(tid)) == 0
